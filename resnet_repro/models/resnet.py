"""The paper's model family: one `ResNet` class, plain or residual, CIFAR or ImageNet.

Blocks and state-dict names follow torchvision (`conv1`, `bn1`, `layer1..4`, `downsample`,
`fc`), so torchvision's ResNet weights load into the v1.5 variant unchanged. The knobs are the
ones the paper varies (timm-style constructor arguments, no subclasses):

- stem: CIFAR 3x3/16 (§4.2) or ImageNet 7x7/64 stride 2 + 3x3 max pool (Table 1);
- block: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1; §4.1 "Deeper Bottleneck Architectures");
- residual on/off: plain nets are the same stacks without shortcuts (§4.1, §4.2);
- shortcut A/B/C (§3.3, Table 3);
- bottleneck stride on the first 1x1 (the paper) or on the 3x3 (torchvision's "v1.5").

The blocks and shortcuts are in `blocks.py`, grouped BN in `grouped_bn.py`, parameter and
multiply-add counts in `macs.py`, the torch-free architecture specs in `archs.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from resnet_repro.config.archs import (
    CIFAR_WIDTHS,
    IMAGENET_LAYERS,
    IMAGENET_WIDTHS,
    NAMED_MODELS,
    Arch,
    BottleneckStride,
    Shortcut,
    check_depth,
    check_options,
    get_arch,
)
from resnet_repro.models.blocks import (
    BLOCKS,
    BasicBlock,
    Bottleneck,
    _make_shortcut,
    conv3x3,
)
from resnet_repro.errors import ConfigError
from resnet_repro.models.grouped_bn import _norm_factory


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


def _check_args(
    block: str, layers: Sequence[int], widths: Sequence[int], stem: str, num_classes: int,
    residual: bool, shortcut: str, bottleneck_stride: str,
) -> None:
    """Every constructor argument of `ResNet` checked, one clear line each, without building."""
    if block not in BLOCKS:
        raise ConfigError(f"unknown block {block!r}; choose from {sorted(BLOCKS)}")
    if stem not in ("cifar", "imagenet"):
        raise ConfigError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
    check_options(residual, shortcut, bottleneck_stride)
    if len(layers) != len(widths) or not layers or min(layers) < 1:
        raise ConfigError(f"layers {list(layers)} and widths {list(widths)} must be non-empty, equal length, >= 1")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")


class ResNet(nn.Module):
    """A plain or residual network of the paper, CIFAR or ImageNet style.

    Args:
        block: "basic" or "bottleneck".
        layers: blocks per stage (3 stages for CIFAR, 4 for ImageNet).
        widths: filters per stage (before the bottleneck's x4 expansion).
        stem: "cifar" (3x3 conv, 16 filters; §4.2) or "imagenet" (7x7/64 stride 2 + max pool).
        num_classes: size of the final FC layer.
        residual: False builds the plain net (no shortcuts at all).
        shortcut: "A" zero-padding identity, "B" projection where dimensions change, "C"
            projection everywhere (§3.3). Plain nets have no shortcuts and accept only "A".
        bottleneck_stride: "1x1" (paper) or "3x3" (torchvision v1.5).
        bn_group_size: compute BN statistics per group of this many images (None: whole batch).
        zero_init_residual: start each residual branch's last BN at zero (Goyal et al. 2017;
            not in the paper, off by default).
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        widths: Sequence[int],
        stem: str,
        num_classes: int,
        residual: bool = True,
        shortcut: Shortcut = "B",
        bottleneck_stride: BottleneckStride = "1x1",
        bn_group_size: int | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        _check_args(block, layers, widths, stem, num_classes, residual, shortcut, bottleneck_stride)
        block_cls = BLOCKS[block]
        norm = _norm_factory(bn_group_size)
        self.residual = residual
        self.shortcut = shortcut

        if stem == "cifar":
            self.conv1 = conv3x3(3, widths[0])
            self.bn1 = norm(widths[0])
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
            self.bn1 = norm(widths[0])
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.relu = nn.ReLU(inplace=True)

        in_channels = widths[0]
        self.stages: list[str] = []
        for i, (n_blocks, planes) in enumerate(zip(layers, widths)):
            # The first stage keeps the map size (after the stem's pooling); each later stage
            # halves it in its first block (conv3_1, conv4_1, conv5_1; §3.4, §4.2).
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                out_channels = planes * block_cls.expansion
                s = stride if j == 0 else 1
                downsample = _make_shortcut(shortcut, in_channels, out_channels, s, norm) if residual else None
                blocks.append(block_cls(in_channels, planes, s, norm, residual, downsample, bottleneck_stride))
                in_channels = out_channels
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stages.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        if self.conv1.weight.is_meta:  # shapes only (build_meta); normal_ on meta imports torch._dynamo (~1.5 s)
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 (the paper's [13]): zero-mean Gaussian, std sqrt(2/n). We use
                # n = k*k*out_channels (the "backward" form of [13], as fb.resnet.torch and
                # torchvision do); [13] shows either form keeps the signal's scale.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def blocks(self) -> list[nn.Module]:
        """Every block in network order."""
        return [b for name in self.stages for b in getattr(self, name)]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stages:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------
# Architecture specs and named builders
# --------------------------------------------------------------------------------------


def _layout(family: str, depth: int) -> tuple[str, tuple[int, ...], tuple[int, ...], str, int]:
    """(block, blocks per stage, widths, stem, default classes) of a family and depth."""
    check_depth(family, depth)
    if family == "cifar":
        n = (depth - 2) // 6
        block, layers, widths, stem = "basic", (n, n, n), CIFAR_WIDTHS, "cifar"
        default_classes = 10
    else:
        block, layers = IMAGENET_LAYERS[depth]
        widths, stem, default_classes = IMAGENET_WIDTHS, "imagenet", 1000
    return block, tuple(layers), tuple(widths), stem, default_classes


def build_resnet(
    family: str,
    depth: int,
    *,
    residual: bool = True,
    shortcut: Shortcut = "A",
    bottleneck_stride: BottleneckStride = "1x1",
    num_classes: int | None = None,
    bn_group_size: int | None = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """Build the paper's net of a family and depth.

    CIFAR: depth 6n+2, three stages of n basic blocks (§4.2). ImageNet: depth 18/34 (basic)
    or 50/101/152 (bottleneck), Table 1.
    """
    block, layers, widths, stem, default_classes = _layout(family, depth)
    return ResNet(
        block=block,
        layers=layers,
        widths=widths,
        stem=stem,
        num_classes=num_classes or default_classes,
        residual=residual,
        shortcut=shortcut,
        bottleneck_stride=bottleneck_stride,
        bn_group_size=bn_group_size,
        zero_init_residual=zero_init_residual,
    )


def build_from_arch(arch: Arch, **kwargs) -> ResNet:
    return build_resnet(
        arch.family,
        arch.depth,
        residual=arch.residual,
        shortcut=arch.shortcut,
        bottleneck_stride=arch.bottleneck_stride,
        num_classes=arch.num_classes,
        **kwargs,
    )


def build_model(name: str, **overrides) -> ResNet:
    """Build a named model, e.g. `build_model("cifar_resnet110")`,
    `build_model("imagenet_resnet50", bottleneck_stride="3x3")` (torchvision v1.5)."""
    arch = get_arch(name)
    arch_fields = {k: overrides.pop(k) for k in list(overrides) if k in Arch.__dataclass_fields__}
    if arch_fields:
        arch = Arch(**{**arch.as_dict(), **arch_fields})
    return build_from_arch(arch, **overrides)


def _builder(name: str) -> Callable[..., ResNet]:
    def build(**overrides) -> ResNet:
        return build_model(name, **overrides)

    build.__name__ = name
    build.__doc__ = f"Build {name}: {NAMED_MODELS[name]}."
    return build


# Named builders as module attributes: `models.cifar_resnet110()`, `models.imagenet_resnet50()`.
globals().update({name: _builder(name) for name in NAMED_MODELS})


def build_meta(name: str, **overrides) -> ResNet:
    """Build a named model on the meta device: shapes only, instant even for ResNet-1202."""
    with torch.device("meta"):
        return build_model(name, **overrides)
