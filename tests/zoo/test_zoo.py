"""The model zoo: ``create_model(..., pretrained=True)``, ``zoo:NAME`` wherever a checkpoint is taken, ``hydranet
zoo``, and clear errors for a preset without weights or a zoo file that is missing or damaged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import hydranet.model.zoo as zoo
from hydranet.checkpoint import CheckpointError, load_checkpoint, load_model, resolve_checkpoint
from hydranet.cli import app
from hydranet.model import PRETRAINED, ModelConfig, ZooError, create_model, find_pretrained, verified_directory
from hydranet.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_reference_config_trains_the_demo_network():
    """The zoo weights fit the demo network: configs/reference.yaml's model has configs/demo.yaml's setup and
    parameters, name for name and shape for shape (loss weights may differ: the demo weighs the light state 2 and
    the 3D box regression 0.1),
    and the shipped weights were trained from configs/reference.yaml's model."""
    ref, demo = load_config(ROOT / "configs" / "reference.yaml"), load_config(ROOT / "configs" / "demo.yaml")
    assert ref.resolved_model().setup == demo.resolved_model().setup

    def parameters(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in create_model(cfg).state_dict().items()}

    assert parameters(ref.resolved_model()) == parameters(demo.resolved_model())
    shipped = ModelConfig.model_validate(json.loads((find_pretrained("tiny-world").directory / "state.json")
                                                    .read_text())["model_config"])
    assert shipped == ref.resolved_model()


def test_the_shipped_checkpoint_config_trains_anywhere():
    """The shipped state.json's training config is configs/reference.yaml's, data included: `train --from
    zoo:tiny-world` renders the same frames on any machine (no path of the machine that trained it)."""
    state = json.loads((find_pretrained("tiny-world").directory / "state.json").read_text())
    ref = load_config(ROOT / "configs" / "reference.yaml")
    assert state["config"]["data"] == ref.model_dump(mode="json")["data"]
    assert load_config(ROOT / "configs" / "reference.yaml").train.steps == state["step"]


def test_create_model_pretrained_is_the_shipped_checkpoint():
    by_preset = create_model("tiny", pretrained=True)
    by_name = create_model("tiny-world", pretrained=True)
    loaded, ckpt = load_model("zoo:tiny-world")
    assert ckpt.path == find_pretrained("tiny-world").directory
    assert by_preset.cfg == by_name.cfg == loaded.cfg
    a, b, c = by_preset.state_dict(), by_name.state_dict(), loaded.state_dict()
    assert a.keys() == c.keys() and all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if k.startswith("heads."))
    untrained = create_model(by_preset.cfg)
    assert not all(torch.equal(untrained.state_dict()[k], a[k]) for k in a)  # the weights really were loaded


def test_a_preset_without_weights_names_the_ones_with_weights():
    with pytest.raises(ZooError, match="no pretrained weights for 'base'.*names with weights: tiny-world"):
        create_model("base", pretrained=True)
    with pytest.raises(ZooError, match="takes a zoo or preset name"):
        create_model(ModelConfig.preset("tiny"), pretrained=True)
    with pytest.raises(KeyError, match="unknown model preset 'tiny-world'"):
        create_model("tiny-world")  # a zoo name is not an architecture: pretrained=True names it
    assert find_pretrained("zoo:tiny-world") is find_pretrained("tiny") is PRETRAINED["tiny-world"]
    with pytest.raises(TypeError, match="takes True or False, got 'yes'"):  # before: any truthy value
        create_model("tiny", pretrained="yes")


def test_zoo_names_resolve_in_the_one_checkpoint_loader():
    assert resolve_checkpoint("zoo:tiny-world") == PRETRAINED["tiny-world"].directory
    ckpt = load_checkpoint(Path("zoo:tiny-world"), optimizer=False)  # CLI options arrive as Path
    assert ckpt.state["step"] == PRETRAINED["tiny-world"].provenance()["step"]
    with pytest.raises(CheckpointError, match="no pretrained weights for 'zoo:nope'.*tiny-world"):  # as typed
        load_model("zoo:nope")


def test_provenance_says_how_to_reproduce_the_weights():
    prov = PRETRAINED["tiny-world"].provenance()
    assert prov["config"] == "configs/reference.yaml" and (ROOT / prov["config"]).is_file()
    assert prov["reproduce"].startswith("hydranet train --config configs/reference.yaml")
    assert prov["step"] > 0 and prov["data"] and set(prov["sha256"]) == {"model.safetensors", "state.json"}
    assert prov["figures"] == "docs/results/reference.json" and (ROOT / prov["figures"]).is_file()
    assert (PRETRAINED["tiny-world"].directory / "model.safetensors").stat().st_size < 8 * 2**20  # a few MB


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """The shipped zoo copied to ``tmp_path`` and pointed to, so a test may damage its files."""
    shutil.copytree(zoo.PRETRAINED_DIR, tmp_path / "pretrained")
    monkeypatch.setattr(zoo, "PRETRAINED_DIR", tmp_path / "pretrained")
    return tmp_path / "pretrained" / "tiny-world"


def test_a_damaged_zoo_file_is_refused_naming_it(zoo_copy):
    weights = zoo_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ZooError, match="model.safetensors: sha256 differs"):
        create_model("tiny", pretrained=True)
    with pytest.raises(CheckpointError, match="model.safetensors: sha256 differs"):
        load_model("zoo:tiny-world")
    res = runner.invoke(app, ["export", "zoo:tiny-world", "-o", str(zoo_copy.parent / "m.onnx")])
    assert res.exit_code == 2 and "sha256 differs" in res.output and "Traceback" not in res.output


