"""data.decode=device (issue 16): bytes from workers, batched decoding and the §3.4 augmentation
on the device, odd files, the protocols on that path, and the generated photo folder. On the CPU
the device path runs the same code with CPU decoding."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from resnet_repro.data.device_input import (
    augment_batch,
    decode_batch,
    read_bytes,
    resolve_decode,
    stand_ins,
)
from resnet_repro.data.image_files import read_rgb, scan_image_folder
from resnet_repro.data.imagenet import ImageNetStream
from resnet_repro.data.transforms import Lighting, normalization, train_transform
from resnet_repro.errors import ConfigError, DataError
from resnet_repro.evaluation.protocols import PROTOCOLS, evaluate_protocol, finalize, multi_scale_batch_probs, multi_scale_probs

from conftest import SIZES, TinyNet, TintNet, write_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    return write_image_folder(root, 3, {"train": 6, "val": 2}, size=SIZES, seed=0)


def _batches(stream: ImageNetStream, start: int, k: int) -> list[tuple[Tensor, Tensor]]:
    it = stream.iterate(start)
    try:
        return list(itertools.islice(it, k))
    finally:
        it.close()


def test_decode_mode_resolution() -> None:
    assert resolve_decode("auto", "cpu") == "workers" and resolve_decode("auto", torch.device("cuda")) == "device"
    assert resolve_decode("device", "cpu") == "device" and resolve_decode("workers", "cpu") == "workers"
    with pytest.raises(ConfigError, match="auto, device, workers"):
        resolve_decode("gpu", "cpu")


def test_device_augmentation_makes_the_worker_paths_draws() -> None:
    # Same uint8 image, same sample seed: the batched path must draw the same scale, crop, flip
    # and lighting as train_transform under the seeded global RNG. Only float op order differs:
    # values are below 3 in magnitude (ulp 2.4e-7) after ~4 roundings, so 1e-5 is generous,
    # while a different crop or offset differs by 1e-2 or more.
    img = torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8)
    img[:, :, :100] //= 2  # a left/right difference, so a missed flip shows
    seeds = [3, 17, 12345, 2**40 + 1]
    x, draws = augment_batch([img] * 4, seeds, 224, (256, 480), Lighting(0.1), normalization("mean"))
    t = train_transform(224, (256, 480), 0.1, "mean")
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)
        ref = t(img)
        assert torch.allclose(x[k], ref, rtol=0, atol=1e-5), seed
    assert len({d.side for d in draws}) > 1 and {d.flip for d in draws} == {True, False}


def test_device_stream_is_exact_on_resume_and_for_any_worker_count(folder: Path) -> None:
    s0 = ImageNetStream(folder, 4, seed=5, device="cpu", workers=0, holdout=2, decode="device")
    assert s0.decode == "device"
    state = torch.get_rng_state()
    ref = _batches(s0, 0, 6)  # crosses an epoch boundary
    assert torch.equal(torch.get_rng_state(), state)  # private generators only
    assert all(x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 for x, _ in ref)
    s2 = ImageNetStream(folder, 4, seed=5, device="cpu", workers=2, holdout=2, decode="device")
    for (xa, ya), (xb, yb) in zip(ref, _batches(s2, 0, 6)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for k in (1, 5):
        x, y = _batches(s0, k, 1)[0]
        assert torch.equal(x, ref[k][0]) and torch.equal(y, ref[k][1])


def _channel_stats(batches: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Per image: channel means [N,3] and channel stds [N,3]."""
    x = torch.cat([b[0] for b in batches]).double()
    return x.mean(dim=(2, 3)), x.std(dim=(2, 3))


def _within(a: Tensor, b: Tensor, sigmas: float = 4.0) -> bool:
    # Two-sample z-test per channel: |mean a - mean b| < 4 standard errors of the difference
    # (false alarm for independent samples ~6e-5 per channel). Our samples are paired (same
    # draws, decoders differ only by rounding), which makes the difference smaller still.
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    return bool(((a.mean(0) - b.mean(0)).abs() < sigmas * se).all())


def test_both_paths_have_the_same_labels_and_equivalent_augmentation(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path, 4, 12, size=SIZES, seed=3, splits=("train",))
    kw = dict(seed=1, device="cpu", workers=0, crop=32, scale=(36, 64), norm="mean")
    dev = _batches(ImageNetStream(root, 8, decode="device", **kw), 0, 18)  # 144 images, 3 epochs
    wrk = _batches(ImageNetStream(root, 8, decode="workers", **kw), 0, 18)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(dev, wrk))
    (dm, ds), (wm, ws) = _channel_stats(dev), _channel_stats(wrk)
    assert _within(dm, wm) and _within(ds, ws)
    # The test can fail: downscaling to the crop (no scale augmentation) averages the noise away,
    # a per-image std far outside the tolerance.
    other = _batches(ImageNetStream(root, 8, decode="workers", **{**kw, "scale": (32, 32)}), 0, 18)
    assert not _within(ds, _channel_stats(other)[1])


def _jpeg(pixels: np.ndarray, mode: str) -> bytes:
    b = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(b, "JPEG", quality=90)
    return b.getvalue()


