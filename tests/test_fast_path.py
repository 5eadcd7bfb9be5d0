"""The fast training path (torch.compile, channels_last, foreach SGD; bf16 autocast on GPUs)
computes the same training as the plain fp32 eager path, to within rounding.

Every tolerance here comes from arithmetic or from a measurement made in the same test run,
never from one machine's luck (machines differ in instruction set, so their kernels sum in
different orders):

- One step, fp32: both paths compute the same sums in different orders. A gradient entry of a
  conv/BN/FC parameter is a sum over the n = batch x H_out x W_out positions where the parameter
  is used (n = batch for the FC layer). Reordering a sum of n fp32 terms changes it by about
  sqrt(n)*u*sum|terms| (Higham & Mary 2019, probabilistic rounding error analysis), and the
  per-position terms of a gradient mostly cancel, sum|terms| ~ sqrt(n)*|sum|, so the relative
  change is ~ n*u (u = 2^-24). Errors made in later layers reach a parameter's gradient through
  the backward pass with the same structure, so its bound adds the n of every layer from its
  own to the loss; factor 2 because both paths round. Measured margins: 10-40x.
- Many steps: SGD at lr 0.1 is chaotic, so any difference (one ulp) grows until the two loss
  curves are as far apart as two unrelated runs. The yardstick is measured: two plain runs whose
  initial weights differ by one ulp (the chaos floor). The fast path may drift no further than a
  small multiple of that floor.
- bf16 autocast: the path every GPU run takes by default (bf16 autocast + channels_last +
  torch.compile) against fp32 eager. bf16 keeps an 8-bit significand, so rounding to it moves a
  value by up to 2^-9 relative. Autocast rounds each conv's weights and its input activations:
  two roundings of that size. The effect of one of them, through this net's own conditioning,
  is measured by rounding only the weights to bf16 in the fp32 eager path; the autocast path may
  differ from fp32 by at most 4x that (2x for the two roundings adding linearly, 2x for the
  roundings of outputs and of the backward pass). Measured: 1.0-2.1x.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from resnet_repro.data.pipeline import TrainStream, per_pixel_mean
from resnet_repro.data.synthetic import make_synthetic
from resnet_repro.training.step import autocast, make_sgd, maybe_compile, train_step

from resnet_repro.models.resnet import build_resnet

U32 = 2.0 ** -24  # fp32 unit roundoff (24-bit significand)
LR, BATCH, ITERS = 0.1, 32, 60
CPU = torch.device("cpu")


def _stream() -> TrainStream:
    ds = make_synthetic(1024, 0, seed=0)
    return TrainStream(ds.train, per_pixel_mean(ds.train.x), BATCH, seed=0)


def _initial_model() -> nn.Module:
    torch.manual_seed(0)
    return build_resnet("cifar", 8, bn_group_size=16)  # BN groups, as the CIFAR exps train


def reassociation_bounds(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, float], float]:
    """Per parameter: the relative error (to the gradient's norm) that reordering fp32 sums
    can cause, 2 * u * (sum of n over its layer and every later layer), n as in the module
    docstring. Also the loss's: 2 * u * (sum of n over every reduction of the forward)."""
    order: list[tuple[str, int]] = []  # (module name, n) in forward execution order
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            def record(mod, inp, out, name=name):
                spatial = out.shape[2] * out.shape[3] if out.dim() == 4 else 1
                order.append((name, out.shape[0] * spatial))
            hooks.append(m.register_forward_hook(record))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    tail = {}  # module -> sum of n from it to the loss
    total = 0
    for name, n in reversed(order):
        total += n
        tail[name] = total
    bounds = {pn: 2 * U32 * tail[pn.rsplit(".", 1)[0]] for pn, _ in model.named_parameters()}
    return bounds, 2 * U32 * total


@dataclass
class Run:
    curve: list[float]  # mean training loss per iteration
    loss0: float  # the first step's loss
    grads0: dict[str, torch.Tensor]  # the first step's gradients
    weights1: dict[str, torch.Tensor]  # the weights after the first step


def train(model: nn.Module, *, fast: bool, iters: int = ITERS, amp: bool = False) -> Run:
    """`iters` steps from `model`'s weights: plain (eager, contiguous, for-loop SGD) or fast
    (what `train` does on a GPU: channels_last, torch.compile, fused or foreach SGD)."""
    model = copy.deepcopy(model)
    stream = _stream()
    if fast:
        model = model.to(memory_format=torch.channels_last)
        net = maybe_compile(model, "default")
        opt = make_sgd(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4, nesterov=False, device=CPU)
    else:
        net = model
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4, foreach=False)
    curve, first = [], None
    for it in range(iters):
        x, y = stream.batch(it)
        loss, _ = train_step(net, opt, x, y, LR, amp=amp, channels_last=fast)
        curve.append(float(loss) / BATCH)
        if it == 0:
            first = (
                {n: p.grad.detach().double().clone() for n, p in model.named_parameters()},
                {n: p.detach().double().clone() for n, p in model.named_parameters()},
            )
    assert not getattr(net, "failed", False), "torch.compile fell back to eager: the test would compare eager to eager"
    return Run(curve, curve[0] * BATCH, *first)


