"""The model family pins the paper's architectures (Table 1, Table 6, §3.3, §4.2)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from resnet_repro.models import resnet as M
from resnet_repro.models.blocks import ZeroPadShortcut
from resnet_repro.models.grouped_bn import GroupedBatchNorm2d
from resnet_repro.models.macs import count_macs
from resnet_repro.errors import ConfigError


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Table 6 prints the parameter counts rounded: 0.27M ... 1.7M, 19.4M.
@pytest.mark.parametrize(
    "depth, printed", [(20, "0.27"), (32, "0.46"), (44, "0.66"), (56, "0.85"), (110, "1.7"), (1202, "19.4")]
)
def test_cifar_param_counts_round_to_table6(depth: int, printed: str) -> None:
    params = n_params(M.build_meta(f"cifar_resnet{depth}"))
    decimals = len(printed.split(".")[1])
    assert f"{params / 1e6:.{decimals}f}" == printed


@pytest.mark.parametrize(
    "depth, count",
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)],
)
def test_imagenet_option_b_v15_has_torchvisions_exact_param_count(depth: int, count: int) -> None:
    model = M.build_meta(f"imagenet_resnet{depth}", shortcut="B", bottleneck_stride="3x3")
    assert n_params(model) == count


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_loads_and_gives_identical_outputs(depth: int) -> None:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    ours = M.build_model(f"imagenet_resnet{depth}", shortcut="B", bottleneck_stride="3x3").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "depth, gmacs", [(18, 1.8), (34, 3.6), (50, 3.8), (101, 7.6), (152, 11.3)]
)
def test_multiply_adds_within_5_percent_of_table1(depth: int, gmacs: float) -> None:
    model = M.build_meta(f"imagenet_resnet{depth}")  # the paper's layout: stride on the 1x1
    macs = count_macs(model, 224)
    assert abs(macs / (gmacs * 1e9) - 1) < 0.05


def test_v15_bottleneck_costs_more_than_the_papers_layout() -> None:
    paper = count_macs(M.build_meta("imagenet_resnet50"), 224)
    v15 = count_macs(M.build_meta("imagenet_resnet50", bottleneck_stride="3x3"), 224)
    assert v15 > paper * 1.05  # the stride on the 3x3 leaves the 1x1 at full resolution


@pytest.mark.parametrize("family, depth", [("cifar", 20), ("cifar", 56), ("imagenet", 18), ("imagenet", 34)])
def test_option_a_adds_no_parameters(family: str, depth: int) -> None:
    plain = M.build_resnet(family, depth, residual=False)
    res = M.build_resnet(family, depth, residual=True, shortcut="A")
    assert n_params(plain) == n_params(res)


def _projection_params(model: M.ResNet, everywhere: bool) -> int:
    """1x1 conv (in*out) + BN (2*out) on each block whose shape changes (B) or on all (C)."""
    total = 0
    for block in model.blocks():
        c_in = block.conv1.in_channels
        c_out = (block.conv3 if isinstance(block, M.Bottleneck) else block.conv2).out_channels
        stride = max(block.conv1.stride[0], block.conv2.stride[0])
        if everywhere or c_in != c_out or stride != 1:
            total += c_in * c_out + 2 * c_out
    return total


@pytest.mark.parametrize("family, depth", [("cifar", 20), ("cifar", 44), ("imagenet", 34), ("imagenet", 50)])
@pytest.mark.parametrize("shortcut", ["B", "C"])
def test_options_b_and_c_add_exactly_the_projections(family: str, depth: int, shortcut: str) -> None:
    with torch.device("meta"):
        plain = M.build_resnet(family, depth, residual=False)
        proj = M.build_resnet(family, depth, shortcut=shortcut)
    assert n_params(proj) - n_params(plain) == _projection_params(proj, everywhere=shortcut == "C")


def test_option_c_projects_every_shortcut_and_b_only_where_shape_changes() -> None:
    b = M.build_meta("cifar_resnet20", shortcut="B")
    c = M.build_meta("cifar_resnet20", shortcut="C")
    assert sum(blk.downsample is not None for blk in b.blocks()) == 2  # conv3_1, conv4_1
    assert all(isinstance(blk.downsample, nn.Sequential) for blk in c.blocks())


@pytest.mark.parametrize("name", ["cifar_resnet20", "imagenet_resnet50"])
def test_zeroed_residual_branch_returns_relu_of_input(name: str) -> None:
    model = M.build_model(name)
    block = model.layer1[1]  # identity shortcut
    last_bn = block.bn3 if isinstance(block, M.Bottleneck) else block.bn2
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    c = block.conv1.in_channels
    x = torch.randn(4, c, 8, 8)
    for mode in (True, False):
        block.train(mode)
        torch.testing.assert_close(block(x.clone()), torch.relu(x))


def test_option_a_shortcut_subsamples_and_zero_pads_channels() -> None:
    sc = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    assert n_params(sc) == 0


def test_plain_nets_have_no_shortcut_modules() -> None:
    model = M.build_model("cifar_plain20")
    assert all(blk.downsample is None and not blk.residual for blk in model.blocks())


# The sample std of n Gaussian draws has a relative standard deviation of about 1/sqrt(2n),
# the sample mean a standard deviation of std/sqrt(n); 5 of them bound a seeded draw with a
# false-failure chance below 1e-6 per check.
SIGMAS = 5


@pytest.mark.parametrize("where, c_in, c_out", [("conv1", 3, 16), ("layer2.0.conv1", 16, 32), ("layer3.1.conv1", 64, 64)])
def test_he_initialisation_uses_fan_out(where: str, c_in: int, c_out: int) -> None:
    # [13] std sqrt(2/n); models.py takes n = k*k*out_channels (fan_out). The stem (3 -> 16,
    # fan_in 27 vs fan_out 144: a 2.3x different std) and a 16 -> 32 conv (1.41x) catch a
    # fan_in/fan_out swap far outside the statistical tolerance.
    torch.manual_seed(0)
    w = M.build_model("cifar_resnet56").get_submodule(where).weight.detach().double()
    assert w.shape == (c_out, c_in, 3, 3)
    n, expected = w.numel(), (2 / (3 * 3 * c_out)) ** 0.5
    assert abs(w.std().item() / expected - 1) < SIGMAS / (2 * n) ** 0.5
    assert abs(w.mean().item()) < SIGMAS * expected / n ** 0.5


def test_fc_keeps_torchs_default_linear_init() -> None:
    # models.py leaves the FC at nn.Linear's default: weight and bias uniform in +-1/sqrt(fan_in)
    # (the paper says only "initialize the weights as in [13]"; torchvision does the same).
    torch.manual_seed(0)
    fc = M.build_model("cifar_resnet20").fc  # 64 -> 10
    w, b = fc.weight.detach().double(), fc.bias.detach().double()
    bound = 1 / 64 ** 0.5
    assert w.abs().max() <= bound and b.abs().max() <= bound
    assert w.abs().max() > 0.95 * bound  # 640 uniform draws: none above 0.95b has chance 0.95^640
    # Uniform: std b/sqrt(3); its sample std has relative sd sqrt((1/5 - 1/9) / (4/9)) / sqrt(n).
    n = w.numel()
    assert abs(w.std().item() / (bound / 3 ** 0.5) - 1) < SIGMAS * (0.2 ** 0.5) / n ** 0.5
    assert b.abs().min() > 0  # not zeroed (fb.resnet.torch zeroes it; we do not)


@pytest.mark.parametrize(
    "name, size, classes", [("cifar_resnet20", 32, 10), ("cifar_plain32", 32, 10), ("imagenet_resnet18", 224, 1000)]
)
def test_forward_shapes(name: str, size: int, classes: int) -> None:
    model = M.build_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, classes)


def test_stem_and_stage_layout() -> None:
    cifar = M.build_meta("cifar_resnet110")
    assert (cifar.conv1.kernel_size, cifar.conv1.out_channels) == ((3, 3), 16)
    assert [len(getattr(cifar, s)) for s in cifar.stages] == [18, 18, 18]
    imnet = M.build_meta("imagenet_resnet152")
    assert (imnet.conv1.kernel_size, imnet.conv1.stride, imnet.conv1.out_channels) == ((7, 7), (2, 2), 64)
    assert isinstance(imnet.maxpool, nn.MaxPool2d)
    assert [len(getattr(imnet, s)) for s in imnet.stages] == [3, 8, 36, 3]
    assert imnet.fc.in_features == 2048


def test_bottleneck_stride_position() -> None:
    paper = M.build_meta("imagenet_resnet50").layer2[0]
    v15 = M.build_meta("imagenet_resnet50", bottleneck_stride="3x3").layer2[0]
    assert (paper.conv1.stride, paper.conv2.stride) == ((2, 2), (1, 1))
    assert (v15.conv1.stride, v15.conv2.stride) == ((1, 1), (2, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(family="cifar", depth=21), "CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...), got 21"),
        (dict(family="imagenet", depth=20), "ImageNet ResNet depth must be one of [18, 34, 50, 101, 152]"),
        (dict(family="mnist", depth=20), "unknown model family 'mnist'"),
        (dict(family="cifar", depth=20, shortcut="D"), "unknown shortcut option 'D'"),
        (dict(family="cifar", depth=20, residual=False, shortcut="B"), "plain nets have no shortcuts"),
        (dict(family="imagenet", depth=50, bottleneck_stride="2x2"), "bottleneck_stride must be"),
        (dict(family="cifar", depth=20, bn_group_size=1), "bn_group_size must be an integer >= 2"),
    ],
)
def test_invalid_combinations_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        M.build_resnet(**kwargs)
    assert message in str(err.value)


def test_unknown_named_model() -> None:
    with pytest.raises(ConfigError, match="unknown model 'cifar_resnet21'"):
        M.build_model("cifar_resnet21")


def test_named_builders_are_module_functions() -> None:
    assert n_params(M.cifar_resnet20()) == 269_722
    assert not M.imagenet_plain34().residual
    assert M.cifar_resnet110(num_classes=100).fc.out_features == 100


# -- batch norm statistics per group of images (§4.2: 128 images over two GPUs) --------------


def test_grouped_bn_with_group_equal_to_batch_is_ordinary_bn() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 8, 5, 5) * 3 + 1
    ref, grp = nn.BatchNorm2d(8), GroupedBatchNorm2d(8, group_size=64)
    torch.testing.assert_close(grp(x), ref(x))
    torch.testing.assert_close(grp.running_mean, ref.running_mean)
    torch.testing.assert_close(grp.running_var, ref.running_var)


def test_grouped_bn_normalises_each_group_like_a_separate_device() -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 8, 5, 5)
    x[64:] = x[64:] * 4 + 2  # the two halves have different statistics
    grp = GroupedBatchNorm2d(8, group_size=64)
    halves = [nn.BatchNorm2d(8), nn.BatchNorm2d(8)]
    expected = torch.cat([halves[0](x[:64]), halves[1](x[64:])])
    torch.testing.assert_close(grp(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grp.running_mean, (halves[0].running_mean + halves[1].running_mean) / 2)
    torch.testing.assert_close(grp.running_var, (halves[0].running_var + halves[1].running_var) / 2)
    # Gradients flow through the grouped statistics.
    x.requires_grad_(True)
    grp(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_grouped_bn_in_eval_mode_uses_running_statistics() -> None:
    torch.manual_seed(0)
    grp = GroupedBatchNorm2d(4, group_size=2)
    with torch.no_grad():  # statistics and affine far from the defaults (0, 1, 1, 0)
        grp.running_mean.copy_(torch.tensor([3.0, -2.0, 0.5, 10.0]))
        grp.running_var.copy_(torch.tensor([4.0, 0.25, 9.0, 100.0]))
        grp.weight.copy_(torch.tensor([2.0, -1.0, 0.5, 3.0]))
        grp.bias.copy_(torch.tensor([1.0, 0.0, -4.0, 2.0]))
    grp.eval()
    x = torch.randn(5, 4, 3, 3) * 3 + 1  # 5 images: not a multiple of the group, fine in eval
    c = lambda t: t.view(1, 4, 1, 1)  # noqa: E731
    expected = (x - c(grp.running_mean)) / torch.sqrt(c(grp.running_var) + grp.eps) * c(grp.weight) + c(grp.bias)
    # a handful of fp32 operations per element: a few ulps of values of size ~10
    torch.testing.assert_close(grp(x), expected, rtol=1e-5, atol=1e-5)
    before = grp.running_mean.clone()
    grp(x)
    assert torch.equal(grp.running_mean, before)  # eval does not update them


def test_grouped_bn_refuses_a_training_batch_smaller_than_its_group() -> None:
    grp = GroupedBatchNorm2d(4, group_size=32)
    with pytest.raises(ValueError, match="training batch of 16 is not a multiple of bn_group_size=32"):
        grp(torch.randn(16, 4, 2, 2))


def test_grouped_bn_keeps_batchnorm_state_dict_keys() -> None:
    a = M.build_model("cifar_resnet20", bn_group_size=64)
    b = M.build_model("cifar_resnet20")
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())


def test_conf_model_files_describe_the_registrys_architectures() -> None:
    from omegaconf import OmegaConf

    from resnet_repro.config.paths import CONF_DIR

    files = sorted((CONF_DIR / "model").glob("*.yaml"))
    assert {f.stem for f in files} == set(M.NAMED_MODELS)
    for f in files:
        cfg = OmegaConf.to_container(OmegaConf.load(f))
        arch = M.Arch(**{k: cfg[k] for k in M.Arch.__dataclass_fields__})
        assert cfg["name"] == f.stem and arch == M.NAMED_MODELS[f.stem], f.name


@pytest.mark.parametrize(
    "name, overrides, size",
    [("cifar_resnet20", {}, 32), ("cifar_resnet20", {"shortcut": "C"}, 32),
     ("imagenet_resnet18", {}, 64), ("imagenet_resnet50", {"bottleneck_stride": "3x3"}, 64)],
)
def test_multiply_adds_from_shapes_match_torchs_flop_counter(name: str, overrides: dict, size: int) -> None:
    # count_macs reads layer shapes only; torch's counter watches a real forward pass.
    from torch.utils.flop_counter import FlopCounterMode

    model = M.build_model(name, **overrides).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    assert 2 * count_macs(model, size) == counter.get_total_flops()
