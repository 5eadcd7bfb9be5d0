"""The ImageNet training stream (§3.4): a dataset of image files, batches of `(index,
sample_seed)` keys for iterations start_iter, start_iter+1, ..., and the stream that turns them
into augmented batches on the device, decoded by DataLoader workers (PIL) or on the device.

Layout: `root/train/<wnid>/*.JPEG` and `root/val/<wnid>/*.JPEG` (any image extension, any case;
`image_files.py`). The transforms are in `transforms.py`.

Determinism: a training batch is a pure function of (seed, global iteration). The epoch's
order comes from (seed, epoch) (`sampling.py`); each image's augmentation draws come from a seed
derived from (seed, iteration, index), set inside the worker right before its transform. So
resuming needs only the iteration number, and the batches do not depend on the number of
workers or processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from resnet_repro.data.image_files import read_rgb, scan_image_folder
from resnet_repro.data.sampling import EpochSampler, derived_seed, holdout_indices
from resnet_repro.data.transforms import Lighting, Normalization, normalization, train_transform
from resnet_repro.errors import ConfigError, DataError


class ImageFolderDataset(torch.utils.data.Dataset):
    """Files and labels with a transform of the decoded uint8 [3,H,W] image.

    A key is an int index (evaluation: the transform is deterministic) or an
    `(index, sample_seed)` pair (training: torch's CPU RNG is seeded with sample_seed just for
    this transform, so the augmentation is a pure function of the key, in any worker)."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], transform: nn.Module | None = None) -> None:
        if len(files) != len(labels):
            raise DataError(f"{len(files)} files but {len(labels)} labels")
        self.files = list(files)
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[object, int]:
        seed = None
        if isinstance(key, tuple):
            key, seed = key
        img = read_rgb(self.files[key])
        if self.transform is not None:
            if seed is None:
                img = self.transform(img)
            else:
                # fork_rng: with workers=0 this runs in the training process, whose RNG must
                # not depend on how many images were loaded. CPU generator only.
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(seed)
                    img = self.transform(img)
        return img, self.labels[key]


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite batches of `(index, sample_seed)` for iterations start_iter, start_iter+1, ...

    The images of each iteration are the `EpochSampler`'s (`sampling.py`: the same order as the
    CIFAR stream's). sample_seed derives from (seed, it, index): the same for a given image in a
    given iteration whatever the rank count, the worker count or where training resumed."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start_iter: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if start_iter < 0:
            raise DataError(f"start_iter must be >= 0, got {start_iter}")
        self.order = EpochSampler(n, batch_size, seed, rank, world_size)
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_iter, self.rank, self.world_size = start_iter, rank, world_size
        self.global_batch = self.order.global_batch
        self.steps_per_epoch = self.order.steps_per_epoch

    def global_indices(self, it: int) -> list[int]:
        """Indices of the global batch of iteration `it` (all ranks)."""
        return self.order.global_indices(it).tolist()

    def batch(self, it: int) -> list[tuple[int, int]]:
        """This rank's `(index, sample_seed)` pairs for iteration `it`."""
        stream = f"aug/{it}"
        return [(i, derived_seed(self.seed, stream, i)) for i in self.order.indices(it).tolist()]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        it = self.start_iter
        while True:
            yield self.batch(it)
            it += 1

    def __len__(self) -> int:
        raise TypeError("IterationBatchSampler is infinite: it has no length")


def iterate_loader(loader: DataLoader) -> Iterator:
    """Iterate a DataLoader, re-raising a DataError from a worker as one line (the worker
    wraps it in a traceback whose last line is ours: "...ImageReadError: cannot read image ...")."""
    batches = iter(loader)
    try:
        yield from batches
    except DataError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        # Drop the traceback: it ties the loader's iterator into a reference cycle, and a cycle
        # collected later shuts the workers down only after a 5 s join timeout each.
        e.__traceback__ = None
        del batches
        ours = re.match(r"^[\w.]*(DataError|ImageReadError): (.*)$", last)
        if len(lines) > 1 and ours:
            raise DataError(ours.group(2)) from None
        raise


def loader_generator(seed: int = 0) -> torch.Generator:
    # A DataLoader draws its workers' base seed from this; by default it would draw from, and
    # advance, the training process's global RNG.
    return torch.Generator().manual_seed(seed)


