"""Data: CIFAR-style sources (torchvision CIFAR-10, image folders, synthetic) and the in-memory
tensor pipeline that augments batches on the training device (§4.2); ImageNet folders with the
§3.4 augmentation. By job: sources.py / synthetic.py (CIFAR-style arrays), pipeline.py (the CIFAR
tensor stream), sampling.py (epoch order and holdout, both streams), image_files.py (scanning and
decoding), transforms.py (§3.4), imagenet.py (the ImageNet stream), device_input.py (decoding
on the device), build.py (a source by name), settings.py (`data.*`, torch-free),
generated_folders.py (folders for tests and bench). Imports nothing above this package but
errors and atomic writes.

The names below are imported on first use, so `resnet_repro.data.settings` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "TrainStream": "pipeline", "eval_batches": "pipeline", "normalize": "pipeline",
    "per_pixel_mean": "pipeline", "to_device": "pipeline",
    "ArraySplit": "sources", "Dataset": "sources", "load_cifar10": "sources",
    "load_image_folder": "sources", "split_train_val": "sources",
    "make_synthetic": "synthetic",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'resnet_repro.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"resnet_repro.data.{_HOMES[name]}"), name)
