"""The paper's ImageNet test protocols, as top-1/top-5 error counts.

- "center": shorter side 256, centre 224 crop (the "centre-crop" validation error of Figure 4).
- "ten_crop": §3.4 "standard 10-crop testing" (Tables 2, 3): shorter side 256, the four corner
  and the centre 224 crops and their horizontal flips.
- "multi_scale": §3.4 fully-convolutional testing (Table 4): the whole image at shorter side
  {224, 256, 384, 480, 640} and its horizontal flip, scores averaged over the 10 views. The
  paper says only "as in [41, 13]"; both VGG [41] and SPP-net [13] average the scores of the
  image and its flip, so we do too (`flips=False` gives the 5 unflipped views alone).

Views are combined by averaging their softmax probabilities (see `average_probs`).

Where images are decoded (`decode`, data.decode): "workers" decode (PIL) and do the geometry on
uint8 images in DataLoader workers (4x less to copy than float); "device" has the workers read
bytes only, and decodes the batch and applies the same view transforms on the device
(device_input.py). Either way batches are normalised on the device, and multi-scale images are
batched too: views of equal size (same scale, same aspect ratio) go through the model together.
Every function evaluates only files[rank::world_size] and returns raw counts
{"top1_wrong", "top5_wrong", "n"}: sum them over processes, then `finalize`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data.device_input import BytesDataset, collate_bytes, decode_all, resolve_decode
from resnet_repro.data.imagenet import ImageFolderDataset, iterate_loader, loader_generator
from resnet_repro.data.transforms import Normalization, center_crop_transform, normalization
from resnet_repro.errors import ConfigError, DataError
from resnet_repro.evaluation.names import PROTOCOLS

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
    return multi_scale_batch_probs(model, [list(images)], flips)


def multi_scale_batch_probs(model: nn.Module, views: Sequence[Sequence[Tensor]], flips: bool = True) -> Tensor:
    """`multi_scale_probs` of several images at once: views[i][s] is image i at scale s
    (normalised [3,h,w]) -> probabilities [B,K]. Views of equal size at a scale share one
    forward pass (with their mirrors); sizes are never padded, which would change the
    fully-convolutional scores."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, per_scale in enumerate(views):
        for s, v in enumerate(per_scale):
            groups.setdefault((s, *v.shape[-2:]), []).append(i)  # insertion order: by scale
    total: Tensor | None = None
    copies = 2 if flips else 1
    for (s, _, _), idx in groups.items():
        x = torch.stack([views[i][s] for i in idx])
        if flips:
            x = torch.cat([x, x.flip(-1)])  # one forward pass for the images and their mirrors
        probs = model(x).float().softmax(-1).view(copies, len(idx), -1).sum(0)
        if total is None:
            total = probs.new_zeros(len(views), probs.shape[-1])
        total.index_add_(0, torch.tensor(idx, device=probs.device), probs)
    if total is None:
        raise ValueError("multi_scale_batch_probs needs at least one view")
    return total / (copies * max(len(v) for v in views))


# --------------------------------------------------------------------------------------------
# Protocols


def _as_lists(batch: list) -> tuple[list, Tensor]:
    """Collate (views, label) items whose views are lists of differently sized tensors."""
    return [v for v, _ in batch], torch.tensor([y for _, y in batch], dtype=torch.int64)


