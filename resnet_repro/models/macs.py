"""What a network costs, from its layer shapes alone: parameters and forward multiply-adds (what
Table 1's FLOPs count). `python -m resnet_repro models` prints them beside the paper's."""

from __future__ import annotations

from torch import nn

def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv_macs(conv: nn.Conv2d, size: int) -> tuple[int, int]:
    """(multiply-adds, output size) of a conv on a size x size map."""
    out = _out_size(size, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0])  # type: ignore[arg-type]
    k = conv.kernel_size[0] * conv.kernel_size[1] * conv.in_channels // conv.groups
    return out * out * conv.out_channels * k, out


def count_macs(model: nn.Module, size: int) -> int:
    """Forward multiply-adds per image of the convolutions and the FC layer (what Table 1's
    FLOPs count), from the layer shapes alone: no forward pass. (A pass on the meta device
    imports torch's compiler stack through relu/add, ~1.5 s; tests check this count against
    torch.utils.flop_counter.) Normalisation, pooling and additions hold no multiply-adds."""
    macs, hw = _conv_macs(model.conv1, size)
    if isinstance(model.maxpool, nn.MaxPool2d):
        hw = _out_size(hw, model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding)  # type: ignore[arg-type]
    for block in model.blocks():
        block_in = hw
        for conv in (block.conv1, block.conv2, getattr(block, "conv3", None)):
            if conv is not None:
                m, hw = _conv_macs(conv, hw)
                macs += m
        if isinstance(block.downsample, nn.Sequential):  # projection shortcut (B/C): 1x1 conv on the block's input
            macs += _conv_macs(block.downsample[0], block_in)[0]
    return macs + model.fc.in_features * model.fc.out_features
