"""`python -m resnet_repro train ...`: the entry layer. Reads the Hydra config (the only module
that does, through `schema.run_settings`), reconciles it with a run being resumed, validates
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

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from resnet_repro.config.resume import reconcile_resume
from resnet_repro.config.settings import RunSettings
from resnet_repro.errors import CheckpointError, ReproError
from resnet_repro.models.pretrained import check_weights_norm
from resnet_repro.runs.checkpoint import check_compatible, check_same_data, resume_checkpoint
from resnet_repro.runs.provenance import git_commit
from resnet_repro.runs.rundir import (
    CONFIG_FILE,
    LAST,
    PREV,
    RunDirInUse,
    RunLock,
    remove_stale_temp_files,
    restore_folder,
    results_signature,
    undo_refused,
    write_text_atomic,
)
from resnet_repro.runs.state import FAILED_FILE
from resnet_repro.schema import run_settings
from resnet_repro.training import distributed, loop
from resnet_repro.training.distributed import World, per_process_batch, per_process_batch_checked, world_from_env
from resnet_repro.training.inputs import build_training_data
from resnet_repro.training.loop import RunParts, Trainer
from resnet_repro.training.model import make_model
from resnet_repro.training.policy import emulated_bf16_note, resolve_device, resolve_precision
from resnet_repro.training.schedule import schedule_from
from resnet_repro.training.step import make_sgd, set_tf32


# --------------------------------------------------------------------------------------------
# Hydra entry
# --------------------------------------------------------------------------------------------


def _task(cfg: DictConfig) -> None:
    """One run (`train ...`) or one job of a sweep (`train -m ...`).

    A refused command (bad input: it changed no result) exits 2 and leaves the file system as it
    found it. An attempt that trained and then failed (divergence, a full disk) keeps everything
    and writes failed.json (its reason and iteration) beside its results. In a sweep, a failed or
    refused job is recorded in its dir (failed.json) and the sweep goes on to the next job; the
    end-of-sweep lines (hydra_entry.end_of_sweep) list it and the exit code is 1.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from resnet_repro import hydra_entry

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    before = hydra_entry.before(run_dir) or hydra_entry.snapshot(run_dir)  # sweeps: as Hydra left it
    results = results_signature(run_dir)
    if sweep and _budget_spent(cfg):
        if before.entries <= {".hydra"}:  # Hydra's empty dir for a job that never started
            undo_refused(run_dir, False, frozenset(), run_dir)
        hydra_entry.stop_sweep("trainer.max_time is spent: no further job of this sweep starts")
    try:
        cfg = _with_job_device(cfg, hc.job.num if sweep else None)
        train_from_config(cfg, run_dir, list(hc.overrides.task))
        if not sweep and results_signature(run_dir) == results:
            # trained nothing (a finished run run again): Hydra's record stays the one that trained
            restore_folder(run_dir / hydra_entry.HYDRA_RECORD, before.hydra_record)
            return
        (run_dir / FAILED_FILE).unlink(missing_ok=True)  # an earlier attempt's failure is history now
    except SystemExit as e:
        if sweep and e.code in (0, None):
            return  # a job that paused (trainer.max_time / pause_at): the sweep goes on
        raise
    except Exception as e:
        if not isinstance(e, ReproError) and not sweep:
            raise  # a bug: its traceback
        if not isinstance(e, ReproError):
            import traceback

            traceback.print_exc()
        reason = str(e) if isinstance(e, ReproError) else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        trained = results_signature(run_dir) != results
        if isinstance(e, RunDirInUse):  # the other process's dir: nothing of ours to record or undo,
            restore_folder(run_dir / hydra_entry.HYDRA_RECORD, before.hydra_record)  # but Hydra's record
        elif sweep or trained:
            _record_failure(run_dir, reason)
        else:
            undo_refused(run_dir, before.existed, before.entries, before.created_top)
            restore_folder(run_dir / hydra_entry.HYDRA_RECORD, before.hydra_record)
        print(f"error: {reason}", file=sys.stderr)
        if not sweep:
            raise SystemExit(2) from None


def _budget_spent(cfg: DictConfig) -> bool:
    """trainer.max_time at 0 or less: a sweep's deadline (`${until:<unix time>}`) has passed."""
    v = OmegaConf.select(cfg, "trainer.max_time")
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def job_device(device: str, job_num: int | None, gpus: int) -> str:
    """The device a sweep job trains on: job k on cuda:(k mod n) when the user left
    trainer.device=auto and there are GPUs (so parallel jobs of the joblib launcher do not all
    pile onto GPU 0; one GPU: they share it); the user's setting otherwise."""
    if device != "auto" or job_num is None or gpus < 1:
        return device
    return f"cuda:{job_num % gpus}"


