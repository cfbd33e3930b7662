"""Config loading: every error names the YAML file and the field path; --set overrides."""

import re
from pathlib import Path

import pytest
import yaml

from hydranet.train.config import ConfigError, apply_overrides, load_config, parse_override
from hydranet.train.data import world_config

BASE = {
    "data": {"datasets": {"main": {"kind": "shards", "path": "runs/x/train"}}},
    "model": {"preset": "tiny", "tasks": {"depth": {}, "drivable": {}}},
    "train": {"steps": 10, "balancing": {"kind": "static"}},
}


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_valid_config_and_preset_resolution(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.train.steps == 10
    assert cfg.task_names() == ["depth", "drivable"]
    model = cfg.resolved_model()
    assert sorted(model.tasks) == ["depth", "drivable"]
    assert model.neck.channels == 32  # from the tiny preset


def test_unknown_literal_names_file_and_field(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as e:
        load_config(path, ["train.scheduler.kind=foo"])
    assert str(e.value) == "--set train.scheduler.kind=foo: train.scheduler.kind: unknown 'foo'; expected 'all', " \
                           "'round_robin', 'proportional' or 'temperature'"
    # A registered kind (the balancer registry) names the field and lists what is registered.
    with pytest.raises(ConfigError) as e:
        load_config(path, ["train.balancing.kind=foo"])
    assert str(e.value) == "--set train.balancing.kind=foo: train.balancing.kind: unknown balancer 'foo'; " \
                           "registered balancers: ['gradnorm', 'pcgrad', 'static', 'uncertainty']"


def test_unknown_field_is_a_typo_error(tmp_path):
    tree = yaml.safe_load(yaml.safe_dump(BASE))
    tree["train"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match=r"cfg.yaml: train.learning_rate: unknown field"):
        load_config(write(tmp_path, tree))


def test_nested_model_error_has_path(tmp_path):
    tree = yaml.safe_load(yaml.safe_dump(BASE))
    tree["model"]["neck"] = {"channels": -1}
    with pytest.raises(ConfigError, match=r"cfg.yaml: model.neck.channels: "):
        load_config(write(tmp_path, tree))


@pytest.mark.parametrize("model", [{"preset": "tiny", "tasks": {}}, {"tasks": {}}, {"neck": {"channels": 16}}],
                         ids=["preset, tasks: {}", "tasks: {}", "no tasks"])
def test_a_model_without_tasks_names_model_tasks(tmp_path, model):
    """Before: "ModelConfig.tasks is empty: configure at least one task", from the builder once training started,
    naming neither the file nor the field (a class name instead)."""
    from hydranet.cli.errors import describe

    path = write(tmp_path, {**BASE, "model": model})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: model.tasks: at least one task is needed: a task name and its options, "
                                   "e.g. `drivable: {}` (tasks: ["), str(e.value)
    assert "'drivable', 'lanes'" in str(e.value)  # the registered tasks (other tests may register more)
    assert describe(e.value) == (str(e.value), 2)  # bad input: exit 2


def test_bad_values_and_cross_references(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match=r"train.batch_size: Input should be greater than or equal to 1"):
        load_config(path, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"data.datasets.main: source .shards.: bad options \(path: required field"):
        load_config(path, ["data.datasets.main.path="])
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'"):
        load_config(path, ["data.tasks.depth.datasets=[nope]"])
    with pytest.raises(ConfigError, match=r"no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_parse_yaml_values():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("train.scheduler.kind=temperature") == (["train", "scheduler", "kind"], "temperature")
    tree = apply_overrides({"train": {}}, ["train.balancing.weights={depth: 2}", "train.clip_grad_norm=null"])
    assert tree["train"] == {"balancing": {"weights": {"depth": 2}}, "clip_grad_norm": None}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.lr")


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert files, "configs/*.yaml missing"
    for f in files:
        load_config(f)


@pytest.mark.parametrize("override,field", [
    ("train.lr=inf", "train.lr"), ("train.lr=.nan", "train.lr"), ("train.weight_decay=-.inf", "train.weight_decay"),
    ("train.betas=[0.9, .nan]", "train.betas.1"), ("train.clip_grad_norm=inf", "train.clip_grad_norm"),
    ("train.balancing.weights={depth: .inf}", "train.balancing.weights.depth"),
    ("train.balancing.gradnorm.lr=inf", "train.balancing.gradnorm.lr"),
    ("train.scheduler.temperature=inf", "train.scheduler.temperature"),
])
def test_non_finite_optimiser_numbers_are_errors_naming_the_field(tmp_path, override, field):
    # Named as typed on the command line (before: inf accepted, training ran on NaN weights).
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(override)}: {re.escape(field)}: .*finite"):
        load_config(write(tmp_path, BASE), [override])


@pytest.mark.parametrize("override,field", [
    ("train.lr=true", "train.lr"), ("train.steps=false", "train.steps"), ("train.muon_lr=true", "train.muon_lr"),
    ("eval.frames=true", "eval.frames"), ("train.balancing.gradnorm.lr=true", "train.balancing.gradnorm.lr"),
])
def test_true_or_false_for_a_number_is_an_error_naming_the_field(tmp_path, override, field):
    # Named as typed (before: pydantic read true as 1, and `train.lr=true` trained at lr 1).
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(override)}: {re.escape(field)}: a number is needed"):
        load_config(write(tmp_path, BASE), [override])


