"""Data sources and the CIFAR tensor pipeline (§4.2): CPU only, tiny sizes, output in tmp_path."""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_repro.data.pipeline import TrainStream, eval_batches, per_pixel_mean, to_device
from resnet_repro.data.sources import ArraySplit, load_cifar10, load_image_folder, split_train_val
from resnet_repro.data.synthetic import make_synthetic
from resnet_repro.errors import DataError

from conftest import write_image_folder

REAL_CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]


# --------------------------------------------------------------------------------------------
# Synthetic data


def test_synthetic_same_seed_gives_identical_tensors_and_different_seed_differs() -> None:
    a, b = make_synthetic(200, 50, seed=1), make_synthetic(200, 50, seed=1)
    c = make_synthetic(200, 50, seed=2)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)


def test_synthetic_shapes_dtypes_and_class_names() -> None:
    ds = make_synthetic(120, 30, seed=0, num_classes=10)
    assert ds.train.x.shape == (120, 3, 32, 32) and ds.train.x.dtype == torch.uint8
    assert ds.train.y.shape == (120,) and ds.train.y.dtype == torch.int64
    assert ds.test.x.shape == (30, 3, 32, 32) and ds.test.y.dtype == torch.int64
    assert ds.classes == [f"class{i}" for i in range(10)]
    assert int(ds.train.y.min()) >= 0 and int(ds.train.y.max()) <= 9


def test_synthetic_classes_are_balanced_in_each_split() -> None:
    ds = make_synthetic(1000, 205, seed=3, num_classes=10)
    assert torch.bincount(ds.train.y, minlength=10).tolist() == [100] * 10
    counts = torch.bincount(ds.test.y, minlength=10)
    assert int(counts.max() - counts.min()) <= 1


def test_synthetic_images_of_a_class_are_closer_to_their_class_mean_than_to_others() -> None:
    # The learnability the smoke runs rely on: a nearest-class-mean classifier beats chance.
    ds = make_synthetic(2000, 500, seed=0)
    xtr, xte = ds.train.x.float().flatten(1), ds.test.x.float().flatten(1)
    means = torch.stack([xtr[ds.train.y == k].mean(0) for k in range(10)])
    accuracy = (torch.cdist(xte, means).argmin(1) == ds.test.y).float().mean().item()
    assert accuracy > 0.5


# --------------------------------------------------------------------------------------------
# Train/val holdout (§4.2: 45k/5k)


def _indexed_split(n: int) -> ArraySplit:
    # Image i carries i in its first pixels and label i, so rows can be traced back.
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n) % 256
    x[:, 0, 0, 1] = torch.arange(n) // 256
    return ArraySplit(x=x, y=torch.arange(n, dtype=torch.int64))


def test_split_train_val_is_deterministic_by_seed() -> None:
    split = _indexed_split(500)
    tr1, va1 = split_train_val(split, 50, seed=7)
    tr2, va2 = split_train_val(split, 50, seed=7)
    _, va3 = split_train_val(split, 50, seed=8)
    assert torch.equal(va1.y, va2.y) and torch.equal(tr1.y, tr2.y) and torch.equal(va1.x, va2.x)
    assert not torch.equal(va1.y, va3.y)


def test_split_train_val_parts_are_disjoint_and_cover_all_images_with_matching_pixels() -> None:
    split = _indexed_split(500)
    train, val = split_train_val(split, 50, seed=0)
    assert len(train) == 450 and len(val) == 50
    assert set(train.y.tolist()).isdisjoint(val.y.tolist())
    assert sorted(train.y.tolist() + val.y.tolist()) == list(range(500))
    for part in (train, val):  # images travel with their labels
        ids = part.x[:, 0, 0, 0].long() + 256 * part.x[:, 0, 0, 1].long()
        assert torch.equal(ids, part.y)


def test_split_train_val_zero_gives_empty_val_and_unchanged_train() -> None:
    split = _indexed_split(100)
    train, val = split_train_val(split, 0, seed=0)
    assert torch.equal(train.x, split.x) and torch.equal(train.y, split.y)
    assert val.x.shape == (0, 3, 32, 32) and val.y.shape == (0,)


@pytest.mark.parametrize("val_size", [100, 101, -1])
def test_split_train_val_rejects_val_size_outside_0_to_n(val_size: int) -> None:
    with pytest.raises(DataError, match="val_size"):
        split_train_val(_indexed_split(100), val_size, seed=0)


def test_split_train_val_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    split_train_val(_indexed_split(100), 10, seed=0)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------------------------
# Per-pixel mean and the training stream (§4.2)


def test_per_pixel_mean_is_the_mean_image_on_the_0_1_scale() -> None:
    x = make_synthetic(300, 0, seed=0).train.x
    mean = per_pixel_mean(x, chunk=64)  # several chunks, the last one partial
    assert mean.dtype == torch.float32 and mean.shape == (3, 32, 32)
    torch.testing.assert_close(mean, x.float().div(255).mean(0), atol=1e-6, rtol=0)


