"""The §3.4 ImageNet transforms of a decoded uint8 [3,H,W] image: mean subtraction, AlexNet's
PCA lighting noise, the random shorter side in [256, 480], and the training and centre-crop
pipelines built from them. The device path (`device_input.py`) makes the same draws on batches.

Mean subtraction: the paper subtracts the per-pixel mean (§3.4, after AlexNet). We subtract a
per-CHANNEL mean instead; see `Normalization`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data.imagenet_stats import IMAGENET_MEAN, IMAGENET_STD, PCA_EIGVAL, PCA_EIGVEC
from resnet_repro.errors import ConfigError, DataError

NORM_MODES = ("mean", "mean_std")


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
