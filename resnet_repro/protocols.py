"""The paper's ImageNet test protocols, as top-1/top-5 error counts.

- "center": shorter side 256, centre 224 crop (the "centre-crop" validation error of Figure 4).
- "ten_crop": §3.4 "standard 10-crop testing" (Tables 2, 3): shorter side 256, the four corner
  and the centre 224 crops and their horizontal flips.
- "multi_scale": §3.4 fully-convolutional testing (Table 4): the whole image at shorter side
  {224, 256, 384, 480, 640} and its horizontal flip, scores averaged over the 10 views. The
  paper says only "as in [41, 13]"; both VGG [41] and SPP-net [13] average the scores of the
  image and its flip, so we do too (`flips=False` gives the 5 unflipped views alone).

Views are combined by averaging their softmax probabilities (see `average_probs`).

Workers decode and do the geometry on uint8 images (4x less to copy than float); batches are
normalised on the device. Every function evaluates only files[rank::world_size] and returns
raw counts {"top1_wrong", "top5_wrong", "n"}: sum them over processes, then `finalize`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data.imagenet import (
    ImageFolderDataset,
    Normalization,
    center_crop_transform,
    iterate_loader,
    loader_generator,
    normalization,
)
from resnet_repro.errors import ConfigError, DataError

PROTOCOLS = ("center", "ten_crop", "multi_scale")
RESIZE = 256  # §3.4 / AlexNet: test images are resized to shorter side 256 before cropping
CROP = 224
MULTI_SCALES = (224, 256, 384, 480, 640)  # §3.4 "shorter side is in {224, 256, 384, 480, 640}"

Counts = dict[str, int]


# --------------------------------------------------------------------------------------------
# Pure helpers


def ten_crop_boxes(h: int, w: int, crop: int) -> list[tuple[int, int]]:
    """(top, left) of the 10-crop positions in an h x w image: top-left, top-right, bottom-left,
    bottom-right, centre (torchvision's five_crop order and centre rounding)."""
    if not 0 < crop <= min(h, w):
        raise ConfigError(f"a {crop}x{crop} crop does not fit a {h}x{w} image")
    return [
        (0, 0),
        (0, w - crop),
        (h - crop, 0),
        (h - crop, w - crop),
        (int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))),
    ]


def average_probs(logits: Sequence[Tensor]) -> Tensor:
    """Mean of the softmax probabilities of several views' logits ([B,K] each) -> [B,K].

    The paper does not say how the 10 crops or the scales are combined; AlexNet averaged the
    softmax predictions of its 10 patches, and so do we (in float32, also under autocast)."""
    if not logits:
        raise ValueError("average_probs needs at least one view")
    return torch.stack([z.float().softmax(-1) for z in logits]).mean(0)


def topk_wrong(probs: Tensor, labels: Tensor, k: int) -> int:
    """How many rows of probs [B,K] do not have their label among the k highest scores
    (k is capped at K: with fewer than 5 classes every top-5 prediction is right)."""
    k = min(k, probs.shape[-1])
    top = probs.topk(k, dim=-1).indices
    hit = (top == labels.to(top.device).view(-1, 1)).any(dim=-1)
    return int((~hit).sum())


def finalize(counts: Counts) -> dict[str, float | int]:
    """{"top1_err": %, "top5_err": %, "n": images} from (all processes') summed counts."""
    n = int(counts["n"])
    if n == 0:
        raise DataError("no images were evaluated")
    return {
        "top1_err": 100.0 * counts["top1_wrong"] / n,
        "top5_err": 100.0 * counts["top5_wrong"] / n,
        "n": n,
    }


# --------------------------------------------------------------------------------------------
# View transforms (uint8 [3,H,W] in, uint8 out: normalised later, on the device)


