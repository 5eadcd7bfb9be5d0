"""The one way a training checkpoint becomes a model: the run's settings from its saved config,
the network those settings name (with the checkpoint's class count and BN groups, exactly as
trained), checked against the checkpoint's record and loaded with its weights. Used by `eval`,
`analyze` (Figure 7) and everything else that reads a trained run back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from resnet_repro.config.archs import Arch
from resnet_repro.runs.checkpoint import check_compatible
from resnet_repro.errors import CheckpointError
from resnet_repro.models.resnet import build_from_arch
from resnet_repro.config.settings import RunSettings
from resnet_repro.schema import run_settings


@dataclass
class TrainedModel:
    model: nn.Module  # on the CPU, in train mode as built
    settings: RunSettings  # the run's settings, from the config saved in the checkpoint
    arch: Arch  # settings.model.arch with the checkpoint's num_classes
    meta: dict[str, Any]  # the checkpoint's meta: iteration, num_classes, ...


def model_from_checkpoint(
    state: dict[str, Any], path: str | Path, refuse: Callable[[RunSettings, Arch], None] | None = None
) -> TrainedModel:
    """The model of a loaded resnet_repro training checkpoint `state` (read from `path`).
    `refuse(settings, arch)` may raise for runs the caller cannot use, before any weights load."""
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path} has no saved run config; is it a resnet_repro training checkpoint?")
    settings = run_settings(state["config"])
    meta = state["meta"]
    arch = replace(settings.model.arch, num_classes=meta["num_classes"])
    if refuse is not None:
        refuse(settings, arch)
    check_compatible(state, model_name=settings.model.name, arch=arch.as_dict(), path=path)
    model = build_from_arch(arch, bn_group_size=settings.model.bn_group_size)  # grouped as trained
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit {settings.model.name}: {str(e).splitlines()[0]}") from None
    return TrainedModel(model, settings, arch, meta)
