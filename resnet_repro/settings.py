"""Typed settings of a run, built from the Hydra config in one place.

`train` and `eval` (the entry layer) call `run_settings(cfg)`; everything below takes these
dataclasses or plain arguments and never sees a DictConfig.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, replace
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf

from resnet_repro.data.build import DataSettings
from resnet_repro.errors import ConfigError
from resnet_repro.models import Arch, names_after_network, validate_arch
from resnet_repro.policy import COMPILE_MODES


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
    warmup: dict[str, Any] | None = None  # enabled / lr / error_threshold / max_iters
    check_every: int = 100  # iterations averaged for the warm-up's running training error
    plateau: dict[str, Any] | None = None


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
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16, else off) | bf16 | off
    channels_last: str = "auto"  # auto (with bf16 autocast) | on | off
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
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def _known(section: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"unknown {where} setting(s) {unknown}; valid: {sorted(allowed)}")
    return section


# schedule.warmup and schedule.plateau are plain mappings (schedule.py takes them as keyword
# settings); the types of their keys, checked like the dataclass fields above.
WARMUP_TYPES = {"enabled": bool, "lr": float, "error_threshold": float, "check_every": int, "max_iters": int | None}
PLATEAU_TYPES = {"factor": float, "patience": int, "threshold": float, "min_lr": float, "window": int}

_SINGULAR = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:  # the allowed values get their own message later
        return _describe(type(args[0]))
    if origin is tuple:
        if args[1:] == (Ellipsis,):
            return f"a list of {_PLURAL.get(args[0], 'values')}"
        return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
    if origin is dict or tp is dict:
        return "a mapping of settings"
    return _SINGULAR.get(tp, getattr(tp, "__name__", str(tp)))


def _matches(value: Any, tp: Any) -> bool:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return _matches(value, type(args[0]))
    if origin is tuple:  # YAML has lists, not tuples
        if not isinstance(value, (list, tuple)):
            return False
        elems = [args[0]] * len(value) if args[1:] == (Ellipsis,) else list(args)
        return len(elems) == len(value) and all(_matches(v, t) for v, t in zip(value, elems))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(value, bool):  # bool is an int subclass: true is not a number of iterations
        return tp is bool
    if tp is float:
        return isinstance(value, (int, float))
    return isinstance(value, tp)


def check_types(section: dict[str, Any], hints: dict[str, Any], where: str) -> None:
    """One clear line for a setting of the wrong type (`schedule.base_lr=fast`), before any
    code compares or computes with it. `hints` maps each key to its annotation."""
    for key, value in section.items():
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(f"{where}{key} must be {_describe(hints[key])}, got {value!r}")


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


def run_settings(cfg: DictConfig | dict[str, Any]) -> RunSettings:
    """Validate a composed config and turn it into typed settings (one clear error each)."""
    c: dict[str, Any] = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]

    m = dict(c["model"])
    arch_keys = set(Arch.__dataclass_fields__)
    _known(m, arch_keys | {"name", "bn_group_size", "weights", "freeze_backbone"}, "model")
    check_types(m, {**get_type_hints(Arch), **get_type_hints(ModelSettings)}, "model.")
    arch = Arch(**{k: m[k] for k in arch_keys if k in m})
    model = ModelSettings(
        name=m["name"], arch=arch, bn_group_size=m.get("bn_group_size"), weights=m.get("weights"),
        freeze_backbone=m.get("freeze_backbone", False),
    )
    if model.weights == "required":  # an exp that only makes sense from pretrained weights
        raise ConfigError(
            f"exp {c.get('exp_name')} fine-tunes pretrained weights: give model.weights=<torchvision "
            f"{model.name.removeprefix('torchvision_')} .pth file or one of our checkpoints>"
        )
    if model.freeze_backbone and not model.weights:
        raise ConfigError("model.freeze_backbone=true needs model.weights=<file> to start from")
    validate_arch(arch, model.bn_group_size)  # every model setting is checked before any data is loaded

    d = _known(dict(c["data"]), set(DataSettings.__dataclass_fields__), "data")
    check_types(d, get_type_hints(DataSettings), "data.")
    if "scale" in d:
        d["scale"] = tuple(d["scale"])
    data = DataSettings(**d)
    if data.val_size < 0:
        raise ConfigError(f"data.val_size must be >= 0, got {data.val_size}")

    o = dict(c["optim"])
    o.pop("name", None)
    check_types(_known(o, set(OptimSettings.__dataclass_fields__), "optim"), get_type_hints(OptimSettings), "optim.")
    optim = OptimSettings(**o)

    s = dict(c["schedule"])
    check_types(s, get_type_hints(ScheduleSettings), "schedule.")
    check_types(s.get("warmup") or {}, WARMUP_TYPES, "schedule.warmup.")
    check_types(s.get("plateau") or {}, PLATEAU_TYPES, "schedule.plateau.")
    warmup = dict(s.pop("warmup", None) or {})
    check_every = _positive_int(warmup.pop("check_every", 100), "schedule.warmup.check_every")
    if warmup.get("max_iters") is not None:
        _positive_int(warmup["max_iters"], "schedule.warmup.max_iters")
    schedule = ScheduleSettings(
        **_known(s, set(ScheduleSettings.__dataclass_fields__) - {"warmup", "check_every"}, "schedule"),
        warmup=warmup or None,
        check_every=check_every,
    )
    schedule = ScheduleSettings(**{**schedule.__dict__, "milestones": tuple(schedule.milestones)})
    if schedule.kind == "plateau" and data.val_size == 0:
        # Nothing to watch: the LR would silently stay at base_lr for the whole run.
        raise ConfigError(
            "schedule kind 'plateau' watches the held-out error, but data.val_size=0 holds out nothing: "
            "set data.val_size=N (e.g. 10000) or use a fixed schedule (schedule=imagenet_step)"
        )

    t = _known(dict(c["trainer"]), set(TrainerSettings.__dataclass_fields__), "trainer")
    for key in ("amp", "channels_last", "compile"):  # `compile: false` (a YAML bool) means off
        if isinstance(t.get(key), bool):
            t[key] = str(t[key]).lower()
    check_types(t, get_type_hints(TrainerSettings), "trainer.")
    for key in ("batch_size", "max_iters", "eval_every", "log_every", "ckpt_every", "eval_batch_size"):
        if key in t:
            _positive_int(t[key], f"trainer.{key}")
    trainer = TrainerSettings(
        **{k: (str(v).lower() if k in ("amp", "channels_last", "compile") else v) for k, v in t.items()}
    )
    if isinstance(trainer.max_skipped_steps, bool) or not isinstance(trainer.max_skipped_steps, int) \
            or trainer.max_skipped_steps < 0:
        raise ConfigError(f"trainer.max_skipped_steps must be an integer >= 0, got {trainer.max_skipped_steps!r}")
    if not isinstance(trainer.tf32, bool):
        raise ConfigError(f"trainer.tf32 must be true or false, got {trainer.tf32!r}")
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

    lg = _known(dict(c["logger"]), set(LoggerSettings.__dataclass_fields__), "logger")
    check_types(lg, get_type_hints(LoggerSettings), "logger.")
    lg["tags"] = tuple(lg.get("tags") or ())
    logger = LoggerSettings(**lg)
    if logger.name not in ("wandb", "none"):
        raise ConfigError(f"unknown logger {logger.name!r}; choose wandb or none")

    seed = c.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    exp_name = str(c.get("exp_name") or model.name)
    model, exp_name, renamed_from = _named_after_network(model, exp_name)
    return RunSettings(
        exp_name=exp_name,
        renamed_from=renamed_from,
        seed=seed,
        model=model,
        data=data,
        optim=optim,
        schedule=schedule,
        trainer=trainer,
        logger=logger,
    )
