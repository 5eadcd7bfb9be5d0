"""Precise BN statistics: running mean/var recomputed as exact averages over training batches
(the authors' released-model notes), and `eval` recording which statistics a number used."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TINY, compose_config
from resnet_repro.evaluate import evaluate_checkpoint
from resnet_repro.models.grouped_bn import GroupedBatchNorm2d
from resnet_repro.models.resnet import build_resnet
from resnet_repro.training.precise_bn import recompute_bn_stats
from resnet_repro.train import train_from_config

U32 = 2.0 ** -24  # fp32 unit roundoff
BATCH, GROUP, N_BATCHES, SIZE = 8, 4, 5, 8


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, 3, SIZE, SIZE, generator=g) * 2 + 1 for _ in range(N_BATCHES)]


def _expected_stats(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer, the average over batches (and BN groups) of its input's per-channel mean
    and unbiased variance, in float64, from hooks on an independent train-mode copy (its
    outputs use batch statistics, so the inputs do not depend on the running statistics)."""
    ref = copy.deepcopy(model).train()
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def hook(name: str, group: int | None):
        def record(mod, inp, out):
            x = inp[0].detach().double()
            for chunk in x.split(group or x.shape[0]):
                seen.setdefault(name, []).append((chunk.mean((0, 2, 3)), chunk.var((0, 2, 3), unbiased=True)))
        return record

    for name, m in ref.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(hook(name, getattr(m, "group_size", None)))
    with torch.no_grad():
        for x in batches:
            ref(x)
    return {k: (torch.stack([m for m, _ in v]).mean(0), torch.stack([v_ for _, v_ in v]).mean(0))
            for k, v in seen.items()}


@pytest.mark.parametrize("group", [None, GROUP])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_recompute_gives_the_exact_average_over_the_batches(group: int | None, mode: str) -> None:
    torch.manual_seed(0)
    model = build_resnet("cifar", 8, bn_group_size=group)
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert all(isinstance(m, GroupedBatchNorm2d) for m in bns.values()) == (group is not None)
    with torch.no_grad():  # deliberately wrong statistics
        for m in bns.values():
            m.running_mean.fill_(5.0)
            m.running_var.fill_(100.0)
            m.num_batches_tracked.fill_(7)
    model.train(mode == "train")
    params = {k: v.clone() for k, v in model.named_parameters()}
    batches = _batches()
    expected = _expected_stats(model, batches)

    used = recompute_bn_stats(model, iter(batches + batches), N_BATCHES)  # only the first N are used

    assert used == N_BATCHES
    # fp32: a per-channel reduction over M = BATCH*H*W values errs by at most M*u relative to
    # its magnitude (naive summation bound), the variance also relative to mean^2 (cancellation),
    # and each of the N cumulative updates adds a few u.
    m_max = BATCH * SIZE * SIZE
    tol = (m_max + 3 * N_BATCHES) * U32
    for name, m in bns.items():
        mean, var = expected[name]
        scale = (var + mean ** 2).max().item()
        torch.testing.assert_close(m.running_mean.double(), mean, rtol=0, atol=tol * scale ** 0.5 + tol)
        torch.testing.assert_close(m.running_var.double(), var, rtol=0, atol=tol * scale)
        assert m.momentum == 0.1 and int(m.num_batches_tracked) == 7  # restored
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())  # weights unchanged
    assert all(mod.training == (mode == "train") for mod in model.modules())  # mode restored


def test_recompute_restores_mixed_modes_and_keeps_stats_without_batches() -> None:
    model = build_resnet("cifar", 8).train()
    model.bn1.eval()  # e.g. a frozen layer
    before = model.bn1.running_var.clone()
    assert recompute_bn_stats(model, iter([]), 3) == 0
    assert torch.equal(model.bn1.running_var, before)
    assert recompute_bn_stats(model, iter(_batches()), 2) == 2
    assert model.training and not model.bn1.training and not torch.equal(model.bn1.running_var, before)


def test_eval_records_which_bn_statistics_it_used(tmp_path: Path) -> None:
    train_from_config(compose_config(TINY), tmp_path, list(TINY))
    ckpt = tmp_path / "checkpoints" / "last.pt"
    running = evaluate_checkpoint(tmp_path, device="cpu", batch_size=128)  # CIFAR: off by default
    assert running["bn_stats"] == "running"
    assert json.loads((tmp_path / "eval_single.json").read_text())["bn_stats"] == "running"
    precise = evaluate_checkpoint(tmp_path, device="cpu", batch_size=128, precise_bn_batches=3)
    assert precise["bn_stats"] == "precise:3"
    # recorded beside the default (running) record, which stays
    assert json.loads((tmp_path / "eval_single_bn-precise3.json").read_text())["bn_stats"] == "precise:3"
    assert json.loads((tmp_path / "eval_single.json").read_text())["bn_stats"] == "running"
    # The checkpoint itself is not changed by evaluating with precise statistics.
    assert evaluate_checkpoint(ckpt, device="cpu", batch_size=128)["err"] == running["err"]
