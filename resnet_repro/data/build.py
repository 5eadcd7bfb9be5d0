"""A data source by name: its typed settings (`data.*`), the CIFAR-style splits (train, the
held-out part of train, test, and the mean to subtract) and ImageNet's normalisation and
identity. Shared by `train`, `eval`, `bench` and `analyze`, so all see the identical split.

CIFAR-style sources (cifar10, cifar10_folder, synthetic) keep every split in memory as uint8
tensors (pipeline.py). ImageNet reads JPEG folders (imagenet.py). The training stream and the
evaluation a run uses are assembled above this package, in `resnet_repro.training.inputs`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from resnet_repro.data.settings import DATA_SOURCES, NORMS, DataSettings
from resnet_repro.data.imagenet_stats import IMAGENET_MEAN, IMAGENET_STD
from resnet_repro.data.pipeline import per_pixel_mean
from resnet_repro.data.sources import (
    ArraySplit,
    fingerprint,
    load_cifar10,
    load_image_folder,
    split_train_val,
)
from resnet_repro.data.synthetic import make_synthetic
from resnet_repro.errors import ConfigError




# -- CIFAR-style ------------------------------------------------------------------------------


@dataclass
class CifarSplits:
    train: ArraySplit
    val: ArraySplit  # empty when val_size == 0
    test: ArraySplit
    mean: torch.Tensor  # [3,32,32] per-pixel (§4.2) or [3,1,1] per-channel
    std: torch.Tensor | None
    classes: list[str]
    fingerprint: str


def load_cifar_splits(settings: DataSettings, seed: int) -> CifarSplits:
    if settings.name == "cifar10":
        ds = load_cifar10(settings.root or "data/cifar10", download=settings.download)
    elif settings.name == "cifar10_folder":
        if not settings.root:
            raise ConfigError("data=cifar10_folder needs data.root=<image folder or .tar/.tar.gz>")
        ds = load_image_folder(settings.root, cache_dir=settings.cache_dir)
    elif settings.name == "synthetic":
        ds = make_synthetic(settings.n_train, settings.n_test, seed=seed, num_classes=settings.num_classes)
    else:
        raise ConfigError(f"unknown data {settings.name!r}; choose from: {', '.join(DATA_SOURCES)}")
    if settings.norm not in NORMS:
        raise ConfigError(f"data.norm must be one of {', '.join(NORMS)}, got {settings.norm!r}")
    ident = fingerprint(ds.train, ds.test, classes=ds.classes)
    # The holdout is drawn with a seed taken from the data, not the run: every seed holds out
    # the same images (issue: seeds differ only in initialisation and order).
    train, val = split_train_val(ds.train, settings.val_size, seed=int(ident[:8], 16))
    if settings.norm == "per_pixel":
        # §4.2 "per-pixel mean subtracted": the mean image of the images we train on.
        mean, std = per_pixel_mean(train.x), None
    else:
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return CifarSplits(train, val, ds.test, mean, std, ds.classes, ident)


# -- ImageNet ---------------------------------------------------------------------------------


def names_fingerprint(root: Path, files: list[str]) -> str:
    """ImageNet's identity without reading 1.3M files: every file's path below `root`, sorted
    (the same data set at another mount point has the same fingerprint)."""
    prefix = str(root) + os.sep
    names = sorted(f[len(prefix):] if f.startswith(prefix) else f for f in files)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def imagenet_norm(norm: str) -> str:
    """data.norm for ImageNet: `mean` (per-channel mean only: the paper's mean subtraction, the
    default for training from scratch) or `imagenet` (per-channel mean and std: torchvision's
    convention, for runs that start from torchvision's weights)."""
    modes = {"imagenet": "mean_std", "mean": "mean"}
    if norm not in modes:
        raise ConfigError(f"data.norm for ImageNet must be imagenet or mean, got {norm!r}")
    return modes[norm]
