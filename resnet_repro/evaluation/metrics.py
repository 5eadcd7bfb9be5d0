"""A model's top-1 error and mean cross-entropy over a stream of batches: the number every
test protocol, the training loop's evaluations and the peers' rows report."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Top-1 error and mean cross-entropy over all batches, in eval mode (BN running stats).

    Returns {"err": fraction wrong, "loss": mean loss, "n": images}; restores train mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    wrong = 0
    n = 0
    for x, y in batches:
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        wrong += int((logits.argmax(1) != y).sum())
        n += y.shape[0]
    model.train(was_training)
    if n == 0:
        return {"err": float("nan"), "loss": float("nan"), "n": 0}
    return {"err": wrong / n, "loss": float(loss_sum) / n, "n": n}
