"""Where CIFAR-style arrays come from: torchvision's CIFAR-10, an image-folder copy (directory
or tar archive), or generated synthetic data (`synthetic.py`). Every source returns the same
thing: uint8 NCHW images and int64 labels held in memory, the layout the tensor pipeline
(`pipeline.py`) expects. Also the data set's content fingerprint and the seeded holdout.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from resnet_repro.atomic import atomic_write
from resnet_repro.data.image_files import IMAGE_EXTENSIONS, decode_rgb, is_image_name
from resnet_repro.data.sampling import holdout_indices
from resnet_repro.errors import DataError

# CIFAR images are 32x32 (§4.2); the pipeline and the CIFAR models assume it.
IMAGE_SIZE = 32
# Bump when the cached arrays change meaning, so stale caches are ignored.
_CACHE_FORMAT = "imagefolder-v1"


@dataclass
class ArraySplit:
    x: torch.Tensor  # uint8 [N, 3, 32, 32], NCHW
    y: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Dataset:
    train: ArraySplit
    test: ArraySplit
    classes: list[str]  # label index -> class name


# --------------------------------------------------------------------------------------------
# torchvision CIFAR-10


def _remove_if_only_empty_folders(top: Path) -> None:
    """Remove `top` when it holds nothing but empty folders (a download that got nowhere);
    anything with a file in it (a partial archive) is left alone."""
    if any(p.is_file() or p.is_symlink() for p in top.rglob("*")):
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            return
    try:
        top.rmdir()
    except OSError:
        pass


def load_cifar10(root: str | Path, download: bool = True) -> Dataset:
    """The original CIFAR-10 (python version) under `root`, downloaded there if missing."""
    from torchvision import datasets  # lazy: torchvision is slow to import

    root = Path(root).expanduser().absolute()
    alternatives = (
        "put the python version there (cifar-10-batches-py/), or use "
        "data=cifar10_folder data.root=<folder or .tar.gz>, or data=synthetic"
    )
    try:
        train = datasets.CIFAR10(str(root), train=True, download=False)
        test = datasets.CIFAR10(str(root), train=False, download=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        if not download:
            raise DataError(
                f"CIFAR-10 not found under {root} (download disabled); {alternatives}"
            ) from None
        top = root  # the outermost folder the download would create: removed again if it fails
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        created = not top.exists()
        try:
            train = datasets.CIFAR10(str(root), train=True, download=True)
            test = datasets.CIFAR10(str(root), train=False, download=True)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            if created:
                _remove_if_only_empty_folders(top)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(
                f"CIFAR-10 not found under {root} and could not be downloaded ({reason}); "
                f"{alternatives}"
            ) from None
    return Dataset(
        train=_from_nhwc(train.data, train.targets),
        test=_from_nhwc(test.data, test.targets),
        classes=list(train.classes),
    )


def _from_nhwc(images: np.ndarray, labels: list[int] | np.ndarray) -> ArraySplit:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return ArraySplit(x=x, y=y)


# --------------------------------------------------------------------------------------------
# Image folders: train/<class>/* and test/<class>/*, as a directory or a tar archive

# split -> class -> [(name shown in errors, payload: file bytes or a path to read)]
_Listing = dict[str, dict[str, list[tuple[str, "bytes | Path"]]]]
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def load_image_folder(root: str | Path, cache_dir: str | Path | None = None) -> Dataset:
    """An image-folder copy of a CIFAR-style data set (e.g. the JPEG copy of CIFAR-10).

    `root` is a directory or a .tar/.tar.gz/.tgz archive containing `train/<class>/*` and
    `test/<class>/*`, directly or under one top-level folder. Classes are sorted alphabetically
    to give label indices; files within a class are sorted by name. The decoded uint8 arrays
    are cached as .npz in `cache_dir` (default $RESNET_REPRO_CACHE or ~/.cache/resnet_repro),
    keyed by content: one cache file per data set, whatever its name or path.
    """
    src = Path(root).expanduser().absolute()
    if not src.exists():
        raise DataError(f"image folder not found: {src}")
    is_archive = src.is_file()
    if is_archive and not src.name.lower().endswith(_ARCHIVE_SUFFIXES):
        raise DataError(f"{src} is a file but not a .tar, .tar.gz or .tgz archive")

    listing: _Listing | None = None
    if is_archive:
        # Archive: keyed by its content, so the same tarball under another name or path hits
        # the same cache file and a changed one misses (hashing 19 MB takes ~50 ms).
        key_text = f"{_CACHE_FORMAT}|sha256:{_file_sha256(src)}"
    else:
        # Directory: its own mtime misses edits inside class folders, so key on every
        # listed image's path below the data root + size + mtime (a stat per file: cheap;
        # the same tree copied elsewhere with its times kept hits the same cache file).
        listing, split_root = _list_directory(src)
        parts = [_CACHE_FORMAT]
        for split in ("train", "test"):
            for cls in sorted(listing[split]):
                for _, path in listing[split][cls]:
                    st = Path(path).stat()
                    rel = Path(path).relative_to(split_root)
                    parts.append(f"{rel}|{st.st_size}|{st.st_mtime_ns}")
        key_text = "\n".join(parts)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    cache_file = _cache_root(cache_dir) / f"imagefolder-{key}.npz"

    cached = _read_cache(cache_file)
    if cached is not None:
        return cached
    if listing is None:
        listing = _list_archive(src)
    n = sum(len(items) for split in listing.values() for items in split.values())
    # Decoding 60k JPEGs takes ~30 s: say what is happening rather than sit silent.
    print(f"decoding {n} images from {src} once (cached in {cache_file})", flush=True)
    dataset = _decode_listing(listing)
    _write_cache(cache_file, dataset)
    return dataset


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("RESNET_REPRO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnet_repro"


def _list_directory(src: Path) -> tuple[_Listing, Path]:
    def has_splits(d: Path) -> bool:
        return (d / "train").is_dir() and (d / "test").is_dir()

    base = src
    if not has_splits(src):
        nested = [d for d in sorted(src.iterdir()) if d.is_dir() and has_splits(d)]
        if len(nested) == 1:  # e.g. an extracted archive with one top-level folder
            base = nested[0]
        else:
            _missing_split_error(
                src, has_train=(src / "train").is_dir(), has_test=(src / "test").is_dir()
            )
    listing: _Listing = {}
    for split in ("train", "test"):
        classes: dict[str, list[tuple[str, bytes | Path]]] = {}
        for class_dir in sorted((base / split).iterdir()):
            if not class_dir.is_dir() or class_dir.name.startswith("."):
                continue
            files = sorted(p for p in class_dir.iterdir() if p.is_file() and is_image_name(p.name))
            classes[class_dir.name] = [(str(p), p) for p in files]
        listing[split] = classes
    _validate(listing, str(base))
    return listing, base


def _list_archive(src: Path) -> _Listing:
    # One sequential pass reads every member's bytes: random access into a .tar.gz would
    # decompress from the start for each file.
    files: dict[tuple[str, ...], bytes] = {}
    dirs: set[tuple[str, ...]] = set()
    try:
        with tarfile.open(src, "r:*") as tar:
            for member in tar:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                parts = tuple(p for p in name.strip("/").split("/") if p not in ("", "."))
                if not parts:
                    continue
                if member.isdir():
                    dirs.add(parts)
                elif member.isfile() and ("train" in parts or "test" in parts):
                    handle = tar.extractfile(member)
                    files[parts] = handle.read() if handle is not None else b""
                    dirs.update(parts[:i] for i in range(1, len(parts)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())  # tarfile's messages span several lines
        raise DataError(f"cannot read archive {src}: {reason}") from None

    # The data root is the shallowest folder holding both train/ and test/.
    with_split: dict[tuple[str, ...], set[str]] = {}
    for d in dirs:
        if d[-1] in ("train", "test"):
            with_split.setdefault(d[:-1], set()).add(d[-1])
    roots = sorted(
        (p for p, s in with_split.items() if s == {"train", "test"}), key=lambda p: (len(p), p)
    )
    if not roots:
        _missing_split_error(
            src,
            has_train=any("train" in s for s in with_split.values()),
            has_test=any("test" in s for s in with_split.values()),
        )
    base = roots[0]
    depth = len(base)
    listing: _Listing = {"train": {}, "test": {}}
    for d in dirs:  # class folders, including empty ones (reported below)
        in_split = len(d) == depth + 2 and d[:depth] == base and d[depth] in listing
        if in_split and not d[-1].startswith("."):
            listing[d[depth]].setdefault(d[-1], [])
    for parts, data in files.items():
        if len(parts) == depth + 3 and parts[:depth] == base and parts[depth] in listing:
            split, cls, fname = parts[depth:]
            if not cls.startswith(".") and is_image_name(fname):
                listing[split].setdefault(cls, []).append((f"{src}:{'/'.join(parts)}", data))
    for classes in listing.values():
        for cls in classes:
            classes[cls].sort(key=lambda item: item[0])
    _validate(listing, f"{src}:{'/'.join(base) or '.'}")
    return listing


def _missing_split_error(src: Path, has_train: bool, has_test: bool) -> NoReturn:
    layout = "expected train/<class>/* and test/<class>/*"
    if has_train and not has_test:
        raise DataError(f"{src} has a train/ folder but no test/ folder ({layout})")
    if has_test and not has_train:
        raise DataError(f"{src} has a test/ folder but no train/ folder ({layout})")
    raise DataError(f"no train/ and test/ folders found in {src} ({layout})")


def _validate(listing: _Listing, where: str) -> None:
    train, test = set(listing["train"]), set(listing["test"])
    for split in ("train", "test"):
        if not listing[split]:
            raise DataError(f"{where}/{split} has no class folders")
    if train != test:
        only_train, only_test = sorted(train - test), sorted(test - train)
        detail = "; ".join(
            s for s in (
                f"missing from test: {', '.join(only_train)}" if only_train else "",
                f"missing from train: {', '.join(only_test)}" if only_test else "",
            ) if s
        )
        raise DataError(f"train and test classes differ in {where} ({detail})")
    for split in ("train", "test"):
        for cls, items in sorted(listing[split].items()):
            if not items:
                raise DataError(
                    f"{where}/{split}/{cls} has no images ({', '.join(IMAGE_EXTENSIONS)})"
                )


def _decode_listing(listing: _Listing) -> Dataset:
    classes = sorted(listing["train"])
    splits = {}
    for split in ("train", "test"):
        n = sum(len(listing[split][c]) for c in classes)
        x = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        y = np.empty(n, dtype=np.int64)
        i = 0
        # Serial on purpose: Pillow decodes a 32x32 image in ~70 us, so threads only add overhead.
        for label, cls in enumerate(classes):
            for name, payload in listing[split][cls]:
                x[i] = _decode_image(name, payload)
                y[i] = label
                i += 1
        splits[split] = _from_nhwc(x, y)
    return Dataset(train=splits["train"], test=splits["test"], classes=classes)


def _decode_image(name: str, payload: bytes | Path) -> np.ndarray:
    rgb = decode_rgb(payload, name)
    if rgb.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        h, w = rgb.shape[:2]
        raise DataError(f"{name} is {w}x{h} (WxH); expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return rgb


def _read_cache(cache_file: Path) -> Dataset | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            return Dataset(
                train=_from_nhwc(z["train_x"], z["train_y"]),
                test=_from_nhwc(z["test_x"], z["test_y"]),
                classes=[str(c) for c in z["classes"]],
            )
    except Exception as exc:  # any unreadable cache is just a miss: decode again
        warnings.warn(f"ignoring unreadable data cache {cache_file}: {exc}", stacklevel=3)
        return None


def _write_cache(cache_file: Path, dataset: Dataset) -> None:
    try:
        with atomic_write(cache_file, "wb") as f:
            np.savez(
                f,
                train_x=dataset.train.x.permute(0, 2, 3, 1).numpy(),
                train_y=dataset.train.y.numpy(),
                test_x=dataset.test.x.permute(0, 2, 3, 1).numpy(),
                test_y=dataset.test.y.numpy(),
                classes=np.array(dataset.classes, dtype=str),
            )
    except OSError as exc:
        warnings.warn(f"cannot write data cache {cache_file} ({exc}); not caching", stacklevel=3)


def fingerprint(*splits: ArraySplit, classes: list[str] = ()) -> str:
    """A short content hash of the images, labels and class names: the data set's identity
    wherever it lies (in summary.json; a resumed run may find its data elsewhere, not other data)."""
    h = hashlib.sha256("\n".join(classes).encode())
    for split in splits:
        for t in (split.x, split.y):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Train/val holdout


def split_train_val(split: ArraySplit, val_size: int, seed: int) -> tuple[ArraySplit, ArraySplit]:
    """A fixed, seeded holdout of `val_size` training images (§4.2: the 45k/5k split on which
    the schedule was chosen). Both parts keep the original order of the images they hold.
    Callers seed it from the data (`fingerprint`), so every run on the same data holds out the
    same images and seeds differ only in initialisation and order."""
    train_idx, val_idx = holdout_indices(len(split), val_size, seed)
    if val_size == 0:
        return split, ArraySplit(x=split.x[:0], y=split.y[:0])
    train_idx, val_idx = train_idx.to(split.x.device), val_idx.to(split.x.device)
    return (
        ArraySplit(x=split.x[train_idx], y=split.y[train_idx]),
        ArraySplit(x=split.x[val_idx], y=split.y[val_idx]),
    )
