"""Start from existing weights: torchvision ResNet files (v1.5 layout) or our checkpoints.

Used by `train` (`model.weights=<file>`: fine-tuning, optionally with a frozen backbone) and by
`eval` (a torchvision `resnet50-*.pth` evaluated with the paper's 10-crop and multi-scale
protocols). Files are read with `torch.load(weights_only=True)`: no code from them runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from resnet_repro.runs.checkpoint import FORMAT, load_checkpoint
from resnet_repro.errors import CheckpointError, ConfigError
from resnet_repro.config.archs import IMAGENET_LAYERS

StateDict = dict[str, torch.Tensor]


def load_weights(path: str | Path) -> StateDict:
    """A model state dict from a torchvision weights file or a resnet_repro checkpoint."""
    obj = load_checkpoint(path, any_state_dict=True)
    if obj.get("format") == FORMAT:
        return obj["model"]
    if not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path} is neither a resnet_repro checkpoint nor a model state dict")
    return obj


def check_weights_norm(path: str | Path, data_norm: str) -> None:
    """Refuse to start from torchvision's weights unless the data are normalised as they were
    trained: per-channel mean AND std (`data.norm=imagenet`). Our from-scratch default subtracts
    the mean only (§3.4), which would feed those weights inputs about 4.4x larger than they
    expect (1 / 0.226). Our own checkpoints are not checked: they carry their own config."""
    from resnet_repro.models.peers import is_akamaster

    obj = load_checkpoint(path, any_state_dict=True)
    if is_akamaster(obj):
        raise ConfigError(
            f"model.weights={path} is an akamaster/pytorch_resnet_cifar10 file, a published peer's trained "
            f"CIFAR-10 net: evaluate it with `eval ckpt={path} data_root=<CIFAR-10 folder>` or beside your runs "
            "with `report <runs> --peers <its folder>`; training does not start from it"
        )
    if obj.get("format") != FORMAT and data_norm != "imagenet":
        raise ConfigError(
            f"model.weights={path} is a torchvision weights file, which expects inputs divided by the "
            f"per-channel std: set data.norm=imagenet (got data.norm={data_norm})"
        )


def infer_torchvision_model(state: StateDict, path: str | Path = "weights") -> str:
    """The named model (`torchvision_resnet50`, ...) whose layout a torchvision state dict has."""
    blocks = [0, 0, 0, 0]
    for key in state:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            i, j = int(m.group(1)) - 1, int(m.group(2))
            blocks[i] = max(blocks[i], j + 1)
    bottleneck = "layer1.0.conv3.weight" in state
    for depth, (block, layers) in IMAGENET_LAYERS.items():
        if list(layers) == blocks and (block == "bottleneck") == bottleneck:
            return f"torchvision_resnet{depth}"
    raise CheckpointError(f"{path}: not a torchvision ResNet-18/34/50/101/152 state dict (blocks per stage {blocks})")


def apply_weights(model: nn.Module, state: StateDict, path: str | Path, model_name: str) -> list[str]:
    """Load `state` into `model`. A classifier of another size is left freshly initialised (a new
    head for a new data set); any other missing, extra or misshapen tensor is an error.
    Returns the keys left at their initial values."""
    own = model.state_dict()
    skipped = [k for k in ("fc.weight", "fc.bias") if k in state and k in own and state[k].shape != own[k].shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    bad_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    if bad_shape or missing or unexpected:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("wrong shape", bad_shape), ("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise CheckpointError(f"weights {path} do not match {model_name} ({detail})")
    model.load_state_dict(state, strict=False)
    return skipped


def freeze_backbone(model: nn.Module) -> None:
    """Train only the classifier: every other parameter stops requiring gradients."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))


def set_train_mode(model: nn.Module, frozen_backbone: bool) -> None:
    """model.train(), except that a frozen backbone keeps its BN statistics fixed."""
    model.train()
    if frozen_backbone:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
