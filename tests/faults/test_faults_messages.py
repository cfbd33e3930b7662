"""Class 9 of issue 22: messages that say what is wrong, in the user's terms, on one line.

``hydranet.cli.errors`` turns every exception into one ``error:`` line (pydantic errors name the field and
carry no links; an unexpected error says it is a bug, without a traceback); ``--resume`` says how the config
differs; ``current.json`` of ``vacation`` stores paths relative to its run, so a run resumes from anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from faults_kit import cli, error_line, train_config, world_file
from pydantic import BaseModel, ValidationError

from hydranet.cli.errors import describe, fail, one_line
from hydranet.engine.records import read_current


def test_an_existing_dataset_names_the_overwrite_flag(tmp_path, dataset):
    out = shutil.copytree(dataset, tmp_path / "out")
    line = error_line(cli("convert", "shards", "--path", dataset, "--out", out, code=2))
    assert "--overwrite" in line and "pass overwrite=True" not in line
    cli("convert", "shards", "--path", dataset, "--out", out, "--overwrite", code=0)


def test_resume_with_another_config_says_what_differs(tmp_path):
    cfg = train_config(tmp_path / "c.yaml", steps=1)
    run = tmp_path / "run"
    cli("train", "-c", cfg, "-o", run, "--no-progress", code=0)
    other = train_config(tmp_path / "other.yaml", steps=1, lr=0.05)
    line = error_line(cli("train", "--resume", "-c", other, "-o", run, code=2))
    assert "--resume: the config differs from the run's" in line and "train.lr 0.001 -> 0.05" in line, line
    res = cli("train", "--resume", "-o", run, "--set", "train.steps=2", "--no-progress", code=0)
    assert "resuming with a changed config: train.steps 1 -> 2" in " ".join(res.output.split())


def test_resume_reads_a_config_written_by_hand_as_the_config_it_resolves_to(tmp_path):
    """A run folder whose config.yaml the user wrote (its defaults left out, a comment in it) resumes with that
    config and keeps the file as written: the two are compared resolved, so no field is reported as changed from
    "<unset>"."""
    run = tmp_path / "run"
    run.mkdir()
    written = "# my experiment\n" + train_config(run / "config.yaml", steps=1).read_text()
    (run / "config.yaml").write_text(written)
    res = cli("train", "--resume", "-o", run, "--no-progress", code=0)
    assert "differs" not in res.output and "changed config" not in res.output, res.output
    assert (run / "checkpoints").is_dir() and (run / "config.yaml").read_text() == written


def test_resume_compares_world_and_task_options_with_their_defaults_filled_in(tmp_path):
    """A config that spells out a world field's or a task option's default trains what the run's config trains."""
    run = tmp_path / "run"
    cli("train", "-c", train_config(tmp_path / "c.yaml", steps=1), "-o", run, "--no-progress", code=0)
    tree = yaml.safe_load((tmp_path / "c.yaml").read_text())
    tree["data"]["datasets"]["w"]["world"]["rate_hz"] = 10.0  # the world's default
    tree["model"]["tasks"]["drivable"] = {"threshold": 0.5}  # the task's default
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(yaml.safe_dump(tree))
    res = cli("train", "--resume", "-c", explicit, "-o", run, "--set", "train.steps=2", "--no-progress", code=0)
    text = " ".join(res.output.split())
    assert "differs" not in text and "resuming with a changed config: train.steps 1 -> 2" in text, res.output
    # the same world written as a file's path: the same config; an edited world file is a change
    tree["train"]["steps"] = 2  # the run's own now
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump(tree["data"]["datasets"]["w"]["world"]))
    tree["data"]["datasets"]["w"]["world"] = str(world)
    explicit.write_text(yaml.safe_dump(tree))
    res = cli("train", "--resume", "-c", explicit, "-o", run, "--no-progress", code=0)
    assert "differs" not in res.output, res.output
    world.write_text(yaml.safe_dump({**yaml.safe_load(world.read_text()), "lighting": "night"}))
    line = error_line(cli("train", "--resume", "-c", explicit, "-o", run, "--set", "train.steps=3", code=2))
    assert "data.datasets.w.world.lighting 'day' -> 'night'" in line, line
    tree["data"]["datasets"]["w"]["world"] = yaml.safe_load((tmp_path / "c.yaml").read_text())["data"]["datasets"][
        "w"]["world"]
    tree["model"]["tasks"]["drivable"] = {"threshold": 0.6}
    explicit.write_text(yaml.safe_dump(tree))
    line = error_line(cli("train", "--resume", "-c", explicit, "-o", run, "--set", "train.steps=3", code=2))
    assert "model.tasks.drivable.threshold 0.5 -> 0.6" in line, line
    # fewer steps than the run has trained would make its config.yaml say what its checkpoints are not
    line = error_line(cli("train", "--resume", "-o", run, "--set", "train.steps=1", code=2))
    assert "train.steps 1 is below step 2" in line, line