def test_odd_files_decode_to_pils_rgb_and_corrupt_ones_are_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    files = {"rgb.JPEG": _jpeg(px, "RGB"), "grey.JPEG": _jpeg(px, "L"), "cmyk.JPEG": _jpeg(px, "CMYK")}
    png = io.BytesIO()
    Image.fromarray(px).save(png, "PNG")
    files["png_in_disguise.JPEG"] = png.getvalue()
    files["corrupt.JPEG"] = b"\xff\xd8\xff\xe0 definitely not a jpeg"
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    paths.append(str(tmp_path / "vanished.JPEG"))
    images, bad = decode_batch([read_bytes(p) for p in paths], "cpu")
    assert sorted(bad) == [4, 5] and "empty or unreadable" in bad[5]
    for p, img in zip(paths[:4], images[:4]):
        assert img is not None and img.shape == (3, 30, 40) and img.dtype == torch.uint8
        # PIL is the worker path's decoder. Both use libjpeg-turbo; allow a level of IDCT rounding.
        assert (img.int() - read_rgb(p).int()).abs().max() <= 1, p
    assert torch.equal(images[3], torch.from_numpy(px).permute(2, 0, 1))  # PNG: lossless


def test_a_corrupt_training_image_is_skipped_named_and_counted(tmp_path: Path, capfd) -> None:
    write_image_folder(tmp_path, 2, 2, splits=("train",))
    bad = tmp_path / "train" / "n00000001" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    # all 5 in a batch; ahead=0: no batch prepared ahead, which would count the file again
    s = ImageNetStream(tmp_path, 5, seed=0, device="cpu", workers=0, decode="device", ahead=0)
    x, y = _batches(s, 0, 1)[0]
    assert x.shape == (5, 3, 224, 224) and torch.isfinite(x).all()  # the batch keeps its shape
    assert s.bad_images.counts == {str(bad): 1} and s.bad_images.total == 1
    err = capfd.readouterr().err
    assert f"skipped unreadable image {bad}" in err and err.count("\n") == 1
    assert stand_ins(4, [1, 3]) == {1: 2, 3: 0}
    with pytest.raises(DataError, match="no image of a batch of 2"):
        stand_ins(2, [0, 1])


def test_every_protocol_counts_the_same_on_both_paths(folder: Path) -> None:
    files, labels, _ = scan_image_folder(folder / "val", scan_image_folder(folder / "train")[2])
    confused = TintNet(3, predict=[0, 1, 0])  # 2 of 6 wrong, known exactly (see test_imagenet.py)
    for protocol in PROTOCOLS:
        r = finalize(evaluate_protocol(confused, files, labels, protocol, device="cpu", workers=0,
                                       batch_size=40, decode="device"))
        assert r == {"top1_err": 100.0 * 2 / 6, "top5_err": 0.0, "n": 6}, protocol
    model = TinyNet(3)
    for protocol in PROTOCOLS:  # a model with varied outputs: the same counts either way
        run = lambda d: evaluate_protocol(model, files, labels, protocol, device="cpu", workers=0,  # noqa: E731
                                          batch_size=60, decode=d)
        assert run("device") == run("workers"), protocol


def test_batched_multi_scale_equals_one_image_at_a_time() -> None:
    model = TinyNet(4).eval()
    torch.manual_seed(1)
    shapes = [(30, 40), (40, 30), (30, 40), (35, 35)]  # two share every scale's size
    views = [[torch.randn(3, h * s, w * s) for s in (1, 2)] for h, w in shapes]
    with torch.no_grad():
        batched = multi_scale_batch_probs(model, views)
        single = torch.cat([multi_scale_probs(model, v) for v in views])
    assert torch.allclose(batched, single, atol=1e-6)
    assert torch.allclose(batched.sum(-1), torch.ones(4), atol=1e-6)


def test_photo_folder_has_imagenet_like_jpegs(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 2, {"train": 3, "val": 1}, seed=0, image="photo")
    files, labels, classes = scan_image_folder(tmp_path / "train")
    assert len(files) == 6 and classes == ["n00000000", "n00000001"]
    for f in files:
        img = read_rgb(f)
        assert max(img.shape[-2:]) >= 400 and min(img.shape[-2:]) >= 300
        # photograph-like: neighbouring pixels are close (white noise would differ by ~85 levels)
        assert (img[:, :, 1:].int() - img[:, :, :-1].int()).abs().float().mean() < 20
        assert Path(f).stat().st_size < 200_000


def test_bench_times_both_decode_paths_and_the_ceiling(tmp_path: Path) -> None:
    from conftest import compose_config
    from resnet_repro.bench import BenchSettings, format_result, run_bench
    from resnet_repro.schema import run_settings

    write_image_folder(tmp_path, 2, {"train": 4, "val": 1}, seed=1, image="photo")
    s = run_settings(compose_config([
        "+exp=imagenet_resnet18", f"data.root={tmp_path}", "data.val_size=2", "data.workers=0", "data.crop=32",
        "data.scale=[36,48]", "trainer.device=cpu", "trainer.batch_size=2", "model.bn_group_size=2", "logger=none",
    ]))
    r = run_bench(s, BenchSettings(iters=1, warmup=0, input_iters=2), ["+exp=imagenet_resnet18"])
    assert set(r["decode_paths"]) == {"device", "workers"} and r["configured_decode"] == "workers"  # auto on CPU
    for p in r["decode_paths"].values():
        assert p["input"]["images_per_s"] > 0 and p["end_to_end"]["images_per_s"] > 0
        assert p["end_to_end_vs_ceiling"] == round(p["end_to_end"]["images_per_s"] / r["ceiling"]["images_per_s"], 3)
    assert r["configured"] is r["decode_paths"]["workers"]["end_to_end"] and "torchvision" in r
    text = format_result(r)
    assert "decode=device" in text and "synthetic ceiling" in text
    with pytest.raises(ConfigError, match="data.decode must be one of"):
        run_bench(s, BenchSettings(iters=1, warmup=0, input_iters=2, decode_paths=("gpu",)))
