"""Precise BN statistics: the BN running mean/var recomputed as true averages over training
batches, after training, instead of the moving average kept during training.

The authors did this for their released ImageNet models (the notes at
github.com/KaimingHe/deep-residual-networks: the mean and variance were "computed as an
average" over many training batches after training, and the moving average gives different
results); the paper itself does not describe it.

What is averaged: each batch's (or, with GroupedBatchNorm2d, each group's) mean and unbiased
variance, with equal weight, which is what BN's cumulative mode (momentum=None) computes. That
is the population estimate of the statistics training normalised with (as in Caffe and in
Detectron's precise BN), not the variance of all images pooled, which would add the spread of
the batch means.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

_BN = nn.modules.batchnorm._BatchNorm


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Tensor | tuple[Tensor, ...]], num_batches: int) -> int:
    """Replace every BN layer's running mean/var by the average over `num_batches` batches.

    `batches` yields images, or tuples whose first item is the images (training batches with
    training augmentation; a batch a multiple of the BN group size with grouped BN). The model
    runs forward in train mode without gradients: no parameter changes, and the model is left
    in the mode it was in, with `num_batches_tracked` as before. Returns the batches used
    (fewer than asked if `batches` ran out; 0 leaves the statistics as they were)."""
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if num_batches < 1 or not bns:
        return 0
    saved = [(m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
             for m in bns]
    modes = {m: m.training for m in model.modules()}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the k-th batch enters with weight 1/k
    model.train()
    used, complete = 0, False
    try:
        for batch in batches:
            if used == num_batches:
                break
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            used += 1
        complete = True
    finally:
        for m, (momentum, tracked, mean, var) in zip(bns, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
            if used == 0 or not complete:  # nothing seen, or failed: keep the old statistics
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        for m, training in modes.items():
            m.train(training)
    return used
