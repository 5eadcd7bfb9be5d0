"""Synthetic CIFAR-style data (`data=synthetic`): for tests and smoke runs without any download."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resnet_repro.data.sources import ArraySplit, Dataset
from resnet_repro.errors import DataError


def make_synthetic(
    n_train: int, n_test: int, seed: int, num_classes: int = 10, size: int = 32
) -> Dataset:
    """Class-conditional uint8 images a small CNN learns well above chance in a few hundred steps.

    Each class has a fixed smooth random colour template (a 4x4 grid of colours, upsampled);
    an image is a randomly shifted window of its class template (up to +-4 px, so crop
    augmentation matters a little), blended 40/60 with a random smooth distractor image, plus
    Gaussian pixel noise. Deterministic by `seed`.
    """
    if n_train < 0 or n_test < 0 or num_classes < 1 or size < 1:
        raise DataError(
            f"bad synthetic data size: n_train={n_train}, n_test={n_test}, "
            f"num_classes={num_classes}, size={size}"
        )
    g = torch.Generator().manual_seed(seed)
    shift = 4
    big = size + 2 * shift
    # Low-frequency templates: colours on a 4x4 grid, bilinearly upsampled.
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g) * 200.0 + 28.0
    templates = F.interpolate(coarse, size=(big, big), mode="bilinear", align_corners=False)

    n = n_train + n_test
    # Balanced labels in each split (class counts differ by at most one), in random order.
    y = torch.cat([
        (torch.arange(k) % num_classes)[torch.randperm(k, generator=g)] for k in (n_train, n_test)
    ])
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    windows = templates.unfold(2, size, 1).unfold(3, size, 1)  # [C,3,2s+1,2s+1,S,S], a view
    x = windows[y, :, dy, dx]  # [N,3,S,S]: one copy, no per-image loop
    # A per-image smooth distractor of the same kind outweighs the class signal, so the task
    # takes some learning (a ResNet-20 is far above chance, not perfect, after 300 steps).
    distractor = torch.rand(n, 3, 4, 4, generator=g) * 200.0 + 28.0
    distractor = F.interpolate(distractor, size=(size, size), mode="bilinear", align_corners=False)
    x = 0.4 * x + 0.6 * distractor
    x += torch.randn(x.shape, generator=g) * 24.0
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    return Dataset(
        train=ArraySplit(x=x[:n_train].clone(), y=y[:n_train].clone()),
        test=ArraySplit(x=x[n_train:].clone(), y=y[n_train:].clone()),
        classes=[f"class{i}" for i in range(num_classes)],
    )
