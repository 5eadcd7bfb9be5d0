"""Starting from torchvision weights: fine-tuning with a new head, a frozen backbone, and a
clear refusal of a file that does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from conftest import SYNTH, TINY_TRAINER, compose_config
from resnet_repro.checkpoint import load_checkpoint
from resnet_repro.errors import CheckpointError
from resnet_repro.models import build_model
from resnet_repro.pretrained import apply_weights, infer_torchvision_model, load_weights
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
    from resnet_repro.data.imagenet import normalization
    from resnet_repro.settings import run_settings

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
    from resnet_repro.pretrained import check_weights_norm

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
