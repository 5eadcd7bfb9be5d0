"""ImageNet-style image folders for training (§3.4): scanning, the paper's augmentation, and a
resumable, deterministic stream of batches read by DataLoader workers.

Layout: `root/train/<wnid>/*.JPEG` and `root/val/<wnid>/*.JPEG` (any image extension, any case).

Determinism: a training batch is a pure function of (seed, global iteration). The epoch's
order comes from (seed, epoch); each image's augmentation draws come from a seed derived from
(seed, iteration, index), set inside the worker right before its transform. So resuming needs
only the iteration number, and the batches do not depend on the number of workers or processes.

Mean subtraction: the paper subtracts the per-pixel mean (§3.4, after AlexNet). We subtract a
per-CHANNEL mean instead; see `Normalization`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data.pipeline import _derived_seed
from resnet_repro.data.sources import IMAGE_EXTENSIONS
from resnet_repro.errors import ConfigError, DataError

# ImageNet RGB statistics on the [0, 1] scale: the per-channel mean/std torchvision's weights
# were trained with (also the values in fb.resnet.torch, the paper authors' reference port).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# §3.4 "the standard color augmentation in [21]" (AlexNet's PCA lighting noise). These are the
# widely used eigenvalues/eigenvectors of the ImageNet RGB covariance on the [0, 1] scale (as in
# fb.resnet.torch); the eigenvectors are the columns.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
NORM_MODES = ("mean", "mean_std")


# --------------------------------------------------------------------------------------------
# Scanning


def _class_dirs(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _images_in(class_dir: Path) -> list[str]:
    with os.scandir(class_dir) as it:
        return sorted(
            e.name for e in it
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )


def scan_image_folder(
    split_dir: str | Path, classes: list[str] | None = None
) -> tuple[list[str], list[int], list[str]]:
    """(file paths, labels, classes) of `split_dir/<class>/<image>`.

    Classes are sorted by name and give the label indices; files are grouped by class and sorted
    by name within it. Pass the training split's `classes` when scanning val, so labels agree;
    val may hold a subset of them."""
    split_dir = Path(split_dir).expanduser().absolute()
    if not split_dir.is_dir():
        raise DataError(f"image folder not found: {split_dir}")
    found = _class_dirs(split_dir)
    if not found:
        raise DataError(
            f"{split_dir} has no class folders: expected {split_dir}/<class>/<images> "
            "(ImageNet val must be sorted into class folders first)"
        )
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise DataError(
                f"{split_dir} has {len(unknown)} class folders not among the training classes: {shown}"
            )
    index = {c: i for i, c in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    for name in found:
        images = _images_in(split_dir / name)
        if not images:
            raise DataError(f"class folder {split_dir / name} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files.extend(str(split_dir / name / f) for f in images)
        labels.extend([index[name]] * len(images))
    return files, labels, list(classes)


def read_rgb(path: str) -> Tensor:
    """uint8 [3,H,W] RGB of an image file (grey and CMYK converted); DataError naming the file
    if it cannot be read. PIL, not torchvision.io: its decoders are deprecated since 0.29, and
    both decode JPEGs with libjpeg-turbo to identical pixels."""
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read image {path}: {reason}") from None
    return torch.from_numpy(arr).permute(2, 0, 1)  # a view: resize is fastest channels-last


# --------------------------------------------------------------------------------------------
# Normalisation and augmentation (transforms take the decoded uint8 [3,H,W] tensor)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean (and std) on the [0, 1] pixel scale.

    The paper subtracts the per-PIXEL mean image (§3.4). With scale augmentation (shorter side
    in [256, 480]) and 224 crops at random positions, the mean over crops at any one position
    is nearly the same colour everywhere, so the per-pixel mean image is practically constant
    and equal to the per-channel mean: we use the latter (it also needs no pass over the data).
    Mode "mean" subtracts only the mean (the paper; our from-scratch default, data.norm=mean);
    "mean_std" also divides by the channel std, the torchvision convention, which torchvision's
    weights need (data.norm=imagenet, and `eval` of a torchvision file).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def transform(self) -> v2.Normalize:
        """For float [3,H,W] images on the [0, 1] scale (inside a transform pipeline)."""
        return v2.Normalize(list(self.mean), list(self.std))

    def __call__(self, x: Tensor) -> Tensor:
        """uint8 [...,3,H,W] -> normalised float32, on x's device (for batches on the GPU)."""
        if x.dtype != torch.uint8:
            raise DataError(f"Normalization expects uint8 images, got {x.dtype}")
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        # contiguous: decoded images are channels-last views, and uncropped multi-scale views
        # keep that layout; the model gets the same layout whatever the protocol.
        return x.float().div_(255.0).sub_(mean).div_(std).contiguous()


