"""Batch norm whose training statistics are computed per group of images: the paper's CIFAR BN
saw 64 of the 128 images of a batch (two GPUs, §4.2), and `model.bn_group_size` reproduces it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_repro.config.archs import check_group_size as _check_group_size


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per group of `group_size` images.

    The paper's CIFAR batch of 128 was split over two GPUs (§4.2), so each BN layer saw 64
    images. With `group_size=64` and a batch of 128, this layer normalises each half of the
    batch with its own mean and variance, as two GPUs did. The running statistics are updated
    with the average of the groups' statistics. With `group_size=None` or a group equal to the
    batch it is ordinary BN; a training batch that is not a multiple of the group is refused
    (the config is checked first, so this is a bug guard). Eval mode uses the running
    statistics at any batch size. Same parameters and buffers as `nn.BatchNorm2d`, so state dicts
    are interchangeable.
    """

    def __init__(self, num_features: int, group_size: int | None = None, **kwargs) -> None:
        _check_group_size(group_size)
        super().__init__(num_features, **kwargs)
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        g = self.group_size
        if not self.training or g is None:
            return super().forward(x)  # eval: running statistics, any batch size
        if n % g:  # includes n < g: a group of fewer images would be other statistics
            raise ValueError(f"training batch of {n} is not a multiple of bn_group_size={g}")
        if n == g:
            return super().forward(x)
        # Each group is a contiguous chunk of the batch (a view in any memory format), normalised
        # by the native batch-norm kernel; each updates a copy of the running statistics, and
        # the copies are averaged.
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
            factor = 1.0 / float(self.num_batches_tracked + 1)
        else:
            factor = self.momentum
        outs, means, variances = [], [], []
        for chunk in x.split(g):
            rm = self.running_mean.clone() if self.track_running_stats else None
            rv = self.running_var.clone() if self.track_running_stats else None
            outs.append(F.batch_norm(chunk, rm, rv, self.weight, self.bias, True, factor, self.eps))
            means.append(rm)
            variances.append(rv)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(torch.stack(means).mean(0))
                self.running_var.copy_(torch.stack(variances).mean(0))
                self.num_batches_tracked.add_(1)
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"


NormFactory = Callable[[int], nn.Module]


def _norm_factory(bn_group_size: int | None) -> NormFactory:
    if bn_group_size is None:
        return nn.BatchNorm2d
    return lambda c: GroupedBatchNorm2d(c, group_size=bn_group_size)