def _stream(
    n: int = 100, batch: int = 16, seed: int = 0, **kw
) -> tuple[TrainStream, ArraySplit, torch.Tensor]:
    split = make_synthetic(n, 0, seed=5).train
    split = ArraySplit(x=split.x, y=torch.arange(n, dtype=torch.int64))  # label = index
    mean = per_pixel_mean(split.x)
    return TrainStream(split, mean, batch_size=batch, seed=seed, **kw), split, mean


def test_train_batch_is_a_pure_function_of_seed_and_iteration_for_resume() -> None:
    s1, split, mean = _stream()
    for it in range(20):  # walk through several epochs on one object
        s1.batch(it)
    x1, y1 = s1.batch(13)
    s2 = TrainStream(split, mean, batch_size=16, seed=0)  # fresh object, as after a resume
    x2, y2 = s2.batch(13)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = TrainStream(split, mean, batch_size=16, seed=1).batch(13)
    assert not torch.equal(x1, x3)


def test_train_batch_shapes_and_dtypes() -> None:
    s, _, _ = _stream(n=100, batch=16)
    assert s.steps_per_epoch == 6  # 100 // 16: the partial batch is dropped
    x, y = s.batch(0)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64
    assert s.epoch_of(5) == 0 and s.epoch_of(6) == 1


def test_each_epoch_visits_every_index_at_most_once_and_drops_only_the_remainder() -> None:
    s, _, _ = _stream(n=100, batch=16)
    for epoch in range(3):
        seen = torch.cat([s.batch(epoch * 6 + k)[1] for k in range(6)]).tolist()
        assert len(seen) == len(set(seen)) == 96
    first = torch.cat([s.batch(k)[1] for k in range(6)])
    second = torch.cat([s.batch(6 + k)[1] for k in range(6)])
    assert not torch.equal(first, second)  # a new shuffle each epoch


def test_every_index_is_covered_exactly_once_when_n_divides_batch() -> None:
    s, _, _ = _stream(n=96, batch=16)
    seen = torch.cat([s.batch(k)[1] for k in range(s.steps_per_epoch)])
    assert sorted(seen.tolist()) == list(range(96))


def test_train_crops_are_shifted_windows_of_the_zero_padded_normalised_image() -> None:
    s, split, mean = _stream(n=64, batch=32)
    x, y = s.batch(3)
    shifts_seen = set()
    for j in range(32):
        padded = F.pad(split.x[y[j]].float().div(255) - mean, (4, 4, 4, 4))
        match = None
        for top in range(9):
            for left in range(9):
                window = padded[:, top : top + 32, left : left + 32]
                if torch.allclose(x[j], window, atol=1e-6):
                    match = (top, left, False)
                elif torch.allclose(x[j], window.flip(-1), atol=1e-6):
                    match = (top, left, True)
        assert match is not None, f"batch row {j} is not a (flipped) crop of its padded image"
        shifts_seen.add(match[:2])
    assert len(shifts_seen) > 5  # offsets really vary


def test_flips_happen_about_half_the_time() -> None:
    s, split, mean = _stream(n=512, batch=512, pad=0)
    x, y = s.batch(0)
    target = split.x[y].float().div(255) - mean
    same = torch.isclose(x, target, atol=1e-6).flatten(1).all(1)
    mirrored = torch.isclose(x, target.flip(-1), atol=1e-6).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0.4 < mirrored.float().mean().item() < 0.6


def test_no_flip_option_never_flips() -> None:
    s, split, mean = _stream(n=64, batch=64, pad=0, flip=False)
    x, y = s.batch(0)
    torch.testing.assert_close(x, split.x[y].float().div(255) - mean, atol=1e-6, rtol=0)


def test_unaugmented_epoch_has_zero_mean() -> None:
    s, _, _ = _stream(n=96, batch=32, pad=0, flip=False)
    total = torch.stack([s.batch(k)[0] for k in range(s.steps_per_epoch)]).flatten(0, 1)
    assert total.mean(0).abs().max().item() < 1e-5


def test_train_stream_rejects_split_smaller_than_a_batch() -> None:
    split = make_synthetic(10, 0, seed=0).train
    with pytest.raises(DataError, match="fewer than one batch"):
        TrainStream(split, per_pixel_mean(split.x), batch_size=16, seed=0)