def normalization(mode: str | Normalization) -> Normalization:
    """"mean" (the paper: subtract only) or "mean_std" (torchvision's convention)."""
    if isinstance(mode, Normalization):
        return mode
    if mode == "mean":
        return Normalization(IMAGENET_MEAN)
    if mode == "mean_std":
        return Normalization(IMAGENET_MEAN, IMAGENET_STD)
    raise ConfigError(f"unknown normalisation {mode!r}; choose from: {', '.join(NORM_MODES)}")


class Lighting(nn.Module):
    """AlexNet's PCA lighting noise (§3.4, "standard color augmentation in [21]").

    Per image, alpha ~ N(0, alphastd^2) (3 values) and the RGB offset eigvec @ (alpha * eigval)
    is added to every pixel of a float [3,H,W] image on the [0, 1] scale (no clamping, as in
    fb.resnet.torch). Draws from torch's global RNG, which the dataset seeds per sample."""

    def __init__(
        self,
        alphastd: float = 0.1,
        eigval: Sequence[float] = PCA_EIGVAL,
        eigvec: Sequence[Sequence[float]] = PCA_EIGVEC,
    ) -> None:
        super().__init__()
        if alphastd < 0:
            raise ConfigError(f"lighting std must be >= 0, got {alphastd}")
        self.alphastd = alphastd
        self.register_buffer("eigval", torch.tensor(eigval, dtype=torch.float32), persistent=False)
        self.register_buffer("eigvec", torch.tensor(eigvec, dtype=torch.float32), persistent=False)

    def offset(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw of the RGB offset [3] (from torch's global RNG unless `generator`)."""
        alpha = torch.randn(3, generator=generator) * self.alphastd
        return self.eigvec @ (alpha * self.eigval)

    def forward(self, img: Tensor) -> Tensor:
        if self.alphastd == 0:
            return img
        if not img.is_floating_point() or img.shape[-3] != 3:
            raise DataError(f"Lighting expects a float [3,H,W] image, got {img.dtype} {list(img.shape)}")
        return img + self.offset().to(img.device, img.dtype).view(3, 1, 1)

    def extra_repr(self) -> str:
        return f"alphastd={self.alphastd}"


class RandomShorterSide(nn.Module):
    """Resize so the shorter side is a uniform random integer in [lo, hi], keeping the aspect
    ratio (§3.4 scale augmentation, [256, 480]). Exact shorter side, unlike RandomShortestSize's
    float rounding."""

    def __init__(self, lo: int, hi: int) -> None:
        super().__init__()
        if not 0 < lo <= hi:
            raise ConfigError(f"scale range must satisfy 0 < lo <= hi, got [{lo}, {hi}]")
        self.lo, self.hi = lo, hi

    def forward(self, img: Tensor) -> Tensor:
        s = int(torch.randint(self.lo, self.hi + 1, ()))
        return TF.resize(img, [s], antialias=True)

    def extra_repr(self) -> str:
        return f"lo={self.lo}, hi={self.hi}"


def train_transform(
    crop: int = 224,
    scale: tuple[int, int] = (256, 480),
    lighting_std: float = 0.1,
    norm: str | Normalization = "mean_std",
) -> v2.Compose:
    """§3.4 training augmentation of a decoded uint8 [3,H,W] image -> float32 [3,crop,crop]:
    shorter side uniform in `scale`, random crop, horizontal flip with p=0.5, PCA lighting
    noise, normalisation. Geometry runs on uint8 (cheaper); colour on float."""
    if crop < 1 or scale[0] < crop:
        raise ConfigError(f"the crop ({crop}) must fit the smallest scale ({scale[0]})")
    return v2.Compose([
        RandomShorterSide(scale[0], scale[1]),
        v2.RandomCrop(crop),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        Lighting(lighting_std),
        normalization(norm).transform(),
    ])


def center_crop_transform(
    resize: int = 256, crop: int = 224, norm: str | Normalization | None = "mean_std"
) -> v2.Compose:
    """Shorter side to `resize`, centre `crop` (the Figure 4 "centre-crop" view). With
    norm=None the result stays uint8, for normalising on the device (`Normalization(x)`)."""
    if not 0 < crop <= resize:
        raise ConfigError(f"the crop ({crop}) must fit the resized image ({resize})")
    steps: list[nn.Module] = [v2.Resize(resize, antialias=True), v2.CenterCrop(crop)]
    if norm is not None:
        steps += [v2.ToDtype(torch.float32, scale=True), normalization(norm).transform()]
    return v2.Compose(steps)


# --------------------------------------------------------------------------------------------
# Dataset and iteration-indexed sampling


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

    Iteration `it` is in epoch it // steps_per_epoch; each epoch is a permutation seeded by
    (seed, epoch), cut into global batches of batch_size * world_size (the last partial batch
    is dropped), and rank r takes the r-th slice of its global batch. sample_seed derives from
    (seed, it, index): the same for a given image in a given iteration whatever the rank count,
    the worker count or where training resumed."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start_iter: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in a world of {world_size} processes")
        if start_iter < 0:
            raise DataError(f"start_iter must be >= 0, got {start_iter}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_iter, self.rank, self.world_size = start_iter, rank, world_size
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = n // self.global_batch  # drop last: every step has a full batch
        if self.steps_per_epoch == 0:
            raise DataError(f"{n} training images are fewer than one global batch of {self.global_batch}")
        self._perm_epoch: int | None = None
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(_derived_seed(self.seed, "perm", epoch))
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm

    def global_indices(self, it: int) -> list[int]:
        """Indices of the global batch of iteration `it` (all ranks)."""
        perm = self._permutation(it // self.steps_per_epoch)
        start = (it % self.steps_per_epoch) * self.global_batch
        return perm[start : start + self.global_batch]

    def batch(self, it: int) -> list[tuple[int, int]]:
        """This rank's `(index, sample_seed)` pairs for iteration `it`."""
        mine = self.global_indices(it)[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        stream = f"aug/{it}"
        return [(i, _derived_seed(self.seed, stream, i)) for i in mine]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        it = self.start_iter
        while True:
            yield self.batch(it)
            it += 1

    def __len__(self) -> int:
        raise TypeError("IterationBatchSampler is infinite: it has no length")


def iterate_loader(loader: DataLoader) -> Iterator:
    """Iterate a DataLoader, re-raising a DataError from a worker as one line (the worker
    wraps it in a traceback whose last line is ours: "...DataError: cannot read image ...")."""
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
        if len(lines) > 1 and "DataError: " in last:
            raise DataError(last.split("DataError: ", 1)[1]) from None
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
        if not 0 <= holdout < n:
            raise DataError(f"holdout must be in [0, {n}) for {n} training images, got {holdout}")
        g = torch.Generator().manual_seed(_derived_seed(seed, "holdout", 0))
        perm = torch.randperm(n, generator=g)
        held = set(perm[:holdout].tolist())  # both parts keep the scan's (sorted) order
        self.holdout_files = [f for i, f in enumerate(files) if i in held]
        self.holdout_labels = [y for i, y in enumerate(labels) if i in held]
        self.files = [f for i, f in enumerate(files) if i not in held]
        self.labels = [y for i, y in enumerate(labels) if i not in held]
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


# --------------------------------------------------------------------------------------------
# Generated folders for tests


def write_fake_image_folder(
    root: str | Path,
    classes: int,
    per_class: int | Mapping[str, int],
    size: tuple[int, int] | Sequence[tuple[int, int]] = (40, 56),
    seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
    ext: str = ".JPEG",
) -> Path:
    """Write `root/<split>/n<8 digits>/<split>_<k><ext>`: random images with a per-class tint.

    `size`: one (h, w) for every image, or a list cycled through (images of varied sizes);
    `per_class`: images per class, or a {split: count} mapping. Returns `root`."""
    root = Path(root)
    sizes = [tuple(size)] if isinstance(size[0], int) else [tuple(s) for s in size]  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    k = 0
    for split in splits:
        count = per_class if isinstance(per_class, int) else per_class[split]
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            tint = np.array([(60 * c) % 256, (110 * c + 40) % 256, (170 * c + 80) % 256])
            for j in range(count):
                h, w = sizes[k % len(sizes)]
                noise = rng.integers(0, 96, size=(h, w, 3))
                pixels = np.clip(tint * 0.6 + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{split}_{j:04d}{ext}")
                k += 1
    return root
