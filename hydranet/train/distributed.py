"""torchrun integration: process-group set-up from the environment, collectives, clean shutdown.

Launch with the standard engine, never a home-made launcher::

    torchrun --nproc-per-node 2 -m hydranet train --config configs/demo.yaml

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. We use
NCCL when CUDA is available and gloo otherwise, and always pass a timeout to
``init_process_group`` so a dead peer turns into an error instead of a hang.

Gradients are reduced the way PyTorch users know: for the loss-balancing strategies that only
need the gradient of a weighted sum of task losses (``static``, ``uncertainty``) the model is wrapped
in ``DistributedDataParallel`` (``wrap_ddp``) and the accumulation micro-steps run under
``no_sync()``, so DDP's bucketed all-reduce overlaps the last micro-step's backward pass.
PCGrad and GradNorm cannot use DDP's reducer: they are non-linear in the *per-task* gradients, which
they take with ``torch.autograd.grad`` (DDP's hooks never see those) and must average across ranks
before combining them (``hydranet/train/balancing/`` explains why); they use the explicit ``all_reduce_grads`` and
``all_reduce_mean_`` below, once per optimizer step.
"""

from __future__ import annotations

import datetime
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the torchrun job: global ``rank``, ``world_size``, ``local_rank`` (GPU index on
    its node); the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one rank (collectives then communicate)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs and writes checkpoints."""
        return self.rank == 0


def init_distributed(device: torch.device, timeout_s: float = 300.0) -> DistInfo:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


class DeviceError(ValueError):
    """A device this machine cannot run on (an unknown name, CUDA asked for where there is none): bad input, exit 2.
    The message names the option or field it came from (``--device``, ``train.device``), why, and what runs here."""


def _usable_here() -> str:
    """The device choices that run on this machine, for a refusal's message."""
    usable = ["auto", "cpu"]
    if torch.cuda.is_available():
        usable += ["cuda", f"cuda:0..{torch.cuda.device_count() - 1}"]
    if torch.backends.mps.is_available():
        usable.append("mps")
    return ", ".join(usable)


def _cuda_unusable(device: torch.device) -> str | None:
    """Why ``device`` (a ``cuda`` one) cannot run here; None when it can."""
    if not torch.backends.cuda.is_built():
        return f"cuda requested but this torch build ({torch.__version__}) has no CUDA"
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return "no CUDA device visible" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else
                                           " (no GPU, or no driver)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"{count} CUDA device(s) visible (cuda:0..cuda:{count - 1})"
    return None


def resolve_device(choice: str | None, option: str = "--device", index: int = 0) -> torch.device:
    """The one reading of a device choice (every command's ``--device``, ``train.device``), checked to run here
    before any work: ``None``/``auto`` -> GPU ``index`` if CUDA is available, else the CPU; ``cpu``; ``cuda``
    (GPU ``index``) or ``cuda:N``; ``mps``. Anything else, or a device this machine lacks, is a ``DeviceError``
    naming ``option``, why, and the choices that run here."""
    text = "auto" if choice is None else str(choice).strip()
    if text == "auto":
        return torch.device("cuda", index) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):  # torch lists its ~20 device types; only a few run hydranet
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{option} {text!r}: not a device hydranet runs on; expected auto, cpu, cuda, cuda:N or "
                          f"mps (usable here: {_usable_here()})")
    if device.type == "cuda":
        why = _cuda_unusable(device)
        if why is not None:
            raise DeviceError(f"{option} {text!r}: {why}; usable here: {_usable_here()}")
        return device if device.index is not None else torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{option} {text!r}: this machine has no MPS (Apple GPU) device; usable here: "
                          f"{_usable_here()}")
    return device