def test_a_run_records_the_world_a_relative_path_names_so_it_resumes_from_anywhere(tmp_path, monkeypatch):
    """Before: the run's config.yaml kept ``world: world.yaml`` as written, read from the working directory, so
    resuming from another one failed on a missing file (or read another file of that name)."""
    tree = yaml.safe_load(train_config(tmp_path / "c.yaml", steps=1).read_text())
    (tmp_path / "world.yaml").write_text(yaml.safe_dump(tree["data"]["datasets"]["w"]["world"]))
    tree["data"]["datasets"]["w"]["world"] = "world.yaml"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path)
    cli("train", "-c", "c.yaml", "-o", "run", "--no-progress", code=0)
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["datasets"]["w"]["world"]
    written = yaml.safe_load((tmp_path / "world.yaml").read_text())
    assert isinstance(recorded, dict) and {k: recorded[k] for k in written} == written, recorded
    monkeypatch.chdir(tmp_path / "run")
    res = cli("train", "--resume", "-o", ".", "--set", "train.steps=2", "--no-progress", code=0)
    assert "resuming with a changed config: train.steps 1 -> 2" in " ".join(res.output.split()), res.output
    # resumed with the file's path from the directory it was written in: the same world
    monkeypatch.chdir(tmp_path)
    res = cli("train", "--resume", "-c", "c.yaml", "-o", "run", "--set", "train.steps=2", "--no-progress", code=0)
    assert "differs" not in res.output, res.output


def test_a_world_path_that_cannot_be_read_names_the_config_and_where_it_was_looked_for(tmp_path, monkeypatch):
    """A config in another folder names its world relatively: the error names the config (it named only the
    field) and says relative paths are read from the working directory, which it names."""
    (tmp_path / "sub").mkdir()
    config = train_config(tmp_path / "sub" / "c.yaml", steps=1)
    tree = yaml.safe_load(config.read_text())
    tree["data"]["datasets"]["w"]["world"] = "world.yaml"  # beside the config, not in the working directory
    config.write_text(yaml.safe_dump(tree))
    world_file(tmp_path / "sub" / "world.yaml")
    monkeypatch.chdir(tmp_path)
    line = error_line(cli("train", "-c", "sub/c.yaml", "-o", "run", "--no-progress", code=2))
    assert line.startswith("error: sub/c.yaml: data.datasets.w.world: world.yaml: cannot read"), line
    assert f"a relative world path is read from the working directory, {tmp_path}, not from the config's" in line


