"""Training precision: which autocast dtype a device runs fast, decided from what the device has.

``train.precision``:

- ``fp32``: no autocast.
- ``bf16``: bf16 autocast on the device (CUDA or CPU); refused on a CPU without native bf16
  arithmetic, where oneDNN emulates it and a step is several times slower than fp32.
- ``auto``: bf16 where the hardware computes it natively — CUDA devices that report bf16 support
  (Ampere and later), CPUs with AVX512-BF16 or AMX-BF16 — fp32 otherwise.

CPU detection reads the kernel's feature flags (``/proc/cpuinfo``: ``avx512_bf16``, ``amx_bf16``),
not the CPU's name: the same model number ships with and without these units in VMs. Where
``/proc/cpuinfo`` is missing (macOS, Windows) the CPU is taken to lack them, so ``auto`` stays fp32.

Under autocast, matmuls and convolutions run in bf16 while losses, BatchNorm statistics, the BEV
fusion's projection and sampling coordinates (``hydranet.model.fusion``) and the metrics stay fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path

import torch

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty when the file is absent or unreadable)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 dot products or AMX-BF16 tiles)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in _CPU_BF16_FLAGS)


def device_has_fast_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 natively: a CUDA GPU reporting bf16 support (Ampere and later) or a
    CPU with AVX512-BF16/AMX-BF16 flags; False for any other device type."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def use_bf16(precision: str, device: torch.device) -> bool:
    """Resolve ``train.precision`` for ``device``. Raises ``ValueError`` for ``bf16`` on a device
    without native bf16 and for unknown values."""
    if precision == "fp32":
        return False
    if precision == "auto":
        return device_has_fast_bf16(device)
    if precision == "bf16":
        if not device_has_fast_bf16(device):
            raise ValueError(f"train.precision bf16: device {device} has no native bf16 arithmetic "
                             f"(CPU flags {list(_CPU_BF16_FLAGS)} absent, or a CUDA GPU older than Ampere), "
                             "where bf16 is emulated and slower than fp32: use fp32 or auto")
        return True
    raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
