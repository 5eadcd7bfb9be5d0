"""The building blocks of the paper's networks: shortcuts A/B/C (§3.3), the basic block (two 3x3
convs, Fig. 2) and the bottleneck block (1x1, 3x3, 1x1; §4.1, Fig. 5), plain or residual."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from resnet_repro.config.archs import BottleneckStride, Shortcut
from resnet_repro.errors import ConfigError
from resnet_repro.models.grouped_bn import NormFactory

# --------------------------------------------------------------------------------------
# Shortcuts (§3.3)
# --------------------------------------------------------------------------------------


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by taking every `stride`-th pixel, with the extra
    channels zero-padded. Parameter-free (§3.3, §4.2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError("option A shortcut cannot reduce channels")
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x

    def extra_repr(self) -> str:
        return f"pad_channels={self.extra}, stride={self.stride}"


def _make_shortcut(
    kind: Shortcut, in_channels: int, out_channels: int, stride: int, norm: NormFactory
) -> nn.Module | None:
    """The shortcut of one block, or None for a plain identity."""
    changes = stride != 1 or in_channels != out_channels
    if kind == "C" or (kind == "B" and changes):
        # Projection: 1x1 conv (stride 2 where the map halves) + BN, torchvision's `downsample`.
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), norm(out_channels)
        )
    if kind == "A" and changes:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return None


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class _Block(nn.Module):
    """y = ReLU(F(x) + shortcut(x)) (§3.2, Fig. 2); plain blocks drop the addition."""

    residual: bool
    downsample: nn.Module | None
    relu: nn.ReLU

    def branch(self, x: Tensor) -> Tensor:
        """The residual function F(x): output of the last BN, before addition and ReLU."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class BasicBlock(_Block):
    """Two 3x3 convs, each followed by BN (§3.4); ReLU after the addition (Fig. 2)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        norm: NormFactory,
        residual: bool = True,
        downsample: nn.Module | None = None,
        bottleneck_stride: BottleneckStride = "1x1",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_Block):
    """1x1 (reduce), 3x3, 1x1 (restore, x4) convs, each followed by BN (§4.1, Fig. 5).

    The paper puts the stride-2 of conv3_1/4_1/5_1 on the first 1x1 conv (as its Caffe
    models do). torchvision moves it to the 3x3 ("ResNet v1.5", more accurate, ~0.3 GFLOPs
    more for ResNet-50); `bottleneck_stride="3x3"` selects that variant.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        norm: NormFactory,
        residual: bool = True,
        downsample: nn.Module | None = None,
        bottleneck_stride: BottleneckStride = "1x1",
    ) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if bottleneck_stride == "1x1" else (1, stride)
        self.conv1 = conv1x1(in_channels, planes, s1)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = norm(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
