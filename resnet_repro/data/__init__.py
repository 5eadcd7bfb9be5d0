"""Data: CIFAR-style sources (torchvision CIFAR-10, image folders, synthetic) and the in-memory
tensor pipeline that augments batches on the training device (§4.2); ImageNet folders with the
§3.4 augmentation. By job: sources.py / synthetic.py (CIFAR-style arrays), pipeline.py (the CIFAR
tensor stream), sampling.py (epoch order and holdout, both streams), image_files.py (scanning and
decoding), transforms.py (§3.4), imagenet.py (the ImageNet stream), device_input.py (decoding
on the device), build.py (a source by name), generated_folders.py (folders for tests and bench).
Imports nothing above this package but errors and atomic writes."""

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
    split_train_val,
)

from resnet_repro.data.synthetic import make_synthetic

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