def test_a_bad_set_value_is_named_as_typed_and_a_bad_file_value_by_its_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^--set train.lr=abc: train.lr: .*valid number"):
        load_config(write(tmp_path, BASE), ["train.lr=abc"])
    bad = write(tmp_path, {**BASE, "train": {**BASE["train"], "lr": "abc"}})
    with pytest.raises(ConfigError, match=r"cfg.yaml: train.lr: .*valid number"):
        load_config(bad, ["train.steps=3"])


def test_every_failed_field_is_named_by_the_set_that_wrote_it(tmp_path):
    # Each line is matched by field path, not by the message's first line (before: only the first error was
    # attributed to its --set, the second named the file although the command line wrote it too).
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["train.steps=-1", "train.lr=abc"])
    assert str(err.value).splitlines() == [
        "--set train.steps=-1: train.steps: Input should be greater than or equal to 1",
        "--set train.lr=abc: train.lr: Input should be a valid number, unable to parse string as a number"]
    assert set(err.value.fields) == {"train.steps", "train.lr"}
    # A file's own bad field beside a bad --set: each named by where it came from.
    bad = write(tmp_path, {**BASE, "train": {**BASE["train"], "lr": "abc"}})
    with pytest.raises(ConfigError) as err:
        load_config(bad, ["train.steps=-1"])
    lines = str(err.value).splitlines()
    assert lines[0].startswith("--set train.steps=-1: train.steps: ") and lines[1].endswith(
        "cfg.yaml: train.lr: Input should be a valid number, unable to parse string as a number")
    # The model preset is resolved before validation; it is still a field, reported beside the others (before: a
    # bad model hid every other error).
    with pytest.raises(ConfigError, match=r"^--set model.preset=nope: model.preset: unknown 'nope'") as err:
        load_config(write(tmp_path, BASE), ["train.steps=-1", "model.preset=nope"])
    assert list(err.value.fields) == ["model.preset", "train.steps"]
    # A task's name and options are fields of their own (before: `model.tasks`, blamed on the file).
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["model.tasks.lanez={}", "model.tasks.depth={width: x}",
                                            "data.datasets.w={kind: world, frames: 4, world: {fog: -3}}"])
    assert list(err.value.fields) == ["data.datasets.w.world.fog", "model.tasks.depth.width", "model.tasks.lanez"]
    assert all(line.startswith("--set ") for line in str(err.value).splitlines()), str(err.value)
    # A section the command line created is the command line's: its missing fields are not the file's fault.
    with pytest.raises(ConfigError, match=r"^--set data.datasets.extra.frames=3: data.datasets.extra.kind: "
                                          r"required field is missing$"):
        load_config(write(tmp_path, BASE), ["data.datasets.extra.frames=3"])


