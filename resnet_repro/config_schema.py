"""The config's schema: each settings dataclass (settings.py) as a Hydra structured config.

`register_schemas` puts them in Hydra's ConfigStore; conf/config.yaml and conf/eval.yaml list
them first in their defaults, so composition itself refuses a setting of the wrong type or an
unknown key. `validated` applies the same schema to a plain dict (a checkpoint's saved config,
a test's). Either way OmegaConf's error becomes one line naming the key, the value and the
expected type (`config_error`). No torch: the schemas are registered before a command imports it.
"""

from __future__ import annotations

import re
import types
from dataclasses import MISSING, field, fields, make_dataclass
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from resnet_repro.archs import Arch
from resnet_repro.data.settings import DataSettings
from resnet_repro.errors import ConfigError
from resnet_repro.settings import (
    BenchSettings,
    EvalSettings,
    LoggerSettings,
    ModelSettings,
    OptimSettings,
    PlateauSettings,
    ScheduleSettings,
    TrainerSettings,
    WarmupSettings,
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


