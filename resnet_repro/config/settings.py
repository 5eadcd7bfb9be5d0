"""Typed settings of a run, built from the Hydra config in one place.

The dataclasses below are also the config's schema (`resnet_repro/schema.py`): Hydra checks types and
keys at composition, and `schema.run_settings(cfg)` adds only what a schema cannot say:
value ranges and the rules that tie settings together (a BN group must divide the batch, a
plateau needs a holdout, ...). This module imports no other config module: the schema and the
parse sit above it.

`train` and `eval` (the entry layer) call `run_settings(cfg)`; everything below takes these
dataclasses or plain arguments and never sees a DictConfig. No torch here: the schemas are
registered before a command imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


from resnet_repro.config.archs import Arch, names_after_network
from resnet_repro.data.settings import DataSettings
from resnet_repro.errors import ConfigError


@dataclass(frozen=True)
class ModelSettings:
    name: str
    arch: Arch
    bn_group_size: int | None = None
    weights: str | None = None  # start from these weights (torchvision file or our checkpoint)
    freeze_backbone: bool = False  # train only the classifier head (with `weights`)


@dataclass(frozen=True)
class OptimSettings:
    momentum: float = 0.9  # §3.4, §4.2
    weight_decay: float = 1e-4  # §3.4, §4.2
    nesterov: bool = False


@dataclass(frozen=True)
class ScheduleSettings:
    kind: str = "step"
    base_lr: float = 0.1
    milestones: tuple[int, ...] = (32000, 48000)
    gamma: float = 0.1
    warmup: dict[str, Any] | None = None  # WarmupSettings' keys but check_every (schedule.py takes a mapping)
    check_every: int = 100  # iterations averaged for the warm-up's running training error
    plateau: dict[str, Any] | None = None  # PlateauSettings' keys


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


@dataclass(frozen=True)
class RunSettings:
    exp_name: str
    seed: int
    model: ModelSettings
    data: DataSettings
    optim: OptimSettings
    schedule: ScheduleSettings
    trainer: TrainerSettings
    logger: LoggerSettings
    renamed_from: str | None = None  # the model name the config gave, when the network is another


@dataclass(frozen=True)
class WarmupSettings:
    """schedule.warmup (§4.2's warm-up of ResNet-110/1202); the defaults are schedule.py's."""

    enabled: bool = True  # a warm-up section is on unless it says otherwise
    lr: float = 0.01
    error_threshold: float = 0.8
    check_every: int = 100  # iterations averaged for the running training error
    max_iters: int | None = None


@dataclass(frozen=True)
class PlateauSettings:
    """schedule.plateau (§3.4's "divided by 10 when the error plateaus"); schedule.py's defaults."""

    factor: float = 0.1
    patience: int = 5
    threshold: float = 1e-3
    min_lr: float = 0.0
    window: int = 1


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


# --------------------------------------------------------------------------------------------
# From a composed config: ranges and the rules between settings
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
