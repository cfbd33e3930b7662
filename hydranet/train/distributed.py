"""torchrun integration: process-group set-up from the environment, collectives, clean shutdown.

Launch with the standard engine, never a home-made launcher::

    torchrun --nproc-per-node 2 -m hydranet train --config configs/demo.yaml

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. We use
NCCL when CUDA is available and gloo otherwise, and always pass a timeout to
``init_process_group`` so a dead peer turns into an error instead of a hang.

Gradients are reduced by ``all_reduce_grads`` once per optimizer step (after gradient
accumulation), not by ``DistributedDataParallel``'s reducer: the loss-balancing strategies must see
*per-task* gradients reduced across ranks before they combine them (see balancing.py), and one code
path for every strategy keeps ranks identical by construction. It is the same arithmetic as DDP
with ``no_sync()`` on every micro-step and one bucketed all-reduce at the end.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


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


def select_device(choice: str, info_local_rank: int | None = None) -> torch.device:
    """``auto`` -> this rank's GPU if CUDA is available, else the CPU."""
    local = int(os.environ.get("LOCAL_RANK", "0")) if info_local_rank is None else info_local_rank
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but CUDA is not available")
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


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
    used) keeps ``grad=None``, so AdamW leaves it alone exactly as in a single process: no weight
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
