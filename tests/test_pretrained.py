"""Starting from torchvision weights: fine-tuning with a new head, a frozen backbone, and a
clear refusal of a file that does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from conftest import SYNTH, TINY_TRAINER, compose_config
from resnet_repro.runs.checkpoint import load_checkpoint
from resnet_repro.errors import CheckpointError
from resnet_repro.models.resnet import build_model
from resnet_repro.models.pretrained import apply_weights, infer_torchvision_model, load_weights
from resnet_repro.train import train_from_config

# Fine-tuning at 64x64 instead of 224 keeps the CPU test fast; the path is the same.
FINETUNE = [
    "+exp=cifar_finetune_resnet18", *SYNTH, *[o for o in TINY_TRAINER if not o.startswith("model.depth")],
    "data.resize=64", "trainer.batch_size=8", "trainer.max_iters=3", "trainer.eval_every=3",
    "trainer.ckpt_every=3", "trainer.log_every=1", "trainer.eval_batch_size=64", "data.n_test=64",
]


@pytest.fixture(scope="module")
def tv_resnet18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_layout_is_recognised(depth: int) -> None:
    with torch.device("meta"):
        sd = getattr(torchvision.models, f"resnet{depth}")().state_dict()
    assert infer_torchvision_model(sd) == f"torchvision_resnet{depth}"


def test_finetuning_starts_from_the_file_with_a_new_head(tmp_path: Path, tv_resnet18: Path) -> None:
    overrides = [*FINETUNE, f"model.weights={tv_resnet18}"]
    summary = train_from_config(compose_config(overrides), tmp_path, overrides)
    assert summary["weights"] == str(tv_resnet18) and summary["iterations"] == 3
    trained = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    assert trained["fc.weight"].shape == (10, 512)
    # Three SGD steps at lr 0.01 move the weights a little from the file's, not from a fresh init.
    start = torch.load(tv_resnet18, weights_only=True)
    assert (trained["conv1.weight"] - start["conv1.weight"]).abs().max() < 0.05


def test_frozen_backbone_trains_only_the_classifier(tmp_path: Path, tv_resnet18: Path) -> None:
    overrides = [*FINETUNE, f"model.weights={tv_resnet18}", "model.freeze_backbone=true"]
    train_from_config(compose_config(overrides), tmp_path, overrides)
    trained = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    start = torch.load(tv_resnet18, weights_only=True)
    for k, v in start.items():
        if not k.startswith("fc."):
            assert torch.equal(trained[k], v), k  # weights and BN statistics untouched


def test_a_file_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    with torch.device("meta"):
        sd = torchvision.models.resnet34().state_dict()
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in sd.items()}, path)
    model = build_model("torchvision_resnet18")
    with pytest.raises(CheckpointError, match=r"do not match torchvision_resnet18 \(unexpected: layer1.2"):
        apply_weights(model, load_weights(path), path, "torchvision_resnet18")


def test_finetune_without_weights_is_a_one_line_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run(
        [sys.executable, "-m", "resnet_repro", "train", "+exp=cifar_finetune_resnet18", *SYNTH,
         f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert r.returncode == 2 and "model.weights" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- normalisation: the paper's mean subtraction from scratch, torchvision's mean/std for its weights


def _normalised(exp_overrides: list[str]) -> torch.Tensor:
    """What a config's ImageNet normalisation makes of a known uint8 image (pixels 0 and 255)."""
    from resnet_repro.data.build import imagenet_norm
    from resnet_repro.data.transforms import normalization
    from resnet_repro.schema import run_settings

    s = run_settings(compose_config(exp_overrides))
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2)  # [3,1,2]
    return normalization(imagenet_norm(s.data.norm))(x)


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1)
PIXELS = torch.tensor([[0.0, 1.0]])  # 0 and 255 on the [0, 1] scale


def test_imagenet_from_scratch_only_subtracts_the_mean() -> None:
    out = _normalised(["+exp=imagenet_resnet50", "data.root=/imagenet"])
    # one fp32 subtraction of values <= 1: exact to half an ulp of 1
    torch.testing.assert_close(out[:, 0], PIXELS - MEAN, rtol=0, atol=2 ** -24)


def test_torchvision_weights_run_divides_by_the_std(tmp_path: Path, tv_resnet18: Path) -> None:
    from resnet_repro.errors import ConfigError
    from resnet_repro.models.pretrained import check_weights_norm

    start = ["+exp=imagenet_resnet18", "model=torchvision_resnet18", f"model.weights={tv_resnet18}",
             "data.root=/imagenet"]
    # The ImageNet default (mean only) is refused for torchvision's weights, before any file is written.
    with pytest.raises(ConfigError, match="set data.norm=imagenet"):
        train_from_config(compose_config(start), tmp_path / "run", start)
    assert not (tmp_path / "run").exists()
    check_weights_norm(tv_resnet18, "imagenet")  # accepted
    out = _normalised([*start, "data.norm=imagenet"])
    # subtract then divide: two roundings, each half an ulp of a value below 2.7
    torch.testing.assert_close(out[:, 0], (PIXELS - MEAN) / STD, rtol=2 * 2 ** -24, atol=0)