def _nudged(model: nn.Module, direction: float) -> nn.Module:
    """`model` with every weight moved by one ulp towards +inf or -inf."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.nextafter(p, torch.full_like(p, direction)))
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _initial_model()


@pytest.fixture(scope="module")
def plain(model: nn.Module) -> Run:
    return train(model, fast=False)


@pytest.fixture(scope="module")
def fast(model: nn.Module) -> Run:
    return train(model, fast=True)


def test_one_fast_step_equals_the_plain_step_to_within_fp32_reordering(model, plain: Run, fast: Run) -> None:
    x, _ = _stream().batch(0)
    bounds, loss_bound = reassociation_bounds(copy.deepcopy(model), x)
    assert abs(fast.loss0 - plain.loss0) <= loss_bound * abs(plain.loss0)
    for name, g in plain.grads0.items():
        err = _rel(fast.grads0[name], g)
        assert err <= bounds[name], f"gradient of {name}: relative difference {err:.2e} > bound {bounds[name]:.2e}"
    for name, w in plain.weights1.items():
        # w1 = w0 - lr * (g + wd * w0) on the first step: the gradient's error times lr, plus
        # one rounding of the result on each path.
        allowed = LR * bounds[name] * float(plain.grads0[name].norm()) + 2 * U32 * float(w.norm())
        diff = float((fast.weights1[name] - w).norm())
        assert diff <= allowed, f"updated {name}: difference {diff:.2e} > {allowed:.2e}"


def test_fast_loss_curve_drifts_no_more_than_a_one_ulp_perturbation(model, plain: Run, fast: Run) -> None:
    def drift(a: Run, b: Run) -> float:
        return sum(abs(p - q) for p, q in zip(a.curve, b.curve)) / len(a.curve)

    floor = max(drift(plain, train(_nudged(model, d), fast=False)) for d in (float("inf"), float("-inf")))
    assert floor > 0, "a one-ulp change of the weights changed nothing: the chaos floor is not measured"
    assert drift(plain, fast) <= 4 * floor, (drift(plain, fast), floor)
    # And both paths learn: the curves are not two flat lines that agree trivially.
    assert sum(fast.curve[-10:]) < sum(fast.curve[:10]) and sum(plain.curve[-10:]) < sum(plain.curve[:10])


@pytest.mark.slow
def test_the_gpu_default_path_bf16_channels_last_compiled_matches_fp32_eager(model, plain: Run) -> None:
    gpu_default = train(model, fast=True, amp=True, iters=1)
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.bfloat16().float())
    floor = train(rounded, fast=False, iters=1)  # one bf16 rounding (the weights'), fp32 eager
    assert abs(gpu_default.loss0 - plain.loss0) <= 4 * max(abs(floor.loss0 - plain.loss0), 2.0 ** -9 * plain.loss0)
    for name, g in plain.grads0.items():
        allowed = 4 * _rel(floor.grads0[name], g)
        err = _rel(gpu_default.grads0[name], g)
        assert 0 < err <= allowed, f"gradient of {name}: bf16 path differs by {err:.2e}, allowed {allowed:.2e}"


def test_evaluation_under_bf16_autocast_agrees_with_fp32(model) -> None:
    # Logits under autocast differ from fp32 by bf16 rounding only: well inside 8 x 2^-8 relative
    # (8 rounding stages of ResNet-8, each at most 2^-8 for input and weight together).
    m = copy.deepcopy(model).eval()
    x, _ = _stream().batch(0)
    with torch.no_grad():
        ref = m(x)
        with autocast(CPU, True):
            low = m(x.contiguous(memory_format=torch.channels_last)).float()
    assert 0 < _rel(low, ref) <= 8 * 2.0 ** -8