def test_an_edited_state_json_is_refused(zoo_copy):
    state = json.loads((zoo_copy / "state.json").read_text())
    state["step"] += 1
    (zoo_copy / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="state.json: sha256 differs"):
        load_model("zoo:tiny-world")


@pytest.mark.parametrize("missing", ["model.safetensors", "state.json", "provenance.json"])
def test_a_missing_zoo_file_is_a_clear_error(zoo_copy, missing):
    (zoo_copy / missing).unlink()
    with pytest.raises(ZooError, match=f"{missing} is missing"):
        verified_directory("tiny-world")
    res = runner.invoke(app, ["zoo"])
    # Exit 1, not 0: a listing that finds a shipped entry unusable has failed (the installation is not in order);
    # the entry is still listed, and the error line names it and why.
    assert res.exit_code == 1 and f"{missing} is missing" in res.output, res.output
    assert "error: 1 damaged zoo entry, unusable until fixed: zoo:tiny-world: " in res.output
    if missing == "provenance.json":  # the entry reads as not installed
        with pytest.raises(ZooError, match="this installation has weights for none"):
            create_model("base", pretrained=True)


def test_the_zoo_listing_names_a_damaged_entry_lists_the_others_and_exits_1(zoo_copy, monkeypatch):
    """Before: exit 0 whatever the entries' files, so a script checking an installation passed a damaged one."""
    from hydranet.model import Pretrained, register_pretrained

    shutil.copytree(zoo_copy, zoo_copy.parent / "spare")  # a second entry, intact, beside the damaged one
    PRETRAINED.load()
    monkeypatch.setattr(PRETRAINED, "_entries", dict(PRETRAINED._entries))  # the registration ends with the test
    register_pretrained(Pretrained("spare", "tiny", "an intact copy", root=zoo_copy.parent))
    weights = zoo_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    res = runner.invoke(app, ["zoo"])
    assert res.exit_code == 1, res.output
    assert "zoo:spare  (preset tiny" in res.output and "files verified" in res.output  # the intact one, listed
    steps = PRETRAINED["tiny-world"].provenance()["step"]  # its record still reads: only the weights are damaged
    assert f"zoo:tiny-world  (preset tiny, {steps} steps, DAMAGED: {weights}: sha256 differs" in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: 1 damaged zoo entry, unusable until fixed: zoo:tiny-world: {weights}: sha256 differs"), res.output
    res = runner.invoke(app, ["zoo", "--json"])
    assert res.exit_code == 1 and "error: 1 damaged zoo entry" in res.output
    rows = json.loads(res.output[:res.output.index("error:")])
    assert {r["name"]: r["status"] == "ok" for r in rows} == {"zoo:tiny-world": False, "zoo:spare": True}


def test_hydranet_zoo_lists_names_figures_and_sha256():
    res = runner.invoke(app, ["zoo", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    row = next(r for r in rows if r["name"] == "zoo:tiny-world")
    prov = PRETRAINED["tiny-world"].provenance()
    assert row["status"] == "ok" and row["sha256"] == prov["sha256"]["model.safetensors"]
    assert row["figures"] == "docs/results/reference.json" and row["preset"] == "tiny"
    table = runner.invoke(app, ["zoo", "list"])
    assert table.exit_code == 0 and "zoo:tiny-world" in table.output
    assert prov["sha256"]["model.safetensors"] in table.output
    one = runner.invoke(app, ["zoo", "tiny-world", "--json"])
    assert one.exit_code == 0 and json.loads(one.output)["reproduce"] == prov["reproduce"]
    text = runner.invoke(app, ["zoo", "tiny-world"])
    assert text.exit_code == 0 and f"reproduce: {prov['reproduce']}" in text.output
    assert "create_model('tiny-world', pretrained=True)" in text.output
    assert "files verified" in text.output  # the sha256 of every file was checked against its record
    bad = runner.invoke(app, ["zoo", "nope"])
    assert bad.exit_code == 2 and "names with weights: tiny-world" in bad.output


def test_commands_take_zoo_names(tmp_path):
    """Commands that do something with the checkpoint path itself besides loading it (train --from names its
    run after it; eval writes it into its JSON) work with a zoo name; the rest load through
    resolve_checkpoint (checked above)."""
    suite = tmp_path / "one.yaml"
    suite.write_text(yaml.safe_dump({"world": {"num_scenes": 2, "frames_per_scene": 1, "lighting": "day"},
                                     "scenarios": {"day": {}}, "seeds": [9500, 9501], "frames": 1,
                                     "tasks": {"drivable": {"thresholds": {"miou": ">= 0.5"}}}}))
    res = runner.invoke(app, ["eval", "zoo:tiny-world", "--suite", str(suite), "-o", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["passed"]
    res = runner.invoke(app, ["train", "--from", "zoo:tiny-world", "--tasks", "drivable", "--freeze", "trunk,neck",
                              "--set", "train.steps=1", "--set", "train.batch_size=1", "--set", "train.in_memory=false",
                              "--set", "data.datasets.reference.frames=1", "--set", "eval.frames=1",
                              "--set", "train.threads=1", "--no-progress", "-o", str(tmp_path / "ft")])
    assert res.exit_code == 0, res.output
    _, ckpt = load_model(tmp_path / "ft")
    assert ckpt.state["step"] == 1
