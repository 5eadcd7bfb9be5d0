"""The model as training uses it (and `bench` times): built from its seed or from given
weights, SyncBN when asked, on its device, in its memory layout."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from resnet_repro.training.distributed import World
from resnet_repro.training.step import maybe_compile
from resnet_repro.models.resnet import build_from_arch
from resnet_repro.training.policy import use_channels_last
from resnet_repro.models.pretrained import apply_weights, freeze_backbone, load_weights
from resnet_repro.config.settings import RunSettings


def make_model(settings: RunSettings, device: torch.device, world: World, channels_last: bool | None = None) -> nn.Module:
    """The model as training uses it: from its seed or from `model.weights` (optionally with a
    frozen backbone), SyncBN when asked, on its device, channels_last when enabled. `bench`
    times exactly this. DDP wrapping and compilation happen in the Trainer."""
    arch = settings.model.arch
    torch.manual_seed(settings.seed)  # the initial weights depend only on the seed
    model = build_from_arch(arch, bn_group_size=settings.model.bn_group_size)
    if settings.model.weights:
        skipped = apply_weights(model, load_weights(settings.model.weights), settings.model.weights, settings.model.name)
        if world.is_main:
            print(f"started from {settings.model.weights}" + (" (new classifier head)" if skipped else ""))
        if settings.model.freeze_backbone:
            freeze_backbone(model)
    if settings.trainer.sync_bn and world.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if channels_last if channels_last is not None else use_channels_last(settings.trainer.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def wrap_for_training(model: nn.Module, world: World, device: torch.device, compile_mode: str | None) -> nn.Module:
    """The module the training steps call: DDP over processes, then torch.compile (`compile_mode`
    None: eager)."""
    net: nn.Module = model
    if world.distributed:
        # BN running statistics stay per process during training (no buffer broadcast) and
        # are averaged over processes before each evaluation and checkpoint: the statistics
        # a single process with BN groups of the per-process batch would keep.
        with warnings.catch_warnings():  # newer torch renames the flag; all versions read this one
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
            )
    return maybe_compile(net, compile_mode)