# -- akamaster/pytorch_resnet_cifar10's CIFAR-10 weights ---------------------------------------
#
# A reference implementation of their model, written from ../shared/weights/README.md's
# description (not from their code): a 3x3 stem of 16 filters, three stages of n basic blocks
# (16, 32, 64 filters, stride 2 at the first block of stages 2 and 3), option-A shortcuts that
# pad the subsampled identity with planes // 4 zero channels on each side, global average
# pooling and a `linear` classifier; their state dict saved from DataParallel ("module.").

AKAMASTER = Path(__file__).resolve().parents[2] / "shared" / "weights" / "akamaster"
SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
U = 2.0 ** -24  # fp32 unit roundoff


class _TheirBlock(torch.nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(planes)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.side = planes // 4 if (stride != 1 or cin != planes) else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        sc = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.side, self.side)) if self.side else x
        return torch.relu(out + sc)


class _TheirResNet(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        cin = 16
        for s, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(_TheirBlock(cin, planes, 2 if (j == 0 and s > 0) else 1))
                cin = planes
            setattr(self, f"layer{s + 1}", torch.nn.Sequential(*blocks))
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.nn.functional.avg_pool2d(out, out.shape[3])
        return self.linear(out.flatten(1))


def _their_file(model: _TheirResNet) -> dict:
    return {"state_dict": {f"module.{k}": v.clone() for k, v in model.state_dict().items()}, "best_prec1": 91.0}


def _random_their_model(n: int) -> _TheirResNet:
    torch.manual_seed(0)
    m = _TheirResNet(n)
    for mod in m.modules():  # trained-looking BN statistics and affine parameters
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.2)
    return m.eval()


def _logit_tolerance(ref: _TheirResNet, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(float64 logits of the reference, the tolerance for an fp32 evaluation of the same net).
    Two fp32 evaluations that sum in different orders each err from the exact value by about
    as much as the reference's own fp32 evaluation does (measured here against float64); 4x
    that for the two evaluations' errors adding and for the spread between inputs, and at
    least a few units of roundoff of the largest logit."""
    import copy

    with torch.no_grad():
        exact = copy.deepcopy(ref).double()(x.double())
        own = ref(x).double()
    return exact, 4 * max((own - exact).abs().max().item(), 8 * U * exact.abs().max().item())


@pytest.mark.parametrize("n", [1, 3])
def test_akamaster_layout_gives_their_models_logits_in_ours(n: int) -> None:
    from resnet_repro.models.peers import akamaster_model

    ref = _random_their_model(n)
    ours, depth = akamaster_model(_their_file(ref))
    assert depth == 6 * n + 2
    x = torch.randn(16, 3, 32, 32)
    exact, tol = _logit_tolerance(ref, x)
    with torch.no_grad():
        got = ours(x).double()
    assert (got - exact).abs().max().item() <= tol
    # the layout matters: their weights loaded as if the identity came first are another net
    naive = build_model(f"cifar_resnet{depth}") if depth > 8 else None
    if naive is not None:
        sd = {k.removeprefix("module.").replace("linear.", "fc."): v for k, v in _their_file(ref)["state_dict"].items()}
        naive.load_state_dict(sd)
        with torch.no_grad():
            assert (naive.eval()(x).double() - exact).abs().max().item() > 100 * tol


def test_a_file_in_another_layout_is_refused_with_one_line(tmp_path: Path) -> None:
    from resnet_repro.evaluate import evaluate_checkpoint
    from resnet_repro.models.peers import akamaster_model

    with pytest.raises(CheckpointError, match="not an akamaster"):
        akamaster_model({"state_dict": {"conv1.weight": torch.zeros(1)}})
    ref = _random_their_model(1)
    path = tmp_path / "resnet8-x.th"
    torch.save(_their_file(ref), path)
    with pytest.raises(Exception, match="give data_root=") as e:
        evaluate_checkpoint(str(path), device="cpu")
    assert "\n" not in str(e.value)


def _jpeg_folder(root: Path, per_class: int) -> Path:
    """The first `per_class` test images of each class of the JPEG copy, as an image folder
    (train/ holds the same files: `eval` reads only test/)."""
    import tarfile

    counts: dict[str, int] = {}
    with tarfile.open(SHARED_CIFAR) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 4 and parts[1] == "test" and counts.get(parts[2], 0) < per_class:
                counts[parts[2]] = counts.get(parts[2], 0) + 1
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                for split in ("train", "test"):
                    (root / split / parts[2]).mkdir(parents=True, exist_ok=True)
                    (root / split / parts[2] / parts[3]).write_bytes(data)
    return root


@pytest.mark.skipif(not (AKAMASTER.is_dir() and SHARED_CIFAR.is_file()),
                    reason="needs ../shared/weights/akamaster and ../shared/data/cifar10-jpeg.tar.gz")
def test_akamaster_resnet20_through_our_eval_gives_their_models_logits_and_error(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from resnet_repro.data.build import load_cifar_splits
    from resnet_repro.data.pipeline import eval_batches
    from resnet_repro.evaluate import evaluate_checkpoint
    from resnet_repro.models.peers import akamaster_model, peer_data_settings

    (path,) = AKAMASTER.glob("resnet20-*.th")
    folder = _jpeg_folder(tmp_path / "cifar", per_class=20)
    obj = load_checkpoint(path, any_state_dict=True)
    ref = _TheirResNet(3).eval()
    ref.load_state_dict({k.removeprefix("module."): v for k, v in obj["state_dict"].items()})
    # their input, decoded here with PIL: ToTensor() then Normalize(ImageNet's mean and std)
    classes = sorted(p.name for p in (folder / "test").iterdir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((folder / "test" / c).iterdir())]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    x = torch.stack([(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) / 255 - mean) / std
                     for f, _ in files])
    y = torch.tensor([k for _, k in files])
    exact, tol = _logit_tolerance(ref, x)
    # ours: the weights in our model, the images through our data pipeline (sorted like ours)
    model, _ = akamaster_model(obj, path)
    splits = load_cifar_splits(peer_data_settings(folder), 0)
    with torch.no_grad():
        got = torch.cat([model(xb) for xb, _ in eval_batches(splits.test, splits.mean, 64, "cpu", splits.std)])
    order = torch.argsort(splits.test.y.long() * 10_000 + torch.arange(len(y)), stable=True)
    assert torch.equal(splits.test.y.long()[order], y)
    assert (got[order].double() - exact).abs().max().item() <= tol
    # and `eval` reports their model's error on these images
    r = evaluate_checkpoint(str(path), data_root=str(folder), device="cpu")
    assert r["n"] == len(y) and r["precision"] == "fp32"
    assert r["err"] == pytest.approx(100 * (exact.argmax(1) != y).double().mean().item())


@pytest.mark.skipif(not (AKAMASTER.is_dir() and SHARED_CIFAR.is_file()),
                    reason="needs ../shared/weights/akamaster and ../shared/data/cifar10-jpeg.tar.gz")
def test_report_peers_puts_their_error_on_the_runs_own_data_beside_ours_as_context(tmp_path: Path) -> None:
    import json

    from omegaconf import OmegaConf

    from resnet_repro.evaluate import evaluate_checkpoint
    from resnet_repro.report import build_report

    folder = _jpeg_folder(tmp_path / "cifar", per_class=5)
    run = tmp_path / "runs" / "r20"
    run.mkdir(parents=True)
    config = compose_config(["+exp=cifar_resnet20", "data=cifar10_folder", f"data.root={folder}"])
    OmegaConf.save(config, run / "config.yaml", resolve=True)
    summary = {"exp_name": "cifar_resnet20", "seed": 0, "test_err": 19.5, "data": "cifar10_folder",
               "iterations": 64000, "status": "complete", "train_size": 50000, "test_size": 10000, "num_classes": 10,
               "train_precision": "bf16", "arch": {"family": "cifar", "depth": 20, "residual": True, "shortcut": "A",
                                                   "bottleneck_stride": "1x1", "num_classes": 10}}
    (run / "summary.json").write_text(json.dumps(summary))
    rep = build_report([tmp_path / "runs"], out=tmp_path / "out", peers=AKAMASTER, device="cpu")
    measured = {m["model"]: m for m in json.loads((tmp_path / "out" / "peers.json").read_text())}
    assert set(measured) == {f"cifar_resnet{d}" for d in (20, 32, 44, 56)}
    (path,) = AKAMASTER.glob("resnet20-*.th")
    assert measured["cifar_resnet20"]["err"] == pytest.approx(
        evaluate_checkpoint(str(path), data_root=str(folder), device="cpu")["err"])
    row = next(ln for ln in rep.markdown.splitlines() if ln.startswith("| cifar_resnet20 ") and "JPEG copy" in ln)
    assert f"akamaster {measured['cifar_resnet20']['err']:.2f}" in row and "no verdict" in row and "| bf16 |" in row
    assert "measured here on 50 test images" in rep.markdown
