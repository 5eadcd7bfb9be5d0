"""Figure 7: the standard deviation of every 3x3 layer's response, from a run's checkpoint.

The paper (§4.2, Figure 7) measures "the outputs of each 3x3 layer, after BN and before other
nonlinearity (ReLU/addition)" on the CIFAR-10 test set. Which BN modules that means here:

- the stem (`bn1` after the CIFAR stem's 3x3 conv) is layer 1: the paper's layer index runs
  over all 3x3 layers, and the stem is one of them (6n+1 layers for a 6n+2-layer net);
- a BasicBlock's `bn1` (its first 3x3) and `bn2` (its second 3x3, the output of `branch`,
  before the addition and the ReLU);
- a Bottleneck's `bn2` only (the one 3x3 of the three convs).

The std is over every element (N, C, H, W) of a layer's output over the whole split, in eval
mode (BN's running statistics), accumulated batch by batch so memory stays small.

    python -m resnet_repro analyze runs/cifar_resnet56/seed0-... [--max-images N]

writes `<run>/layer_responses.json`: {"model", "layers": [names], "std": [...], ...}.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_repro.errors import ConfigError, ReproError

if TYPE_CHECKING:
    from torch import Tensor, nn

RESPONSES_FILE = "layer_responses.json"
# torch is imported where it is used: `report` reads saved responses and `analyze --help`
# prints options without it.


# --------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------


def response_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, BN module) of every BN that follows a 3x3 conv, in network order."""
    from torch import nn

    from resnet_repro.models.blocks import BasicBlock, Bottleneck

    names = {m: n for n, m in model.named_modules()}
    out: list[tuple[str, nn.Module]] = []
    stem = getattr(model, "conv1", None)
    if isinstance(stem, nn.Conv2d) and stem.kernel_size == (3, 3):  # CIFAR stem (§4.2); ImageNet's is 7x7
        out.append((names[model.bn1], model.bn1))
    for block in model.blocks():  # type: ignore[operator]
        if isinstance(block, BasicBlock):
            out += [(names[block.bn1], block.bn1), (names[block.bn2], block.bn2)]
        elif isinstance(block, Bottleneck):
            out.append((names[block.bn2], block.bn2))
    return out


class _RunningStd:
    """Mean and variance of a stream of tensors, merged batch by batch (Chan et al.'s
    parallel update) in float64: no activations are kept."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, x: Tensor) -> None:
        import torch

        x = x.detach().double()
        n_b = x.numel()
        if n_b == 0:
            return
        var_b, mean_b = torch.var_mean(x, unbiased=False)
        mean_b, m2_b = float(mean_b), float(var_b) * n_b
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else float("nan")


def layer_responses(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[list[str], list[float]]:
    """Names and response stds of every 3x3 layer (see the module docstring), over all batches."""
    import torch

    layers = response_layers(model)
    stats = [_RunningStd() for _ in layers]
    # The hook reads the BN output at once: the in-place ReLU that follows overwrites it.
    hooks = [m.register_forward_hook(lambda _m, _in, out, s=s: s.update(out)) for (_, m), s in zip(layers, stats)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [name for name, _ in layers], [s.std() for s in stats]


def layer_response_stds(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> list[float]:
    """The std of each 3x3 layer's BN output (before addition and ReLU), in network order."""
    return layer_responses(model, batches)[1]


# --------------------------------------------------------------------------------------------
# From a run directory
# --------------------------------------------------------------------------------------------


