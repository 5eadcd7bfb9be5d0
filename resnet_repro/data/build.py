"""Pick a data source by name and prepare the splits a run uses: train / val / test and the
per-pixel mean of the training split (§4.2). Shared by `train` and `eval`, so both see the
identical split for a seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from resnet_repro.data.pipeline import per_pixel_mean
from resnet_repro.data.sources import ArraySplit, load_cifar10, load_image_folder, make_synthetic, split_train_val
from resnet_repro.errors import ConfigError

DATA_SOURCES = ("cifar10", "cifar10_folder", "synthetic")


@dataclass(frozen=True)
class DataSettings:
    name: str
    root: str | None = None
    download: bool = True
    cache_dir: str | None = None
    val_size: int = 5000  # §4.2: 45k/5k train/val split
    pad: int = 4  # §4.2
    flip: bool = True  # §4.2
    n_train: int = 10000  # synthetic only
    n_test: int = 2000  # synthetic only
    num_classes: int = 10  # synthetic only


@dataclass
class PreparedData:
    train: ArraySplit
    val: ArraySplit  # empty when val_size == 0
    test: ArraySplit
    mean: torch.Tensor  # float32 [3,32,32]: the mean image of `train`, pixels in [0, 1]
    classes: list[str]


def prepare_data(settings: DataSettings, seed: int) -> PreparedData:
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
    train, val = split_train_val(ds.train, settings.val_size, seed)
    # §4.2 "per-pixel mean subtracted": the mean image of the images we train on.
    return PreparedData(train, val, ds.test, per_pixel_mean(train.x), ds.classes)