def test_a_refused_resume_leaves_the_runs_config_as_it_was(tmp_path):
    """Before: ``--resume --set train.steps=N`` recorded N in config.yaml, then found no valid checkpoint and exited 2:
    a failed command had changed its input."""
    run = tmp_path / "run"
    cli("train", "-c", train_config(tmp_path / "c.yaml", steps=1), "-o", run, "--no-progress", code=0)
    recorded = (run / "config.yaml").read_bytes()
    for weights in (run / "checkpoints").glob("step_*/model.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])
    line = error_line(cli("train", "--resume", "-o", run, "--set", "train.steps=3", "--no-progress", code=2))
    assert "no valid checkpoint to resume from" in line, line
    assert (run / "config.yaml").read_bytes() == recorded


def test_resume_over_an_empty_config_yaml_says_it_is_empty(tmp_path):
    """Before: "data: required field is missing", as if the file held a config without data."""
    run = tmp_path / "run"
    cli("train", "-c", train_config(tmp_path / "c.yaml", steps=1), "-o", run, "--no-progress", code=0)
    (run / "config.yaml").write_text("# emptied\n")
    line = error_line(cli("train", "--resume", "-o", run, code=2))
    assert f"{run / 'config.yaml'}: empty file (expected a mapping of config sections" in line, line


def test_vacation_current_json_is_relative_to_its_run(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "vac"
    ckpt = run / "iter_001" / "train" / "checkpoints" / "step_00000001"
    ckpt.mkdir(parents=True)
    (run / "current.json").write_text(json.dumps({"checkpoint": "iter_001/train/checkpoints/step_00000001",
                                                  "onnx": None, "iteration": 1}))
    monkeypatch.chdir(tmp_path)
    assert read_current(Path("runs/vac"))["checkpoint"] == str(ckpt)
    monkeypatch.chdir(run / "iter_001")  # another directory: the same file
    assert read_current(run)["checkpoint"] == str(ckpt)
    # a run written by an older hydranet, relative to the directory it was started from
    (run / "current.json").write_text(json.dumps({"checkpoint": "train/checkpoints/step_00000001", "onnx": None}))
    assert read_current(run)["checkpoint"] == str(ckpt)
    shutil.rmtree(ckpt)
    with pytest.raises(ValueError, match=r"current.json: checkpoint .* does not exist"):
        read_current(run)


def test_vacation_records_promote_run_relative_paths(tmp_path, monkeypatch):
    from hydranet.engine.pipeline import Pipeline
    from hydranet.engine.vacation import Vacation

    monkeypatch.chdir(tmp_path)
    pipe = Pipeline.model_validate({"pool": "synthetic", "model": str(tmp_path / "base"), "eval": {"suites": ["x"]}})
    v = Vacation(pipe, "relative-run", log=lambda s: None)
    assert v.out == tmp_path / "relative-run"  # absolute: records mean the same files from any directory
    assert v.run_relative(v.out / "iter_001" / "ckpt") == "iter_001/ckpt"
    assert v.run_relative(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_vacation_resumes_from_another_directory_and_names_a_moved_run(tmp_path, monkeypatch):
    """Every path a run stores is absolute or relative to the run: started from one directory, it resumes from
    any other. A run directory moved elsewhere (its records and training runs name files at the old place) is
    refused in one line naming ``run_dir`` and both places, before a stage runs."""
    from hydranet.engine.pipeline import Pipeline
    from hydranet.engine.vacation import Vacation

    pipe = Pipeline.model_validate({"pool": "synthetic", "model": str(tmp_path / "base"), "eval": {"suites": ["x"]}})
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    v = Vacation(pipe, "run", log=lambda s: None)
    v.iter_dir(1).mkdir()
    (v.iter_dir(1) / "mine.json").write_text("{}")  # a finished stage
    monkeypatch.chdir(tmp_path)
    assert Vacation(pipe, "a/run", log=lambda s: None).finished_stages() == ["iter_001/mine.json"]
    shutil.move(tmp_path / "a" / "run", tmp_path / "moved")
    with pytest.raises(ValueError) as e:
        Vacation(pipe, tmp_path / "moved", log=lambda s: None)
    message, code = describe(e.value)
    assert code == 2 and "\n" not in message
    assert "pipeline.json: run_dir: this run was written in " + str(tmp_path / "a" / "run") in message, message
    assert "move it back" in message


class _Model(BaseModel):
    lr: float
    steps: int


def test_pydantic_errors_are_one_line_naming_each_field():
    with pytest.raises(ValidationError) as e:
        _Model.model_validate({"lr": "fast", "steps": "many"})
    message, code = describe(e.value)
    assert code == 2 and "\n" not in message and "errors.pydantic.dev" not in message
    assert "lr:" in message and "steps:" in message


def test_an_unexpected_error_is_one_line_without_a_traceback(monkeypatch, tmp_path):
    import hydranet.cli.world as world

    def boom(*args, **kwargs):
        raise RuntimeError("something\nthat spans lines")

    monkeypatch.setattr(world, "_world_sample", boom)
    res = cli("show", "-o", tmp_path / "s.png", code=1)
    line = error_line(res)
    assert "internal error: RuntimeError: something; that spans lines" in line and "HYDRANET_DEBUG=1" in line
    monkeypatch.setattr(world, "_world_sample", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert error_line(cli("show", "-o", tmp_path / "s.png", code=130)) == "error: interrupted"


def test_one_line_joins_the_lines_of_a_library_message():
    assert one_line("a\n  b\n\nc") == "a; b; c"


def test_label_never_replaces_a_finished_dataset_unless_told(tmp_path, dataset):
    """Before: ``label --out`` onto any existing dataset deleted it (labels bought earlier, gone)."""
    queue = tmp_path / "q"
    queue.mkdir()
    (queue / "queue.jsonl").write_text(json.dumps({"rank": 1, "index": 0, "frame_id": "x#0"}) + "\n")
    other = shutil.copytree(dataset, tmp_path / "bought")
    line = error_line(cli("label", "--queue", queue, "--data", "synthetic", "--out", other, code=2))
    assert "--overwrite" in line
    cli("data-info", other, "--verify", code=0)


# Each: a command run with a missing or wrong argument, a bad config or suite field, a checkpoint that is not
# there or of another grid; (arguments, words the one line must hold). Before, each was either click's three
# lines (usage, hint, "Error: Invalid value for ..."), a message naming the path twice or an option the user
# never passed (a pipeline's "--model"), a pydantic location with union internals, or a table printed before a
# late refusal.
PROBES = [
    (["eval", "{run}", "--frames", "0"], ["--frames: ", "greater than or equal to 1"]),
    (["eval", "{tmp}/nope"], ["CHECKPOINT: {tmp}/nope: no such checkpoint or run directory"]),
    (["eval", "{run}", "--suite", "{tmp}/noon.yaml"],
     ["--suite: {tmp}/noon.yaml: scenarios.a.lighting: unknown 'noon'; expected 'day'"]),
    (["quantize", "{onnx}", "--suite", "{tmp}/noon.yaml", "-o", "{tmp}/q.onnx"], ["--suite: {tmp}/noon.yaml"]),
    (["train", "--resume", "-o", "{tmp}/nothing"], ["--resume: {tmp}/nothing holds no run to resume"]),
    (["train", "--resume"], ["--resume: needs -o RUN"]),
    (["train", "-c", "{cfg}", "--bogus"], ["No such option: --bogus", "hydranet train --help"]),
    (["mine", "--model", "{tmp}/nope", "--data", "{data}", "--budget", "1", "-o", "{tmp}/m"],
     ["--model {tmp}/nope: no such checkpoint"]),
    (["mine", "--model", "{run}", "--data", "{data}", "--budget", "0", "-o", "{tmp}/m"], ["--budget: "]),
    (["label", "--queue", "{tmp}/nope", "--data", "{data}", "--out", "{tmp}/l"], ["{tmp}/nope: no queue"]),
    (["label", "--queue", "{queue}", "--data", "{tmp}/nope", "--out", "{tmp}/l"],
     ["--data {tmp}/nope: no such dataset"]),
    (["label", "--queue", "{queue}", "--data", "{data}", "--labeller", "auto", "--teacher", "{tmp}/nope", "--out",
      "{tmp}/l"], ["--teacher {tmp}/nope: no such checkpoint"]),
    (["autolabel-quality", "--teacher", "{tmp}/nope", "--data", "synthetic"],
     ["--teacher {tmp}/nope: no such checkpoint"]),
    (["vacation", "-c", "{tmp}/pipe_model.yaml", "-o", "{tmp}/v"],
     ["pipe_model.yaml: model: {tmp}/nope: no such checkpoint"]),
    (["vacation", "-c", "{tmp}/pipe_pool.yaml", "-o", "{tmp}/v"], ["pipe_pool.yaml: train_config (not set"]),
    (["predict", "{grid}", "--data", "{data}", "--ground-truth", "-o", "{tmp}/p"],
     ["--data {data}: BEV grid is", "checkpoint {grid}", "(setup.grid)"]),
    (["view", "--model", "{grid}", "--data", "{data}", "-o", "{tmp}/v.rrd"],
     ["--data {data}: BEV grid is", "--model {grid}", "(setup.grid)"]),
    (["eval", "{run}", "--tasks", "warp"], ["--tasks ['warp']: no suite evaluates them"]),
    (["generate", "-o", "{tmp}/g", "--config", "{tmp}/bad.yaml"], ["--config: {tmp}/bad.yaml: trian: unknown field"]),
    (["show", "--lighting", "noon", "-o", "{tmp}/s.png"],
     ["--lighting: unknown 'noon'; expected 'day', 'dusk', 'night' or 'random'"]),
    (["--max-image-pixels", "0", "eval", "{run}"], ["--max-image-pixels: "]),
    (["nosuchcommand"], ["No such command 'nosuchcommand'"]),
    (["train", "-c", "{cfg}", "--from", "{run}", "--add-task", "warp", "-o", "{tmp}/o"],
     ["--add-task warp: unknown task 'warp'"]),
    (["gate", "-b", "{run}"], ["Missing option '--baseline'", "hydranet gate --help"]),
]


@pytest.fixture(scope="module")
def probe(tmp_path_factory, ckpt, dataset, graph):
    """Inputs for PROBES: a run, one of another grid, a dataset (labelled on the first run's grid), a graph, a
    queue, a training config, a suite with a bad value, pipelines naming a missing model or a KIND:PATH pool."""
    import yaml
    from faults_kit import make_checkpoint

    tmp = tmp_path_factory.mktemp("probe")
    grid = make_checkpoint(tmp / "grid", grid={"x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0], "cell": 1.0})
    (tmp / "queue").mkdir()
    (tmp / "queue" / "queue.jsonl").write_text(json.dumps({"rank": 1, "index": 0, "frame_id": "x#0"}) + "\n")
    cfg = train_config(tmp / "cfg.yaml")
    (tmp / "bad.yaml").write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "trian": {"steps": 1}}))
    (tmp / "noon.yaml").write_text(yaml.safe_dump({"name": "s", "scenarios": {"a": {"lighting": "noon"}},
                                                   "seeds": [0, 2], "frames": 1, "tasks": {"drivable": {}}}))
    suite = {"suites": ["night.yaml"]}
    (tmp / "pipe_model.yaml").write_text(yaml.safe_dump({"pool": "synthetic", "model": "nope", "eval": suite}))
    (tmp / "pipe_pool.yaml").write_text(yaml.safe_dump({"pool": f"shards:{dataset}", "model": str(ckpt),
                                                        "eval": suite}))
    return {"tmp": tmp, "run": ckpt, "grid": grid, "data": dataset, "onnx": graph, "queue": tmp / "queue",
            "cfg": cfg}


@pytest.mark.parametrize("args,words", PROBES, ids=[" ".join(a[:2]) + f"#{i}" for i, (a, _) in enumerate(PROBES)])
def test_every_bad_input_is_one_line_naming_the_file_and_field(probe, args, words):
    res = cli(*[a.format(**probe) for a in args], code=2)
    assert len(res.output.strip().splitlines()) == 1, res.output  # nothing printed before it, nothing after
    line = error_line(res)
    for w in words:
        assert w.format(**probe) in line, (w, line)
    assert "Usage:" not in res.output and "--model" not in line.replace("--model {tmp}".format(**probe), "")


def test_vacation_started_in_one_directory_resumes_from_another(tmp_path, monkeypatch):
    """Through the CLI, with relative paths: iteration 1 run from the pipeline's folder, iteration 2 resumed
    from another folder (nothing of iteration 1 redone, the promoted model found); the run moved elsewhere is
    one line naming run_dir and both places, exit 2."""
    import importlib.util

    from faults_kit import REPO

    spec = importlib.util.spec_from_file_location("faults_engine_testkit", REPO / "tests/engine/engine_testkit.py")
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)  # type: ignore[union-attr]
    kit.write_pipeline(tmp_path / "p", iterations=2, steps=2, tolerance=1.0)
    monkeypatch.chdir(tmp_path / "p")
    cli("vacation", "-c", "pipeline.yaml", "-o", "../run", "--iterations", "1", code=0)
    run = tmp_path / "run"
    first = {p.name: p.read_text() for p in (run / "iter_001").glob("*.json")}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = cli("vacation", "-c", "../p/pipeline.yaml", "-o", "../run", code=0)
    assert {p.name: p.read_text() for p in (run / "iter_001").glob("*.json")} == first  # not redone
    assert read_current(run)["checkpoint"].startswith(str(run / "iter_002" / "train")), res.output
    shutil.move(run, tmp_path / "moved")
    line = error_line(cli("vacation", "-c", "../p/pipeline.yaml", "-o", "../moved", code=2))
    assert "pipeline.json: run_dir: this run was written in " + str(run) in line, line


BROKEN_YAML = "data:\n  a: 1\n  b: 2\n- c\n"  # a list item inside a mapping: line 4, column 1


@pytest.mark.parametrize("args, where", [
    (["train", "-c", "{yaml}", "-o", "{tmp}/r"], "{yaml}:4:1"),
    (["generate", "--config", "{yaml}", "-o", "{tmp}/g"], "{yaml}:4:1"),
    (["eval", "{run}", "--suite", "{yaml}"], "{yaml}:4:1"),
    (["vacation", "-c", "{yaml}", "-o", "{tmp}/v"], "{yaml}:4:1"),
    (["predict", "{run}", "--data", "{yaml}", "-o", "{tmp}/p"], "{yaml}:4:1"),
], ids=lambda a: a[0] if isinstance(a, list) else None)
def test_a_yaml_syntax_error_is_file_line_column_and_the_problem(tmp_path, ckpt, args, where):
    """Before: ``not valid YAML (while parsing ...; in "<unicode string>", line 4, column 1:; ^)``: PyYAML's
    four lines with a caret, joined. Every YAML file goes through hydranet.yaml_files, one formatter."""
    yaml_file = tmp_path / "broken.yaml"
    yaml_file.write_text(BROKEN_YAML)
    fill = {"yaml": yaml_file, "tmp": tmp_path, "run": ckpt}
    line = error_line(cli(*[a.format(**fill) for a in args], code=2))
    assert f"{where.format(**fill)}: expected <block end>, but found '-' (not valid YAML, while parsing a block " \
           "mapping from 1:1)" in line, line
    assert "<unicode string>" not in line and "^" not in line


@pytest.mark.parametrize("args, expected", [
    (["train", "-c", "{cfg}", "--set", "train.lr=[1", "-o", "{tmp}/r"],
     "--set 'train.lr=[1':1:3: expected ',' or ']', but got '<stream end>' (not valid YAML, while parsing a flow "
     "sequence from 1:1)"),
    # before: an uncaught ParserError, "internal error ... (this is a hydranet bug)", exit 1
    (["cache-features", "--ckpt", "{run}", "--data", "synthetic", "--world", "seed=[1", "-o", "{tmp}/c"],
     "--world 'seed=[1':1:3: expected ',' or ']', but got '<stream end>'"),
], ids=["--set", "--world"])
def test_a_yaml_value_on_the_command_line_is_one_line_too(tmp_path, ckpt, args, expected):
    fill = {"cfg": train_config(tmp_path / "c.yaml"), "tmp": tmp_path, "run": ckpt}
    line = error_line(cli(*[a.format(**fill) for a in args], code=2))
    assert expected in line, line


def test_an_error_line_prints_colon_codes_as_typed(capsys):
    fail("--data nosuchkind:x:/data: unknown kind 'nosuchkind'")
    assert "nosuchkind:x:/data" in capsys.readouterr().err  # rich would print ':x:' as an emoji