def test_pydantic_internals_never_reach_the_user(tmp_path):
    """Union members in the location, one error per union member, "(2 errors)": never shown."""
    from hydranet.world.config import load_world_config

    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as err:
        load_config(path, ["data.datasets.main.kind=world", "data.datasets.main.frames=4",
                           "data.datasets.main.world={lighting: noon}"])
    assert str(err.value) == ("--set data.datasets.main.world={lighting: noon}: data.datasets.main.world.lighting: "
                              "unknown 'noon'; "
                              "expected 'day', 'dusk', 'night' or 'random'")  # before: literal['day',...] twice
    with pytest.raises(ValueError) as err:
        load_world_config({"fog": "thick", "height": "tall"})
    text = str(err.value)
    assert "world config: fog: expected" in text and "or 'random', got 'thick'" in text
    assert "errors)" not in text and "literal[" not in text and "function-" not in text


def test_shipped_configs_data_match_their_model():
    for f in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")):
        cfg = load_config(f)
        sources = [*cfg.data.datasets.items(), *([("eval", cfg.data.eval)] if cfg.data.eval else [])]
        for name, ds in sources:
            if ds.kind == "world":  # renders the model's setup, declared once in model.setup
                world = world_config(cfg, name)
                assert world.setup == cfg.resolved_model().setup, (f, name)
                cfg.resolved_model().check_data(world.rendered_setup, f"{f.name} {name}")


def test_demo_does_the_same_work_on_every_machine(tmp_path):
    """No wall-clock cut: before, a 390 s limit made a busy machine train fewer steps (other numbers)."""
    from hydranet.train.demo import default_demo_config, run_demo

    for name in ("demo.yaml", "temporal.yaml"):  # `hydranet demo` and `hydranet demo --temporal`
        cfg = load_config(default_demo_config(name))
        assert cfg.train.time_limit_s is None and cfg.train.steps > 0, name
    with pytest.raises(ConfigError, match=r"train.time_limit_s: the demo does a fixed amount of work"):
        run_demo(tmp_path, overrides=["train.time_limit_s=390"])
    assert not (tmp_path / "data").exists()  # refused before rendering anything


def test_a_line_naming_no_field_survives_the_set_attribution(tmp_path, monkeypatch):
    # A model error that names no single field (a plain ValueError inside ModelConfig) is kept when the other
    # lines are renamed after the --set that wrote them (before: it was dropped from the message).
    import hydranet.train.config as config_module

    original = config_module.ModelConfig.model_validate

    def validate(value, *args, **kwargs):
        if value.get("bev_channels") == 7:
            raise ValueError("bev_channels: seven is unlucky")
        return original(value, *args, **kwargs)

    monkeypatch.setattr(config_module.ModelConfig, "model_validate", validate)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {**BASE, "model": {**BASE["model"], "bev_channels": 7}}), ["train.lr=abc"])
    lines = str(err.value).splitlines()
    assert any(line.endswith("cfg.yaml: model.bev_channels: seven is unlucky") for line in lines), lines
    assert "--set train.lr=abc: train.lr: Input should be a valid number, unable to parse string as a number" in lines


def test_a_world_dataset_takes_a_world_file_path(tmp_path):
    """``world: PATH`` (docs/world.md) as well as ``world: {fields}``; the model's setup flows in unless the file
    declares one, and a world file that does not exist is an error naming it."""
    world = tmp_path / "night.yaml"
    world.write_text(yaml.safe_dump({"seed": 4, "num_scenes": 2, "frames_per_scene": 3, "lighting": "night"}))
    tree = {**BASE, "data": {"datasets": {"w": {"kind": "world", "world": str(world), "frames": 4}}}}
    cfg = load_config(write(tmp_path, tree))
    wc = world_config(cfg)
    assert (wc.seed, wc.lighting, wc.num_scenes) == (4, "night", 2)
    assert wc.setup == cfg.resolved_model().setup
    tree["data"]["datasets"]["w"]["world"] = str(tmp_path / "missing.yaml")
    with pytest.raises((ValueError, OSError), match="missing.yaml"):
        world_config(load_config(write(tmp_path, tree)))
