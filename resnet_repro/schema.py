"""The config's schema: each settings dataclass (config/settings.py) as a Hydra structured config.

`register_schemas` puts them in Hydra's ConfigStore; conf/config.yaml and conf/eval.yaml list
them first in their defaults, so composition itself refuses a setting of the wrong type or an
unknown key. `validated` applies the same schema to a plain dict (a checkpoint's saved config,
a test's). Either way OmegaConf's error becomes one line naming the key, the value and the
expected type (`config_error`). No torch: the schemas are registered before a command imports it.

Why schema twins and not the settings dataclasses themselves in the ConfigStore (decided in
issue 33): the settings are frozen, so that nothing below the entry layer can change a run's
settings, and OmegaConf makes a frozen dataclass a read-only config that overrides cannot merge
into; and the YAML's `model.*` is one flat section (the architecture and how the model is
built), where `ModelSettings` nests `Arch`, so `OmegaConf.to_object` would need the YAML or the
dataclasses reshaped (every `model.depth=...` override renamed, or `settings.model.arch` split
up). `_schema` derives each twin from its dataclass's fields, so there is one list of settings,
and `run_settings` builds the frozen objects with the checks types cannot express.
"""

from __future__ import annotations

import math
import re
import types
from dataclasses import MISSING, field, fields, make_dataclass
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from resnet_repro.config.archs import Arch
from resnet_repro.data.settings import DataSettings
from resnet_repro.errors import ConfigError
from resnet_repro.training.schedule import build_schedule
from resnet_repro.config.settings import (
    COMPILE_MODES,
    WANDB_MODES,
    BenchSettings,
    EvalSettings,
    LoggerSettings,
    ModelSettings,
    OptimSettings,
    PlateauSettings,
    RunSettings,
    ScheduleSettings,
    TrainerSettings,
    WarmupSettings,
    named_after_network,
    positive_int,
)


# --------------------------------------------------------------------------------------------
# Each settings dataclass as OmegaConf reads it
# --------------------------------------------------------------------------------------------


def _plain_type(tp: Any) -> Any:
    """An annotation as OmegaConf takes it: a Literal becomes its values' type (the values
    themselves are checked with their own message, e.g. by validate_arch)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return type(args[0])
    if origin in (Union, types.UnionType):
        return Union[tuple(_plain_type(a) for a in args)]  # type: ignore[return-value]
    return tp


def _schema(cls: type, name: str, drop: tuple[str, ...] = (), types_: dict[str, Any] | None = None,
            before: tuple[type, ...] = ()) -> type:
    """A mutable twin of the frozen `cls` (frozen dataclasses make read-only configs), with the
    fields of `before` first (flattened into one section, as the YAML is) and `types_` replacing
    annotations. Required fields default to "???" (OmegaConf's missing value)."""
    specs = []
    for c in (*before, cls):
        hints = get_type_hints(c)
        for f in fields(c):
            if f.name in drop:
                continue
            if f.default is not MISSING:
                default = field(default=f.default)
            elif f.default_factory is not MISSING:
                default = field(default_factory=f.default_factory)
            else:
                default = field(default="???")  # type: ignore[arg-type]
            specs.append((f.name, (types_ or {}).get(f.name, _plain_type(hints[f.name])), default))
    return make_dataclass(name, specs)


def _section(schema: type) -> Any:
    return field(default_factory=schema)


WarmupSchema = _schema(WarmupSettings, "WarmupSchema")
PlateauSchema = _schema(PlateauSettings, "PlateauSchema")
# model.* is one flat section: the architecture (Arch) and how the model is built and started.
ModelSchema = _schema(ModelSettings, "ModelSchema", drop=("arch",), before=(Arch,))
DataSchema = _schema(DataSettings, "DataSchema")
OptimSchema = make_dataclass("OptimSchema", [("name", str, field(default="sgd"))],
                             bases=(_schema(OptimSettings, "OptimFields"),))
ScheduleSchema = _schema(ScheduleSettings, "ScheduleSchema", drop=("check_every",),
                         types_={"warmup": Optional[WarmupSchema], "plateau": Optional[PlateauSchema]})
TrainerSchema = _schema(TrainerSettings, "TrainerSchema")
LoggerSchema = _schema(LoggerSettings, "LoggerSchema")
BenchSchema = _schema(BenchSettings, "BenchSchema")
EvalSchema = _schema(EvalSettings, "EvalSchema")
RunSchema = make_dataclass("RunSchema", [
    ("model", ModelSchema, _section(ModelSchema)),
    ("data", DataSchema, _section(DataSchema)),
    ("optim", OptimSchema, _section(OptimSchema)),
    ("schedule", ScheduleSchema, _section(ScheduleSchema)),
    ("trainer", TrainerSchema, _section(TrainerSchema)),
    ("logger", LoggerSchema, _section(LoggerSchema)),
    ("bench", BenchSchema, _section(BenchSchema)),
    ("exp_name", str, field(default="???")),
    ("seed", int, field(default=0)),
    ("resume", Optional[str], field(default=None)),
])
SCHEMAS = {"run_schema": RunSchema, "eval_schema": EvalSchema}  # the names conf/*.yaml use


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (conf/config.yaml and conf/eval.yaml name them)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=name, node=schema)


# --------------------------------------------------------------------------------------------
# OmegaConf's errors as one line
# --------------------------------------------------------------------------------------------

