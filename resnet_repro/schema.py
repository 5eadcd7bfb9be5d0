"""The config's schema: the settings dataclasses (config/settings.py) as Hydra's structured configs.

`register_schemas` puts `RunConfig` and `EvalSettings` in Hydra's ConfigStore; conf/config.yaml
and conf/eval.yaml list them first in their defaults, so composition itself refuses a setting of
the wrong type or an unknown key. `run_settings` turns a composed config (or a checkpoint's saved
one) into the frozen settings with `OmegaConf.to_object`, whose `__post_init__`s check the ranges;
it adds the schedule code's own checks and the rules between sections. OmegaConf's errors become one line
naming the key, the value and the expected type (`config_error`). No torch at import: the schemas
are registered before a command imports it.
"""

from __future__ import annotations

import re
import types
from dataclasses import fields
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from resnet_repro.errors import ConfigError
from resnet_repro.training.schedule import schedule_from
from resnet_repro.config.settings import EvalSettings, RunConfig, RunSettings, named_after_network

SCHEMAS = {"run_schema": RunConfig, "eval_schema": EvalSettings}  # the names conf/*.yaml use
T = TypeVar("T")


def _writable(node: Any) -> Any:
    """OmegaConf makes a frozen dataclass a read-only config, which no YAML file or override
    could merge into; the objects `to_object` makes stay frozen. Every node's own flag, a MISSING
    section's too (a group file merges into it later): OmegaConf's node methods, whose public
    `set_readonly` cannot reach a MISSING node (omegaconf 2.3, pyproject's floor)."""
    node._set_flag("readonly", None)
    if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
        for key in node.keys():
            _writable(node._get_node(key))  # the node itself, MISSING or None included
    return node


def _structured(schema: type) -> DictConfig:
    return _writable(OmegaConf.structured(schema))


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (conf/config.yaml and conf/eval.yaml name them)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=name, node=_structured(schema))


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


def config_error(e: BaseException, schema: type = RunConfig, values: Any = None, prefix: str = "") -> ConfigError | None:
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


def typed(schema: type[T], values: dict[str, Any] | DictConfig, prefix: str = "") -> T:
    """`values` as the frozen `schema` object: keys and types by OmegaConf (a missing setting
    takes its default), ranges by the dataclasses' own checks; each error one line."""
    plain = values if isinstance(values, dict) else OmegaConf.to_container(values, resolve=True)
    try:
        return OmegaConf.to_object(OmegaConf.merge(_structured(schema), plain))  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise (config_error(e, schema, plain, prefix) or ConfigError(str(e).splitlines()[0])) from None


def _between_sections(config: RunConfig) -> None:
    """The rules that tie sections together (each section checked its own ranges when made)."""
    model, trainer = config.model, config.trainer
    if config.schedule.kind == "plateau" and config.data.val_size == 0:
        # Nothing to watch: the LR would silently stay at base_lr for the whole run.
        raise ConfigError(
            "schedule kind 'plateau' watches the held-out error, but data.val_size=0 holds out nothing: "
            "set data.val_size=N (e.g. 10000) or use a fixed schedule (schedule=imagenet_step)"
        )
    if trainer.sync_bn and model.bn_group_size is not None:
        raise ConfigError("trainer.sync_bn=true and model.bn_group_size are exclusive (SyncBN pools every process)")
    g = model.bn_group_size
    if g is not None and trainer.batch_size % g:  # also refuses a group larger than the batch
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is not a multiple of model.bn_group_size={g}"
        )


def run_settings(cfg: DictConfig | dict[str, Any]) -> RunSettings:
    """A composed config (or a checkpoint's saved one) as typed, checked settings, named after
    the network they train."""
    c: dict[str, Any] = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    # The schema fills in a missing setting's default, never a missing section: a partial config
    # (a W&B run's, an old record's) is not a recipe.
    missing = [s for s in ("model", "data", "optim", "schedule", "trainer", "logger") if not isinstance(c.get(s), dict)]
    if missing:
        raise ConfigError(f"the config has no {', '.join(missing)} section(s): not a run's complete config")
    config = typed(RunConfig, c)
    model = config.model
    if model.weights == "required":  # an exp that only makes sense from pretrained weights
        raise ConfigError(
            f"exp {config.exp_name} fine-tunes pretrained weights: give model.weights=<torchvision "
            f"{model.name.removeprefix('torchvision_')} .pth file or one of our checkpoints>"
        )
    # The schedule's own range checks (plateau factor, warm-up threshold, ...), now rather than
    # after the data has loaded.
    schedule_from(config.schedule)
    _between_sections(config)
    model, exp_name, renamed_from = named_after_network(model, config.exp_name or model.name)
    return RunSettings(**{**vars(config), "model": model, "exp_name": exp_name}, renamed_from=renamed_from)
