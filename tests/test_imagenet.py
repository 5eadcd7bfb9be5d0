"""ImageNet folders, the §3.4 augmentation, the resumable training stream and the test protocols,
on tiny generated JPEG folders (CPU, a few seconds)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from resnet_repro.data.image_files import read_rgb, scan_image_folder
from resnet_repro.data.imagenet import ImageFolderDataset, ImageNetStream, IterationBatchSampler
from resnet_repro.data.imagenet_stats import IMAGENET_MEAN, PCA_EIGVAL, PCA_EIGVEC
from resnet_repro.data.transforms import Lighting, RandomShorterSide, normalization, train_transform
from resnet_repro.errors import ConfigError, DataError
from resnet_repro.evaluation.protocols import (
    MULTI_SCALES,
    PROTOCOLS,
    TenCrop,
    average_probs,
    evaluate_protocol,
    finalize,
    multi_scale,
    multi_scale_probs,
    ten_crop_boxes,
    ten_crop_probs,
    topk_wrong,
)

from conftest import SIZES, TinyNet, TintNet, write_image_folder




@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 classes: 6 training and 2 val images each.
    root = tmp_path_factory.mktemp("imagenet")
    return write_image_folder(root, 3, {"train": 6, "val": 2}, size=SIZES, seed=0)


class SizeNet(nn.Module):
    """Logits that depend on the input size (and content): a different prediction per scale."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = x.mean(dim=(2, 3))
        bias = torch.tensor([h / 100.0, w / 150.0, (h * w) ** 0.5 / 120.0])
        return m + bias


# -- scanning -------------------------------------------------------------------------------


def test_scan_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found: .*nowhere"):
        scan_image_folder(tmp_path / "nowhere")


def test_scan_folder_without_class_folders_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    with pytest.raises(DataError, match="no class folders"):
        scan_image_folder(tmp_path / "val")


def test_scan_class_without_images_names_the_class(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 2, 1, splits=("train",))
    (tmp_path / "train" / "n99999999").mkdir()
    (tmp_path / "train" / "n99999999" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="n99999999 has no images"):
        scan_image_folder(tmp_path / "train")


def test_scan_val_class_not_in_train_is_rejected(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 3, 1)
    _, _, classes = scan_image_folder(tmp_path / "train")
    with pytest.raises(DataError, match="not among the training classes: n00000002"):
        scan_image_folder(tmp_path / "val", classes[:2])


def test_scan_sorts_classes_and_files_and_accepts_any_extension_case(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 2, 2, splits=("train",), ext=".jpg")
    write_image_folder(tmp_path / "more", 1, 1, splits=("train",), ext=".PNG")
    (tmp_path / "more" / "train" / "n00000000").rename(tmp_path / "train" / "a_first")
    files, labels, classes = scan_image_folder(tmp_path / "train")
    assert classes == ["a_first", "n00000000", "n00000001"]
    assert labels == [0, 1, 1, 2, 2]
    assert files[0].endswith("a_first/train_0000.PNG")
    assert files[1:3] == sorted(files[1:3])
    # val labels index the training classes even when val holds a subset
    _, val_labels, val_classes = scan_image_folder(tmp_path / "train", ["z_extra", *classes])
    assert val_classes[0] == "z_extra" and val_labels == [1, 2, 2, 3, 3]


# -- IterationBatchSampler ------------------------------------------------------------------


def _take(sampler: IterationBatchSampler, k: int) -> list[list[tuple[int, int]]]:
    return list(itertools.islice(iter(sampler), k))


def test_sampler_is_deterministic_for_a_seed() -> None:
    a = _take(IterationBatchSampler(50, 8, seed=3), 20)
    assert a == _take(IterationBatchSampler(50, 8, seed=3), 20)
    assert a != _take(IterationBatchSampler(50, 8, seed=4), 20)


def test_sampler_resume_from_start_iter_equals_skipping_ahead() -> None:
    full = _take(IterationBatchSampler(50, 8, seed=1), 20)
    for k in (1, 5, 6, 13):  # 6 steps per epoch: inside and across epoch boundaries
        assert _take(IterationBatchSampler(50, 8, seed=1, start_iter=k), 20 - k) == full[k:]


def test_sampler_ranks_split_the_single_process_global_batch() -> None:
    single = _take(IterationBatchSampler(50, 12, seed=2), 10)
    ranks = [_take(IterationBatchSampler(50, 4, seed=2, rank=r, world_size=3), 10) for r in range(3)]
    for it in range(10):
        parts = [ranks[r][it] for r in range(3)]
        idx = [set(i for i, _ in p) for p in parts]
        assert not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
        assert sum(parts, []) == single[it]  # same indices and the same per-sample seeds


