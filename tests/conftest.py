"""Shared helpers: compose the project's Hydra config like the CLI does, and tiny runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from resnet_repro.paths import CONF_DIR
from resnet_repro.train import register_resolvers

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# A run that takes a few seconds on a 2-core CPU: ResNet-8 (n=1) on 640 generated images.
TINY_TRAINER = [
    "model.depth=8",
    "logger=none",
    "trainer.device=cpu",
    "trainer.batch_size=32",
    "trainer.max_iters=12",
    "trainer.eval_every=6",
    "trainer.log_every=2",
    "trainer.ckpt_every=4",
    "trainer.progress=false",
]
SYNTH = ["data=synthetic", "data.n_train=640", "data.n_test=256", "data.val_size=128"]
TINY = SYNTH + TINY_TRAINER


def compose_config(overrides: list[str], config_name: str = "config") -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach W&B's servers or a user's credentials.
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
