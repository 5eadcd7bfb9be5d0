"""The in-memory CIFAR tensor pipeline (§4.2): the whole uint8 data set lives on the training
device, and each batch is normalised and augmented with batched tensor ops (no workers, no PIL).

Pixel scale: images are divided by 255 (to [0, 1]) and then the per-pixel mean image, computed
on the training split at the same scale, is subtracted. The paper states only "per-pixel mean
subtracted"; the [0, 1] scale is our choice and does not matter to a BN network.

A training batch is a pure function of (seed, global iteration): resuming needs only the
iteration number, and CPU and GPU runs see identical batches (all randomness is drawn on CPU).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from resnet_repro.data.sampling import EpochSampler, derived_seed
from resnet_repro.data.sources import ArraySplit
from resnet_repro.errors import DataError


def per_pixel_mean(x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """float32 [C,H,W] mean image of a uint8 [N,C,H,W] split, on the [0, 1] pixel scale (§4.2).

    Sums in int64 chunk by chunk: exact, and no float copy of the whole split."""
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise DataError(
            f"per_pixel_mean expects uint8 [N,C,H,W] images, got {x.dtype} {list(x.shape)}"
        )
    n = x.shape[0]
    if n == 0:
        raise DataError("per_pixel_mean: the split has no images")
    total = torch.zeros(x.shape[1:], dtype=torch.int64, device=x.device)
    for start in range(0, n, chunk):
        total += x[start : start + chunk].sum(dim=0, dtype=torch.int64)
    return (total.double() / (n * 255.0)).float()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float32 on the [0, 1] scale minus the mean (§4.2: the per-pixel mean
    image [C,H,W]; a per-channel [C,1,1] mean and std for ImageNet-pretrained weights)."""
    x = x.float().div_(255.0).sub_(mean)
    return x if std is None else x.div_(std)


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    # Upsampling for ImageNet-pretrained nets fine-tuned on CIFAR at 224x224 (not in the paper).
    if size is None or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def to_device(split: ArraySplit, device: torch.device | str) -> ArraySplit:
    """The split on `device`, kept as uint8 (4x smaller than float); no copy if already there."""
    return ArraySplit(x=split.x.to(device), y=split.y.to(device))


class TrainStream:
    """Shuffled, augmented training batches indexed by the global iteration (§4.2).

    Each epoch is a fresh permutation of the split (seeded by (seed, epoch); `sampling.py`); the
    last partial batch is dropped. Augmentation: pad 4 pixels on each side, take a random 32x32 crop of the
    padded image, and flip it horizontally with probability 0.5.

    Data parallel: `batch_size` is per process; the global batch of `batch_size * world_size`
    images (and its augmentation draws) is the one a single process would see, and rank r takes
    its r-th slice, so N processes train on exactly the batches of one process.
    """

    def __init__(
        self,
        split: ArraySplit,
        mean: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        pad: int = 4,
        flip: bool = True,
        std: torch.Tensor | None = None,
        resize: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        n = len(split)
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        global_batch = batch_size * world_size
        if n < global_batch:
            raise DataError(f"training split has {n} images, fewer than one batch of {global_batch}")
        if pad < 0:
            raise DataError(f"pad must be >= 0, got {pad}")
        self.device = torch.device(device)
        moved = to_device(split, self.device)  # once: batches are gathered on the device
        self.x, self.y = moved.x, moved.y
        self.mean = mean.to(self.device, torch.float32)
        self.std = None if std is None else std.to(self.device, torch.float32)
        self.resize = resize
        self.rank, self.world_size = rank, world_size
        self.n = n
        self.batch_size = batch_size
        self.global_batch = global_batch
        self.seed = seed
        self.pad = pad
        self.flip = flip
        self.sampler = EpochSampler(n, batch_size, seed, rank, world_size, device=self.device)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.epoch_of = self.sampler.epoch_of
        self.global_indices = self.sampler.global_indices  # indices into the split (all ranks)
        self.indices = self.sampler.indices  # this rank's, on the stream's device

    def iterate(self, start_iter: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches for iterations start_iter, start_iter + 1, ... (the trainer's interface)."""
        it = start_iter
        while True:
            yield self.batch(it)
            it += 1

    def batch(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images float32 [B,3,32,32], labels int64 [B]) of this rank for global iteration `it`."""
        idx = self.indices(it)
        # Normalise first, then zero-pad: the padding equals the mean pixel, as in the Caffe-era
        # CIFAR pipelines of the paper's time (padding raw zeros would add black borders).
        x = normalize(self.x[idx], self.mean, self.std)
        b, _, h, w = x.shape
        p = self.pad
        if p > 0:
            x = F.pad(x, (p, p, p, p))

        # Offsets and flips drawn on CPU from (seed, it) for the global batch, then this rank's
        # slice moved: the same batch on any device and for any number of processes.
        g = torch.Generator().manual_seed(derived_seed(self.seed, "aug", it))
        mine = self.sampler.rank_slice(b)
        top = torch.randint(0, 2 * p + 1, (self.global_batch,), generator=g)[mine].to(self.device)
        left = torch.randint(0, 2 * p + 1, (self.global_batch,), generator=g)[mine].to(self.device)
        flipped = (torch.rand(self.global_batch, generator=g)[mine] < 0.5).to(self.device) & self.flip

        # One gather does crop and flip: a flipped crop reads its window's columns backwards.
        ar_h = torch.arange(h, device=self.device)
        ar_w = torch.arange(w, device=self.device)
        rows = top[:, None] + ar_h  # [B,H]
        cols = left[:, None] + torch.where(flipped[:, None], w - 1 - ar_w, ar_w)  # [B,W]
        bi = torch.arange(b, device=self.device)[:, None, None, None]
        ci = torch.arange(x.shape[1], device=self.device)[None, :, None, None]
        out = x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
        return _resize(out, self.resize), self.y[idx]


def eval_batches(
    split: ArraySplit,
    mean: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    std: torch.Tensor | None = None,
    resize: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised batches in order, no augmentation (§4.2: test on the single original 32x32
    view). The last batch may be smaller. Pass a split already moved with `to_device` to avoid
    a copy per call."""
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    split = to_device(split, device)
    mean = mean.to(split.x.device, torch.float32)
    std = None if std is None else std.to(split.x.device, torch.float32)
    for start in range(0, len(split), batch_size):
        end = start + batch_size
        yield _resize(normalize(split.x[start:end], mean, std), resize), split.y[start:end]