def _with_job_device(cfg: DictConfig, job_num: int | None) -> DictConfig:
    """trainer.device for this job (job_device); torchrun picks each process's GPU itself."""
    device = OmegaConf.select(cfg, "trainer.device")
    if job_num is None or device != "auto" or world_from_env().distributed:
        return cfg
    chosen = job_device(device, job_num, _gpu_count())
    if chosen != device:
        cfg = cfg.copy()
        OmegaConf.update(cfg, "trainer.device", chosen)
    return cfg


def _record_failure(run_dir: Path, reason: str) -> None:
    """failed.json: why the last attempt on this run dir ended, and at which checkpoint."""
    import datetime as dt
    import json

    from resnet_repro.runs.state import checkpoint_iteration

    if not run_dir.is_dir():
        return
    record = {"status": "failed", "reason": reason, "iteration": checkpoint_iteration(run_dir),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        write_text_atomic(run_dir / FAILED_FILE, json.dumps(record, indent=1) + "\n")
    except ReproError:
        pass  # an unwritable dir: the error line says what happened


# --------------------------------------------------------------------------------------------
# A run: validate, then train
# --------------------------------------------------------------------------------------------


def train_from_config(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """The run in `run_dir` from the composed config: a new run, or the continuation of the one
    whose checkpoint is there (its saved config and only resumable changes). The settings are
    validated before the run dir or its lock are written, config.yaml once the trainer has
    accepted the data and the checkpoint."""
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
    saved = OmegaConf.create(record)
    # When this process pauses is not the run's: `train resume=<dir>` continues to the end.
    saved.trainer.max_time = saved.trainer.pause_at = None
    with RunLock(run_dir):  # a second process on this run dir is refused
        remove_stale_temp_files(run_dir)
        return fit(settings, run_dir, record, config_yaml=(saved_path, OmegaConf.to_yaml(saved)))


def fit(settings: RunSettings, run_dir: Path, record: dict[str, Any],
        config_yaml: tuple[Path, str] | None = None) -> dict[str, Any]:
    """Train (or continue training) the run in `run_dir`; returns the summary. Under torchrun
    every process runs this; rank 0 alone writes files and logs. `record`: the resolved config,
    saved in checkpoints and given to W&B. The paper row's recipe (`recipes.reference`) is what
    the W&B verdict judges the run against. `config_yaml` (path, text) is written once the trainer
    has accepted the data and the checkpoint, so a refused resume leaves the run's file as it was."""
    from resnet_repro.recipes import reference

    world = world_from_env()
    device = distributed.setup(world, resolve_device(settings.trainer.device))
    try:
        started = loop.clock()  # trainer.max_time counts from here (data loading included)
        git_commit()  # the code this process loaded, before the checkout can move on
        settings, parts = build_parts(settings, run_dir, world, device)
        trainer = Trainer(settings, parts, run_dir, world, device, record=record, paper=reference(settings.exp_name),
                          started=started)
        if config_yaml is not None and not trainer.complete:  # a command that trains nothing changes nothing
            write_text_atomic(*config_yaml)
        return trainer.run()
    finally:
        distributed.teardown(world)


def build_parts(settings: RunSettings, run_dir: Path, world: World, device: torch.device) -> tuple[RunSettings, RunParts]:
    """A run's set-up, in order: the data (its class count completes the model's settings), the
    checkpoint to resume and its checks against the data and the net (before anything is built
    from them), the precision on this machine, the model (§3.4's init), the learning-rate
    schedule and SGD (§4.2)."""
    tr = settings.trainer
    set_tf32(tr.tf32)
    data = build_training_data(settings.data, settings.seed, batch_size=per_process_batch(tr.batch_size, world),
                               eval_batch_size=tr.eval_batch_size, device=device, world=world)
    m = settings.model
    settings = replace(settings, model=replace(m, num_classes=m.num_classes or data.num_classes))
    ckpt, ckpt_from = resume_checkpoint(run_dir)  # last.pt, or prev.pt if last.pt is broken
    if ckpt is not None:
        check_same_data(ckpt, data.fingerprint, settings.data.root or settings.data.name)  # the likelier cause
        check_compatible(ckpt, model_name=settings.model.name, arch=settings.model.arch.as_dict(), path=ckpt_from)
    # `auto` follows this machine in every session: a resumed run may change precision (the
    # loop records where, in the summary's precision_history)
    precision = resolve_precision(tr.amp, tr.channels_last, device)
    if (note := emulated_bf16_note(precision, device)) and world.is_main:
        print(f"note: {note}")
    model = make_model(settings, device, world, channels_last=precision.channels_last)
    schedule = schedule_from(settings.schedule)
    o = settings.optim
    optimizer = make_sgd([p for p in model.parameters() if p.requires_grad], lr=schedule.lr(0), momentum=o.momentum,
                         weight_decay=o.weight_decay, nesterov=o.nesterov, device=device)
    return settings, RunParts(data, precision, model, schedule, optimizer, ckpt, ckpt_from)
