"""Typed settings of a run: conf/config.yaml's sections as frozen dataclasses, and the config's schema.

`RunConfig` is the whole file (a section per group, then the top-level keys); resnet_repro/schema.py
registers it in Hydra's ConfigStore, so composition itself refuses an unknown key or a value of the
wrong type, and `schema.run_settings(cfg)` turns a composed config into these objects with
`OmegaConf.to_object`. What a type cannot say is checked where the objects are made: each
section's `__post_init__` checks its own ranges (one clear line each; the model's, first in the
file, a depth of the form 6n+2 and the shortcut option with `archs.Arch`). Two kinds of check run
in `schema.run_settings`, the one layer above: the warm-up's and the plateau rule's ranges, which
training/schedule.py owns, and then the rules that tie sections together (a BN group must divide
the batch, a plateau needs a holdout; each assumes both sides valid).

Frozen, so nothing below the entry layer changes a run's settings. No torch here: the schema is
registered before a command imports it. Imports no other config module but `archs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from omegaconf import MISSING

from resnet_repro.config.archs import Arch, check_group_size, names_after_network
from resnet_repro.data.settings import DataSettings
from resnet_repro.errors import ConfigError


def _set(obj: Any, name: str, value: Any) -> None:
    """A frozen dataclass's field, normalised in its __post_init__ (OmegaConf gives lists for tuples)."""
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, kw_only=True)
class ModelSettings(Arch):
    """`model.*`: one flat section, the architecture (Arch's fields, first) and how the model
    is built and started."""

    name: str
    bn_group_size: int | None = None
    weights: str | None = None  # start from these weights (torchvision file or our checkpoint)
    freeze_backbone: bool = False  # train only the classifier head (with `weights`)

    def __post_init__(self) -> None:
        super().__post_init__()  # the architecture (Arch's checks: depth 6n+2, shortcut option, ...)
        check_group_size(self.bn_group_size)  # before the batch is divided by it
        if self.freeze_backbone and not self.weights:
            raise ConfigError("model.freeze_backbone=true needs model.weights=<file> to start from")

    @property
    def arch(self) -> Arch:
        """The network's shape alone (what a checkpoint must match)."""
        return Arch(**{f.name: getattr(self, f.name) for f in fields(Arch)})


@dataclass(frozen=True)
class OptimSettings:
    momentum: float = 0.9  # §3.4, §4.2
    weight_decay: float = 1e-4  # §3.4, §4.2
    nesterov: bool = False
    name: str = "sgd"  # §3.4: SGD; the only optimiser the harness builds

    def __post_init__(self) -> None:
        if self.name != "sgd":
            raise ConfigError(f"optim.name must be sgd (the paper's optimiser, the only one built), got {self.name!r}")
        if not 0 <= self.momentum < 1:  # 1 or more never forgets a gradient: the steps grow without bound
            raise ConfigError(f"optim.momentum must be in [0, 1) (the paper: 0.9), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay must be >= 0 (the paper: 0.0001), got {self.weight_decay}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0")


@dataclass(frozen=True)
class WarmupSettings:
    """schedule.warmup (§4.2's warm-up of ResNet-110/1202); the defaults are schedule.py's."""

    enabled: bool = True  # a warm-up section is on unless it says otherwise
    lr: float = 0.01
    error_threshold: float = 0.8
    check_every: int = 100  # iterations averaged for the running training error
    max_iters: int | None = None

    def __post_init__(self) -> None:
        positive_int(self.check_every, "schedule.warmup.check_every")
        if self.max_iters is not None:
            positive_int(self.max_iters, "schedule.warmup.max_iters")


@dataclass(frozen=True)
class PlateauSettings:
    """schedule.plateau (§3.4's "divided by 10 when the error plateaus"); schedule.py's defaults."""

    factor: float = 0.1
    patience: int = 5
    threshold: float = 1e-3
    min_lr: float = 0.0
    window: int = 1


