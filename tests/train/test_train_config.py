"""Config loading: every error names the YAML file and the field path; --set overrides."""

from pathlib import Path

import pytest
import yaml

from hydranet.train.config import ConfigError, apply_overrides, load_config, parse_override

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
        load_config(path, ["train.balancing.kind=foo"])
    msg = str(e.value)
    assert msg.startswith(f"{path}: train.balancing.kind: unknown 'foo'; expected one of")
    assert "'pcgrad'" in msg


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


def test_bad_values_and_cross_references(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match=r"train.batch_size: Input should be greater than or equal to 1"):
        load_config(path, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"data.datasets.main: path: Field required"):
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