class TenCrop(nn.Module):
    """Shorter side to `resize`, then the 5 crops of `ten_crop_boxes` and their horizontal
    flips -> uint8 [10,3,crop,crop] (the 5 crops first, then their flips in the same order)."""

    def __init__(self, resize: int = RESIZE, crop: int = CROP) -> None:
        super().__init__()
        if not 0 < crop <= resize:
            raise ConfigError(f"the crop ({crop}) must fit the resized image ({resize})")
        self.resize, self.crop = resize, crop

    def forward(self, img: Tensor) -> Tensor:
        img = TF.resize(img, [self.resize], antialias=True)
        c = self.crop
        crops = torch.stack([img[:, t : t + c, l : l + c] for t, l in ten_crop_boxes(*img.shape[-2:], c)])
        return torch.cat([crops, crops.flip(-1)])


class MultiScale(nn.Module):
    """The whole image resized to each shorter side in `scales` (aspect kept): a list of uint8
    [3,h_s,w_s]."""

    def __init__(self, scales: Sequence[int] = MULTI_SCALES) -> None:
        super().__init__()
        if not scales or min(scales) < 1:
            raise ConfigError(f"scales must be positive sizes, got {list(scales)}")
        self.scales = tuple(scales)

    def forward(self, img: Tensor) -> list[Tensor]:
        return [TF.resize(img, [s], antialias=True) for s in self.scales]


# --------------------------------------------------------------------------------------------
# Per-batch scoring


def ten_crop_probs(model: nn.Module, views: Tensor) -> Tensor:
    """Normalised views [B,10,3,c,c] -> probabilities [B,K] averaged over the 10 views, from one
    forward pass of B*10 crops."""
    b, v = views.shape[:2]
    logits = model(views.flatten(0, 1)).view(b, v, -1)
    return average_probs(list(logits.unbind(1)))


def multi_scale_probs(model: nn.Module, images: Sequence[Tensor], flips: bool = True) -> Tensor:
    """Normalised whole images [3,h_s,w_s] (one per scale) -> probabilities [1,K] averaged over
    the scales and (when `flips`, the default: VGG [41] and SPP-net [13] do) each scale's
    horizontal flip.

    Fully convolutional (§3.4, after VGG [41]): our nets end in global average pooling and a
    linear fc; average-pooling the features and then applying fc equals applying fc at every
    position of the final map and averaging those scores (both linear), so running the whole
    image through the model is the fully-convolutional score map, averaged."""
    logits = []
    for x in images:
        x = x.unsqueeze(0)
        if flips:
            x = torch.cat([x, x.flip(-1)])  # one forward pass for the image and its mirror
        logits.extend(model(x).split(1))
    return average_probs(logits)


# --------------------------------------------------------------------------------------------
# Protocols


def _first(batch: list) -> object:
    return batch[0]


def _count(
    model: nn.Module,
    files: Sequence[str],
    labels: Sequence[int],
    view: nn.Module,
    score: Callable[[object], Tensor],
    *,
    device: torch.device | str,
    workers: int,
    images_per_batch: int | None,
    rank: int,
    world_size: int,
) -> Counts:
    """Shared loop: shard, load views in workers, score each batch, count errors."""
    if len(files) != len(labels):
        raise DataError(f"{len(files)} files but {len(labels)} labels")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in a world of {world_size} processes")
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    device = torch.device(device)
    dataset = ImageFolderDataset(list(files)[rank::world_size], list(labels)[rank::world_size], view)
    loader = DataLoader(
        dataset,
        batch_size=images_per_batch or 1,
        collate_fn=None if images_per_batch else _first,  # None: one image, a list of views
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=loader_generator(),
    )
    counts = {"top1_wrong": 0, "top5_wrong": 0, "n": 0}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in iterate_loader(loader):
                y = torch.as_tensor(y).view(-1)
                probs = score(x)
                counts["top1_wrong"] += topk_wrong(probs, y, 1)
                counts["top5_wrong"] += topk_wrong(probs, y, 5)
                counts["n"] += int(y.numel())
    finally:
        model.train(was_training)
    return counts


