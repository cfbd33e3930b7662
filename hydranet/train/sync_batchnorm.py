"""``train.sync_batchnorm``: BatchNorm statistics over the global batch, on every device.

Without it each rank normalises with the mean and variance of its own micro-batch, so N ranks at
batch B/N do not compute what one process at batch B computes (the statistics of smaller batches
differ; measured on the tiny HydraNet in tests/train/test_train_sync_batchnorm.py). With it every
BatchNorm layer in training mode all-reduces the per-channel sums, so the forward pass and the
gradients equal the single-process ones up to float rounding.

On CUDA (and other accelerators torch supports) this is ``torch.nn.SyncBatchNorm``. torch's
implementation refuses CPU tensors (and ``DistributedDataParallel`` refuses a CPU module holding it),
so on CPU (gloo) the same statistics are computed here, by a ``_BatchNorm`` that is not a
``torch.nn.SyncBatchNorm``, with autograd-aware all-reduces
(``torch.distributed.nn.functional.all_reduce``): mean first, then the
variance around it (two passes, like ``F.batch_norm``, not ``E[x²] - E[x]²``). The backward of an
all-reduce sums the gradients of every rank's loss, which the trainer's gradient averaging then
turns into the gradient of the global mean loss — the same as torch's SyncBatchNorm under DDP.
Running statistics use the unbiased global variance, as ``nn.BatchNorm`` does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_TORCH_DEVICES = ("cuda", "hpu", "xpu")


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch for CPU tensors (gloo); input ``[B, C, ...]`` of any rank >= 2.

    One process (or eval mode): plain BatchNorm, bit-identical. Raises ``ValueError`` for an
    accelerator tensor (``convert_sync_batchnorm(model, device)`` gives torch's layer there)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group: dist.ProcessGroup | None = None  # the whole world, as torch's default

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm: expected input of at least 2 dimensions [B, C, ...], got {input.dim()}")

    def forward(self, input: Tensor) -> Tensor:
        """BatchNorm of ``input`` ``[B, C, ...]`` with mean and (biased) variance over the global batch of all
        ranks when training under a process group; plain BatchNorm in one process. The result has ``input``'s
        dtype (statistics in fp32). Raises ``ValueError`` on CPU with ``momentum=None`` and for an accelerator
        tensor."""
        if input.device.type in _TORCH_DEVICES:
            raise ValueError(f"hydranet's CPU SyncBatchNorm got a {input.device.type} tensor: convert the model with "
                             "convert_sync_batchnorm(model, device) to use torch.nn.SyncBatchNorm there")
        synced = (self.training and dist.is_available() and dist.is_initialized()
                  and dist.get_world_size(self.process_group or dist.group.WORLD) > 1)
        if not synced:
            return super().forward(input)
        if self.momentum is None:
            raise ValueError("SyncBatchNorm on CPU needs a fixed momentum (cumulative averaging is not supported)")
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        group = self.process_group or dist.group.WORLD
        total = all_reduce(torch.cat([x.sum(dims), count]), group=group)  # autograd: grads are summed back
        n = total[-1]
        mean = total[:-1] / n
        shape = [1, -1] + [1] * (input.dim() - 2)
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims), group=group) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)).clamp(min=0) * m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a synchronised one for ``device`` (torch's
    ``nn.SyncBatchNorm`` on CUDA and other accelerators, this file's ``SyncBatchNorm`` on CPU), keeping
    its parameters (the same ``Parameter`` objects), buffers and train/eval mode; state-dict keys are
    unchanged."""
    if torch.device(device).type in _TORCH_DEVICES:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child))
    return out
