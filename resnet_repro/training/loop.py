"""The training loop: one `Trainer` whose methods are the phases of a run (resume, step, log,
evaluate, checkpoint, stop, summarise). Takes typed settings and the parts the entry layer built
once (`RunParts`: data, precision, model, schedule, SGD, the checkpoint), never the config.

`Trainer.run` reads as the paper's recipe: for each iteration, SGD at the schedule's learning
rate (§3.4, §4.2), the warm-up check, a metrics row every `log_every` iterations, an evaluation
every `eval_every`, a checkpoint every `ckpt_every`, and a clean stop on SIGTERM/SIGINT.
Under torchrun every process runs it; rank 0 alone writes files and logs.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_repro.training import distributed
from resnet_repro.runs.checkpoint import checkpoint_meta, rng_state, save_checkpoint, set_rng_state
from resnet_repro.training.inputs import TrainingData
from resnet_repro.training.distributed import World, all_reduce_sum
from resnet_repro.training.step import train_step
from resnet_repro.training.step import precision as computed_in
from resnet_repro.runs.units import duration
from resnet_repro.errors import ConfigError, ReproError
from resnet_repro.paper import judge
from resnet_repro.runs.sinks import MetricsSink, round_floats, run_sinks, write_json_atomic
from resnet_repro.config.archs import input_size
from resnet_repro.models.macs import count_macs, count_params
from resnet_repro.models.pretrained import set_train_mode
from resnet_repro.runs.rundir import LAST, PREV, set_aside_unreadable_last
from resnet_repro.training.schedule import WarmupUntilError
from resnet_repro.training.state import LoopState, StopSignal
from resnet_repro.training.policy import Precision, compile_mode
from resnet_repro.training.summary import run_summary
from resnet_repro.training.model import wrap_for_training
from resnet_repro.config.settings import RunSettings

_clock = time.perf_counter  # the loop's clock (a test replaces it with a fake one)


class Diverged(ReproError):
    """The loss became nan/inf."""


def _pct(x: float) -> float:
    return 100.0 * x


@dataclass
class RunParts:
    """What one run trains with, built once by the entry layer (`train.fit`, in the order a
    run's set-up takes) and handed to the loop: the data streams, the precision, the model, the
    schedule and SGD, and the checkpoint to resume (None for a new run) with where it came from."""

    data: TrainingData
    precision: Precision
    model: nn.Module
    schedule: Any  # training.schedule: StepSchedule, PlateauSchedule or WarmupUntilError
    optimizer: torch.optim.Optimizer
    checkpoint: dict[str, Any] | None = None
    checkpoint_from: Path | None = None


def clock() -> float:
    """The loop's clock (`_clock`, which a test replaces with a fake one)."""
    return _clock()


class Trainer:
    """One run: given its typed settings and its parts (`RunParts`), trained by `run()`, which
    returns the summary."""

    def __init__(self, settings: RunSettings, parts: RunParts, run_dir: Path, world: World, device: torch.device,
                 record: dict[str, Any] | None = None, paper: judge.Recipe | None = None,
                 started: float | None = None) -> None:
        """`settings`: with the model's class count filled in from the data; `record`: the
        resolved config (checkpoints, W&B); `paper`: the exp's paper recipe (or None);
        `started`: the `clock()` at the run's set-up (trainer.max_time counts from there)."""
        self.process_start = clock() if started is None else started
        self.run_dir, self.world, self.device = run_dir, world, device
        self.record, self.paper = dict(record or {}), paper
        self.settings, self.tr = settings, settings.trainer
        tr = self.tr
        self.ckpt_path = run_dir / LAST
        self.data, self.arch = parts.data, settings.model.arch
        self.precision = parts.precision
        self.amp, self.channels_last = self.precision.amp, self.precision.channels_last
        self.model, self.schedule, self.optimizer = parts.model, parts.schedule, parts.optimizer
        self.warmup = self.schedule if isinstance(self.schedule, WarmupUntilError) else None
        self.params = count_params(self.model)
        self.macs = count_macs(self.model, input_size(self.arch.family) if settings.data.resize is None
                               else settings.data.resize)
        ckpt, ckpt_from = parts.checkpoint, parts.checkpoint_from
        self.state = LoopState(amp=self.amp, channels_last=self.channels_last)
        self.resumed = ckpt is not None
        if ckpt is None:
            self.state.train_in(computed_in(device, amp=self.amp, tf32=tr.tf32), self.channels_last)
        else:
            self._resume(ckpt)
            if self.state.iteration > tr.max_iters and not self.complete:
                raise ConfigError(
                    f"{run_dir} is at iteration {self.state.iteration}, past trainer.max_iters={tr.max_iters}: a paused "
                    "run cannot be finished earlier than it has trained; resume it with its own max_iters or more")
            if ckpt_from == run_dir / PREV and world.is_main:
                aside = set_aside_unreadable_last(run_dir)
                if aside is not None:
                    print(f"note: the unreadable {self.ckpt_path} is kept as {aside}; {ckpt_from} stays the fallback")

    # -- resume ---------------------------------------------------------------------------

    def _resume(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        set_rng_state(ckpt["rng"])
        self.state = state = LoopState.from_dict(ckpt["loop"], self.device)
        earlier = None if state.amp is None else (self._recorded_precision(state.amp), bool(state.channels_last))
        now = computed_in(self.device, amp=self.amp, tf32=self.tr.tf32)
        before = state.train_in(now, self.channels_last, earlier)
        state.amp, state.channels_last = self.amp, self.channels_last
        if before is not None and self.world.is_main:
            print(f"note: this run trained in {_layout(*before)} up to iteration {state.iteration:,}; it goes on in "
                  f"{_layout(now, self.channels_last)} ({self.precision.reason}). summary.json's precision_history "
                  f"says which iterations trained in which; trainer.amp={'bf16' if before[0] == 'bf16' else 'off'} "
                  f"trainer.channels_last={'on' if before[1] else 'off'} keeps the earlier one")

    def _recorded_precision(self, amp: bool) -> str:
        """What a checkpoint from before the precision history trained in: bf16 if it used
        autocast, else the last summary's word (fp32 or tf32: the device it trained on), else
        what fp32 would be on this device."""
        if amp:
            return "bf16"
        try:
            said = json.loads((self.run_dir / "summary.json").read_text()).get("train_precision")
        except (OSError, ValueError):
            said = None
        return said if said in ("fp32", "tf32") else computed_in(self.device, amp=False, tf32=self.tr.tf32)

    def _wrap(self) -> nn.Module:
        """The module the steps call: DDP over processes, then torch.compile when enabled."""
        return wrap_for_training(self.model, self.world, self.device, compile_mode(self.tr.compile, self.device))

    def _sinks(self) -> MetricsSink:
        """metrics.jsonl (rank 0), plus W&B with logger=wandb; none on other ranks."""
        s = self.settings
        sink, self.state.wandb_id = run_sinks(
            self.run_dir, s.logger, is_main=self.world.is_main, truncate_after_iter=self.state.iteration if self.resumed else 0,
            record=self.record, wandb_id=self.state.wandb_id, name=f"{s.exp_name}-seed{s.seed}")
        return sink

    # -- the loop ---------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """A finished run resumed at or past trainer.max_iters: `run` trains nothing and changes
        nothing. Its summary.json must be the final one, of this iteration (a paused run's
        summary, or none, is written afresh)."""
        if not (self.resumed and self.state.iteration >= self.tr.max_iters):
            return False
        try:
            summary = json.loads((self.run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            return False
        return summary.get("status", "complete") == "complete" and summary.get("iterations") == self.state.iteration

    def run(self) -> dict[str, Any]:
        """Train from the current iteration to trainer.max_iters; returns the summary."""
        from tqdm import tqdm

        tr, state = self.tr, self.state
        if self.complete:
            return self._already_complete()
        self.pause_reason: str | None = None
        self.net = self._wrap()
        self.sink = self._sinks()
        set_train_mode(self.net, self.settings.model.freeze_backbone)
        if self.resumed and self.world.is_main:
            print(f"resuming {self.run_dir} from iteration {state.iteration}")
        self.bar = tqdm(
            total=tr.max_iters, initial=state.iteration, disable=not (tr.progress and self.world.is_main),
            desc=self.settings.exp_name, dynamic_ncols=True, file=sys.stderr,
        )
        self.bad_iter = torch.full((), -1, dtype=torch.long, device=self.device)  # first non-finite loss
        # Throughput windows count only this process's iterations (restored sums include others').
        self.window_start, self.window_iters = _clock(), 0
        self.session_start, self.wall_base = self.window_start, state.wall_time
        self.last_eval: dict[str, float] = {}
        self.last_eval_iter = -1  # the iteration whose weights last_eval measured
        self.ckpt_iter = state.iteration if self.resumed else -1  # the iteration of checkpoints/last.pt
        self.warm_err = float("nan")  # the last running training error the warm-up saw
        if self.pause_due(state.iteration, log_due=True):  # pause_at already reached: trains nothing
            return self.pause_here(state.iteration)
        batches = self.data.stream.iterate(state.iteration)
        self.stop = StopSignal().install()
        try:
            for it in range(state.iteration, tr.max_iters):
                lr = self.schedule.lr(it)
                self.step(it, lr, *next(batches))
                done = state.iteration
                self.observe_warmup(it, done)
                log_due = done % tr.log_every == 0 or done == tr.max_iters
                eval_due = done % tr.eval_every == 0 or done == tr.max_iters
                if log_due or eval_due:
                    row = self.measure(done, lr)
                    if eval_due:
                        row.update(self.evaluate(it, done, lr, row["train/err"]))
                    self.log(row)
                    self.window_start = _clock()
                if done % tr.ckpt_every == 0 or done == tr.max_iters:
                    self.checkpoint()
                self.bar.update(1)
                if self.stop_requested(log_due):
                    self.stop_here(done)
                if done < tr.max_iters and self.pause_due(done, log_due):
                    return self.pause_here(done)
        except BaseException:
            self.sink.close()  # what was logged stays; W&B's run is closed properly
            raise
        finally:
            self.stop.uninstall()
            self.bar.close()
        return self.summarise()

    # -- the phases of an iteration ---------------------------------------------------------

    def step(self, it: int, lr: float, x: torch.Tensor, y: torch.Tensor) -> None:
        """One SGD step; the loss and error sums stay on the device (no sync per step)."""
        tr, state = self.tr, self.state
        loss_sum, wrong = train_step(
            self.net, self.optimizer, x, y, lr, amp=self.amp, channels_last=self.channels_last,
            skip_nonfinite=tr.max_skipped_steps > 0,
        )
        if tr.max_skipped_steps > 0 and not torch.isfinite(loss_sum):
            # The step was not applied (trainer.max_skipped_steps allows a few).
            state.skipped += 1
            if self.world.is_main:
                self.bar.write(f"skipped iteration {it + 1}: non-finite loss ({state.skipped}/{tr.max_skipped_steps})")
            if state.skipped > tr.max_skipped_steps:
                self.bad_iter.fill_(it)
                self.check_finite()
            loss_sum, wrong = torch.zeros_like(loss_sum), torch.zeros_like(wrong)
        else:
            self.bad_iter = torch.where((self.bad_iter < 0) & ~torch.isfinite(loss_sum), it, self.bad_iter)
        # float64 sums on the device: identical before and after a resume.
        state.log_loss = state.log_loss + loss_sum.double()
        state.log_wrong = state.log_wrong + wrong.double()
        state.warm_wrong = state.warm_wrong + wrong.double()
        state.log_n += y.shape[0]
        state.warm_n += y.shape[0]
        state.iteration = it + 1
        self.window_iters += 1

    def observe_warmup(self, it: int, done: int) -> None:
        """§4.2 warm-up: the running training error over the last check_every iterations, over
        all processes (so every process switches at the same iteration); says when it ends (at
        a check, or at the cap)."""
        state, every = self.state, self.settings.schedule.check_every
        if done % every == 0:
            wrong_all, n_all = self._reduced(state.warm_wrong, state.warm_n)
            self.warm_err = wrong_all / n_all
            state.warm_wrong, state.warm_n = 0.0, 0
            self.schedule.observe_train_error(it, self.warm_err)
        w = self.warmup
        if w is not None and w.active(it) and not w.active(done) and self.world.is_main:
            self.bar.write(f"warm-up ended at iteration {done} (training error {_pct(self.warm_err):.1f}% over the "
                           f"last {every} iterations); lr {self.schedule.lr(done):g}")

    def measure(self, done: int, lr: float) -> dict[str, Any]:
        """The metrics row of the iterations since the last one: loss, error, throughput."""
        self.check_finite()
        state = self.state
        loss_all, wrong_all, n_all = self._reduced(state.log_loss, state.log_wrong, state.log_n)
        elapsed = _clock() - self.window_start
        state.train_time += elapsed
        row: dict[str, Any] = {
            "iter": done,
            "epoch": round(done / self.data.stream.steps_per_epoch, 4),
            "lr": lr,
            "train/loss": loss_all / n_all,
            "train/err": _pct(wrong_all / n_all),
            "images_per_s": self.window_iters * self.tr.batch_size / max(elapsed, 1e-9),
        }
        self.bar.set_postfix(
            loss=f"{row['train/loss']:.3f}", err=f"{row['train/err']:.1f}%", lr=f"{lr:g}",
            img_s=f"{row['images_per_s']:.0f}", refresh=False,
        )
        state.log_loss, state.log_wrong, state.log_n = 0.0, 0.0, 0
        state.timed_iters += self.window_iters
        self.window_iters = 0
        return row

    def evaluate(self, it: int, done: int, lr: float, train_err: float) -> dict[str, Any]:
        """Held-out and test error in fp32 (the reported numbers are never bf16); the plateau
        schedule and model selection see the held-out error only, never the test set."""
        state = self.state
        distributed.average_buffers(self.model, self.world)
        self.last_eval = result = self.data.evaluate(self.model)
        self.last_eval_iter = done
        set_train_mode(self.net, self.settings.model.freeze_backbone)
        if "val/err" in result:
            if state.best_val_err is None or result["val/err"] < state.best_val_err:
                state.best_val_err, state.best_val_iter = result["val/err"], done
            self.schedule.observe_val_error(it, result["val/err"] / 100)
        if self.world.is_main:
            self.bar.write(f"iter {done}: " + " ".join(f"{k} {v:.2f}%" for k, v in result.items() if k.endswith("err"))
                           + f"  train/err {train_err:.2f}%  lr {lr:g}")
        s = self.settings
        planned = judge.planned_facts(s.data.name, self.data.num_classes, self.data.sizes, self.tr.max_iters)
        return {**result, **judge.paper_reference(s.exp_name, self.paper, judge.recipe(s), planned)}

    def log(self, row: dict[str, Any]) -> None:
        try:
            self.sink.log(row)
        except OSError as e:
            raise ReproError(f"could not write metrics in {self.run_dir}: {e.strerror or e}") from None

    def check_finite(self) -> None:
        """Stop on a nan/inf loss (one sync; called at log steps and before every save, so a
        diverged state is never written over the last good checkpoint)."""
        first = int(distributed.all_reduce_max(self.bad_iter.clone(), self.world))
        if first >= 0:
            good = f"the last good checkpoint is {self.ckpt_path}" if self.ckpt_path.exists() else "no checkpoint was written"
            raise Diverged(
                f"training diverged: the loss became nan/inf at iteration {first + 1}; stopped, {good} "
                f"(lower the learning rate, or allow skipped steps with trainer.max_skipped_steps=N)"
            )

    def checkpoint(self) -> None:
        """The full training state, atomically, to checkpoints/last.pt (the previous one kept)."""
        self.check_finite()
        self.state.wall_time = self.wall_base + _clock() - self.session_start
        distributed.average_buffers(self.model, self.world)
        if not self.world.is_main:
            return
        s = self.settings
        meta = checkpoint_meta(
            model_name=s.model.name, arch=self.arch.as_dict(), num_classes=self.data.num_classes,
            iteration=self.state.iteration, data_fingerprint=self.data.fingerprint,
        )
        save_checkpoint(
            self.ckpt_path,
            {"meta": meta, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
             "schedule": self.schedule.state_dict(), "rng": rng_state(), "loop": self.state.to_dict(),
             "config": self.record},
            keep_previous=self.run_dir / PREV,
        )
        self.ckpt_iter = self.state.iteration

    def stop_requested(self, log_due: bool) -> bool:
        """SIGTERM/SIGINT seen (under torchrun agreed at log steps: all stop at one iteration)."""
        if not self.world.distributed:
            return self.stop.signum is not None
        return log_due and self._reduced(float(self.stop.signum is not None))[0] > 0

    def stop_here(self, done: int) -> None:
        """Checkpoint and leave with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT)."""
        if done % self.tr.ckpt_every and done != self.tr.max_iters:
            self.checkpoint()
        signum = self.stop.signum or signal.SIGTERM
        if self.world.is_main:
            self.bar.close()
            print(f"stopped by {signal.Signals(signum).name} at iteration {done}; checkpoint written. "
                  f"Resume with: python -m resnet_repro train resume={self.run_dir}", file=sys.stderr)
        raise SystemExit(128 + signum)

    def pause_due(self, done: int, log_due: bool) -> bool:
        """trainer.pause_at reached, or trainer.max_time spent in this process. Under torchrun
        the clock is agreed at log steps (every process must stop at the same iteration)."""
        tr = self.tr
        if tr.pause_at is not None and done >= tr.pause_at:
            self.pause_reason = f"trainer.pause_at={tr.pause_at}"
        elif tr.max_time_s is not None and (log_due or not self.world.distributed):
            over = float(_clock() - self.process_start >= tr.max_time_s)
            if (self._reduced(over)[0] if self.world.distributed else over) > 0:
                self.pause_reason = f"trainer.max_time={tr.max_time} reached"
        return self.pause_reason is not None

    def pause_here(self, done: int) -> dict[str, Any]:
        """A paused run: checkpoint at `done`, a summary of the weights there (status "paused",
        an evaluation outside metrics.jsonl and the schedule, so the run resumes exactly as if it
        had never stopped), one line, and the caller exits 0. The recipe keeps its max_iters."""
        if self.ckpt_iter != done:
            self.checkpoint()
        self.bar.close()
        summary = self.summarise(status="paused")
        if self.world.is_main:
            took = int(_clock() - self.process_start)
            print(f"paused at iteration {done} of {self.tr.max_iters} after {duration(took)} "
                  f"({self.pause_reason}); resume with: python -m resnet_repro train resume={self.run_dir}")
        return summary

    def _reduced(self, *values: torch.Tensor | float) -> list[float]:
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values])
        return all_reduce_sum(t, self.world).tolist()

    # -- the end ----------------------------------------------------------------------------

    def _already_complete(self) -> dict[str, Any]:
        summary = json.loads((self.run_dir / "summary.json").read_text())
        if self.world.is_main:
            print(f"run already complete at iteration {self.state.iteration}: {self.run_dir}")
            print(f"test error {summary['test_err']:.2f}% (raise trainer.max_iters to train further)")
        return summary

    def summarise(self, status: str = "complete") -> dict[str, Any]:
        """summary.json: the results of the weights at this iteration (the final ones, or a
        paused prefix's), the recipe, cost and provenance."""
        state, tr, s, data = self.state, self.tr, self.settings, self.data
        if self.last_eval_iter != state.iteration:  # paused between evaluations, or resumed at the end
            distributed.average_buffers(self.model, self.world)
            self.last_eval, self.last_eval_iter = data.evaluate(self.model), state.iteration
        state.wall_time = self.wall_base + _clock() - self.session_start
        summary = round_floats(run_summary(self, status))  # as summary.json holds it (12 significant digits)
        if self.world.is_main:
            write_json_atomic(self.run_dir / "summary.json", summary)
            self.sink.summary(judge.with_paper_reference(summary, self.paper, judge.recipe(s)))  # W&B: the paper's number and the gap
            print(f"run dir: {self.run_dir}")
            print(f"test error {summary['test_err']:.2f}% after {state.iteration} iterations"
                  + (f" of {tr.max_iters} (paused: an incomplete run)" if status == "paused" else "")
                  + (f"; best val error {state.best_val_err:.2f}% at iteration {state.best_val_iter}"
                     if state.best_val_err is not None else ""))
        self.sink.close()
        return summary


def _layout(precision: str, channels_last: bool) -> str:
    return f"{precision}{' + channels_last' if channels_last else ''}"