def _to(x: Tensor, device: torch.device | str) -> Tensor:
    return x.to(device, non_blocking=True)


def center_crop(
    model: nn.Module, files: Sequence[str], labels: Sequence[int], *, device: torch.device | str,
    norm: str | Normalization = "mean_std", workers: int = 8, batch_size: int = 256,
    rank: int = 0, world_size: int = 1,
) -> Counts:
    """Shorter side 256, centre 224 crop: the single-view ("centre-crop") error of Figure 4.
    `batch_size`: images per forward pass."""
    nz = normalization(norm)
    return _count(
        model, files, labels, center_crop_transform(RESIZE, CROP, norm=None),
        lambda x: model(nz(_to(x, device))).float().softmax(-1),
        device=device, workers=workers, images_per_batch=max(1, batch_size), rank=rank, world_size=world_size,
    )


def ten_crop(
    model: nn.Module, files: Sequence[str], labels: Sequence[int], *, device: torch.device | str,
    norm: str | Normalization = "mean_std", workers: int = 8, batch_size: int = 256,
    rank: int = 0, world_size: int = 1,
) -> Counts:
    """§3.4 "standard 10-crop testing" (AlexNet's): shorter side 256; the 4 corner and the
    centre 224 crops and their horizontal flips; the 10 softmax outputs are AVERAGED (the paper
    does not say how views are combined; AlexNet averaged its 10 patches' softmax predictions).
    `batch_size`: crops per forward pass, i.e. batch_size // 10 images."""
    nz = normalization(norm)
    return _count(
        model, files, labels, TenCrop(RESIZE, CROP),
        lambda x: ten_crop_probs(model, nz(_to(x, device))),
        device=device, workers=workers, images_per_batch=max(1, batch_size // 10), rank=rank, world_size=world_size,
    )


def multi_scale(
    model: nn.Module, files: Sequence[str], labels: Sequence[int], *, device: torch.device | str,
    norm: str | Normalization = "mean_std", workers: int = 8, batch_size: int = 1,
    rank: int = 0, world_size: int = 1, scales: Sequence[int] = MULTI_SCALES, flips: bool = True,
) -> Counts:
    """§3.4 fully-convolutional multi-scale testing (Table 4): each whole image is resized to
    shorter side s in {224, 256, 384, 480, 640} (aspect kept) and run through the model, with
    its horizontal mirror; the softmax probabilities are averaged over the 10 views. The paper
    follows [41, 13], which average an image's and its flip's scores; `flips=False` leaves the
    mirrors out. Images differ in size, so one image goes through at a time (`batch_size` is
    ignored)."""
    nz = normalization(norm)
    return _count(
        model, files, labels, MultiScale(scales),
        lambda views: multi_scale_probs(model, [nz(_to(v, device)) for v in views], flips),
        device=device, workers=workers, images_per_batch=None, rank=rank, world_size=world_size,
    )


_PROTOCOL_FNS = {"center": center_crop, "ten_crop": ten_crop, "multi_scale": multi_scale}


def evaluate_protocol(
    model: nn.Module,
    files: Sequence[str],
    labels: Sequence[int],
    protocol: str,
    *,
    device: torch.device | str,
    norm: str | Normalization = "mean_std",
    workers: int = 8,
    batch_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
) -> Counts:
    """Counts of one protocol ("center", "ten_crop" or "multi_scale") on files[rank::world_size].
    `batch_size` is the model's forward batch (ten_crop: crops; multi_scale: one image)."""
    try:
        fn = _PROTOCOL_FNS[protocol]
    except KeyError:
        raise ConfigError(f"unknown ImageNet protocol {protocol!r}; choose from: {', '.join(PROTOCOLS)}") from None
    return fn(model, files, labels, device=device, norm=norm, workers=workers, batch_size=batch_size,
              rank=rank, world_size=world_size)

