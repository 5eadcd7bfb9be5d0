"""Image files: which names in a folder are images, the class folders of an ImageNet-style split
(`<split>/<class>/<image>`), and decoding one file to RGB with PIL, its failure mapped to one
line naming the file (the one place PIL decodes for this package)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from resnet_repro.errors import DataError

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp"
)


def is_image_name(name: str) -> bool:
    # Hidden files (.DS_Store, macOS "._x.jpg" resource forks) are never images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------------------------
# Decoding


class ImageReadError(DataError):
    """`cannot read image <name>: <reason>`; `reason` alone for callers that collect them. One
    message argument, so a DataLoader worker can re-raise it in the training process."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason

    @classmethod
    def of(cls, name: str, reason: str) -> ImageReadError:
        return cls(f"cannot read image {name}: {reason}", reason)


def decode_rgb(source: bytes | str | Path, name: str | None = None) -> np.ndarray:
    """uint8 [H,W,3] RGB of an image file or its bytes (grey, palette and CMYK converted).
    PIL, not torchvision.io: its decoders are deprecated since 0.29, and both decode JPEGs with
    libjpeg-turbo to identical pixels. ImageReadError naming `name` (or the path) otherwise."""
    name = name if name is not None else str(source) if not isinstance(source, bytes) else "<bytes>"
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im.convert("RGB"))
    except UnidentifiedImageError:
        raise ImageReadError.of(name, "not a recognised image file") from None
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, EOFError, DecompressionBombError...
        raise ImageReadError.of(name, " ".join(str(e).split()) or type(e).__name__) from None


def read_rgb(path: str) -> Tensor:
    """uint8 [3,H,W] RGB of an image file (`decode_rgb`), as a tensor."""
    return torch.from_numpy(decode_rgb(path)).permute(2, 0, 1)  # a view: resize is fastest channels-last


# --------------------------------------------------------------------------------------------
# Scanning an ImageNet-style split


def _class_dirs(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _images_in(class_dir: Path) -> list[str]:
    with os.scandir(class_dir) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_name(e.name))


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
