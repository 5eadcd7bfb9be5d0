"""The ImageNet path end to end on a small generated JPEG folder: train, then every test
protocol, from our checkpoint and from a torchvision weights file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import REPO, compose_config, write_image_folder
from resnet_repro.runs.checkpoint import load_checkpoint, save_checkpoint
from resnet_repro.runs.rundir import LAST
from resnet_repro.evaluate import evaluate_checkpoint
from resnet_repro.runs.sinks import read_jsonl, round_floats
from resnet_repro.schema import run_settings
from resnet_repro.train import train_from_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    return write_image_folder(root, classes=3, per_class={"train": 10, "val": 2},
                                   size=[(40, 56), (64, 48), (50, 50)], seed=0)


def small(root: Path) -> list[str]:
    # ResNet-18 on 64x64 training crops (evaluation keeps the paper's 256/224 geometry).
    return [
        "+exp=imagenet_resnet18", f"data.root={root}", "data.val_size=6", "data.workers=0", "data.crop=64",
        "data.scale=[72,96]", "logger=none", "trainer.device=cpu", "trainer.batch_size=8", "model.bn_group_size=4", "trainer.max_iters=3",
        "trainer.eval_every=3", "trainer.log_every=1", "trainer.ckpt_every=3", "trainer.eval_batch_size=8",
        "trainer.progress=false",
    ]


def test_imagenet_recipe_is_the_papers() -> None:
    s = run_settings(compose_config(["+exp=imagenet_resnet50", "data.root=/x"]))
    assert (s.trainer.batch_size, s.trainer.max_iters) == (256, 600000)  # §3.4
    assert (s.schedule.kind, s.schedule.base_lr) == ("plateau", 0.1)
    assert s.schedule.plateau.factor == 0.1
    assert (s.data.crop, tuple(s.data.scale), s.data.lighting_std) == (224, (256, 480), 0.1)
    assert s.model.arch.bottleneck_stride == "1x1" and s.model.arch.shortcut == "B"
    assert run_settings(compose_config(["+exp=imagenet_resnet34"])).model.arch.shortcut == "A"  # Table 2
    assert run_settings(compose_config(["+exp=imagenet_resnet34_c"])).model.arch.shortcut == "C"


def test_train_on_an_image_folder_then_evaluate_every_protocol(tmp_path: Path, folder: Path) -> None:
    over = small(folder)
    summary = train_from_config(compose_config(over), tmp_path, over)
    assert summary["arch"]["num_classes"] == 3  # the data set's classes
    assert (summary["train_size"], summary["val_size"], summary["test_size"]) == (24, 6, 6)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert {"test/err", "test/top5_err", "val/err"} <= rows[-1].keys()
    assert summary["test_err"] == round_floats(rows[-1]["test/err"])  # summary.json: 12 significant digits
    center = evaluate_checkpoint(str(tmp_path), protocol="center", device="cpu", workers=0, batch_size=20,
                                 precise_bn_batches=0)  # training's own statistics
    assert center["err"] == pytest.approx(summary["test_err"])  # the same centre-crop numbers as training

    # Known outputs: zero the classifier's weights and give class 2 the largest bias, so the
    # checkpoint predicts class 2 for every image: exactly the 4 of 6 val images of classes 0
    # and 1 are wrong under every protocol (top-5 of 3 classes: never wrong).
    ckpt = load_checkpoint(tmp_path / LAST)
    ckpt["model"]["fc.weight"].zero_()
    ckpt["model"]["fc.bias"].copy_(torch.tensor([0.0, 0.5, 1.0]))
    save_checkpoint(tmp_path / LAST, ckpt)
    r = evaluate_checkpoint(str(tmp_path), protocol="all", device="cpu", workers=0, batch_size=20,
                            precise_bn_batches=2)
    assert [x["protocol"] for x in r["all"]] == ["center", "ten_crop", "multi_scale"]
    assert all((x["n"], x["err"], x["top5_err"]) == (6, 100.0 * 4 / 6, 0.0) for x in r["all"])
    # for `report` (Tables 2-3); edited weights are not the run's final ones: named by iteration,
    # and by the BN statistics when they are not ImageNet's default (precise over 200 batches)
    saved = json.loads((tmp_path / f"eval_ten_crop_iter{r['iteration']}_bn-precise2.json").read_text())
    assert saved["final_weights"] is False and saved["bn_stats"] == "precise:2" and saved["precision"] == "fp32"
    assert saved["protocol"] == "ten_crop" and saved["err"] == pytest.approx(r["all"][1]["err"], rel=1e-11) and saved["split"] == "test"


def _eval_cli(weights: Path, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resnet_repro", "eval", f"ckpt={weights}", f"data_root={folder}",
         "protocol=ten_crop", "workers=0", "device=cpu", "batch_size=20"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def test_eval_of_a_torchvision_weights_file(tmp_path: Path, folder: Path) -> None:
    # A file fine-tuned to the folder's 3 classes: random features, but a classifier with known
    # outputs (zero weights, a bias whose top-1 is class 0), so 4 of the 6 val images are wrong;
    # a randomly re-initialised head would not give exactly that.
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-3-classes.pth"
    state = torchvision.models.resnet18(weights=None, num_classes=3).state_dict()
    state["fc.weight"].zero_()
    state["fc.bias"].copy_(torch.tensor([1.0, 0.5, 0.0]))
    torch.save(state, weights)
    r = _eval_cli(weights, folder)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ten_crop: top-1 error 66.67%, top-5 error 0.00% (6 images)")  # 4/6
    assert "torchvision_resnet18" in r.stdout


def test_eval_refuses_weights_for_other_classes_naming_both_counts(tmp_path: Path, folder: Path) -> None:
    weights = tmp_path / "resnet18-1000-classes.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)  # ImageNet's 1000-way head
    r = _eval_cli(weights, folder)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the checkpoint's classifier has 1000 classes but ")
    assert f"{folder / 'val'} has 3" in lines[0]


def test_imagenet_without_a_root_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "resnet_repro", "train", "+exp=imagenet_resnet18", "logger=none",
                        f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "data=imagenet needs data.root" in r.stderr
