"""`python -m resnet_repro eval ckpt=<run dir or .pt>`: the test error of a checkpoint.

The model and the data come from the config saved in the checkpoint, so a checkpoint is
evaluated on exactly the split and preprocessing (per-pixel mean of its training split) it was
trained with; `data_root=` points at another copy of the same data.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from resnet_repro.checkpoint import check_compatible, load_checkpoint, resolve_checkpoint_path
from resnet_repro.data.build import prepare_data
from resnet_repro.data.pipeline import eval_batches
from resnet_repro.engine import evaluate
from resnet_repro.errors import CheckpointError, ConfigError, ReproError
from resnet_repro.models import build_from_arch
from resnet_repro.settings import resolve_device, run_settings

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def hydra_eval() -> None:
    import hydra

    hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")(_task)()


def _task(cfg: DictConfig) -> None:
    try:
        evaluate_checkpoint(
            str(cfg.ckpt), split=str(cfg.split), data_root=cfg.data_root, device=str(cfg.device),
            batch_size=int(cfg.batch_size),
        )
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def evaluate_checkpoint(
    ckpt: str | Path, *, split: str = "test", data_root: str | None = None, device: str = "auto",
    batch_size: int = 1000,
) -> dict[str, Any]:
    if split not in ("test", "val"):
        raise ConfigError(f"split must be test or val, got {split!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    path = resolve_checkpoint_path(ckpt)
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path} has no saved run config; is it a resnet_repro training checkpoint?")
    settings = run_settings(state["config"])
    check_compatible(state, model_name=settings.model.name, arch=settings.model.arch.as_dict(), path=path)
    data_settings = settings.data if data_root is None else replace(settings.data, root=str(data_root))
    dev = resolve_device(device)
    data = prepare_data(data_settings, settings.seed)
    model = build_from_arch(settings.model.arch).to(dev)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit {settings.model.name}: {str(e).splitlines()[0]}") from None
    chosen = data.test if split == "test" else data.val
    if len(chosen) == 0:
        raise ConfigError(f"the run has no {split} split (data.val_size=0)")
    r = evaluate(model, eval_batches(chosen, data.mean, batch_size, dev))
    iteration = state["meta"]["iteration"]
    print(
        f"{split} error {100 * r['err']:.2f}% ({r['n']} images, loss {r['loss']:.4f}) - "
        f"{settings.model.name} at iteration {iteration}, {path}"
    )
    return {"split": split, "err": 100 * r["err"], "loss": r["loss"], "n": r["n"], "iteration": iteration}
