"""Bad pipelines and bad mine inputs fail before any work, as one ``error:`` line with exit 2; the
shipped example configs load; a run directory refuses a changed pipeline only once a stage finished."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from engine_testkit import write_pipeline
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.engine.pipeline import PipelineError, load_pipeline
from hydranet.engine.preflight import preflight
from hydranet.engine.vacation import Vacation
from hydranet.eval.suite import SHIPPED_SUITES

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def edit(pipe: Path, **fields) -> Path:
    """A copy of ``pipe`` beside it (same relative references) with ``fields`` replaced."""
    out = pipe.with_name(f"edited_{len(list(pipe.parent.glob('edited_*')))}.yaml")
    out.write_text(yaml.safe_dump({**yaml.safe_load(pipe.read_text()), **fields}))
    return out


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("pipe") / "p", iterations=1).parent


def one_error_line(r, *words: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.count("error:") == 1, r.output
    for w in words:
        assert w in " ".join(r.output.split()), r.output


def test_relative_shipped_suite_resolves_outside_the_repo(pipe_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # neither the pipeline's directory nor the repo
    pipe = load_pipeline(edit(pipe_dir / "pipeline.yaml", eval={"suites": ["suites/day.yaml"], "frames": 2}))
    assert Path(pipe.eval.suites[0]).parent in [r.resolve() for r in SHIPPED_SUITES]
    preflight(pipe)  # every reference opens


@pytest.mark.parametrize(("field", "value", "words"), [
    ("eval", {"suites": ["suites/nope.yaml"]}, ("eval.suites[0]", "nope.yaml")),
    ("model", "/tmp/nomodel_hydranet", ("model", "/tmp/nomodel_hydranet")),
    ("pool", "/tmp/nopool_hydranet", ("pool", "/tmp/nopool_hydranet")),
    ("train_config", "missing.yaml", ("train_config", "missing.yaml")),
    ("mine", {"triggers": "entropy:task=lanes"}, ("mine.triggers",)),
    ("label", {"kind": "auto", "teacher": "/tmp/noteacher_hydranet"}, ("label.teacher",)),
])
def test_bad_reference_fails_before_any_stage(pipe_dir, tmp_path, field, value, words):
    src = yaml.safe_load((pipe_dir / "pipeline.yaml").read_text())
    pipe = tmp_path / "pipeline.yaml"
    for k in ("pool", "model", "train_config"):  # absolute, so the copy still finds the good references
        src[k] = str(pipe_dir / src[k])
    src["eval"] = {"suites": [str(pipe_dir / "suite.yaml")]}
    src["label"] = {"kind": "oracle"}
    pipe.write_text(yaml.safe_dump({**src, field: value}))
    r = invoke("vacation", "-c", pipe, "-o", tmp_path / "run")
    one_error_line(r, str(pipe), *words)
    assert not list((tmp_path / "run").glob("iter_*"))  # no stage ran


def test_mine_bad_model_and_pool_is_one_error_line(checkpoint, world_yaml, tmp_path):
    r = invoke("mine", "--model", "/tmp/nomodel_hydranet", "--data", f"synthetic:{world_yaml}", "--budget", 2,
               "--out", tmp_path / "q")
    one_error_line(r, "--model /tmp/nomodel_hydranet")
    r = invoke("mine", "--model", checkpoint, "--data", "/tmp/nopool_hydranet", "--budget", 2, "--out", tmp_path / "q")
    one_error_line(r, "--data /tmp/nopool_hydranet")
    r = invoke("mine", "--model", checkpoint, "--data", f"synthetic:{world_yaml}", "--triggers", "nosuch",
               "--budget", 2, "--out", tmp_path / "q")
    one_error_line(r, "nosuch")


def test_changed_pipeline_refused_only_after_a_stage_finished(pipe_dir, tmp_path):
    pipe = load_pipeline(pipe_dir / "pipeline.yaml")
    fixed = pipe.model_copy(update={"train_config": None})
    Vacation(pipe, tmp_path / "run", log=lambda s: None)
    logs: list[str] = []
    Vacation(fixed, tmp_path / "run", log=logs.append)  # nothing finished: the fixed pipeline takes over
    assert "starting over" in logs[0]
    (tmp_path / "run" / "iter_001").mkdir()
    (tmp_path / "run" / "iter_001" / "mine.json").write_text("{}")
    logs.clear()  # mining does not read the train config: it may still change
    Vacation(pipe, tmp_path / "run", log=logs.append)
    assert "['train_config'] changed before any stage that reads them finished" in logs[0]
    (tmp_path / "run" / "iter_001" / "dataset.json").write_text("{}")  # the stage that reads it has finished
    with pytest.raises(ValueError, match=r"train_config.*new --out") as e:
        Vacation(fixed, tmp_path / "run", log=lambda s: None)
    assert "iter_001/dataset.json" in str(e.value)


def test_shipped_example_configs_load():
    pipe = load_pipeline(ROOT / "configs" / "engine" / "vacation.yaml")
    assert pipe.pool == f"synthetic:{ROOT / 'configs' / 'engine' / 'pool.yaml'}"
    assert [Path(s).name for s in pipe.eval.suites] == ["night.yaml", "day.yaml"]
    assert all(Path(s).is_file() for s in pipe.eval.suites)
    from hydranet.engine.pool import open_pool
    from hydranet.train.subgraph import load_train_config

    assert len(open_pool(pipe.pool)) == pipe.mine.limit == 480  # the miner scans the whole pool
    assert load_train_config(pipe.train_config, [], None).data.datasets
    with pytest.raises(PipelineError, match="eval"):
        load_pipeline(ROOT / "configs" / "engine" / "pool.yaml")  # a world file is not a pipeline


def test_set_overrides_a_pipeline_field_and_names_itself_when_bad(tmp_path, monkeypatch):
    """``vacation --set`` as ``train --set``: a field overridden, a relative path it gives read from the working
    directory (the file's own paths stay relative to the file), a bad value named with the override."""
    shipped = ROOT / "configs" / "engine" / "vacation.yaml"
    monkeypatch.chdir(tmp_path)
    pipe = load_pipeline(shipped, ["mine.budget=8", "train.steps=20", "model=runs/base"])
    assert (pipe.mine.budget, pipe.train.steps, pipe.mine.oversample) == (8, 20, 4)
    assert pipe.model == str(tmp_path / "runs" / "base")
    assert pipe.pool == f"synthetic:{ROOT / 'configs' / 'engine' / 'pool.yaml'}"
    with pytest.raises(PipelineError, match=r"vacation\.yaml with --set mine\.budget=many: mine\.budget: Input should "
                                            r"be a valid integer"):
        load_pipeline(shipped, ["mine.budget=many"])
    with pytest.raises(PipelineError, match=r"vacation\.yaml: --set 'mine': expected KEY=VALUE"):
        load_pipeline(shipped, ["mine"])
    res = CliRunner().invoke(app, ["vacation", "-c", str(shipped), "-o", str(tmp_path / "run"),
                                   "--set", "mine.budget=0"])
    assert res.exit_code == 2 and "mine.budget" in res.output and not (tmp_path / "run").exists(), res.output


def test_a_pool_the_model_was_not_built_for_fails_before_any_stage(pipe_dir, tmp_path):
    src = yaml.safe_load((pipe_dir / "pipeline.yaml").read_text())
    for k in ("model", "train_config"):
        src[k] = str(pipe_dir / src[k])
    src["eval"] = {"suites": [str(pipe_dir / "suite.yaml")]}
    pool = yaml.safe_load((pipe_dir / "pool.yaml").read_text())
    h, w = pool["setup"]["image_size"]
    pool["setup"] = {**pool["setup"], "image_size": [2 * h, 2 * w]}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    pipe = tmp_path / "pipeline.yaml"
    pipe.write_text(yaml.safe_dump({**src, "pool": str(tmp_path / "pool.yaml")}))
    r = invoke("vacation", "-c", pipe, "-o", tmp_path / "run")
    one_error_line(r, "pool", f"images are {2 * h}x{2 * w} (HxW) but the model is built for {h}x{w}")
    assert not list((tmp_path / "run").glob("iter_*"))


def test_a_suite_metric_typo_stops_the_vacation_before_it_mines(pipe_dir, tmp_path):
    """Before: a tolerance or threshold on a metric no task produces was found at the eval stage, after minutes of
    mining, labelling and training (and fixing the suite then meant starting over)."""
    suite = tmp_path / "typo.yaml"
    suite.write_text(yaml.safe_dump({"scenarios": {"day": {}}, "seeds": [0, 1], "frames": 1,
                                     "tasks": {"drivable": {"tolerance": {"miouu": 0.02}}}}))
    pipe = load_pipeline(edit(pipe_dir / "pipeline.yaml", eval={"suites": [str(suite)], "frames": 1}))
    with pytest.raises(PipelineError, match=r"eval.suites\[0\]: .*typo.yaml: tasks.drivable.tolerance.miouu: task "
                                            r"'drivable' has no metric 'miouu'"):
        preflight(pipe)
    r = invoke("eval", "zoo:tiny-world", "--suite", suite)  # eval and gate check it before any suite runs
    one_error_line(r, "tasks.drivable.tolerance.miouu", "its metrics: ['boundary_iou', 'iou', 'miou']")


def test_a_train_device_this_machine_lacks_stops_the_vacation_before_it_mines(pipe_dir, monkeypatch):
    """``train.device: cuda`` where there is no CUDA was found at the training stage, after mining and labelling
    (and as an internal error): ``preflight`` resolves it the way training will (``hydranet.train.resolve_device``)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    src = yaml.safe_load((pipe_dir / "pipeline.yaml").read_text())
    pipe = load_pipeline(edit(pipe_dir / "pipeline.yaml",
                              train={**src["train"], "overrides": [*src["train"]["overrides"], "train.device=cuda"]}))
    with pytest.raises(PipelineError, match=r"edited_\d+\.yaml: train_config: train\.device 'cuda': cuda requested "
                                            r"but this torch build .* has no CUDA; usable here: auto, cpu"):
        preflight(pipe)