def analyze_run(
    run_dir: str | Path,
    device: str = "cpu",
    max_images: int | None = None,
    data_root: str | None = None,
    batch_size: int = 500,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Layer responses of `<run>/checkpoints/last.pt` on its test split; writes and returns
    `<run>/layer_responses.json` (or the file `out`: `report` writes under its --out only). The model and data come from the checkpoint's saved config
    (as in `evaluate.py`); `data_root` points at another copy of the same data."""
    from resnet_repro.runs.checkpoint import load_checkpoint
    from resnet_repro.runs.rundir import LAST
    from resnet_repro.data.build import load_cifar_splits
    from resnet_repro.data.pipeline import eval_batches
    from resnet_repro.data.sources import ArraySplit
    from resnet_repro.runs.sinks import write_json_atomic
    from resnet_repro.training.policy import resolve_device
    from resnet_repro.trained import model_from_checkpoint

    run_dir = Path(run_dir)
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images must be a positive integer, got {max_images}")
    path = run_dir / LAST

    def cifar_only(settings, arch) -> None:
        if arch.family != "cifar" or settings.data.name == "imagenet":
            raise ConfigError(
                f"{run_dir}: layer responses (Figure 7) are measured on CIFAR-10 nets only; "
                f"this run is {settings.model.name} on {settings.data.name}"
            )

    trained = model_from_checkpoint(load_checkpoint(path), path, refuse=cifar_only)
    settings, meta, arch = trained.settings, trained.meta, trained.arch
    dev = resolve_device(device)
    model = trained.model.to(dev)

    data = settings.data if data_root is None else replace(settings.data, root=str(data_root))
    splits = load_cifar_splits(data, settings.seed)
    test = splits.test
    if max_images is not None:
        test = ArraySplit(test.x[:max_images], test.y[:max_images])
    names, stds = layer_responses(model, eval_batches(test, splits.mean, batch_size, dev, splits.std, data.resize))
    result = {
        "model": settings.model.name,
        "exp_name": settings.exp_name,
        "seed": settings.seed,
        "depth": arch.depth,
        "residual": arch.residual,
        "data": data.name,
        "split": "test",
        "n_images": len(test),
        "iteration": meta["iteration"],
        "layers": names,
        "std": stds,
    }
    write_json_atomic(Path(out) if out is not None else run_dir / RESPONSES_FILE, result)
    return result


def read_responses(run_dir: str | Path) -> dict[str, Any] | None:
    """`<run>/layer_responses.json`, or None when the run has none (or an unreadable one)."""
    path = Path(run_dir) / RESPONSES_FILE
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ok = isinstance(d, dict) and isinstance(d.get("std"), list) and isinstance(d.get("layers"), list)
    return d if ok else None


# --------------------------------------------------------------------------------------------
# `python -m resnet_repro analyze`
# --------------------------------------------------------------------------------------------


def format_responses(results: list[dict[str, Any]]) -> str:
    width = max([3, *(len(r["_run"]) for r in results)])  # whole paths: a cut one names another run
    lines = [f"{'run':<{width}} {'model':<18} {'layers':>6} {'mean std':>9} {'min':>7} {'max':>7}"]
    for r in results:
        s = r["std"]
        lines.append(
            f"{r['_run']:<{width}} {r['model']:<18} {len(s):>6} {sum(s) / len(s):>9.3f} {min(s):>7.3f} {max(s):>7.3f}"
        )
    return "\n".join(lines)


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_repro analyze",
        description="Figure 7: the std of each 3x3 layer's response (BN output, before addition "
        "and ReLU) of a run's checkpoints/last.pt on its CIFAR-10 test split. Writes "
        f"<run>/{RESPONSES_FILE}; `report --layer-responses` plots them.",
    )
    parser.add_argument("runs", nargs="+", help="run directories (each with checkpoints/last.pt)")
    parser.add_argument("--max-images", type=int, default=None, help="use the first N test images (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--data-root", default=None,
                        help="another copy of the run's data (default: the saved data.root)")
    args = parser.parse_args(argv)
    results = []
    for run in args.runs:
        if not Path(run).is_dir():
            raise ReproError(f"run directory not found: {run}")
        r = analyze_run(run, device=args.device, max_images=args.max_images, data_root=args.data_root)
        results.append({**r, "_run": str(run)})
        print(f"wrote {Path(run) / RESPONSES_FILE}")
    print(format_responses(results))
    return 0
