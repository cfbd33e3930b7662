# Two commands are all the set-up there is: `make demo` and `make test`.
# Both create .venv and install hydranet into it when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build of PyTorch (a local file on our dev machines); see README for the GPU install.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint install clean bench browser figures demo-figures reference reference-install

# The install's seconds go to .venv/install_seconds: `hydranet demo` reports them with its own phases.
$(STAMP): pyproject.toml
	mkdir -p $(VENV) && date +%s > $(VENV)/install_started
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	echo $$(( $$(date +%s) - $$(cat $(VENV)/install_started) )) > $(VENV)/install_seconds
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hydranet demo --out runs/demo

# The HTML report test opens the report in Debian's headless chromium. As root (CI) we install
# it when missing; elsewhere the test is skipped unless HYDRANET_REQUIRE_BROWSER=1.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  echo "chromium not installed: the report's browser test will be skipped"

test: $(STAMP) browser
	$(BIN)/ruff check hydranet tests benchmarks tools
	HYDRANET_REQUIRE_BROWSER=$${HYDRANET_REQUIRE_BROWSER:-$$( [ "$$CI" = true ] && echo 1 || echo 0 )} \
	  $(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check hydranet tests benchmarks tools

# Every figure in README.md and docs/*.md is rendered from docs/results/*.json (tools/figures.py):
#   make figures        re-render the marked blocks from the committed results
#   make demo-figures   keep runs/demo/metrics.json as docs/results/demo.json, then re-render
#   make bench          run every benchmark, keep each one's JSON as docs/results/<name>.json, re-render
figures: $(STAMP)
	$(BIN)/python tools/figures.py render

demo-figures: $(STAMP)
	$(BIN)/python tools/figures.py record demo --file runs/demo/metrics.json
	$(BIN)/python tools/figures.py render

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python tools/figures.py record $$(basename $$b .py) -- $(BIN)/python $$b || exit 1; done
	$(BIN)/python tools/zoo_install.py floors
	$(BIN)/python tools/figures.py render

# The reference model, zoo:tiny-world (README, "Reference model"): `make reference` trains configs/reference.yaml
# (an hour or more on 2 CPU cores) and installs it; `make reference-install RUN=DIR` installs a run trained
# elsewhere (DATA_NOTE="...": the run read a shard render of the config's own datasets, checked as the note
# says). Installing copies the checkpoint into hydranet/model/pretrained/tiny-world/ with its provenance,
# records its held-out figures (docs/results/reference.json), writes the floors `make test` checks from them
# (suites/reference/) and re-renders the docs. Then commit those three places.
REFERENCE_RUN ?= runs/reference
reference: $(STAMP)
	$(BIN)/hydranet train --config configs/reference.yaml --out $(REFERENCE_RUN) --no-progress
	$(MAKE) reference-install RUN=$(REFERENCE_RUN)

reference-install: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make reference-install RUN=runs/reference (a run or checkpoint directory)"; exit 2; }
	$(BIN)/python tools/zoo_install.py install $(RUN) --name tiny-world --config configs/reference.yaml \
	  $(if $(DATA_NOTE),--data-rendered-from-config "$(DATA_NOTE)")
	$(BIN)/python tools/figures.py record reference -- $(BIN)/python benchmarks/reference.py --model zoo:tiny-world
	$(BIN)/python tools/zoo_install.py floors
	$(BIN)/python tools/figures.py render

clean:
	rm -rf runs build *.egg-info