def test_eval_batches_are_in_order_unaugmented_and_keep_the_last_partial_batch() -> None:
    ds = make_synthetic(10, 50, seed=0)
    mean = per_pixel_mean(ds.train.x)
    test = to_device(ds.test, "cpu")
    batches = list(eval_batches(test, mean, batch_size=16, device="cpu"))
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(torch.cat([b[1] for b in batches]), ds.test.y)
    torch.testing.assert_close(x, ds.test.x.float().div(255) - mean, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Image folders (directory and tar archive)

CLASSES = ["cat", "ant", "bee"]  # deliberately unsorted: labels follow sorted names


def _pixels(split: str, cls: str, i: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{split}/{cls}/{i}".encode()))
    return rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def _make_folder(root: Path, classes: list[str] = CLASSES, per_class: int = 4) -> Path:
    return write_image_folder(root, classes, per_class, splits=("train", "test"), ext=".png", image=_pixels,
                              name="{k:04d}")


def _tar(folder: Path, out: Path, top: str | None) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        if top is None:
            for child in sorted(folder.iterdir()):
                tar.add(child, arcname=child.name)
        else:
            tar.add(folder, arcname=top)
    return out


def _check_tiny(ds) -> None:
    assert ds.classes == ["ant", "bee", "cat"]
    for split_name in ("train", "test"):
        split = getattr(ds, split_name)
        assert split.x.shape == (12, 3, 32, 32) and split.x.dtype == torch.uint8
        assert split.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        for k, cls in enumerate(ds.classes):
            for i in range(4):
                expected = torch.from_numpy(_pixels(split_name, cls, i)).permute(2, 0, 1)
                assert torch.equal(split.x[4 * k + i], expected), f"{split_name}/{cls}/{i}"


def test_image_folder_directory_loads_labels_and_exact_pixels(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "tiny")
    _check_tiny(load_image_folder(folder, cache_dir=tmp_path / "cache"))


@pytest.mark.parametrize("top", ["tiny-top", None], ids=["one-top-folder", "no-top-folder"])
def test_image_folder_tar_gz_loads_labels_and_exact_pixels(tmp_path: Path, top: str | None) -> None:
    archive = _tar(_make_folder(tmp_path / "tiny"), tmp_path / "tiny.tar.gz", top)
    _check_tiny(load_image_folder(archive, cache_dir=tmp_path / "cache"))


def test_image_folder_directory_with_one_top_level_folder_is_found(tmp_path: Path) -> None:
    _make_folder(tmp_path / "outer" / "inner")
    _check_tiny(load_image_folder(tmp_path / "outer", cache_dir=tmp_path / "cache"))


@pytest.mark.parametrize("as_archive", [False, True], ids=["directory", "archive"])
def test_image_folder_second_load_uses_cache_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_archive: bool
) -> None:
    src = _make_folder(tmp_path / "tiny")
    if as_archive:
        src = _tar(src, tmp_path / "tiny.tgz", "tiny")
    cache = tmp_path / "cache"
    first = load_image_folder(src, cache_dir=cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and not list(cache.glob(".tmp-*"))
    mtime = files[0].stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded images although a cache exists")

    monkeypatch.setattr(Image, "open", no_decoding)
    second = load_image_folder(src, cache_dir=cache)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)
    assert second.classes == first.classes
    assert files[0].stat().st_mtime_ns == mtime


def test_image_folder_cache_dir_defaults_to_env_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESNET_REPRO_CACHE", str(tmp_path / "envcache"))
    load_image_folder(_make_folder(tmp_path / "tiny"))
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 1


def test_image_folder_cache_is_invalidated_when_an_image_changes(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "tiny")
    load_image_folder(folder, cache_dir=tmp_path / "cache")
    new = np.full((32, 32, 3), 7, dtype=np.uint8)
    target = folder / "train" / "bee" / "0002.png"
    Image.fromarray(new).save(target)
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    ds = load_image_folder(folder, cache_dir=tmp_path / "cache")
    assert torch.equal(ds.train.x[4 + 2], torch.from_numpy(new).permute(2, 0, 1))


def test_image_folder_archive_cache_is_keyed_by_content_and_says_it_decodes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "cache"
    folder = _make_folder(tmp_path / "tiny")
    first = _tar(folder, tmp_path / "tiny.tar.gz", "tiny")
    copy = tmp_path / "elsewhere" / "renamed.tgz"  # the same bytes, another name, path and mtime
    copy.parent.mkdir()
    shutil.copyfile(first, copy)

    load_image_folder(first, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    err = capsys.readouterr().out
    assert f"decoding 24 images from {first} once (cached in {cache_file})" in err

    _check_tiny(load_image_folder(copy, cache_dir=cache))
    assert list(cache.glob("*.npz")) == [cache_file]  # one cache file for both copies
    assert "decoding" not in capsys.readouterr().out

    # Changed content at the same path misses the cache: the new pixels are decoded.
    new = np.full((32, 32, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(folder / "train" / "bee" / "0002.png")
    _tar(folder, copy, "tiny")
    ds = load_image_folder(copy, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2 and "decoding 24 images" in capsys.readouterr().out
    assert torch.equal(ds.train.x[4 + 2], torch.from_numpy(new).permute(2, 0, 1))


def test_image_folder_unwritable_cache_dir_warns_and_still_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="not caching"):
        ds = load_image_folder(_make_folder(tmp_path / "tiny"), cache_dir=blocker / "cache")
    _check_tiny(ds)


def test_image_folder_missing_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        load_image_folder(missing, cache_dir=tmp_path / "cache")


def test_image_folder_without_test_folder_says_so(tmp_path: Path) -> None:
    import shutil

    folder = _make_folder(tmp_path / "tiny")
    shutil.rmtree(folder / "test")
    with pytest.raises(DataError, match="no test/ folder"):
        load_image_folder(folder, cache_dir=tmp_path / "cache")
    archive = _tar(folder, tmp_path / "tiny.tar.gz", "tiny")
    with pytest.raises(DataError, match="no test/ folder"):
        load_image_folder(archive, cache_dir=tmp_path / "cache")


def test_image_folder_class_missing_in_test_is_named(tmp_path: Path) -> None:
    import shutil

    folder = _make_folder(tmp_path / "tiny")
    shutil.rmtree(folder / "test" / "bee")
    with pytest.raises(DataError, match="missing from test: bee"):
        load_image_folder(folder, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("as_archive", [False, True], ids=["directory", "archive"])
def test_image_folder_empty_class_folder_is_named(tmp_path: Path, as_archive: bool) -> None:
    folder = _make_folder(tmp_path / "tiny")
    for f in (folder / "train" / "ant").iterdir():
        f.unlink()
    (folder / "train" / "ant" / "notes.txt").write_text("not an image")
    src = _tar(folder, tmp_path / "tiny.tar.gz", "tiny") if as_archive else folder
    with pytest.raises(DataError, match=r"train/ant has no images"):
        load_image_folder(src, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("as_archive", [False, True], ids=["directory", "archive"])
def test_image_folder_wrong_size_image_names_file_and_size(
    tmp_path: Path, as_archive: bool
) -> None:
    folder = _make_folder(tmp_path / "tiny")
    narrow = np.zeros((32, 31, 3), dtype=np.uint8)  # H=32, W=31
    Image.fromarray(narrow).save(folder / "test" / "cat" / "0001.png")
    src = _tar(folder, tmp_path / "tiny.tar.gz", "tiny") if as_archive else folder
    with pytest.raises(DataError, match=r"test/cat/0001\.png is 31x32"):
        load_image_folder(src, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("as_archive", [False, True], ids=["directory", "archive"])
def test_image_folder_corrupt_image_names_file(tmp_path: Path, as_archive: bool) -> None:
    folder = _make_folder(tmp_path / "tiny")
    (folder / "train" / "bee" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    src = _tar(folder, tmp_path / "tiny.tar.gz", "tiny") if as_archive else folder
    with pytest.raises(DataError, match=r"cannot read image .*train/bee/0003\.png"):
        load_image_folder(src, cache_dir=tmp_path / "cache")


def test_image_folder_grayscale_images_become_rgb(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "tiny")
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(gray, mode="L").save(folder / "train" / "ant" / "0000.png")
    ds = load_image_folder(folder, cache_dir=tmp_path / "cache")
    assert torch.equal(ds.train.x[0], torch.from_numpy(gray)[None].expand(3, 32, 32))


# --------------------------------------------------------------------------------------------
# torchvision CIFAR-10


def test_load_cifar10_offline_names_the_path_and_the_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision import datasets

    def offline(self) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.CIFAR10, "download", offline)
    root = tmp_path / "no-cifar-here"
    with pytest.raises(DataError, match="no-cifar-here") as info:
        load_cifar10(root, download=True)
    assert "cifar10_folder" in str(info.value) and "no network" in str(info.value)
    with pytest.raises(DataError, match="cifar10_folder"):
        load_cifar10(root, download=False)


# --------------------------------------------------------------------------------------------
# The real CIFAR-10 JPEG copy from ../shared/data (skipped when absent)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CIFAR_JPEG.is_file(), reason=f"{REAL_CIFAR_JPEG} not present")
def test_real_cifar10_jpeg_copy_loads_50k_train_10k_test_in_official_class_order(
    tmp_path: Path,
) -> None:
    ds = load_image_folder(REAL_CIFAR_JPEG, cache_dir=tmp_path)
    assert ds.classes == CIFAR10_CLASSES
    assert ds.train.x.shape == (50_000, 3, 32, 32) and ds.test.x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(ds.train.y).tolist() == [5000] * 10
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    mean = per_pixel_mean(ds.train.x).mean(dim=(1, 2))  # CIFAR-10's channel means, roughly
    torch.testing.assert_close(mean, torch.tensor([0.491, 0.482, 0.447]), atol=0.01, rtol=0)
