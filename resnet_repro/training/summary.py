"""summary.json of a run: the results of the weights at the current iteration (the final ones,
or a paused prefix's), the recipe, cost and provenance, in one flat record."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Protocol

from resnet_repro.training.step import precision
from resnet_repro.runs.provenance import environment, peak_memory, weights_digest


class Summarised(Protocol):
    """What a summary is read from: the training loop (`loop.Trainer`) at an iteration. Named
    here, not imported, so that this module stays below the loop that calls it."""

    state: Any  # training.state.LoopState
    tr: Any  # settings.TrainerSettings
    settings: Any  # settings.RunSettings
    data: Any  # training.inputs.TrainingData
    last_eval: dict[str, float]
    pause_reason: str | None
    warmup: Any  # schedule.WarmupUntilError, or None
    params: int
    macs: int
    device: Any
    world: Any  # distributed.World
    arch: Any  # archs.Arch
    amp: bool
    channels_last: bool
    precision: Any  # policy.Precision
    model: Any
    run_dir: Any


def run_summary(t: Summarised, status: str) -> dict[str, Any]:
    """The record of trainer `t` now (`status`: "complete" or "paused"); its last evaluation
    must be of the current weights."""
    state, tr, s, data, ev = t.state, t.tr, t.settings, t.data, t.last_eval
    peak, peak_kind = peak_memory(t.device)
    summary = {
        "exp_name": s.exp_name, "model": s.model.name, "arch": t.arch.as_dict(), "seed": s.seed,
        "status": status,
        "paused_by": t.pause_reason if status == "paused" else None,
        "test_err": ev.get("test/err"), "test_top5_err": ev.get("test/top5_err"), "test_loss": ev.get("test/loss"),
        "final_val_err": ev.get("val/err"), "best_val_err": state.best_val_err, "best_val_iter": state.best_val_iter,
        "iterations": state.iteration,
        "epochs": round(state.iteration / data.stream.steps_per_epoch, 2),
        "warmup_switch_iter": None if t.warmup is None else t.warmup.ended_by(state.iteration),
        "params": t.params, "macs": t.macs,
        "train_time_s": round(state.train_time, 2), "wall_time_s": round(state.wall_time, 2),
        "images_per_s": round((state.timed_iters or state.iteration) * tr.batch_size / max(state.train_time, 1e-9), 1),
        "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
        **environment(t.device), "world_size": t.world.size,
        "amp": "bf16" if t.amp else "off",
        # one precision for the whole run, else "mixed": precision_history says which iterations
        "train_precision": _train_precision(state.precision_stretches(), precision(t.device, amp=t.amp, tf32=tr.tf32)),
        "precision_history": state.precision_stretches(),
        "eval_precision": precision(t.device, amp=False, tf32=tr.tf32),
        "channels_last": t.channels_last,
        "precision_reason": t.precision.reason,
        "data": s.data.name, "data_fingerprint": data.fingerprint, "num_classes": data.num_classes,
        "train_size": data.sizes["train"], "val_size": data.sizes["val"], "test_size": data.sizes["test"],
        "batch_size": tr.batch_size, "max_iters": tr.max_iters,
        "schedule": {
            "kind": s.schedule.kind, "base_lr": s.schedule.base_lr, "milestones": list(s.schedule.milestones),
            "gamma": s.schedule.gamma, "warmup": bool(s.schedule.warmup and s.schedule.warmup.enabled),
        },
        "bn_group_size": s.model.bn_group_size, "weights": s.model.weights,
        "weights_digest": weights_digest(t.model.state_dict()),  # what eval_*.json records name
        # ImageNet, data.decode=device: training images skipped as undecodable (this session)
        "skipped_images": data.extra["bad_images"].total if "bad_images" in data.extra else 0,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(t.run_dir),
    }
    return summary


def _train_precision(stretches: list[dict[str, Any]], now: str) -> str:
    kinds = {x["train_precision"] for x in stretches if x["to"] > x["from"]} or {now}
    return kinds.pop() if len(kinds) == 1 else "mixed"