def test_sampler_epoch_visits_each_index_at_most_once() -> None:
    s = IterationBatchSampler(50, 8, seed=0)
    assert s.steps_per_epoch == 6
    for epoch in range(3):
        seen = [i for b in _take(IterationBatchSampler(50, 8, 0, start_iter=6 * epoch), 6) for i, _ in b]
        assert len(seen) == len(set(seen)) == 48


def test_sampler_seeds_differ_per_iteration_and_image() -> None:
    batches = _take(IterationBatchSampler(16, 16, seed=0), 3)  # every image in every batch
    seeds = [dict(b) for b in batches]
    assert len({s for b in batches for _, s in b}) == 48
    assert seeds[0].keys() == seeds[1].keys()


def test_sampler_with_fewer_images_than_a_global_batch_is_a_data_error() -> None:
    with pytest.raises(DataError, match="fewer than one global batch of 16"):
        IterationBatchSampler(10, 8, seed=0, world_size=2)


# -- training transforms --------------------------------------------------------------------


def test_train_transform_gives_a_224_float_crop_of_a_non_square_image() -> None:
    img = torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8)
    out = train_transform()(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_scale_augmentation_shorter_side_is_uniform_in_256_480() -> None:
    img = torch.randint(0, 256, (3, 30, 45), dtype=torch.uint8)
    resize = RandomShorterSide(256, 480)
    torch.manual_seed(0)
    sides = []
    for _ in range(300):
        out = resize(img)
        h, w = out.shape[-2:]
        assert abs(w / h - 1.5) < 0.01  # aspect kept
        sides.append(h)
    assert 256 <= min(sides) and max(sides) <= 480
    assert min(sides) < 270 and max(sides) > 466  # the whole range is used


def test_train_augmentation_is_a_pure_function_of_the_sample_seed(folder: Path) -> None:
    files, labels, _ = scan_image_folder(folder / "train")
    ds = ImageFolderDataset(files, labels, train_transform())
    a, _ = ds[(0, 123)]
    torch.manual_seed(999)  # global RNG state must not matter
    b, _ = ds[(0, 123)]
    c, _ = ds[(0, 124)]
    assert torch.equal(a, b) and not torch.equal(a, c)


# AlexNet's ImageNet RGB eigen-decomposition as published in fb.resnet.torch
# (datasets/imagenet.lua, "pca"), on the [0, 1] pixel scale; eigenvectors are the columns.
PUBLISHED_EIGVAL = (0.2175, 0.0188, 0.0045)
PUBLISHED_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


def test_lighting_uses_the_published_eigen_decomposition() -> None:
    assert PCA_EIGVAL == PUBLISHED_EIGVAL and PCA_EIGVEC == PUBLISHED_EIGVEC
    light = Lighting(0.1)
    for seed in range(5):
        torch.manual_seed(seed)
        alpha = torch.randn(3).double() * 0.1  # the draw Lighting makes next
        torch.manual_seed(seed)
        got = light.offset().double()
        expected = torch.tensor(PUBLISHED_EIGVEC).double() @ (alpha * torch.tensor(PUBLISHED_EIGVAL).double())
        # float32 arithmetic on offsets of at most ~0.1: rounding well under 1e-7.
        assert torch.allclose(got, expected, rtol=0, atol=1e-7), seed


def test_lighting_offsets_have_the_alexnet_pca_covariance() -> None:
    light = Lighting(0.1)
    torch.manual_seed(0)
    n = 40000
    offsets = torch.stack([light.offset() for _ in range(n)]).double()
    vec, val = torch.tensor(PUBLISHED_EIGVEC).double(), torch.tensor(PUBLISHED_EIGVAL).double()
    expected = vec @ torch.diag((0.1 * val) ** 2) @ vec.T
    assert offsets.mean(0).abs().max() < 4 * 0.1 * PUBLISHED_EIGVAL[0] / n**0.5
    cov = torch.cov(offsets.T)
    assert torch.allclose(cov, expected, atol=0.03 * float(expected.abs().max()))


def test_training_lighting_acts_on_the_0_1_pixel_scale() -> None:
    # A uniform grey image: every geometric step leaves it as it is, so each output pixel is
    # v/255 + offset - mean (norm "mean" divides by nothing). Mapping the offset back through
    # the published eigenvectors gives the draws alpha, which must have std 0.1; an offset
    # applied on the 0-255 scale would give alphas 255 times larger.
    v = 128
    img = torch.full((3, 8, 8), v, dtype=torch.uint8)
    t = train_transform(crop=8, scale=(8, 8), lighting_std=0.1, norm="mean")
    vec, val = torch.tensor(PUBLISHED_EIGVEC).double(), torch.tensor(PUBLISHED_EIGVAL).double()
    alphas = []
    for seed in range(300):
        torch.manual_seed(seed)
        out = t(img).double()
        assert torch.equal(out, out[:, :1, :1].expand_as(out))  # one offset for every pixel
        offset = out[:, 0, 0] - v / 255 + torch.tensor(IMAGENET_MEAN).double()
        alphas.append(torch.linalg.solve(vec, offset) / val)
    std = torch.stack(alphas).std().item()
    # 900 draws: the sample std's standard error is 0.1/sqrt(2*900) = 0.0024; +-0.02 is 8 of them.
    assert abs(std - 0.1) < 0.02


def test_lighting_adds_one_rgb_offset_to_every_pixel() -> None:
    img = torch.rand(3, 5, 7)
    torch.manual_seed(1)
    out = Lighting(0.1)(img)
    d = out - img
    assert torch.allclose(d, d[:, :1, :1].expand_as(d)) and d.abs().max() > 0
    assert torch.equal(Lighting(0.0)(img), img)


def test_normalization_modes() -> None:
    assert normalization("mean").std == (1.0, 1.0, 1.0) and normalization("mean").mean == IMAGENET_MEAN
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor((0.229, 0.224, 0.225))
    assert torch.allclose(normalization("mean_std")(x)[0, :, 0, 0], expected)
    with pytest.raises(ConfigError, match="mean, mean_std"):
        normalization("per_pixel")


# -- ImageNetStream -------------------------------------------------------------------------


def _batches(stream: ImageNetStream, start: int, k: int) -> list[tuple[Tensor, Tensor]]:
    return list(itertools.islice(stream.iterate(start), k))


def test_stream_batches_are_identical_for_any_worker_count_and_resume(folder: Path) -> None:
    s0 = ImageNetStream(folder, 4, seed=5, device="cpu", workers=0, holdout=2)
    assert s0.n_train == 16 and s0.steps_per_epoch == 4 and s0.num_classes == 3
    ref = _batches(s0, 0, 6)  # crosses an epoch boundary
    for x, y in ref:
        assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
        assert y.shape == (4,) and y.dtype == torch.int64
    s2 = ImageNetStream(folder, 4, seed=5, device="cpu", workers=2, holdout=2)
    for (xa, ya), (xb, yb) in zip(ref, _batches(s2, 0, 6)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for k in (1, 5):
        x, y = _batches(s0, k, 1)[0]
        assert torch.equal(x, ref[k][0]) and torch.equal(y, ref[k][1])


def test_stream_ranks_see_slices_of_the_single_process_batch(folder: Path) -> None:
    (x, y), = _batches(ImageNetStream(folder, 4, seed=5, device="cpu", workers=0), 3, 1)
    parts = [_batches(ImageNetStream(folder, 2, seed=5, device="cpu", workers=0, rank=r, world_size=2), 3, 1)[0]
             for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_stream_leaves_the_global_rng_alone(folder: Path) -> None:
    s = ImageNetStream(folder, 4, seed=5, device="cpu", workers=0)
    state = torch.get_rng_state()
    _batches(s, 0, 2)
    assert torch.equal(torch.get_rng_state(), state)


def test_holdout_is_fixed_and_disjoint_from_training_files(folder: Path) -> None:
    s = ImageNetStream(folder, 4, seed=5, device="cpu", workers=0, holdout=5)
    assert len(s.holdout_files) == len(s.holdout_labels) == 5
    assert not set(s.holdout_files) & set(s.files)
    assert len(s.files) + 5 == 18
    again = ImageNetStream(folder, 4, seed=5, device="cpu", workers=0, holdout=5)
    assert again.holdout_files == s.holdout_files
    with pytest.raises(DataError, match="holdout must be in"):
        ImageNetStream(folder, 4, seed=5, device="cpu", workers=0, holdout=18)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_training_jpeg_names_the_file_on_one_line(tmp_path: Path, workers: int) -> None:
    write_image_folder(tmp_path, 2, 2, splits=("train",))
    bad = tmp_path / "train" / "n00000001" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    s = ImageNetStream(tmp_path, 5, seed=0, device="cpu", workers=workers)  # every image in a batch
    with pytest.raises(DataError) as err:
        next(s.iterate(0))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("decode, protocol", [("workers", "center"), ("device", "ten_crop")])
def test_corrupt_val_jpeg_names_the_file_in_a_protocol(tmp_path: Path, decode: str, protocol: str) -> None:
    # Evaluation never skips an image (an error over a smaller set is not the paper's number),
    # on either input path.
    write_image_folder(tmp_path, 2, 1, splits=("val",))
    bad = tmp_path / "val" / "n00000000" / "zz.jpeg"
    bad.write_bytes(b"garbage")
    files, labels, _ = scan_image_folder(tmp_path / "val")
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        evaluate_protocol(TinyNet(), files, labels, protocol, device="cpu", workers=2, batch_size=4, decode=decode)
    with pytest.raises(DataError, match="cannot read image"):
        read_rgb(str(bad))


# -- protocols: geometry and score averaging ------------------------------------------------


def test_ten_crop_boxes_are_the_corners_and_the_centre() -> None:
    assert ten_crop_boxes(256, 300, 224) == [(0, 0), (0, 76), (32, 0), (32, 76), (16, 38)]
    assert ten_crop_boxes(224, 224, 224) == [(0, 0)] * 5
    with pytest.raises(ConfigError):
        ten_crop_boxes(200, 300, 224)


def test_ten_crop_views_are_five_crops_and_their_flips() -> None:
    img = torch.randint(0, 256, (3, 256, 300), dtype=torch.uint8)  # shorter side already 256
    views = TenCrop(256, 224)(img)
    assert views.shape == (10, 3, 224, 224) and views.dtype == torch.uint8
    for i, (t, l) in enumerate(ten_crop_boxes(256, 300, 224)):
        assert torch.equal(views[i], img[:, t : t + 224, l : l + 224])
        assert torch.equal(views[5 + i], views[i].flip(-1))


def test_ten_crop_scores_are_the_mean_of_the_ten_softmaxes() -> None:
    model = TinyNet(5).eval()
    views = torch.randn(2, 10, 3, 32, 32)
    with torch.no_grad():
        got = ten_crop_probs(model, views)
        manual = torch.stack([
            torch.stack([model(views[b, v : v + 1])[0].softmax(-1) for v in range(10)]).mean(0) for b in range(2)
        ])
    assert torch.allclose(got, manual, atol=1e-6)
    logits = [torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    assert torch.allclose(average_probs(logits), (logits[0].softmax(-1) + logits[1].softmax(-1)) / 2)


def test_topk_wrong_counts_labels_outside_the_top_k() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 2])
    assert topk_wrong(probs, labels, 1) == 2
    assert topk_wrong(probs, labels, 2) == 1
    assert topk_wrong(probs, labels, 5) == 0  # k capped at the number of classes
    assert finalize({"top1_wrong": 1, "top5_wrong": 0, "n": 4}) == {"top1_err": 25.0, "top5_err": 0.0, "n": 4}


def test_multi_scale_runs_the_whole_image_and_its_flip_at_the_five_scales(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 3, 1, size=(40, 56), splits=("val",))
    files, labels, _ = scan_image_folder(tmp_path / "val")
    model = SizeNet()
    shapes: list[tuple[int, ...]] = []
    model.register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape)))
    counts = multi_scale(model, files[:1], labels[:1], device="cpu", workers=0)
    assert counts["n"] == 1
    assert [min(s[-2:]) for s in shapes] == list(MULTI_SCALES)
    # One forward pass per scale, of the image and its mirror (a batch of 2).
    assert all(s[0] == 2 and s[-2] < s[-1] and abs(s[-1] / s[-2] - 1.4) < 0.01 for s in shapes)

    images = [torch.rand(3, s, int(s * 1.4)) for s in MULTI_SCALES]
    manual = torch.stack([model(x[None])[0].softmax(-1) for x in images]).mean(0)
    assert torch.allclose(multi_scale_probs(model, images, flips=False)[0], manual, atol=1e-6)


