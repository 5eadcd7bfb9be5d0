"""Generated image folders, the one writer for tests, `bench` and
`experiments/make_photo_folder.py`: `root/<split>/<class>/<split>_<k><ext>`.

Kinds of image:
- "noise": random noise over a per-class tint, at given sizes (tiny, fast to write; a
  classifier can tell the classes apart by colour).
- "photo": photograph-like images for timing the input pipeline (issue 16). Decode speed depends
  on image size and content: white noise is far slower to decode (and far larger) than a
  photograph. These have ImageNet's typical sizes (mostly 500x375 / 500x333 landscape and
  375x500 / 333x500 portrait) and photograph-like content: a smooth two-colour gradient, a few
  blurred shapes, smooth random texture and mild sensor-like noise, saved as JPEG quality 90
  (about 60 KB at 500x375; ImageNet's average file is about 110 KB).
- "flat": every image one colour of its own (CIFAR-style folders for tests).
- a callable `(split, class name, k) -> uint8 [H,W,3]`: pixels a test knows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# (height, width) and weights: ImageNet's common shapes (most train images are 500 px on the long side).
SIZES = ((375, 500), (333, 500), (500, 375), (500, 333), (500, 500), (300, 400))
WEIGHTS = (0.45, 0.2, 0.15, 0.08, 0.07, 0.05)


def photo(rng: np.random.Generator, h: int, w: int, tint: np.ndarray) -> Image.Image:
    """One photograph-like RGB image: gradient, blurred shapes, texture, mild noise."""
    a, b = rng.uniform(0, 255, 3) * 0.5 + tint * 0.5, rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, h if rng.random() < 0.5 else w)
    ramp = t[:, None, None] * np.ones((1, w, 1)) if len(t) == h else t[None, :, None] * np.ones((h, 1, 1))
    base = Image.fromarray((a + (b - a) * ramp).astype(np.uint8))
    draw = ImageDraw.Draw(base)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    pixels = np.asarray(base.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)
    for step, amp in ((8, 25.0), (2, 15.0)):  # texture: smooth random fields, coarse and fine
        field = rng.normal(0, 1, (h // step, w // step)).astype(np.float32)
        pixels += amp * np.asarray(Image.fromarray(field).resize((w, h), Image.BICUBIC))[..., None]
    pixels += rng.normal(0, 4, pixels.shape)  # mild noise, like a camera's
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _tint(c: int) -> np.ndarray:
    return np.array([(60 * c) % 256, (110 * c + 40) % 256, (170 * c + 80) % 256], dtype=np.float64)


def write_image_folder(
    root: str | Path,
    classes: int | Sequence[str],
    per_class: int | Mapping[str, int],
    size: tuple[int, int] | Sequence[tuple[int, int]] = (40, 56),
    seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
    ext: str = ".JPEG",
    image: str | Callable[[str, str, int], np.ndarray] = "noise",
    quality: int | None = None,
    name: str = "{split}_{k:04d}",
) -> Path:
    """Write `root/<split>/<class>/<name><ext>` (see the module doc for `image`); returns `root`.

    `classes`: a count (ImageNet-style names n00000000, n00000001, ...) or the names;
    `per_class`: images per class, or a {split: count} mapping; `size`: one (h, w) for every
    image, or a list cycled through ("noise" and "flat"; "photo" draws ImageNet's sizes);
    `quality`: for JPEG files (default: PIL's 75; "photo": 90)."""
    root = Path(root)
    names = [f"n{c:08d}" for c in range(classes)] if isinstance(classes, int) else list(classes)
    sizes = [tuple(size)] if isinstance(size[0], int) else [tuple(s) for s in size]  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    n = 0
    for split in splits:
        count = per_class if isinstance(per_class, int) else per_class[split]
        for c, cls in enumerate(names):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                h, w = sizes[n % len(sizes)]
                if callable(image):
                    im = Image.fromarray(image(split, cls, k))
                elif image == "noise":
                    noise = rng.integers(0, 96, size=(h, w, 3))
                    im = Image.fromarray(np.clip(_tint(c) * 0.6 + noise, 0, 255).astype(np.uint8))
                elif image == "photo":
                    h, w = SIZES[rng.choice(len(SIZES), p=WEIGHTS)]
                    im = photo(rng, h, w, _tint(c))
                elif image == "flat":
                    im = Image.new("RGB", (w, h), (k * 40 % 256, c * 100 % 256, 0))
                else:
                    raise ValueError(f"unknown image kind {image!r}; choose noise, photo, flat or a callable")
                path = d / f"{name.format(split=split, k=k)}{ext}"
                q = quality or (90 if image == "photo" else None)
                im.save(path, **({"quality": q} if q and ext.lower() in (".jpg", ".jpeg") else {}))
                n += 1
    return root