@dataclass(frozen=True)
class ScheduleSettings:
    kind: str = "step"
    base_lr: float = 0.1
    milestones: tuple[int, ...] = (32000, 48000)
    gamma: float = 0.1
    warmup: Optional[WarmupSettings] = None
    plateau: Optional[PlateauSettings] = None

    def __post_init__(self) -> None:
        _set(self, "milestones", tuple(self.milestones))

    @property
    def check_every(self) -> int:
        """Iterations averaged for the warm-up's running training error (the warm-up's setting)."""
        return (self.warmup or WarmupSettings()).check_every


@dataclass(frozen=True)
class TrainerSettings:
    device: str = "auto"
    batch_size: int = 128
    max_iters: int = 64000
    eval_every: int = 2000
    log_every: int = 100
    ckpt_every: int = 2000
    eval_batch_size: int = 1000
    progress: bool = True
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    channels_last: str = "auto"  # auto (on for CUDA) | on | off
    sync_bn: bool = False  # SyncBatchNorm across processes (the paper did not synchronise)
    max_skipped_steps: int = 0  # steps with a nan/inf loss that may be skipped before stopping
    tf32: bool = True  # CUDA: TF32 for fp32 convs/matmuls (PyTorch's cuDNN default); false: strict fp32
    compile: str = "auto"  # torch.compile mode: auto (default on CUDA, off on CPU) | off | default | reduce-overhead | max-autotune
    # When this process stops early (a paused run: checkpoint, summary "paused", exit 0). Neither
    # changes the recipe: the run keeps its max_iters and re-running the command continues it.
    max_time: str | int | float | None = None  # wall-clock budget of this process: "HH:MM:SS", "DD:HH:MM:SS" or seconds
    pause_at: int | None = None  # pause at this iteration (a run at or past it trains nothing)

    def __post_init__(self) -> None:
        for key in ("amp", "channels_last", "compile"):  # `compile: false` (a YAML bool) means off
            _set(self, key, str(getattr(self, key)).lower())
        for key in ("batch_size", "max_iters", "eval_every", "log_every", "ckpt_every", "eval_batch_size"):
            positive_int(getattr(self, key), f"trainer.{key}")
        if self.max_skipped_steps < 0:
            raise ConfigError(f"trainer.max_skipped_steps must be an integer >= 0, got {self.max_skipped_steps!r}")
        self.max_time_s  # noqa: B018  (a malformed duration: one line now, not mid-run)
        if self.pause_at is not None:
            positive_int(self.pause_at, "trainer.pause_at")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"trainer.compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.amp not in ("auto", "bf16", "off", "false"):
            raise ConfigError(f"trainer.amp must be auto, bf16 or off, got {self.amp!r}")
        if self.channels_last not in ("auto", "on", "off", "true", "false"):
            raise ConfigError(f"trainer.channels_last must be auto, on or off, got {self.channels_last!r}")

    @property
    def max_time_s(self) -> float | None:
        return parse_duration(self.max_time, "trainer.max_time")


# trainer.compile: torch.compile modes, or auto/off (training/policy.py resolves them)
COMPILE_MODES = ("auto", "off", "false", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
WANDB_MODES = ("online", "offline", "disabled")  # logger.mode: W&B's own modes


@dataclass(frozen=True)
class LoggerSettings:
    name: str = "none"
    project: str = "resnet-repro"
    entity: str | None = None
    mode: str = "offline"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "tags", tuple(self.tags))
        if self.name not in ("wandb", "none"):
            raise ConfigError(f"unknown logger {self.name!r}; choose wandb or none")
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode must be one of {', '.join(WANDB_MODES)}, got {self.mode!r}")


