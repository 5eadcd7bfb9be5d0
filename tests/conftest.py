"""Shared helpers: compose the project's Hydra config like the CLI does, and tiny runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import Tensor, nn

from resnet_repro.data.generated_folders import write_image_folder  # noqa: F401 (the tests' one folder writer)
from resnet_repro.data.transforms import normalization
from resnet_repro.config.paths import CONF_DIR
from resnet_repro.training.policy import FAKE_BF16_ENV, cpu_bf16_flags, cpu_model
from resnet_repro.hydra_entry import register_resolvers

REPO = Path(__file__).resolve().parents[1]
# The GPU lease's package lives beside its script (experiments/gpu/lease/), outside the library.
sys.path.insert(0, str(REPO / "experiments" / "gpu"))
sys.path.insert(0, str(REPO / "experiments"))  # the experiment scripts whose results tests check
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
    register_resolvers()  # and the config schemas
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-bf16", choices=("host", "native", "none"), default="host",
                     help="run the suite as on a CPU with (native) or without (none) native bf16, whatever "
                          "this one has (sets resnet_repro.training.policy.FAKE_BF16_ENV, which subprocesses inherit)")


def pytest_configure(config: pytest.Config) -> None:
    fake = config.getoption("--cpu-bf16")
    if fake != "host":
        os.environ[FAKE_BF16_ENV] = fake


def pytest_report_header(config: pytest.Config) -> str:
    flags = cpu_bf16_flags()
    return (f"cpu: {cpu_model()}; native bf16: {', '.join(flags) or 'none'}"
            f"{' (faked by --cpu-bf16)' if config.getoption('--cpu-bf16') != 'host' else ''}")


@pytest.fixture(params=["native", "none"])
def cpu_bf16(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test twice, as on a CPU with and without native bf16 (subprocesses included)."""
    monkeypatch.setenv(FAKE_BF16_ENV, request.param)
    return request.param


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two xdist workers on a 2-core machine: one thread each (and in the runs they start), not
    # two workers of two threads fighting over two cores. Results do not depend on it: tests
    # never compare numbers across thread counts except through measured tolerances.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _fresh_machine_caches(tmp_path_factory: pytest.TempPathFactory):
    """Every cache a run could leave behind lives in this session's temporary directory, so no
    test reads what an earlier run (or the user) left in ~/.cache or /tmp: compiled kernels
    (torch.compile), matplotlib's font cache, W&B's files. Subprocesses inherit the settings."""
    root = tmp_path_factory.mktemp("caches")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(root / "torchinductor"))
        mp.setenv("TRITON_CACHE_DIR", str(root / "triton"))
        mp.setenv("MPLCONFIGDIR", str(root / "matplotlib"))
        mp.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
        mp.setenv("WANDB_DIR", str(root / "wandb"))
        mp.setenv("WANDB_CONFIG_DIR", str(root / "wandb-config"))
        yield


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """In-process runs set TF32 (trainer.tf32) and tests may set thread counts: every test
    starts from and leaves the settings the session began with."""
    new_api = hasattr(torch.backends.cuda.matmul, "fp32_precision")  # torch >= 2.9 (engine.set_tf32)
    flags = [(torch.backends.cuda.matmul, "fp32_precision" if new_api else "allow_tf32"),
             (torch.backends.cudnn.conv if new_api else torch.backends.cudnn, "fp32_precision" if new_api else "allow_tf32")]
    saved, threads = [getattr(o, name) for o, name in flags], torch.get_num_threads()
    yield
    for (o, name), value in zip(flags, saved):
        setattr(o, name, value)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _per_test_data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Decoded image folders are cached per test: no test sees another's (or a user's) cache.
    monkeypatch.setenv("RESNET_REPRO_CACHE", str(tmp_path / "resnet_repro_cache"))


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach W&B's servers or a user's credentials.
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")


def write_cifar_folder(root: Path, size: int = 32, classes: tuple[str, ...] = ("a", "b")) -> None:
    """A CIFAR-style image folder: train/ and test/ with 3 images per class, every image its own
    colour (`size` x `size` PNGs)."""
    write_image_folder(root, classes, 3, size=(size, size), splits=("train", "test"), ext=".png", image="flat")


def train_tiny(tmp: Path, overrides: list[str], extra: list[str] = ()) -> dict:
    """A TINY run (plus `overrides`) into `tmp`, in this process."""
    from resnet_repro.train import train_from_config

    cfg = compose_config(TINY + list(overrides) + list(extra))
    return train_from_config(cfg, tmp, list(overrides) + list(extra))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m resnet_repro ARGS` as a user runs it (from the repo root unless `cwd`)."""
    return subprocess.run(
        [sys.executable, "-m", "resnet_repro", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=300
    )


# --------------------------------------------------------------------------------------------
# Generated ImageNet-style folders and models whose predictions on them are known

SIZES = [(40, 56), (64, 48), (50, 50)]  # varied sizes and aspect ratios


class TinyNet(nn.Module):
    """A cheap fully-convolutional net with varied predictions (random weights)."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))


class TintNet(nn.Module):
    """Knows the class tints of `write_image_folder`: each image goes to the class whose
    expected mean colour (0.6 * tint + 47.5, the mean of the uniform 0..95 noise) is nearest,
    then to `predict[that class]`. Crops, flips and scales keep a uniform-noise image's mean
    colour (its standard error over >1000 pixels is ~1 level, the tints are >35 levels apart),
    so the predictions are known exactly."""

    def __init__(self, classes: int, predict: list[int], norm: str = "mean_std") -> None:
        super().__init__()
        self.predict, self.norm = predict, normalization(norm)
        tints = [[(60 * c) % 256, (110 * c + 40) % 256, (170 * c + 80) % 256] for c in range(classes)]
        self.register_buffer("centres", torch.tensor(tints, dtype=torch.float32) * 0.6 + 47.5)

    def forward(self, x: Tensor) -> Tensor:
        std, mean = torch.tensor(self.norm.std).view(1, 3, 1, 1), torch.tensor(self.norm.mean).view(1, 3, 1, 1)
        rgb = ((x * std + mean) * 255).mean(dim=(2, 3))  # undo the normalisation: 0..255 levels
        nearest = torch.cdist(rgb, self.centres).argmin(dim=1)
        out = torch.full((x.shape[0], len(self.predict)), -1.0)
        out[torch.arange(x.shape[0]), torch.tensor(self.predict)[nearest]] = 1.0
        return out
