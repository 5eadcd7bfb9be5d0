"""One training step and one evaluation: take objects, return tensors or plain dicts.

The step returns its loss and error count as device tensors, so the loop can accumulate them
without a host synchronisation every iteration; the loop reads them at log steps.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class CompiledWithFallback(nn.Module):
    """A `torch.compile`d module that falls back to eager, with a warning, if compiling fails
    (compilation happens at the first call, so that is where a failure shows)."""

    def __init__(self, eager: nn.Module, mode: str) -> None:
        super().__init__()
        self.eager = eager
        self.compiled = torch.compile(eager, mode=mode)
        self.mode = mode
        self.failed = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.failed:
            try:
                return self.compiled(x)
            except Exception as e:  # any backend failure: keep training, eagerly
                self.failed = True
                warnings.warn(f"torch.compile(mode={self.mode!r}) failed, running eagerly: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", stacklevel=2)
        return self.eager(x)


def maybe_compile(model: nn.Module, mode: str | None) -> nn.Module:
    return model if mode is None else CompiledWithFallback(model, mode)


def make_sgd(params, *, lr: float, momentum: float, weight_decay: float, nesterov: bool, device: torch.device):
    """SGD as the paper's, with the fused CUDA kernel where torch has it (one launch for all
    parameters instead of several per tensor), else the foreach implementation."""
    kwargs = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    params = list(params)
    if device.type == "cuda":
        try:
            return torch.optim.SGD(params, fused=True, **kwargs)
        except (TypeError, RuntimeError):
            pass
    return torch.optim.SGD(params, foreach=True, **kwargs)


def set_tf32(enabled: bool) -> None:
    """CUDA: let fp32 convolutions and matmuls use TF32 tensor cores (10-bit significand
    products, fp32 accumulation; PyTorch's default for cuDNN convolutions) or keep strict fp32.
    Through `fp32_precision` where torch has it (the `allow_tf32` setters warn from torch 2.9,
    and reading them after the new API was used raises)."""
    if _NEW_TF32_API:
        mode = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether fp32 convolutions and matmuls may use TF32 (both, as `set_tf32` sets them)."""
    if _NEW_TF32_API:
        return torch.backends.cuda.matmul.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
    return bool(torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32)


_NEW_TF32_API = hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def precision(device: torch.device, *, amp: bool, tf32: bool) -> str:
    """What a number was computed in: "bf16" (autocast), "tf32" or "fp32"."""
    if amp:
        return "bf16"
    return "tf32" if tf32 and device.type == "cuda" else "fp32"


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled (a no-op context otherwise)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    lr: float,
    amp: bool = False,
    channels_last: bool = False,
    skip_nonfinite: bool = False,
) -> tuple[Tensor, Tensor]:
    """One SGD step at learning rate `lr` on the batch (x, y), optionally under bf16 autocast
    and in channels_last layout (the weights and the optimizer stay fp32).

    `skip_nonfinite`: do not apply a step whose gradients are not finite (one host sync per
    step; the gradients are already averaged over processes, so every process decides alike).

    Returns (summed cross-entropy over the batch, number of wrong top-1 predictions), both
    detached device tensors; the loss is nan when the step was skipped."""
    set_lr(optimizer, lr)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if skip_nonfinite:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not bool(torch.isfinite(torch.stack([g.norm() for g in grads]).sum())):
            optimizer.zero_grad(set_to_none=True)
            return torch.full_like(loss.detach(), float("nan")), torch.zeros((), dtype=torch.long, device=y.device)
    optimizer.step()
    with torch.no_grad():
        wrong = (logits.argmax(1) != y).sum()
    return loss.detach() * y.shape[0], wrong
