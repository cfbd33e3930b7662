"""Class 3 of issue 22: integrity is checked wherever a checkpoint is loaded, not in one command.

``load_checkpoint`` compares every safetensors file with the sha256 ``state.json`` records
(``files_sha256``), and ``load_model``/``train --from`` refuse a tensor whose dtype is not the model's,
so a flipped byte or an edited header is refused by resume, ``--from``, eval, export, predict, mine,
merge and the feature cache alike.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
from faults_kit import cli, error_line, train_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydranet.checkpoint import CheckpointError, load_checkpoint, load_latest_valid, load_model, resolve_checkpoint


def weights(run: Path) -> Path:
    return resolve_checkpoint(run) / "model.safetensors"


def data_region(path: Path) -> tuple[int, int]:
    """``(start, end)`` byte offsets of the tensor data in a safetensors file (after its JSON header)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return 8 + n, len(raw)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def forge_dtype(path: Path) -> str:
    """Change one float32 tensor's header dtype to int32 (same size: the file still parses) and record the
    new file's sha256 in state.json, as a forger who knows the format would. Returns the tensor's name."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    text = raw[8:8 + n].decode()
    key = f'"{name}":{{"dtype":"F32"'
    assert key in text, text[:200]
    forged = raw[:8] + text.replace(key, f'"{name}":{{"dtype":"I32"', 1).encode() + raw[8 + n:]
    path.write_bytes(forged)
    state_file = path.parent / "state.json"
    state = json.loads(state_file.read_text())
    state["files_sha256"]["model.safetensors"] = hashlib.sha256(forged).hexdigest()
    state_file.write_text(json.dumps(state))
    return name


@pytest.fixture
def run(tmp_path, ckpt):
    return shutil.copytree(ckpt, tmp_path / "run")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0.0, 0.999))
def test_any_flipped_bit_in_tensor_data_is_refused(ckpt, tmp_path_factory, where):
    run = shutil.copytree(ckpt, tmp_path_factory.mktemp("flip") / "run")
    start, end = data_region(weights(run))
    flip(weights(run), start + int(where * (end - start)))
    with pytest.raises(CheckpointError, match=r"model.safetensors: sha256 differs from the one recorded"):
        load_checkpoint(run)


LOADERS = [
    ("eval {run} --suite {suite} -n 1", 2),
    ("export {run} -o {tmp}/m.onnx", 2),
    ("predict {run} --data synthetic --frames 1 -o {tmp}/p", 2),
    ("mine --model {run} --data synthetic --budget 1 -o {tmp}/q", 2),
    ("cache-features --ckpt {run} --data synthetic --frames 1 -o {tmp}/c", 2),
    ("merge {run} {run}:drivable -o {tmp}/m", 2),
    ("train --from {run} -c {cfg} -o {tmp}/t", 2),
]


@pytest.mark.parametrize("template,code", LOADERS, ids=[t.split()[0] for t, _ in LOADERS])
def test_every_loader_refuses_a_flipped_checkpoint(run, tmp_path, template, code):
    start, end = data_region(weights(run))
    flip(weights(run), (start + end) // 2)
    suite = tmp_path / "s.yaml"
    suite.write_text("scenarios: {a: {}}\nseeds: [0, 1]\nframes: 1\ntasks: {drivable: {}}\n")
    res = cli(*template.format(run=run, tmp=tmp_path, suite=suite, cfg=train_config(tmp_path / "c.yaml")).split())
    assert res.exit_code == code, res.output
    assert "sha256 differs" in " ".join(res.output.split())


def test_a_forged_dtype_is_never_reinterpreted(run, tmp_path):
    name = forge_dtype(weights(run))
    load_checkpoint(run)  # the bytes match the (forged) record: only the dtype check can catch it
    with pytest.raises(CheckpointError, match=rf"tensor {name} is torch.int32, the model needs torch.float32"):
        load_model(run)
    res = cli("export", run, "-o", tmp_path / "m.onnx", code=2)
    assert "torch.int32" in " ".join(res.output.split())
    res = cli("train", "--from", run, "-c", train_config(tmp_path / "c.yaml"), "-o", tmp_path / "t", code=2)
    assert "is torch.int32, the model's is torch.float32" in error_line(res)


def test_a_checkpoint_without_file_hashes_is_still_checked_by_its_trunk_hash(run):
    state_file = resolve_checkpoint(run) / "state.json"
    state = json.loads(state_file.read_text())
    del state["files_sha256"]  # written by an older hydranet
    state_file.write_text(json.dumps(state))
    load_model(run)
    start, end = data_region(weights(run))
    raw = weights(run).read_bytes()
    header = json.loads(raw[8:start])
    trunk = next(v for k, v in header.items() if k.startswith("trunk.") and v["dtype"] == "F32")
    flip(weights(run), start + trunk["data_offsets"][0])
    with pytest.raises(CheckpointError, match="trunk hash differs"):
        load_checkpoint(run)


def test_resume_skips_a_tampered_newest_checkpoint_and_says_so(tmp_path):
    from hydranet.train.config import load_config
    from hydranet.train.run import run_training

    cfg = load_config(train_config(tmp_path / "c.yaml", steps=2, ckpt_every=1, keep_checkpoints=3))
    out = tmp_path / "run"
    run_training(cfg, out, progress=False)
    newest = resolve_checkpoint(out)
    start, end = data_region(newest / "model.safetensors")
    flip(newest / "model.safetensors", end - 1)
    ckpt, note = load_latest_valid(out / "checkpoints", quarantine=False)
    assert ckpt is not None and ckpt.path != newest and "sha256 differs" in note