def select_device(choice: str, info_local_rank: int | None = None) -> torch.device:
    """``train.device`` (``resolve_device``) on this rank's GPU: ``auto`` -> the GPU ``LOCAL_RANK`` if CUDA is
    available, else the CPU."""
    local = int(os.environ.get("LOCAL_RANK", "0")) if info_local_rank is None else info_local_rank
    device = resolve_device(choice, "train.device", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def shutdown(clean: bool = True) -> None:
    """Leave the process group. ``clean``: wait for the peers first (a rank tearing gloo down while
    a peer is still in a collective breaks the peer); after an error, do not wait on peers that
    may be gone."""
    if dist.is_available() and dist.is_initialized():
        try:
            if clean:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_process(code: int = 0) -> None:
    """End a torchrun worker without the interpreter's teardown.

    With gloo, torch 2.x can abort a rank at interpreter exit even after a clean
    ``destroy_process_group`` (a C++ worker thread destroyed while joinable: "terminate called
    without an active exception", SIGABRT, which torchrun reports as a failed run). Everything is
    flushed and closed by now, so skipping teardown loses nothing.
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_torchrun_worker(code: int = 0) -> None:
    """Under torchrun (``WORLD_SIZE`` > 1) end this worker with ``exit_process(code)``; return otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_process(code)


def barrier() -> None:
    """Wait for every rank (``dist.barrier``); a no-op without a process group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean_(tensors: Iterable[Tensor]) -> None:
    """In-place average across ranks of a list of tensors, as one flat bucket per dtype."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    world = dist.get_world_size()
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum across ranks (returns a new tensor; identity on one process)."""
    t = t.clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def all_reduce_grads(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks.

    A parameter no rank computed a gradient for (a head or the fusion module no task of this step
    used) keeps ``grad=None``, so the optimizer leaves it alone exactly as in a single process: no weight
    decay, no momentum drift. Where only some ranks have a gradient, the others contribute zeros.
    """
    params = list(params)
    used = torch.tensor([float(p.grad is not None) for p in params],
                        device=params[0].device if params else "cpu")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_mean_([p.grad for p in params] + [used])
    for p, u in zip(params, used.tolist(), strict=True):
        if u == 0:
            p.grad = None


def broadcast_module(module: nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Make every rank start from rank 0's weights (and keep BatchNorm statistics in step)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    for t in tensors:
        dist.broadcast(t.data, src)


def all_gather_tensor(t: Tensor) -> list[Tensor]:
    """Every rank's copy of an equally-shaped tensor (a list of one on a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [t]
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out


class _LossStep(nn.Module):
    """The model, with a ``forward`` that runs any loss computation: ``_LossStep(model)(fn, *args)`` is
    ``fn(*args)``.

    ``DistributedDataParallel`` prepares its gradient reducer (and finds the parameters a sub-graph
    step leaves unused) only inside its own ``forward``; the trainer computes losses through
    ``model.forward``, ``model.forward_features`` (cached features) or a clip of
    ``model.forward_step`` calls, so the whole computation runs as one DDP forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def wrap_ddp(model: nn.Module) -> DistributedDataParallel:
    """``DistributedDataParallel`` around ``_LossStep(model)``; call it as ``ddp(loss_fn, *args)``.

    - ``find_unused_parameters=True``: sub-graph training leaves parameters unused in a micro-step
      (heads of tasks the scheduler did not pick, fusion when no BEV task ran); a parameter unused
      on every rank over the whole accumulation keeps ``grad=None``, so the optimizer leaves it alone as in
      one process. Frozen modules (``requires_grad=False``) are not registered at all.
    - ``forward_sync_buffers=False``: BatchNorm statistics are broadcast from rank 0 once per
      optimizer step by the trainer (after a skipped step restored them), not at every micro-step's
      forward.
    - ``device_ids=None``: batches are already on the device; DDP does not move (rebuild) them.
    """
    # torch >= 2.13 names the option forward_sync_buffers (broadcast_buffers is deprecated there); pyproject allows 2.4.
    new_name = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = {"forward_sync_buffers" if new_name else "broadcast_buffers": False}
    return DistributedDataParallel(_LossStep(model), device_ids=None, find_unused_parameters=True, **no_buffer_sync)


def flush_ddp(ddp: DistributedDataParallel, params: list[nn.Parameter]) -> None:
    """All-reduce the gradients accumulated under ``no_sync()`` when no synchronised backward followed.

    Needed when a step's last micro-batch ran no backward pass (no labelled sample on any rank, or a
    non-finite loss): DDP would otherwise carry this step's record of used parameters into the next
    one and fail there on a parameter whose gradient was reset. A backward pass of ``0 · Σ p`` over
    the parameters holding a gradient adds nothing to any gradient, and makes DDP average them exactly
    as the last micro-step would have (parameters no rank touched keep ``grad=None``). Collective:
    every rank calls it together (the trainer's decisions are all-reduced)."""
    touched = [p for p in params if p.grad is not None] or params[:1]
    ddp(lambda: sum((p * 0).sum() for p in touched)).backward()
