"""`python -m resnet_repro train ...`: the entry layer. Reads the Hydra config (the only module
that does, through `settings.run_settings`), reconciles it with a run being resumed, validates
everything before writing anything, then hands typed settings to the training loop
(`loop.Trainer`).

Run directory (Hydra's output dir), named after the network trained:
  config.yaml          the resolved config of record (what the run trained with)
  metrics.jsonl        one JSON object per log step (errors in %)
  summary.json         final results, recipe, cost and provenance, written at the end
  checkpoints/last.pt  full resume state, written atomically every trainer.ckpt_every iterations
  .hydra/              Hydra's record of the composition and overrides
  wandb/               the W&B run (logger=wandb)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resnet_repro import distributed
from resnet_repro.checkpoint import LAST, PREV
from resnet_repro.distributed import world_from_env
from resnet_repro.errors import CheckpointError, ReproError
from resnet_repro.loop import Trainer
from resnet_repro.pretrained import check_weights_norm
from resnet_repro.resume import reconcile_resume
from resnet_repro.rundir import RunLock, remove_stale_temp_files, write_text_atomic
from resnet_repro.policy import resolve_device
from resnet_repro.settings import RunSettings, per_process_batch_checked, run_settings

CONFIG_FILE = "config.yaml"


# --------------------------------------------------------------------------------------------
# Hydra entry
# --------------------------------------------------------------------------------------------


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    fresh = _is_fresh(run_dir)
    try:
        train_from_config(cfg, run_dir, list(hc.overrides.task))
    except ReproError as e:
        if fresh and _is_fresh(run_dir, after_failure=True):
            shutil.rmtree(run_dir, ignore_errors=True)  # a refused command leaves nothing behind
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_fresh(run_dir: Path, after_failure: bool = False) -> bool:
    """Hydra creates the run dir (and its `.hydra/` record) before the task runs. It is ours to
    remove after a refusal if it held nothing else before, and the failed command wrote no
    result in it (no checkpoint, summary or metrics rows: a diverged run keeps its curve)."""
    if not run_dir.is_dir():
        return not after_failure
    ours = {".hydra", CONFIG_FILE, ".lock"} if after_failure else {".hydra"}
    return all(p.name in ours or (after_failure and p.name == "checkpoints" and not any(p.iterdir()))
               for p in run_dir.iterdir())


# --------------------------------------------------------------------------------------------
# A run: validate, then train
# --------------------------------------------------------------------------------------------


def train_from_config(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """The run in `run_dir` from the composed config: a new run, or the continuation of the one
    whose checkpoint is there (its saved config and only resumable changes). Everything is
    validated before the run dir, its lock or config.yaml are written."""
    composed: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    run_dir = run_dir.absolute()
    saved_path = run_dir / CONFIG_FILE
    has_ckpt = (run_dir / LAST).exists() or (run_dir / PREV).exists()
    explicit_resume = bool(composed.get("resume"))
    if explicit_resume and not has_ckpt:
        raise CheckpointError(f"nothing to resume in {run_dir}: no {LAST}")
    if has_ckpt and saved_path.is_file():
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
        config = reconcile_resume(composed, saved, overrides, explicit_resume)  # type: ignore[arg-type]
    else:
        config = composed
    settings = run_settings(config)  # validate before writing anything
    world = world_from_env()
    if settings.renamed_from and world.is_main:
        print(f"note: the overrides make {settings.renamed_from} a {settings.model.name} "
              f"({settings.model.arch.depth} layers): the run is named {settings.exp_name}")
    per_process_batch_checked(settings.model, settings.trainer, world.size)  # BN groups fit each process's batch
    if settings.model.weights:
        check_weights_norm(settings.model.weights, settings.data.norm)  # torchvision weights need their mean/std
    record = {k: v for k, v in config.items() if k != "resume"}  # the resolved config of record
    if not world.is_main:
        return fit(settings, run_dir, record)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReproError(f"could not create run dir {run_dir}: {e.strerror or e}") from None
    with RunLock(run_dir):  # a second process on this run dir is refused
        remove_stale_temp_files(run_dir)
        saved = OmegaConf.create(record)
        # When this process pauses is not the run's: `train resume=<dir>` continues to the end.
        saved.trainer.max_time = saved.trainer.pause_at = None
        write_text_atomic(saved_path, OmegaConf.to_yaml(saved))
        return fit(settings, run_dir, record)


def fit(settings: RunSettings, run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Train (or continue training) the run in `run_dir`; returns the summary. Under torchrun
    every process runs this; rank 0 alone writes files and logs. `record`: the resolved config,
    saved in checkpoints and given to W&B. The paper row's recipe (`recipes.reference`) is what
    the W&B verdict judges the run against."""
    from resnet_repro.recipes import reference

    world = world_from_env()
    device = distributed.setup(world, resolve_device(settings.trainer.device))
    try:
        return Trainer(settings, run_dir, world, device, record=record, paper=reference(settings.exp_name)).run()
    finally:
        distributed.teardown(world)
