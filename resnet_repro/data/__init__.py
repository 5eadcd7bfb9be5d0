"""Data: CIFAR-style sources (torchvision CIFAR-10, image folders, synthetic) and the in-memory
tensor pipeline that augments batches on the training device (§4.2); ImageNet folders with the
§3.4 augmentation (imagenet.py, device_input.py). Imports nothing above this package."""

from __future__ import annotations

from resnet_repro.data.pipeline import (
    TrainStream,
    eval_batches,
    normalize,
    per_pixel_mean,
    to_device,
)
from resnet_repro.data.sources import (
    ArraySplit,
    Dataset,
    load_cifar10,
    load_image_folder,
    make_synthetic,
    split_train_val,
)

__all__ = [
    "ArraySplit",
    "Dataset",
    "TrainStream",
    "eval_batches",
    "load_cifar10",
    "load_image_folder",
    "make_synthetic",
    "normalize",
    "per_pixel_mean",
    "split_train_val",
    "to_device",
]