class MirrorNet(nn.Module):
    """Logits [3a, 0, 2] with a = tanh(10 (mean of the left half - mean of the right half)):
    an image bright on the left scores [3, 0, 2] (class 0), its mirror [-3, 0, 2] (class 2)."""

    def forward(self, x: Tensor) -> Tensor:
        w = x.shape[-1]
        a = torch.tanh(10 * (x[..., : w // 2].mean(dim=(1, 2, 3)) - x[..., w - w // 2 :].mean(dim=(1, 2, 3))))
        return torch.stack([3 * a, torch.zeros_like(a), torch.full_like(a, 2.0)], dim=1)


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_multi_scale_averages_each_scale_with_its_flip() -> None:
    images = [torch.cat([torch.ones(3, s, s), -torch.ones(3, s, s)], dim=-1) for s in (4, 6)]  # bright left
    plain, mirror = _softmax([3, 0, 2]), _softmax([-3, 0, 2])
    both = [(p + q) / 2 for p, q in zip(plain, mirror)]  # [0.356, 0.077, 0.568]
    assert both.index(max(both)) == 2 and plain.index(max(plain)) == 0
    got = multi_scale_probs(MirrorNet(), images)  # flips on by default
    assert torch.allclose(got[0].double(), torch.tensor(both).double(), atol=1e-6)
    unflipped = multi_scale_probs(MirrorNet(), images, flips=False)
    assert torch.allclose(unflipped[0].double(), torch.tensor(plain).double(), atol=1e-6)


def test_multi_scale_protocol_counts_with_the_flips(tmp_path: Path) -> None:
    # Four images of class 2, two bright on the left, two on the right. With the flips every
    # image scores [0.356, 0.077, 0.568]: none wrong. Without, the left-bright two are class 0.
    d = tmp_path / "val" / "n00000002"
    d.mkdir(parents=True)
    for k, bright_left in enumerate([True, False, True, False]):
        px = torch.zeros(30, 40, 3, dtype=torch.uint8)
        px[:, :20] = 230 if bright_left else 20
        px[:, 20:] = 20 if bright_left else 230
        Image.fromarray(px.numpy()).save(d / f"val_{k}.png")  # lossless: the halves stay exact
    files, labels, _ = scan_image_folder(tmp_path / "val", ["n00000000", "n00000001", "n00000002"])
    assert labels == [2, 2, 2, 2]
    run = lambda **kw: multi_scale(MirrorNet(), files, labels, device="cpu", workers=0, **kw)  # noqa: E731
    assert run() == {"top1_wrong": 0, "top5_wrong": 0, "n": 4}
    assert run(flips=False) == {"top1_wrong": 2, "top5_wrong": 0, "n": 4}
    assert evaluate_protocol(MirrorNet(), files, labels, "multi_scale", device="cpu", workers=0)["top1_wrong"] == 0


def test_unknown_protocol_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="center, ten_crop, multi_scale"):
        evaluate_protocol(TinyNet(), [], [], "five_crop", device="cpu")


# -- protocols end to end -------------------------------------------------------------------


def test_every_protocol_gives_the_exact_error_of_a_known_model(folder: Path) -> None:
    files, labels, classes = scan_image_folder(folder / "val", scan_image_folder(folder / "train")[2])
    assert labels == [0, 0, 1, 1, 2, 2]
    right = TintNet(3, predict=[0, 1, 2]).train()
    confused = TintNet(3, predict=[0, 1, 0])  # mistakes class 2 for class 0: 2 of 6 wrong
    for protocol in PROTOCOLS:
        workers = 2 if protocol == "ten_crop" else 0
        run = lambda m: finalize(evaluate_protocol(m, files, labels, protocol, device="cpu",  # noqa: E731
                                                   workers=workers, batch_size=40))
        assert run(right) == {"top1_err": 0.0, "top5_err": 0.0, "n": 6}, protocol
        assert run(confused) == {"top1_err": 100.0 * 2 / 6, "top5_err": 0.0, "n": 6}, protocol
    assert right.training  # restored after evaluation


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_ranks_counts_sum_to_the_single_process_counts(tmp_path: Path, protocol: str) -> None:
    write_image_folder(tmp_path, 6, 2, size=SIZES, splits=("val",), seed=1)
    files, labels, _ = scan_image_folder(tmp_path / "val")
    model = TinyNet(6)
    run = lambda **kw: evaluate_protocol(model, files, labels, protocol, device="cpu", workers=0,  # noqa: E731
                                         batch_size=30, **kw)
    single = run()
    ranks = [run(rank=r, world_size=2) for r in range(2)]
    assert single["n"] == 12 and [c["n"] for c in ranks] == [6, 6]
    assert {k: ranks[0][k] + ranks[1][k] for k in single} == single
    assert 0 < single["top1_wrong"] < 12  # a test that can tell counts apart
