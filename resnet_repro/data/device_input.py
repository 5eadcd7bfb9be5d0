"""ImageNet input decoded and augmented on the training device (`data.decode=device`, issue 16).

DataLoader workers only read each file's bytes. The training process decodes a whole batch at
once with `torchvision.io.decode_jpeg(list, device=...)` (nvJPEG on CUDA, libjpeg-turbo on the
CPU: one code path, tested everywhere) and runs the §3.4 augmentation on the decoded images where
they sit: shorter side in [256, 480], random crop, flip per image; to-float, PCA lighting and
normalisation on the stacked batch. A background thread prepares the next batches while the
model trains on this one.

Every draw comes from a torch.Generator seeded with the image's sample_seed, in the order the
worker path (`train_transform`) draws them from the seeded global RNG: the same sampler gives the
same scale, crop, flip and lighting for an image in either path, so a batch is a pure function of
(seed, iteration) and resume is exact. Only the decoders' and resizers' rounding can differ.

Odd files: greyscale and CMYK JPEGs decode to RGB; a file that is not a JPEG (a PNG named .JPEG)
or that nvJPEG refuses is decoded on the CPU (torchvision's decode_image, then PIL). A training
image nothing can decode is skipped with a one-line warning naming it, counted (`BadImages`),
and stood in for by another image of its batch with the skipped image's own draws, so batch
shapes never change. Evaluation raises a DataError naming the file instead: an error rate over a
silently smaller set is not the number the paper reports (and val is read at the first eval).
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data.image_files import ImageReadError, decode_rgb
from resnet_repro.errors import ConfigError, DataError

DECODE_MODES = ("auto", "device", "workers")
JPEG_MAGIC = (0xFF, 0xD8, 0xFF)

# torchvision 0.29 deprecates its decoders in favour of TorchCodec, which has no batched nvJPEG
# decode of in-memory bytes yet; the warning would repeat for every batch.
warnings.filterwarnings("ignore", message=r".*decoding and encoding capabilities of TorchVision", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r".*TorchCodec", category=DeprecationWarning)


def resolve_decode(mode: str, device: torch.device | str) -> str:
    """`device` or `workers` for data.decode on `device`. auto: the device path on CUDA (the
    point of it: nvJPEG and GPU augmentation), the worker path on the CPU (decoding in the
    training process would take the cores the model trains on; workers decode in parallel)."""
    if mode not in DECODE_MODES:
        raise ConfigError(f"data.decode must be one of {', '.join(DECODE_MODES)}, got {mode!r}")
    if mode == "auto":
        return "device" if torch.device(device).type == "cuda" else "workers"
    return mode


# --------------------------------------------------------------------------------------------
# Workers: bytes only


def read_bytes(path: str) -> Tensor:
    """A file's bytes as uint8 [n]; empty if it cannot be read (reported when decoding)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


class BytesDataset(torch.utils.data.Dataset):
    """Items `(bytes, label, key)` for a key `index` or `(index, sample_seed)`: the worker's
    whole job in the device path."""

    def __init__(self, files: Sequence[str], labels: Sequence[int]) -> None:
        if len(files) != len(labels):
            raise DataError(f"{len(files)} files but {len(labels)} labels")
        self.files, self.labels = list(files), list(labels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int, int | tuple[int, int]]:
        index = key[0] if isinstance(key, tuple) else key
        return read_bytes(self.files[index]), self.labels[index], key


def collate_bytes(items: list) -> tuple[list[Tensor], Tensor, list]:
    """(list of byte tensors, labels int64 [B], keys): byte strings differ in length."""
    return [d for d, _, _ in items], torch.tensor([y for _, y, _ in items], dtype=torch.int64), [k for _, _, k in items]


# --------------------------------------------------------------------------------------------
# Decoding a batch


def _decoders():
    """torchvision.io's decoders, imported when first needed: a torchvision built without them
    still trains CIFAR and decodes ImageNet in the workers (data.decode=workers)."""
    try:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    except ImportError as e:
        raise ConfigError(f"data.decode=device needs torchvision.io's JPEG decoders ({e}); use data.decode=workers") from None
    return ImageReadMode, decode_image, decode_jpeg


def _is_jpeg(data: Tensor) -> bool:
    return data.numel() > 3 and tuple(data[:3].tolist()) == JPEG_MAGIC


def _decode_one(data: Tensor, device: torch.device) -> Tensor:
    """One image by the fallbacks: the device's JPEG decoder, torchvision's CPU decoders
    (JPEG incl. CMYK, PNG, ...), then PIL. Raises with the last reason."""
    if data.numel() == 0:
        raise ValueError("empty or unreadable file")
    ImageReadMode, decode_image, decode_jpeg = _decoders()
    reason = ""
    if _is_jpeg(data) and device.type != "cpu":
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as e:
            reason = str(e)
    try:
        return decode_image(data, mode=ImageReadMode.RGB).to(device)
    except RuntimeError as e:
        reason = str(e)
    try:
        arr = decode_rgb(data.numpy().tobytes())
    except ImageReadError as e:
        raise ValueError(e.reason or " ".join(reason.split())) from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(device)


