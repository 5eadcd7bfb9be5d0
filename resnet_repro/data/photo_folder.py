"""A generated ImageNet-like JPEG folder for timing the input pipeline (`bench`, issue 16).

Decode speed depends on image size and content: white noise is far slower to decode (and far
larger) than a photograph. These images have ImageNet's typical sizes (mostly 500x375 /
500x333 landscape and 375x500 / 333x500 portrait) and photograph-like content: a smooth
two-colour gradient, a few blurred shapes, smooth random texture and mild sensor-like noise,
saved as JPEG quality 90 (about 60 KB at 500x375; ImageNet's average file is about 110 KB).

    python experiments/make_photo_folder.py /tmp/photos --classes 10 --train 100 --val 10
"""

from __future__ import annotations

from collections.abc import Mapping
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


def write_photo_folder(
    root: str | Path,
    classes: int,
    per_class: int | Mapping[str, int],
    seed: int = 0,
    quality: int = 90,
    splits: tuple[str, ...] = ("train", "val"),
) -> Path:
    """Write `root/<split>/n<8 digits>/<split>_<k>.JPEG` photograph-like images (see module
    doc); `per_class` is a count or {split: count}. Returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        count = per_class if isinstance(per_class, int) else per_class[split]
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            tint = np.array([(60 * c) % 256, (110 * c + 40) % 256, (170 * c + 80) % 256], dtype=np.float64)
            for j in range(count):
                h, w = SIZES[rng.choice(len(SIZES), p=WEIGHTS)]
                photo(rng, h, w, tint).save(d / f"{split}_{j:05d}.JPEG", quality=quality)
    return root
