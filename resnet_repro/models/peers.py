"""Public CIFAR-10 ResNets beside ours: akamaster/pytorch_resnet_cifar10's pretrained weights
(the most used public weights for the paper's CIFAR nets) in our model, and their test error on
a run's own data set (`eval ckpt=<their .th> data_root=<CIFAR-10>`, `report --peers DIR`).

Their file: `torch.load(f)["state_dict"]` (keys prefixed `module.`): `conv1`, `bn1`,
`layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}`, `linear`. Their option-A shortcut pads the subsampled
identity with zeros on BOTH sides of the channel axis (`planes // 4` each side), so the identity
channels sit in the middle of the wider tensor; ours appends the zeros after them. The two nets
compute the same function up to a permutation of each stage's channels: our channel k of stage s
holds their channel Q_s(k), with Q_1 the identity and, for a stage of width C whose input has C/2
channels, Q_s(k) = C/4 + Q_{s-1}(k) for k < C/2 and the remaining channels ([0, C/4) then
[3C/4, C)) in order. Every tensor that writes to a stage's channels (conv2, bn2) is permuted on
its output axis, every tensor that reads them (conv1 of the next block, the classifier) on its
input axis; the branch-internal channels (conv1's outputs, bn1) keep their order.
Their input is `ToTensor()` then a per-channel `Normalize` with ImageNet's mean and std
(`data.norm=imagenet` here).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from resnet_repro.errors import CheckpointError

AKAMASTER = "akamaster/pytorch_resnet_cifar10"


def is_akamaster(obj: Any) -> bool:
    """A file in akamaster's format: {"state_dict": {"module.conv1.weight", ..., "module.linear.*"}}."""
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    return isinstance(sd, dict) and "module.conv1.weight" in sd and "module.linear.weight" in sd


def _blocks_per_stage(sd: dict[str, torch.Tensor]) -> list[int]:
    counts = [0, 0, 0]
    for k in sd:
        m = re.match(r"layer([1-3])\.(\d+)\.conv1\.weight$", k)
        if m:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
    return counts


def stage_permutations(widths: tuple[int, ...] = (16, 32, 64)) -> list[torch.Tensor]:
    """Q_s for each stage: our channel k holds their channel Q_s[k] (see the module docstring)."""
    perms = [torch.arange(widths[0])]
    for c in widths[1:]:
        prev = perms[-1]
        lo = c // 4
        first = lo + prev
        rest = torch.tensor([j for j in range(c) if not lo <= j < lo + prev.numel()], dtype=torch.long)
        perms.append(torch.cat([first, rest]))
    return perms


def akamaster_state_dict(obj: dict[str, Any], path: str | Path = "weights") -> tuple[int, dict[str, torch.Tensor]]:
    """(depth, our state dict) from an akamaster file's content."""
    if not is_akamaster(obj):
        raise CheckpointError(f"{path} is not an akamaster/pytorch_resnet_cifar10 file (no module.conv1/linear)")
    sd = {k.removeprefix("module."): v for k, v in obj["state_dict"].items()}
    n = _blocks_per_stage(sd)
    if len(set(n)) != 1 or n[0] == 0:
        raise CheckpointError(f"{path}: blocks per stage {n}; their CIFAR ResNets have n blocks in each of 3 stages")
    widths = tuple(sd[f"layer{s + 1}.0.conv2.weight"].shape[0] for s in range(3))
    q = stage_permutations(widths)
    out: dict[str, torch.Tensor] = {k: sd[k] for k in sd if k.startswith(("conv1.", "bn1."))}  # stage 1: Q_1 = identity
    for s in range(3):
        for j in range(n[0]):
            p = f"layer{s + 1}.{j}."
            q_in = q[s - 1] if (j == 0 and s > 0) else q[s]
            out[p + "conv1.weight"] = sd[p + "conv1.weight"][:, q_in]
            for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                if p + f"bn1.{k}" in sd:
                    out[p + f"bn1.{k}"] = sd[p + f"bn1.{k}"]
            out[p + "conv2.weight"] = sd[p + "conv2.weight"][q[s]]
            for k in ("weight", "bias", "running_mean", "running_var"):
                out[p + f"bn2.{k}"] = sd[p + f"bn2.{k}"][q[s]]
            if p + "bn2.num_batches_tracked" in sd:
                out[p + "bn2.num_batches_tracked"] = sd[p + "bn2.num_batches_tracked"]
    out["fc.weight"] = sd["linear.weight"][:, q[2]]
    out["fc.bias"] = sd["linear.bias"]
    return 6 * n[0] + 2, {k: v.contiguous() for k, v in out.items()}


def akamaster_model(obj: dict[str, Any], path: str | Path = "weights"):
    """Our CIFAR ResNet (option A) holding an akamaster file's weights, in eval mode."""
    from resnet_repro.config.archs import Arch
    from resnet_repro.models.resnet import build_from_arch

    depth, sd = akamaster_state_dict(obj, path)
    classes = sd["fc.weight"].shape[0]
    model = build_from_arch(Arch("cifar", depth, True, "A", "1x1", classes))
    own = model.state_dict()
    for k in own:  # files saved before BN counted its batches
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit a CIFAR ResNet-{depth}: {str(e).splitlines()[0]}") from None
    return model.eval(), depth


def peer_data_settings(data_root: str | Path):
    """Data settings for a public model on a CIFAR-10 copy at `data_root`: an image folder or
    .tar/.tar.gz (the JPEG copy) or torchvision's directory; their per-channel normalisation."""
    from resnet_repro.data.settings import DataSettings

    root = Path(data_root)
    folder = root.is_file() or (root / "test").is_dir() or (root / "train").is_dir()
    return DataSettings(name="cifar10_folder" if folder else "cifar10", root=str(root), download=False,
                        norm="imagenet")


def evaluate_peer(path: str | Path, data, device: torch.device, batch_size: int = 1000) -> dict[str, Any]:
    """Test error (%) of an akamaster weights file on the data set of `data` (DataSettings:
    the file's own normalisation replaces the run's)."""
    from dataclasses import replace

    from resnet_repro.runs.checkpoint import load_checkpoint
    from resnet_repro.data.build import load_cifar_splits
    from resnet_repro.data.pipeline import eval_batches
    from resnet_repro.evaluation.metrics import evaluate

    obj = load_checkpoint(path, any_state_dict=True)
    model, depth = akamaster_model(obj, path)
    splits = load_cifar_splits(replace(data, norm="imagenet", val_size=0, download=False), 0)
    r = evaluate(model.to(device), eval_batches(splits.test, splits.mean, batch_size, device, splits.std, None))
    return {"peer": AKAMASTER, "model": f"cifar_resnet{depth}", "file": Path(path).name, "data": data.name,
            "data_fingerprint": splits.fingerprint, "err": 100 * r["err"], "loss": r["loss"], "n": r["n"],
            "their_reported_err": (round(100 - float(obj["best_prec1"]), 2)
                                   if isinstance(obj.get("best_prec1"), (int, float)) else None)}
