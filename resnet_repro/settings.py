"""Typed settings of a run, built from the Hydra config in one place.

The dataclasses below are also the config's schema (`config_schema.py`): Hydra checks types and
keys at composition, and `run_settings(cfg)` adds only what a schema cannot say: value ranges
and the rules that tie settings together (a BN group must divide the batch, a plateau needs a
holdout, ...).

`train` and `eval` (the entry layer) call `run_settings(cfg)`; everything below takes these
dataclasses or plain arguments and never sees a DictConfig. No torch here: the schemas are
registered before a command imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resnet_repro.archs import Arch, names_after_network
from resnet_repro.data.settings import DataSettings
from resnet_repro.errors import ConfigError
from resnet_repro.schedule import build_schedule


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


def per_process_batch_checked(model: ModelSettings, trainer: TrainerSettings, world_size: int) -> int:
    """Each process's share of the global batch, refusing BN groups that do not tile it.

    A BN group larger than the per-process batch cannot be formed: the layer would silently
    normalise over the smaller batch (other statistics than the recipe states), so it is an
    error. Called by `train` as soon as the world size is known, before any data or file."""
    from resnet_repro.distributed import World, per_process_batch

    n = per_process_batch(trainer.batch_size, World(size=world_size))
    g = model.bn_group_size
    if g is not None and n % g:
        raise ConfigError(
            f"model.bn_group_size={g} does not divide the per-process batch of {n} images "
            f"(trainer.batch_size={trainer.batch_size} over {world_size} process(es)); "
            f"use a batch that is a multiple of {g * world_size} or a smaller group"
        )
    return n


def _named_after_network(model: ModelSettings, exp_name: str) -> tuple[ModelSettings, str, str | None]:
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


def _positive_int(value: Any, key: str) -> int:
    if value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def run_settings(cfg: DictConfig | dict[str, Any]) -> RunSettings:
    """Check a composed config (or a checkpoint's saved one) and turn it into typed settings:
    types and keys by the schema, then ranges and cross-field rules (one clear error each)."""
    from resnet_repro.config_schema import validated
    from resnet_repro.models import validate_arch
    from resnet_repro.policy import COMPILE_MODES

    c: dict[str, Any] = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    # The schema fills in a missing setting's default, never a missing section: a partial config
    # (a W&B run's, an old record's) is not a recipe.
    missing = [s for s in ("model", "data", "optim", "schedule", "trainer", "logger") if not isinstance(c.get(s), dict)]
    if missing:
        raise ConfigError(f"the config has no {', '.join(missing)} section(s): not a run's complete config")
    v = validated(c)

    m = v["model"]
    arch = Arch(**{k: m[k] for k in Arch.__dataclass_fields__})
    model = ModelSettings(name=m["name"], arch=arch, bn_group_size=m["bn_group_size"], weights=m["weights"],
                          freeze_backbone=m["freeze_backbone"])
    if model.weights == "required":  # an exp that only makes sense from pretrained weights
        raise ConfigError(
            f"exp {v['exp_name']} fine-tunes pretrained weights: give model.weights=<torchvision "
            f"{model.name.removeprefix('torchvision_')} .pth file or one of our checkpoints>"
        )
    if model.freeze_backbone and not model.weights:
        raise ConfigError("model.freeze_backbone=true needs model.weights=<file> to start from")
    validate_arch(arch, model.bn_group_size)  # every model setting is checked before any data is loaded

    d = v["data"]
    if len(d["scale"]) != 2:  # a schema's tuple has no length
        raise ConfigError(f"data.scale must be a list of 2 integers, got {d['scale']!r}")
    data = DataSettings(**{**d, "scale": tuple(d["scale"])})
    if data.val_size < 0:
        raise ConfigError(f"data.val_size must be >= 0, got {data.val_size}")

    optim = OptimSettings(**{k: x for k, x in v["optim"].items() if k != "name"})
    if not 0 <= optim.momentum < 1:  # 1 or more never forgets a gradient: the steps grow without bound
        raise ConfigError(f"optim.momentum must be in [0, 1) (the paper: 0.9), got {optim.momentum}")
    if optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0 (the paper: 0.0001), got {optim.weight_decay}")
    if optim.nesterov and optim.momentum == 0:
        raise ConfigError("optim.nesterov=true needs optim.momentum > 0")

    s = dict(v["schedule"])
    warmup = dict(s.pop("warmup") or {})
    check_every = _positive_int(warmup.pop("check_every", 100), "schedule.warmup.check_every")
    if warmup.get("max_iters") is not None:
        _positive_int(warmup["max_iters"], "schedule.warmup.max_iters")
    schedule = ScheduleSettings(**{**s, "milestones": tuple(s["milestones"])}, warmup=warmup or None,
                                check_every=check_every)
    # The schedule's own range checks (plateau factor, warm-up threshold, ...), now rather than
    # after the data has loaded.
    build_schedule(schedule.kind, base_lr=schedule.base_lr, milestones=schedule.milestones, gamma=schedule.gamma,
                   warmup=schedule.warmup, plateau=schedule.plateau)
    if schedule.kind == "plateau" and data.val_size == 0:
        # Nothing to watch: the LR would silently stay at base_lr for the whole run.
        raise ConfigError(
            "schedule kind 'plateau' watches the held-out error, but data.val_size=0 holds out nothing: "
            "set data.val_size=N (e.g. 10000) or use a fixed schedule (schedule=imagenet_step)"
        )

    t = v["trainer"]
    for key in ("amp", "channels_last", "compile"):  # `compile: false` (a YAML bool) means off
        t[key] = str(t[key]).lower()
    for key in ("batch_size", "max_iters", "eval_every", "log_every", "ckpt_every", "eval_batch_size"):
        _positive_int(t[key], f"trainer.{key}")
    trainer = TrainerSettings(**t)
    if trainer.max_skipped_steps < 0:
        raise ConfigError(f"trainer.max_skipped_steps must be an integer >= 0, got {trainer.max_skipped_steps!r}")
    trainer.max_time_s  # noqa: B018  (a malformed duration: one line now, not mid-run)
    if trainer.pause_at is not None:
        _positive_int(trainer.pause_at, "trainer.pause_at")
    if trainer.compile not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile must be one of {', '.join(COMPILE_MODES)}, got {trainer.compile!r}")
    if trainer.amp not in ("auto", "bf16", "off", "false"):
        raise ConfigError(f"trainer.amp must be auto, bf16 or off, got {trainer.amp!r}")
    if trainer.channels_last not in ("auto", "on", "off", "true", "false"):
        raise ConfigError(f"trainer.channels_last must be auto, on or off, got {trainer.channels_last!r}")
    if trainer.sync_bn and model.bn_group_size is not None:
        raise ConfigError("trainer.sync_bn=true and model.bn_group_size are exclusive (SyncBN pools every process)")
    g = model.bn_group_size
    if g is not None and trainer.batch_size % g:  # also refuses a group larger than the batch
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is not a multiple of model.bn_group_size={g}"
        )

    logger = LoggerSettings(**{**v["logger"], "tags": tuple(v["logger"]["tags"])})
    if logger.name not in ("wandb", "none"):
        raise ConfigError(f"unknown logger {logger.name!r}; choose wandb or none")
    if logger.mode not in WANDB_MODES:
        raise ConfigError(f"logger.mode must be one of {', '.join(WANDB_MODES)}, got {logger.mode!r}")

    if v["seed"] < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {v['seed']!r}")
    exp_name = str(c.get("exp_name") or model.name)
    model, exp_name, renamed_from = _named_after_network(model, exp_name)
    return RunSettings(
        exp_name=exp_name,
        renamed_from=renamed_from,
        seed=v["seed"],
        model=model,
        data=data,
        optim=optim,
        schedule=schedule,
        trainer=trainer,
        logger=logger,
    )