def decode_batch(datas: Sequence[Tensor], device: torch.device | str) -> tuple[list[Tensor | None], dict[int, str]]:
    """uint8 [3,H,W] RGB images on `device` (None where undecodable) and {position: reason}.

    JPEGs go through one batched decode_jpeg call; it returns all or nothing, so a batch it
    refuses is decoded image by image, where each failure falls back to the CPU decoders."""
    device = torch.device(device)
    ImageReadMode, _, decode_jpeg = _decoders()
    out: list[Tensor | None] = [None] * len(datas)
    bad: dict[int, str] = {}
    jpegs = [i for i, d in enumerate(datas) if _is_jpeg(d)]
    if jpegs:
        try:
            decoded = decode_jpeg([datas[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, img in zip(jpegs, decoded):
                out[i] = img
        except RuntimeError:
            pass  # one bad image spoils the batch call: the loop below decodes one by one
    for i, d in enumerate(datas):
        if out[i] is None:
            try:
                out[i] = _decode_one(d, device)
            except ValueError as e:
                bad[i] = str(e)
    return out, bad


def decode_all(datas: Sequence[Tensor], files: Sequence[str], device: torch.device | str) -> list[Tensor]:
    """decode_batch for evaluation: a DataError naming the first undecodable file."""
    images, bad = decode_batch(datas, device)
    if bad:
        i = min(bad)
        raise DataError(f"cannot read image {files[i]}: {bad[i]}")
    return images  # type: ignore[return-value]


@dataclass
class BadImages:
    """Training images skipped as undecodable: how many times, per file (for the summary)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> None:
        self.counts[path] = self.counts.get(path, 0) + 1
        print(f"warning: skipped unreadable image {path}: {reason} (its batch slot reuses another image)",
              file=sys.stderr)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# --------------------------------------------------------------------------------------------
# §3.4 augmentation, batched


@dataclass(frozen=True)
class Draws:
    """One image's augmentation: resized shorter side, crop corner, flip, lighting offset [3]."""

    side: int
    top: int
    left: int
    flip: bool
    offset: Tensor


def augment_one(img: Tensor, seed: int, crop: int, scale: tuple[int, int], lighting) -> tuple[Tensor, Draws]:
    """uint8 [3,H,W] -> uint8 [3,crop,crop] on img's device, and the draws. The draws follow
    `train_transform`'s order (RandomShorterSide, RandomCrop's top then left, each only when
    the image is larger than the crop, the flip, Lighting) from a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    side = int(torch.randint(scale[0], scale[1] + 1, (), generator=g))
    img = TF.resize(img, [side], antialias=True)
    h, w = img.shape[-2:]
    top = int(torch.randint(0, h - crop + 1, (), generator=g)) if h > crop else 0
    left = int(torch.randint(0, w - crop + 1, (), generator=g)) if w > crop else 0
    flip = bool(torch.rand(1, generator=g) < 0.5)  # RandomHorizontalFlip: kept when rand >= p
    offset = lighting.offset(generator=g) if lighting.alphastd > 0 else torch.zeros(3)
    out = img[:, top : top + crop, left : left + crop]
    return (out.flip(-1) if flip else out), Draws(side, top, left, flip, offset)


def finish_batch(crops: Sequence[Tensor], offsets: Tensor, norm) -> Tensor:
    """uint8 crops -> float32 [B,3,c,c]: /255, + each image's lighting offset, normalised: the
    worker path's ToDtype, Lighting and Normalize, once for the whole batch."""
    x = torch.stack(list(crops))
    mean = torch.tensor(norm.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, device=x.device).view(1, 3, 1, 1)
    off = offsets.to(x.device, torch.float32).view(-1, 3, 1, 1)
    return x.float().div_(255.0).add_(off).sub_(mean).div_(std)


def augment_batch(
    images: Sequence[Tensor], seeds: Sequence[int], crop: int, scale: tuple[int, int], lighting, norm
) -> tuple[Tensor, list[Draws]]:
    """§3.4 training views of decoded images: float32 [B,3,crop,crop] and each image's draws."""
    crops, draws = [], []
    for img, seed in zip(images, seeds):
        if min(img.shape[-2:]) < 1:
            raise DataError(f"an image of size {list(img.shape)} cannot be augmented")
        c, d = augment_one(img, seed, crop, scale, lighting)
        crops.append(c)
        draws.append(d)
    return finish_batch(crops, torch.stack([d.offset for d in draws]), norm), draws


def stand_ins(n: int, bad: Sequence[int]) -> dict[int, int]:
    """For each bad position, the next good position of the batch (cyclically): its image
    takes the bad slot (augmented with the bad slot's draws). DataError if none is good."""
    bad_set = set(bad)
    if len(bad_set) >= n:
        raise DataError(f"no image of a batch of {n} could be decoded")
    out = {}
    for i in sorted(bad_set):
        j = (i + 1) % n
        while j in bad_set:
            j = (j + 1) % n
        out[i] = j
    return out


# --------------------------------------------------------------------------------------------
# A background producer


def background(make: Callable[[], Iterator], depth: int, device: torch.device) -> Iterator:
    """Items of `make()` produced by a daemon thread up to `depth` ahead (decoding and
    augmenting the next batches while the model runs; torch's kernels release the GIL). On
    CUDA the thread works on its own stream and each item is handed over with an event.
    Errors are re-raised in the consumer; closing the consumer stops the thread."""
    if depth < 1:
        yield from make()
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    cuda = device.type == "cuda"

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        stream = torch.cuda.Stream(device) if cuda else None
        items = None
        try:
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                items = make()
                for item in items:
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                    if not put(("item", item, event)):
                        break
            put(("end", None, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises
            e.__traceback__ = None  # keep no frames (and the loader's workers) alive
            put(("error", e, None))
        finally:
            if items is not None and hasattr(items, "close"):
                items.close()  # stops the DataLoader's workers

    thread = threading.Thread(target=work, name="device-input", daemon=True)
    thread.start()
    try:
        while True:
            kind, value, event = q.get()
            if kind == "error":
                raise value
            if kind == "end":
                return
            if event is not None:
                current = torch.cuda.current_stream(device)
                current.wait_event(event)
                for t in value:  # the side stream's allocator must not reuse these too early
                    if isinstance(t, Tensor) and t.is_cuda:
                        t.record_stream(current)
            yield value
    finally:
        stop.set()
        thread.join(timeout=60)