@dataclass(frozen=True)
class BenchSettings:
    """`bench.*` (resnet_repro/bench.py)."""

    iters: int = 50  # timed iterations
    warmup: int = 10  # untimed iterations first (compilation, cudnn autotuning, allocator)
    baseline: bool = True  # also time the naive DataLoader/PIL/fp32/eager baseline
    baseline_workers: int = 4  # DataLoader workers of the baseline
    concurrent: int = 1  # >1: also run this many configured benches at once on the device
    synthetic: bool = False  # random batches already on the device (the model's ceiling)
    json: str | None = None  # write the results here
    decode_paths: tuple[str, ...] = ("device", "workers")  # imagenet: the data.decode paths to time
    ceiling: bool = True  # imagenet: also time synthetic batches on the device (the model's ceiling)
    # imagenet: timed batches of the input alone; many more than the loader prefetches
    # (workers x prefetch_factor batches), which would otherwise be timed as free
    input_iters: int = 50
    # also time these training precisions (trainer.amp / channels_last forced), e.g.
    # [fp32, bf16, bf16+channels_last]: names from PRECISION_PATHS
    precisions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "decode_paths", tuple(self.decode_paths))
        _set(self, "precisions", tuple(self.precisions))
        bad = [p for p in self.precisions if p not in PRECISION_PATHS]
        if bad:
            raise ConfigError(f"unknown bench.precisions {bad}; choose from {', '.join(PRECISION_PATHS)}")
        if self.iters < 1 or self.warmup < 0 or self.concurrent < 1 or self.baseline_workers < 0 or self.input_iters < 1:
            raise ConfigError(
                "bench.iters must be >= 1, bench.warmup >= 0, bench.concurrent >= 1, bench.baseline_workers >= 0 "
                "and bench.input_iters >= 1"
            )


# bench.precisions: training precisions timed side by side in one invocation (issue 19):
# name -> (trainer.amp, trainer.channels_last)
PRECISION_PATHS = {
    "fp32": ("off", "off"),
    "fp32+channels_last": ("off", "on"),
    "bf16": ("bf16", "off"),
    "bf16+channels_last": ("bf16", "on"),
}


@dataclass(frozen=True)
class EvalSettings:
    """`python -m resnet_repro eval` (conf/eval.yaml)."""

    ckpt: str = "???"
    split: str = "test"
    protocol: str = "auto"
    data_root: str | None = None
    workers: int = 8
    decode: str = "auto"
    device: str = "auto"
    batch_size: int = 1000
    precise_bn_batches: str | int = "auto"  # "auto" or a count (checked by evaluate.py)


@dataclass(frozen=True)
class RunConfig:
    """conf/config.yaml as a whole, in its order: the schema Hydra composes against (a section
    with required keys is MISSING until a group file fills it)."""

    model: ModelSettings = MISSING
    data: DataSettings = MISSING
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    logger: LoggerSettings = field(default_factory=LoggerSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)  # `bench` only
    exp_name: str = MISSING
    seed: int = 0
    resume: str | None = None  # a run dir to continue (the entry layer's: hydra_entry, train)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True, kw_only=True)
class RunSettings(RunConfig):
    """A run's settings as the trainer gets them: the config, named after the network it trains."""

    renamed_from: str | None = None  # the model name the config gave, when the network is another


# --------------------------------------------------------------------------------------------
# Naming and the checks the dataclasses share
# --------------------------------------------------------------------------------------------


def named_after_network(model: ModelSettings, exp_name: str) -> tuple[ModelSettings, str, str | None]:
    """Returns (model, exp name, the config's model name if the network is another one)."""
    name, exp_name = names_after_network(model.name, exp_name, model.arch)
    if name == model.name:
        return model, exp_name, None
    return replace(model, name=name), exp_name, model.name


def parse_duration(value: str | int | float | None, key: str) -> float | None:
    """Seconds from "HH:MM:SS", "DD:HH:MM:SS" (Lightning's max_time format) or a number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be HH:MM:SS, DD:HH:MM:SS or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        parts = str(value).strip().split(":")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            nums = []
        if len(parts) not in (1, 3, 4) or len(nums) != len(parts) or any(n < 0 for n in nums):
            raise ConfigError(f"{key} must be HH:MM:SS, DD:HH:MM:SS or seconds, got {value!r}")
        seconds = sum(n * u for n, u in zip(reversed(nums), (1, 60, 3600, 86400)))
    if not seconds > 0:
        raise ConfigError(f"{key} must be a positive duration, got {value!r}")
    return seconds


def positive_int(value: Any, key: str) -> int:
    if value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value