def _count(
    model: nn.Module,
    files: Sequence[str],
    labels: Sequence[int],
    view: nn.Module,
    score: Callable[[object], Tensor],
    *,
    device: torch.device | str,
    workers: int,
    images_per_batch: int,
    rank: int,
    world_size: int,
    stack: bool = True,
    decode: str = "workers",
) -> Counts:
    """Shared loop: shard, load views (in workers, or decoded and viewed on the device),
    score each batch, count errors. `stack`: a batch's views are one tensor (else a list per
    image: multi-scale)."""
    if len(files) != len(labels):
        raise DataError(f"{len(files)} files but {len(labels)} labels")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in a world of {world_size} processes")
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    device = torch.device(device)
    decode = resolve_decode(decode, device)
    files, labels = list(files)[rank::world_size], list(labels)[rank::world_size]
    if decode == "device":
        dataset, collate = BytesDataset(files, labels), collate_bytes
    else:
        dataset, collate = ImageFolderDataset(files, labels, view), None if stack else _as_lists
    loader = DataLoader(
        dataset,
        batch_size=images_per_batch,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda" and decode == "workers",
        generator=loader_generator(),
    )
    counts = {"top1_wrong": 0, "top5_wrong": 0, "n": 0}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in iterate_loader(loader):
                if decode == "device":
                    datas, y, keys = batch
                    views = [view(img) for img in decode_all(datas, [files[k] for k in keys], device)]
                    x = torch.stack(views) if stack else views
                else:
                    x, y = batch
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
    rank: int = 0, world_size: int = 1, decode: str = "workers",
) -> Counts:
    """Shorter side 256, centre 224 crop: the single-view ("centre-crop") error of Figure 4.
    `batch_size`: images per forward pass."""
    nz = normalization(norm)
    return _count(
        model, files, labels, center_crop_transform(RESIZE, CROP, norm=None),
        lambda x: model(nz(_to(x, device))).float().softmax(-1),
        device=device, workers=workers, images_per_batch=max(1, batch_size), rank=rank, world_size=world_size,
        decode=decode,
    )


def ten_crop(
    model: nn.Module, files: Sequence[str], labels: Sequence[int], *, device: torch.device | str,
    norm: str | Normalization = "mean_std", workers: int = 8, batch_size: int = 256,
    rank: int = 0, world_size: int = 1, decode: str = "workers",
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
        decode=decode,
    )


def multi_scale(
    model: nn.Module, files: Sequence[str], labels: Sequence[int], *, device: torch.device | str,
    norm: str | Normalization = "mean_std", workers: int = 8, batch_size: int = 1,
    rank: int = 0, world_size: int = 1, scales: Sequence[int] = MULTI_SCALES, flips: bool = True,
    decode: str = "workers",
) -> Counts:
    """§3.4 fully-convolutional multi-scale testing (Table 4): each whole image is resized to
    shorter side s in {224, 256, 384, 480, 640} (aspect kept) and run through the model, with
    its horizontal mirror; the softmax probabilities are averaged over the 10 views. The paper
    follows [41, 13], which average an image's and its flip's scores; `flips=False` leaves the
    mirrors out. `batch_size // 20` images per batch (at least 1): the largest forward pass,
    at 640 with the mirrors, then holds about as many pixels as `batch_size` 224 crops
    (2 * 640 * 853 / 224^2 = 21.8 for a 4:3 image). Views of equal size are batched."""
    nz = normalization(norm)
    return _count(
        model, files, labels, MultiScale(scales),
        lambda batch: multi_scale_batch_probs(model, [[nz(_to(v, device)) for v in views] for views in batch], flips),
        device=device, workers=workers, images_per_batch=max(1, batch_size // 20), rank=rank,
        world_size=world_size, stack=False, decode=decode,
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
    decode: str = "workers",
) -> Counts:
    """Counts of one protocol ("center", "ten_crop" or "multi_scale") on files[rank::world_size].
    `batch_size` is the model's forward batch (ten_crop: crops; multi_scale: about as many
    pixels as that many 224 crops). `decode`: "workers", "device" or "auto" (data.decode)."""
    try:
        fn = _PROTOCOL_FNS[protocol]
    except KeyError:
        raise ConfigError(f"unknown ImageNet protocol {protocol!r}; choose from: {', '.join(PROTOCOLS)}") from None
    return fn(model, files, labels, device=device, norm=norm, workers=workers, batch_size=batch_size,
              rank=rank, world_size=world_size, decode=decode)