class ImageNetStream:
    """Augmented ImageNet training batches indexed by the global iteration (§3.4).

    `batch_size` is per process (the released models: 256 over 8 GPUs, i.e. 32 each, per the
    authors' notes at github.com/KaimingHe/deep-residual-networks; §3.4 gives only the 256). `holdout` training
    images, chosen by a fixed seeded draw, are set aside as a "minival" (`holdout_files`,
    `holdout_labels`) for the plateau schedule and model selection, so the official val set is
    never used to select anything."""

    def __init__(
        self,
        root: str | Path,
        batch_size: int,
        seed: int,
        *,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 8,
        crop: int = 224,
        scale: tuple[int, int] = (256, 480),
        lighting_std: float = 0.1,
        norm: str | Normalization = "mean_std",
        holdout: int = 0,
        pin_memory: bool | None = None,
        prefetch_factor: int = 2,
        decode: str = "auto",
        ahead: int = 2,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.device = torch.device(device)
        files, labels, self.classes = scan_image_folder(self.root / "train")
        self.num_classes = len(self.classes)
        n = len(files)
        kept, held = (t.tolist() for t in holdout_indices(n, holdout, derived_seed(seed, "holdout", 0), "holdout"))
        self.holdout_files = [files[i] for i in held]  # both parts keep the scan's (sorted) order
        self.holdout_labels = [labels[i] for i in held]
        self.files = [files[i] for i in kept]
        self.labels = [labels[i] for i in kept]
        self.n_train = len(self.files)

        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.transform = train_transform(crop, scale, lighting_std, norm)
        self.dataset = ImageFolderDataset(self.files, self.labels, self.transform)
        # data.decode=device (device_input.py): the same draws, made on the device in batches.
        from resnet_repro.data.device_input import BadImages, resolve_decode

        self.decode = resolve_decode(decode, self.device)
        self.crop, self.scale = crop, (int(scale[0]), int(scale[1]))
        self.lighting, self.norm = Lighting(lighting_std), normalization(norm)
        self.ahead = ahead  # device path: batches prepared ahead by a background thread
        self.bad_images = BadImages()  # device path: undecodable training images skipped
        # Validates batch size and rank; fixes steps_per_epoch.
        self.steps_per_epoch = IterationBatchSampler(self.n_train, batch_size, seed, 0, rank, world_size).steps_per_epoch

    def sampler(self, start_iter: int = 0) -> IterationBatchSampler:
        return IterationBatchSampler(self.n_train, self.batch_size, self.seed, start_iter, self.rank, self.world_size)

    def iterate(self, start_iter: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(images float32 [B,3,crop,crop], labels int64 [B]) on the device for iterations
        start_iter, start_iter + 1, ... (the trainer's interface), forever."""
        if self.decode == "device":
            return self._device_batches(start_iter)
        return self._worker_batches(start_iter)

    def _worker_batches(self, start_iter: int) -> Iterator[tuple[Tensor, Tensor]]:
        """data.decode=workers: workers decode (PIL) and augment each image."""
        w = self.workers
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.sampler(start_iter),
            num_workers=w,
            pin_memory=self.pin_memory,
            # No persistent_workers: the loader is iterated once (forever), so there is no
            # next epoch to keep workers for.
            prefetch_factor=self.prefetch_factor if w > 0 else None,
            generator=loader_generator(self.seed),
        )
        for x, y in iterate_loader(loader):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _device_batches(self, start_iter: int) -> Iterator[tuple[Tensor, Tensor]]:
        """data.decode=device: workers read bytes; a background thread decodes and augments
        each batch on the device (device_input.py)."""
        from resnet_repro.data.device_input import BytesDataset, background, collate_bytes

        w = self.workers
        loader = DataLoader(
            BytesDataset(self.files, self.labels),
            batch_sampler=self.sampler(start_iter),
            num_workers=w,
            collate_fn=collate_bytes,
            prefetch_factor=self.prefetch_factor if w > 0 else None,
            generator=loader_generator(self.seed),
        )
        raw = iter(loader)  # start the workers here, before the producer thread exists

        def make() -> Iterator[tuple[Tensor, Tensor]]:
            for datas, labels, keys in iterate_loader(raw):
                yield self.device_batch(datas, labels, keys)

        return background(make, self.ahead, self.device)

    def device_batch(self, datas: list[Tensor], labels: Tensor, keys: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """One training batch from file bytes and `(index, sample_seed)` keys, on the device."""
        from resnet_repro.data.device_input import augment_batch, decode_batch, stand_ins

        images, bad = decode_batch(datas, self.device)
        if bad:
            for i, reason in sorted(bad.items()):
                self.bad_images.add(self.files[keys[i][0]], reason)
            labels = labels.clone()
            for i, j in stand_ins(len(images), list(bad)).items():
                images[i], labels[i] = images[j], labels[j]
        x, _ = augment_batch(images, [s for _, s in keys], self.crop, self.scale, self.lighting, self.norm)
        return x, labels.to(self.device, non_blocking=True)
