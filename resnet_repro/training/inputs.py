"""What a run trains on and is judged by: the training stream of its data source, indexed by
iteration, and the evaluation of its held-out and test splits (CIFAR: in-memory batches through
`evaluation.metrics.evaluate`; ImageNet: the centre-crop protocol of `protocols`). Sits above `data/`
(sources, pipelines, transforms) and `protocols`, which never import it; `train`/`bench` use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from resnet_repro.data.build import CifarSplits, imagenet_norm, load_cifar_splits, names_fingerprint
from resnet_repro.data.settings import DataSettings
from resnet_repro.data.pipeline import TrainStream, eval_batches, to_device
from resnet_repro.training.distributed import all_reduce_sum
from resnet_repro.evaluation.metrics import evaluate
from resnet_repro.errors import ConfigError


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


def _cifar_evaluate(splits: CifarSplits, settings: DataSettings, batch_size: int, device: torch.device):
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


def _imagenet_data(settings: DataSettings, seed: int, batch_size: int, eval_batch_size: int, device, world):
    from resnet_repro.data.image_files import scan_image_folder
    from resnet_repro.data.imagenet import ImageNetStream
    from resnet_repro.evaluation.protocols import evaluate_protocol, finalize

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
        fingerprint=names_fingerprint(stream.root, [*stream.files, *stream.holdout_files, *val_files]),
        extra={"decode": stream.decode, "bad_images": stream.bad_images},  # skipped files, for the summary
    )


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
