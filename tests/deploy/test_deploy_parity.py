"""ONNX Runtime vs PyTorch eager on held-out synthetic frames: max |diff| <= 1e-3 per output (fp32)."""

import copy
import math
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.deploy import DeployedModel, export_onnx
from hydranet.deploy.heldout import heldout_batches
from hydranet.deploy.verify import PARITY_TOLERANCE, max_abs_diff, parity


def test_parity_every_output(model, exported):
    dm = DeployedModel(exported, threads=1)
    diffs = parity(model, dm, frames=3)
    assert set(diffs) == set(dm.manifest.output_names())
    bad = {k: v for k, v in diffs.items() if not v <= PARITY_TOLERANCE}
    assert not bad, f"outputs beyond {PARITY_TOLERANCE}: {bad}"


def test_parity_detects_a_wrong_graph(model, exported, tmp_path):
    """The check can fail: a graph from other weights is far off on the same frames."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.trunk.stem[0].weight.mul_(3.0)
    export_onnx(other, tmp_path / "other.onnx", tasks=["depth", "objects3d"])
    diffs = parity(model, DeployedModel(tmp_path / "other.onnx", threads=1), frames=1)
    assert min(diffs.values()) > 5 * PARITY_TOLERANCE, diffs


def _nan_heatmap(monkeypatch, value=float("nan")):
    """``DeployedModel.run`` with every value of ``detection2d.heatmap`` replaced by ``value``."""
    run = DeployedModel.run

    def broken(self, *args, **kwargs):
        out, extra = run(self, *args, **kwargs)
        if "detection2d" in out:
            out["detection2d"]["heatmap"] = torch.full_like(out["detection2d"]["heatmap"], value)
        return out, extra

    monkeypatch.setattr(DeployedModel, "run", broken)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_parity_fails_a_non_finite_output(model, exported, monkeypatch, value):
    """A NaN (or inf) output passed: the worst diff started at 0.0 and max(0.0, nan) is 0.0."""
    _nan_heatmap(monkeypatch, value)
    diffs = parity(model, DeployedModel(exported, threads=1), frames=2)
    bad = {k: v for k, v in diffs.items() if not v <= PARITY_TOLERANCE}
    assert list(bad) == ["detection2d.heatmap"], diffs
    assert (math.isnan(bad["detection2d.heatmap"]) if math.isnan(value) else bad["detection2d.heatmap"] == math.inf)


def test_max_abs_diff_non_finite_and_finite():
    nan, inf = float("nan"), float("inf")
    t = torch.tensor
    assert max_abs_diff(t([1.0, 2.0]), t([1.0, 2.0005])) == pytest.approx(5e-4, abs=1e-6)  # finite: unchanged
    assert math.isnan(max_abs_diff(t([1.0, nan]), t([1.0, 2.0])))
    assert math.isnan(max_abs_diff(t([1.0, 2.0]), t([nan, 2.0])))  # eager NaN, graph finite: a failure too
    assert max_abs_diff(t([inf, 0.0]), t([1.0, 0.0])) == inf
    assert max_abs_diff(t([inf, 0.0]), t([-inf, 0.0])) == inf
    assert max_abs_diff(t([inf, nan, 1.0]), t([inf, nan, 1.0])) == 0.0  # the same on both sides: no difference


def test_cli_export_verify_fails_a_nan_output_naming_it(checkpoint, tmp_path, monkeypatch):
    _nan_heatmap(monkeypatch)
    r = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "n.onnx"), "--tasks",
                                 "depth,detection2d", "--verify", "--verify-frames", "1", "--threads", "1"])
    assert r.exit_code == 1, r.output
    assert "parity ok" not in r.output
    failed = [line for line in r.output.splitlines() if "parity failed" in line]
    assert failed and "detection2d.heatmap nan" in failed[0] and "depth" not in failed[0], r.output


def test_batched_graph_pads_and_matches_eager(model, tmp_path):
    """A batch-2 graph runs 3 frames (last chunk padded); every frame equals eager."""
    m = export_onnx(model, tmp_path / "b2.onnx", batch=2, tasks=["drivable", "objects3d"])
    assert m.inputs[0].shape[0] == 2
    dm = DeployedModel(tmp_path / "b2.onnx", threads=1)
    batch = next(heldout_batches(m, 3, 3))
    got, _ = dm.run(batch)
    with torch.no_grad():
        ref = model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=["drivable", "objects3d"])
    for task, outs in ref.items():
        for key, value in outs.items():
            assert got[task][key].shape == value.shape
            np.testing.assert_allclose(got[task][key].numpy(), value.numpy(), atol=PARITY_TOLERANCE, rtol=0)


def test_deployed_model_rejects_wrong_inputs(exported):
    dm = DeployedModel(exported, threads=1)
    batch = next(heldout_batches(dm.manifest, 1, 1))
    batch.images = batch.images[..., :32, :64].contiguous()
    with pytest.raises(ValueError, match="8 cameras of \\(64, 128\\)"):
        dm.run(batch)
    with pytest.raises(ValueError, match="'images' must be uint8"):
        dm.run_arrays(np.zeros((1, 8, 3, 64, 128), np.float32), np.zeros((1, 8, 3, 3), np.float32),
                      np.zeros((1, 8, 4, 4), np.float32))
    # K in another resolution's pixels: refused as the eager model refuses it (else the two would disagree),
    # except for a camera marked failed.
    batch = next(heldout_batches(dm.manifest, 1, 1))
    batch.intrinsics[0, 2, :2] *= 3.0
    with pytest.raises(ValueError, match=r"\.onnx: intrinsics\[0, 2\] puts the principal point .* where no K of the "
                                         r"\(H, W\) = \(64, 128\) input puts it"):
        dm.run(batch)
    dead = torch.ones(1, 8, dtype=torch.bool)
    dead[0, 2] = False
    dm.run(batch, camera_valid=dead)
    # A non-finite K or T is refused as eager refuses it, a failed camera's too.
    batch.intrinsics[0, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\.onnx: intrinsics holds a non-finite value"):
        dm.run(batch, camera_valid=dead)


def test_cli_export_verify_prints_per_output_diff(checkpoint, tmp_path):
    r = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "v.onnx"), "--tasks",
                                 "depth,bev_semantic", "--verify", "--verify-frames", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "parity ok" in r.output
    rows = re.findall(r"(depth\.log_depth|bev_semantic\.logits)\s*│\s*([0-9.e+-]+)", r.output)
    assert {name for name, _ in rows} == {"depth.log_depth", "bev_semantic.logits"}
    assert all(float(v) <= PARITY_TOLERANCE for _, v in rows)
