"""Pick a data source by name and prepare what a run needs: a stream of training batches
indexed by iteration, and an evaluation of the held-out splits. Shared by `train` and `eval`,
so both see the identical split for a seed.

CIFAR-style sources (cifar10, cifar10_folder, synthetic) keep every split in memory as uint8
tensors (pipeline.py). ImageNet reads JPEG folders through DataLoader workers (imagenet.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from resnet_repro.data.pipeline import TrainStream, eval_batches, per_pixel_mean, to_device
from resnet_repro.data.sources import (
    ArraySplit,
    fingerprint,
    load_cifar10,
    load_image_folder,
    make_synthetic,
    split_train_val,
)
from resnet_repro.errors import ConfigError

CIFAR_SOURCES = ("cifar10", "cifar10_folder", "synthetic")
DATA_SOURCES = (*CIFAR_SOURCES, "imagenet")
NORMS = ("per_pixel", "imagenet")

# ImageNet's per-channel RGB mean/std on the [0, 1] scale: what torchvision's weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataSettings:
    name: str
    root: str | None = None
    download: bool = True
    cache_dir: str | None = None
    val_size: int = 0  # held out of the training images (§4.2's 45k/5k schedule study: 5000)
    pad: int = 4  # §4.2
    flip: bool = True  # §4.2
    norm: str = "per_pixel"  # §4.2 per-pixel mean; "imagenet": per-channel mean/std (pretrained nets)
    resize: int | None = None  # upsample CIFAR batches (fine-tuning ImageNet nets at 224)
    n_train: int = 10000  # synthetic only
    n_test: int = 2000  # synthetic only
    num_classes: int = 10  # synthetic only
    workers: int = 8  # imagenet: DataLoader worker processes
    crop: int = 224  # imagenet: §3.4 "224x224 crop"
    scale: tuple[int, int] = (256, 480)  # imagenet: §3.4 shorter side in [256, 480]
    lighting_std: float = 0.1  # imagenet: §3.4 PCA colour augmentation, alpha std 0.1
    decode: str = "auto"  # imagenet: where JPEGs are decoded and augmented (device_input.py)


class BatchStream(Protocol):
    steps_per_epoch: int

    def iterate(self, start_iter: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class TrainingData:
    stream: BatchStream
    num_classes: int
    sizes: dict[str, int]  # train / val / test image counts
    # evaluate(model) -> {"val/err": %, "test/err": %, ...} in fp32; splits without images skipped
    evaluate: Callable[[nn.Module], dict[str, float]]
    fingerprint: str = ""  # the data set's identity (content hash; ImageNet: its file names)
    extra: dict[str, Any] = field(default_factory=dict)


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


def _cifar_evaluate(splits: CifarSplits, settings: DataSettings, batch_size: int, device: torch.device):
    from resnet_repro.engine import evaluate

    held = {"val": to_device(splits.val, device), "test": to_device(splits.test, device)}

    def run(model: nn.Module) -> dict[str, float]:
        # Every process evaluates the whole (small) split: identical numbers on every rank.
        out: dict[str, float] = {}
        for name, split in held.items():
            if len(split):
                batches = eval_batches(split, splits.mean, batch_size, device, splits.std, settings.resize)
                r = evaluate(model, batches)
                out[f"{name}/err"], out[f"{name}/loss"] = 100.0 * r["err"], r["loss"]
        return out

    return run


# -- ImageNet ---------------------------------------------------------------------------------


def _imagenet_data(settings: DataSettings, seed: int, batch_size: int, eval_batch_size: int, device, world):
    from resnet_repro.data.imagenet import ImageNetStream, scan_image_folder
    from resnet_repro.distributed import all_reduce_sum
    from resnet_repro.protocols import evaluate_protocol, finalize

    if not settings.root:
        raise ConfigError("data=imagenet needs data.root=<folder with train/ and val/>")
    norm = imagenet_norm(settings.norm)
    stream = ImageNetStream(
        settings.root, batch_size, seed, device=device, rank=world.rank, world_size=world.size,
        workers=settings.workers, crop=settings.crop, scale=tuple(settings.scale),
        lighting_std=settings.lighting_std, holdout=settings.val_size, norm=norm, decode=settings.decode,
    )
    val_files, val_labels, _ = scan_image_folder(Path(settings.root) / "val", stream.classes)
    held = {
        "val": (stream.holdout_files, stream.holdout_labels),  # minival: selection and plateau
        "test": (val_files, val_labels),  # the official val set: reported, never selected on
    }

    def run(model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, (files, labels) in held.items():
            if not files:
                continue
            counts = evaluate_protocol(
                model, files, labels, "center", device=device, norm=norm, workers=settings.workers,
                batch_size=eval_batch_size, rank=world.rank, world_size=world.size, decode=stream.decode,
            )
            c = torch.tensor([counts["top1_wrong"], counts["top5_wrong"], counts["n"]], dtype=torch.float64)
            c = all_reduce_sum(c.to(device), world).cpu()
            r = finalize({"top1_wrong": int(c[0]), "top5_wrong": int(c[1]), "n": int(c[2])})
            out[f"{name}/err"], out[f"{name}/top5_err"] = r["top1_err"], r["top5_err"]
        return out

    sizes = {"train": stream.n_train, "val": len(stream.holdout_files), "test": len(val_files)}
    return TrainingData(
        stream, stream.num_classes, sizes, run,
        fingerprint=_names_fingerprint(stream.root, [*stream.files, *stream.holdout_files, *val_files]),
        extra={"decode": stream.decode, "bad_images": stream.bad_images},  # skipped files, for the summary
    )


def _names_fingerprint(root: Path, files: list[str]) -> str:
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


def build_training_data(
    settings: DataSettings, seed: int, *, batch_size: int, eval_batch_size: int, device: torch.device, world
) -> TrainingData:
    """The training stream (per-process `batch_size`) and the evaluation of val/test."""
    if settings.name == "imagenet":
        return _imagenet_data(settings, seed, batch_size, eval_batch_size, device, world)
    splits = load_cifar_splits(settings, seed)
    stream = TrainStream(
        splits.train, splits.mean, batch_size, seed, device, pad=settings.pad, flip=settings.flip,
        std=splits.std, resize=settings.resize, rank=world.rank, world_size=world.size,
    )
    sizes = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    return TrainingData(
        stream, len(splits.classes), sizes, _cifar_evaluate(splits, settings, eval_batch_size, device),
        fingerprint=splits.fingerprint,
    )
