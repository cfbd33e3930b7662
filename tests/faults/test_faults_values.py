"""Class 4 of issue 22: suite and config values are accepted only with a meaning.

Non-finite numbers are refused wherever a suite holds a float (``allow_inf_nan=False``), a suite is held to
``hydranet.limits`` (seeds, frames), a BEV grid to ``MAX_BEV_CELLS`` wherever one is built (``BevGrid``), a
threshold on a task the model lacks fails instead of skipping to PASS, ``train --from`` refuses a
checkpoint trained on another grid, and a shard manifest holds finite numbers only (``NaN`` anywhere in it, the
free-form ``source`` record included, is refused by every command that opens the dataset).
"""

from __future__ import annotations

import math
import re
import shutil

import pytest
import yaml
from faults_kit import GRID, SETUP, cli, error_line, make_checkpoint, train_config, world_file
from hypothesis import given, settings
from hypothesis import strategies as st

from hydranet.eval.suite import Suite, SuiteError, load_suite
from hydranet.limits import MAX_BEV_CELLS, MAX_SUITE_SEEDS

BASE = {"scenarios": {"a": {}}, "seeds": [0, 1], "frames": 1, "tasks": {"drivable": {}}}
BAD_NUMBERS = [math.nan, math.inf, -math.inf]


def suite_file(tmp_path, **fields) -> str:
    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump({**BASE, **fields}))
    return str(p)


@settings(max_examples=30, deadline=None)
@given(field=st.sampled_from(["tolerance", "default_tolerance", "confidence", "threshold"]),
       value=st.sampled_from(BAD_NUMBERS))
def test_a_non_finite_suite_number_is_refused_naming_its_field(tmp_path_factory, field, value):
    tmp = tmp_path_factory.mktemp("suite")
    fields = {"default_tolerance": value} if field == "default_tolerance" else (
        {"confidence": value} if field == "confidence" else
        {"tasks": {"drivable": {"tolerance": {"miou": value}}}} if field == "tolerance" else
        {"tasks": {"drivable": {"thresholds": {"miou": f">= {value}"}}}})
    with pytest.raises(SuiteError) as e:
        load_suite(suite_file(tmp, **fields))
    assert "suite.yaml" in str(e.value) and "\n" not in str(e.value)


def test_the_gate_refuses_a_non_finite_tolerance_that_skipped_validation():
    from hydranet.eval.gate import gate
    from hydranet.eval.runner import SuiteRun

    suite = Suite.model_validate({**BASE, "name": "s"}).model_copy(update={"default_tolerance": math.nan})
    run = SuiteRun(suite, [], {"drivable": type("T", (), {"headline": "miou", "metrics": {"miou": 0.5}})()}, [], 0.0)
    with pytest.raises(SuiteError, match="not a finite number"):
        gate(run, run)


@pytest.mark.parametrize("fields,limit", [
    ({"seeds": [0, 1_000_000_000]}, f"the limit is {MAX_SUITE_SEEDS:,}"),
    ({"seeds": [0, 1000], "frames": 101}, "the limit is 100,000"),
    ({"scenarios": {f"s{i}": {} for i in range(20)}, "seeds": [0, 100], "frames": 60}, "the limit is 100,000"),
])
def test_an_absurd_suite_size_is_refused_with_its_limit(tmp_path, fields, limit):
    res = cli("eval", tmp_path, "--suite", suite_file(tmp_path, **fields), code=2)
    assert limit in " ".join(res.output.split())


@pytest.mark.parametrize("cell", [0.0005, 0.001, 0.004])
def test_a_bev_grid_too_fine_for_memory_is_refused_everywhere(tmp_path, cell):
    grid = {**GRID, "cell": cell}
    if (16 / cell) ** 2 <= MAX_BEV_CELLS:
        pytest.skip("within the limit")
    world = world_file(tmp_path / "w.yaml", setup={**SETUP, "grid": grid})
    res = cli("generate", "--config", world, "--frames", "1", "-o", tmp_path / "d", code=2)
    assert f"exceeds the limit of {MAX_BEV_CELLS:,}" in " ".join(res.output.split())
    cfg = yaml.safe_load(train_config(tmp_path / "c.yaml").read_text())
    cfg["model"]["setup"]["grid"] = grid
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = cli("train", "-c", tmp_path / "c.yaml", "-o", tmp_path / "run", code=2)
    assert "exceeds the limit" in error_line(res)


def test_a_threshold_on_a_task_the_model_lacks_fails(ckpt, tmp_path):
    suite = suite_file(tmp_path, tasks={"drivable": {"thresholds": {"miou": ">= 0.0"}},
                                        "objects3d": {"thresholds": {"map": ">= 0.0"}}})
    res = cli("eval", ckpt, "--suite", suite, "--device", "cpu", "-o", tmp_path / "r.json", code=1)
    assert "model has no head for this task" in res.output and "FAIL" in res.output
    checks = [c for s in yaml.safe_load((tmp_path / "r.json").read_text())["suites"] for t in s["tasks"].values()
              for c in t["checks"]]
    assert checks  # the drivable check ran and the JSON says why the suite failed
    loose = cli("eval", ckpt, "--suite", suite, "--device", "cpu", "--allow-missing-tasks", code=0)
    # PASS says a threshold was skipped, not "every threshold met" (a new-user trial)
    assert "PASS: every judged threshold met; 1 skipped" in " ".join(loose.output.split())
    strict = cli("eval", ckpt, "--suite", suite, "--device", "cpu", "--tasks", "drivable", code=0)
    assert "PASS: every threshold met" in strict.output


def test_train_from_a_checkpoint_of_another_grid_is_refused(tmp_path):
    other = make_checkpoint(tmp_path / "other", grid={**GRID, "x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0],
                                                      "cell": 2.0})
    res = cli("train", "--from", other, "-c", train_config(tmp_path / "c.yaml"), "-o", tmp_path / "t", code=2)
    line = error_line(res)
    assert "trained on the BEV grid" in line and "the config's model has" in line
    assert not (tmp_path / "t" / "checkpoints").exists()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_in_a_shard_manifest_is_refused_by_every_reader(tmp_path, dataset, ckpt, token):
    """The trial: `"fx": NaN` where ``hydranet generate`` writes the first fx (the world config the source record
    keeps) passed ``data-info --verify --deep``, and predict and cache-features ran on it."""
    data = shutil.copytree(dataset, tmp_path / "data")
    manifest = data / "manifest.json"
    manifest.write_text(re.sub(r'"fx": [0-9.e+-]+', f'"fx": {token}', manifest.read_text(), count=1))
    field = "field 'source.world_config.setup.rigs.0.cameras.0.fx': Input should be a finite number"
    for args in (["data-info", data, "--verify", "--deep"], ["predict", ckpt, "--data", data, "-o", tmp_path / "p"],
                 ["cache-features", "--ckpt", ckpt, "--data", data, "-o", tmp_path / "c"]):
        line = error_line(cli(*args, code=2))
        assert f"{manifest}: invalid manifest: {field}" in line, (args[0], line)