_SINGULAR = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _describe(tp: Any) -> str:
    """An annotation in words: `int | None` -> "an integer or null"."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if args[1:] == (Ellipsis,):
            return f"a list of {_PLURAL.get(args[0], 'values')}"
        return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
    if origin is dict or tp is dict or isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return "a mapping of settings"
    return _SINGULAR.get(tp, getattr(tp, "__name__", str(tp)))


def _schema_at(schema: type, path: list[str]) -> tuple[type | None, Any]:
    """(the dataclass holding the last key of `path`, that key's annotation) in `schema`."""
    tp: Any = schema
    holder = None
    for key in path:
        while get_origin(tp) in (Union, types.UnionType):  # Optional[Section]
            tp = next(a for a in get_args(tp) if a is not type(None))
        if not (isinstance(tp, type) and hasattr(tp, "__dataclass_fields__")):
            return None, None
        holder, tp = tp, get_type_hints(tp).get(key)
        if tp is None:
            return holder, None
    return holder, tp


_VALUE = re.compile(r"Value '(?P<value>.*)' (?:of type '(?P<type>\w+)'|is not a valid \w+ \(type (?P<type2>\w+)\))")
_LITERAL = r"[-+]?[\d.]+(e[-+]?\d+)?|true|false|null|\[.*\]|\{.*\}|'.*'|\".*\""
_MISSING_VALUE = object()


def _lookup(values: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return _MISSING_VALUE
        values = values[key]
    return values


def config_error(e: BaseException, schema: type = RunSchema, values: Any = None, prefix: str = "") -> ConfigError | None:
    """OmegaConf's error (itself, or the cause of Hydra's) as our one line: `trainer.max_iters
    must be an integer, got 'fast'` or `unknown trainer setting(s) ['x']; valid: [...]`. The
    value comes from `values` (the dict that was checked) or from OmegaConf's message. None
    for an error that names no setting."""
    override = re.search(r"override (\S+?)=(.*)$", str(e))  # Hydra: "Error merging override k=v"
    while not isinstance(e, OmegaConfBaseException) and e.__cause__ is not None:
        e = e.__cause__
    full_key = getattr(e, "full_key", None)
    if not isinstance(e, OmegaConfBaseException) or not full_key:
        return None
    key = re.sub(r"\[\d+\]", "", str(full_key))  # a list's element: name the list
    element = key != str(full_key)
    path = key.split(".")
    holder, tp = _schema_at(schema, path)
    where = prefix + key
    if isinstance(e, ConfigKeyError) or tp is None:
        section = (prefix + ".".join(path[:-1])).rstrip(".")
        valid = sorted(f.name for f in fields(holder)) if holder is not None else []
        return ConfigError(f"unknown {section + ' ' if section else ''}setting(s) {[path[-1]]}; valid: {valid}")
    if isinstance(e, MissingMandatoryValue):
        return ConfigError(f"{where} is required: give {where}=... on the command line")
    value = _lookup(values, path)
    if value is _MISSING_VALUE:
        m = _VALUE.search(getattr(e, "msg", "") or str(e))
        if override is not None and override[1].lstrip("+~") == key and (element or m is None):
            text = override[2]  # as typed on the command line; a bare word is a string
            value = text if re.fullmatch(_LITERAL, text, re.IGNORECASE) else repr(text)
        elif m is not None:
            value = repr(m["value"]) if (m["type"] or m["type2"]) == "str" else m["value"]
        else:
            return ConfigError(f"{where} must be {_describe(tp)}")
    else:
        value = repr(value)
    return ConfigError(f"{where} must be {_describe(tp)}, got {value}")


def validated(values: dict[str, Any] | DictConfig, schema: type = RunSchema, prefix: str = "") -> dict[str, Any]:
    """`values` checked against `schema` and completed with its defaults, as a plain dict."""
    plain = values if isinstance(values, dict) else OmegaConf.to_container(values, resolve=True)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
        return OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise (config_error(e, schema, plain, prefix) or ConfigError(str(e).splitlines()[0])) from None


def run_settings(cfg: DictConfig | dict[str, Any]) -> RunSettings:
    """Check a composed config (or a checkpoint's saved one) and turn it into typed settings:
    types and keys by the schema, then ranges and cross-field rules (one clear error each)."""
    from resnet_repro.models.resnet import validate_arch

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
    if not (math.isfinite(optim.weight_decay) and optim.weight_decay >= 0):
        raise ConfigError(f"optim.weight_decay must be >= 0 (the paper: 0.0001), got {optim.weight_decay}")
    if optim.nesterov and optim.momentum == 0:
        raise ConfigError("optim.nesterov=true needs optim.momentum > 0")

    s = dict(v["schedule"])
    warmup = dict(s.pop("warmup") or {})
    check_every = positive_int(warmup.pop("check_every", 100), "schedule.warmup.check_every")
    if warmup.get("max_iters") is not None:
        positive_int(warmup["max_iters"], "schedule.warmup.max_iters")
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
        positive_int(t[key], f"trainer.{key}")
    trainer = TrainerSettings(**t)
    if trainer.max_skipped_steps < 0:
        raise ConfigError(f"trainer.max_skipped_steps must be an integer >= 0, got {trainer.max_skipped_steps!r}")
    trainer.max_time_s  # noqa: B018  (a malformed duration: one line now, not mid-run)
    if trainer.pause_at is not None:
        positive_int(trainer.pause_at, "trainer.pause_at")
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
    model, exp_name, renamed_from = named_after_network(model, exp_name)
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
