"""train.precision: bf16 is chosen from what the device has, and precision-critical parts stay fp32."""

from __future__ import annotations

import pytest
import torch

from hydranet.model.fusion import project_to_cameras
from hydranet.setup import default_rig
from hydranet.train import precision as P


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    flags = P.cpu_flags.__wrapped__(str(info))
    assert "avx512_bf16" in flags and P.cpu_has_fast_bf16(flags)
    assert not P.cpu_has_fast_bf16(frozenset({"avx2", "avx512f"}))
    assert P.cpu_has_fast_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert P.cpu_flags.__wrapped__(str(tmp_path / "absent")) == frozenset()


def test_precision_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert P.use_bf16("fp32", cpu) is False
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda flags=None: True)
    assert P.use_bf16("auto", cpu) is True and P.use_bf16("bf16", cpu) is True
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda flags=None: False)
    assert P.use_bf16("auto", cpu) is False
    with pytest.raises(ValueError, match="no native bf16"):
        P.use_bf16("bf16", cpu)
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        P.use_bf16("fp16", cpu)


def test_fusion_projection_stays_fp32_under_bf16_autocast():
    rig = default_rig((96, 192))
    K, T = rig.intrinsics()[None], rig.extrinsics()[None]
    points = torch.tensor([[20.0, 3.0, 0.5], [7.3, -1.1, 5.3], [31.0, 12.0, 1.0]])
    ref, vis = project_to_cameras(points, K, T, (96, 192), 0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, vis_bf16 = project_to_cameras(points, K, T, (96, 192), 0.3)
    assert got.dtype == torch.float32
    assert torch.equal(vis, vis_bf16)
    torch.testing.assert_close(got, ref)  # exact fp32, not bf16-rounded (~1/256 of the image width)
