"""The training loop: one `Trainer` whose methods are the phases of a run (set up, resume,
step, log, evaluate, checkpoint, stop, summarise). Takes typed settings, never the config.

`Trainer.run` reads as the paper's recipe: for each iteration, SGD at the schedule's learning
rate (§3.4, §4.2), the warm-up check, a metrics row every `log_every` iterations, an evaluation
every `eval_every`, a checkpoint every `ckpt_every`, and a clean stop on SIGTERM/SIGINT.
Under torchrun every process runs it; rank 0 alone writes files and logs.
"""

from __future__ import annotations

import datetime as _dt
import json
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_repro import distributed
from resnet_repro.checkpoint import (
    LAST,
    PREV,
    check_compatible,
    check_same_data,
    checkpoint_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from resnet_repro.training_data import TrainingData, build_training_data
from resnet_repro.distributed import World, all_reduce_sum, per_process_batch
from resnet_repro.engine import make_sgd, maybe_compile, precision, set_tf32, train_step
from resnet_repro.errors import ReproError
from resnet_repro import judge
from resnet_repro.loggers import JsonlSink, MetricsSink, MultiSink, WandbSink, round_floats, write_json_atomic
from resnet_repro.models import build_from_arch, count_macs, count_params, input_size
from resnet_repro.pretrained import apply_weights, freeze_backbone, load_weights, set_train_mode
from resnet_repro.provenance import environment, peak_memory, weights_digest
from resnet_repro.rundir import resume_checkpoint
from resnet_repro.schedule import WarmupUntilError, build_schedule
from resnet_repro.policy import Precision, compile_mode, resolve_precision, use_channels_last
from resnet_repro.settings import RunSettings

_clock = time.perf_counter  # the loop's clock (a test replaces it with a fake one)


class Diverged(ReproError):
    """The loss became nan/inf."""


class StopSignal:
    """SIGTERM / SIGINT set a flag the loop reads after each iteration, so the run stops at an
    iteration boundary with a checkpoint (clusters send SIGTERM before they kill). A second
    SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


@dataclass
class LoopState:
    """What the loop carries between iterations besides model/optimizer/schedule; saved in
    every checkpoint (`loop`), so a resumed run continues exactly."""

    iteration: int = 0  # iterations completed
    best_val_err: float | None = None
    best_val_iter: int | None = None
    train_time: float = 0.0  # seconds in training steps (evaluation excluded)
    timed_iters: int = 0  # iterations whose time is in train_time (0 in checkpoints before it existed)
    skipped: int = 0  # steps skipped for a non-finite loss (trainer.max_skipped_steps)
    wall_time: float = 0.0  # seconds in the loop, evaluation included, over all sessions
    wandb_id: str | None = None
    # The training precision `auto` resolved to in the run's first session, kept on resume so a
    # run never changes precision midway (None in checkpoints from before it was recorded).
    amp: bool | None = None
    channels_last: bool | None = None
    # Running sums since the last log row / warm-up check (device tensors, read at those steps).
    log_loss: torch.Tensor | float = 0.0
    log_wrong: torch.Tensor | float = 0.0
    log_n: int = 0
    warm_wrong: torch.Tensor | float = 0.0
    warm_n: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("log_loss", "log_wrong", "warm_wrong"):
            d[k] = torch.as_tensor(d[k], dtype=torch.float64).cpu()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: torch.device) -> LoopState:
        state = cls(**d)
        for k in ("log_loss", "log_wrong", "warm_wrong"):
            setattr(state, k, torch.as_tensor(getattr(state, k)).to(device))
        return state


def make_model(settings: RunSettings, device: torch.device, world: World, channels_last: bool | None = None) -> nn.Module:
    """The model as training uses it: from its seed or from `model.weights` (optionally with a
    frozen backbone), SyncBN when asked, on its device, channels_last when enabled. `bench`
    times exactly this. DDP wrapping and compilation happen in the Trainer."""
    arch = settings.model.arch
    torch.manual_seed(settings.seed)  # the initial weights depend only on the seed
    model = build_from_arch(arch, bn_group_size=settings.model.bn_group_size)
    if settings.model.weights:
        skipped = apply_weights(model, load_weights(settings.model.weights), settings.model.weights, settings.model.name)
        if world.is_main:
            print(f"started from {settings.model.weights}" + (" (new classifier head)" if skipped else ""))
        if settings.model.freeze_backbone:
            freeze_backbone(model)
    if settings.trainer.sync_bn and world.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if channels_last if channels_last is not None else use_channels_last(settings.trainer.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def _pct(x: float) -> float:
    return 100.0 * x


class Trainer:
    """One run: built from typed settings, trained by `run()`, which returns the summary."""

    def __init__(self, settings: RunSettings, run_dir: Path, world: World, device: torch.device,
                 record: dict[str, Any] | None = None, paper: judge.Recipe | None = None) -> None:
        """`record`: the resolved config (saved in checkpoints, given to W&B); `paper`: the
        recipe of the paper row named by the exp (None: none), for W&B's paper line and verdict."""
        self.process_start = _clock()  # trainer.max_time counts from here (data loading included)
        self.run_dir, self.world, self.device = run_dir, world, device
        self.record, self.paper = dict(record or {}), paper
        self.tr = tr = settings.trainer
        set_tf32(tr.tf32)
        self.ckpt_path = run_dir / LAST
        self.data: TrainingData = build_training_data(
            settings.data, settings.seed, batch_size=per_process_batch(tr.batch_size, world),
            eval_batch_size=tr.eval_batch_size, device=device, world=world,
        )
        self.arch = replace(settings.model.arch, num_classes=settings.model.arch.num_classes or self.data.num_classes)
        self.settings = settings = replace(settings, model=replace(settings.model, arch=self.arch))
        ckpt, ckpt_from = resume_checkpoint(run_dir)  # last.pt, or prev.pt if last.pt is broken
        if ckpt is not None:
            check_same_data(ckpt, self.data.fingerprint, settings.data.root or settings.data.name)  # the likelier cause
            check_compatible(ckpt, model_name=settings.model.name, arch=self.arch.as_dict(), path=ckpt_from)
        self.precision = self._precision(ckpt)
        self.amp, self.channels_last = self.precision.amp, self.precision.channels_last
        self._set_up()
        self.state = LoopState(amp=self.amp, channels_last=self.channels_last)
        self.resumed = ckpt is not None
        if ckpt is not None:
            self._resume(ckpt)

    # -- set up and resume ------------------------------------------------------------------

    def _precision(self, ckpt: dict[str, Any] | None) -> Precision:
        """What trainer.amp/channels_last resolve to here; on resume, `auto` keeps what the run
        started with (a run trained in bf16 on one CPU continues in bf16 on another)."""
        tr = self.tr
        choice = resolve_precision(tr.amp, tr.channels_last, self.device)
        loop = (ckpt or {}).get("loop", {})
        amp = loop.get("amp") if tr.amp == "auto" and loop.get("amp") is not None else choice.amp
        cl = loop.get("channels_last") if tr.channels_last == "auto" and loop.get("channels_last") is not None \
            else choice.channels_last
        if (amp, cl) == (choice.amp, choice.channels_last):
            return choice
        kept = Precision(amp=amp, channels_last=cl, reason=(
            f"auto kept from the run's start ({'bf16' if amp else 'fp32'}, channels_last {cl}); "
            f"on this machine it would pick {'bf16' if choice.amp else 'fp32'}: {choice.reason}"))
        if self.world.is_main:
            print(f"note: precision {kept.reason}")
        return kept

    def _set_up(self) -> None:
        """Model, learning-rate schedule and SGD (§3.4, §4.2), and their cost."""
        s = self.settings
        self.model = make_model(s, self.device, self.world, channels_last=self.channels_last)
        self.schedule = build_schedule(
            s.schedule.kind, base_lr=s.schedule.base_lr, milestones=s.schedule.milestones, gamma=s.schedule.gamma,
            warmup=s.schedule.warmup, plateau=s.schedule.plateau,
        )
        self.warmup = self.schedule if isinstance(self.schedule, WarmupUntilError) else None
        self.optimizer = make_sgd(
            [p for p in self.model.parameters() if p.requires_grad], lr=self.schedule.lr(0),
            momentum=s.optim.momentum, weight_decay=s.optim.weight_decay, nesterov=s.optim.nesterov,
            device=self.device,
        )
        self.params = count_params(self.model)
        self.macs = count_macs(self.model, input_size(self.arch.family) if s.data.resize is None else s.data.resize)

    def _resume(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        set_rng_state(ckpt["rng"])
        self.state = LoopState.from_dict(ckpt["loop"], self.device)
        self.state.amp, self.state.channels_last = self.amp, self.channels_last

    def _wrap(self) -> nn.Module:
        """The module the steps call: DDP over processes, then torch.compile when enabled."""
        net: nn.Module = self.model
        if self.world.distributed:
            # BN running statistics stay per process during training (no buffer broadcast) and
            # are averaged over processes before each evaluation and checkpoint: the statistics
            # a single process with BN groups of the per-process batch would keep.
            with warnings.catch_warnings():  # newer torch renames the flag; all versions read this one
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                net = nn.parallel.DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False,
                )
        return maybe_compile(net, compile_mode(self.tr.compile, self.device))

    def _sinks(self) -> MetricsSink:
        """metrics.jsonl (rank 0), plus W&B with logger=wandb; none on other ranks."""
        if not self.world.is_main:
            return MultiSink([])
        sinks: list[MetricsSink] = [
            JsonlSink(self.run_dir / "metrics.jsonl", truncate_after_iter=self.state.iteration if self.resumed else 0)
        ]
        lg, s = self.settings.logger, self.settings
        if lg.name == "wandb":
            wb = WandbSink(
                project=lg.project, run_dir=self.run_dir, config=self.record, mode=lg.mode, entity=lg.entity,
                run_id=self.state.wandb_id, name=f"{s.exp_name}-seed{s.seed}", tags=list(lg.tags),
            )
            self.state.wandb_id = wb.run_id
            sinks.append(wb)
        return MultiSink(sinks)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train from the current iteration to trainer.max_iters; returns the summary."""
        from tqdm import tqdm

        tr, state = self.tr, self.state
        if self.resumed and state.iteration >= tr.max_iters and (self.run_dir / "summary.json").is_file():
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
        # Throughput windows count the iterations timed in this process: after a resume, the
        # metric sums restored from the checkpoint include images trained in another session.
        self.window_start, self.window_iters = _clock(), 0
        self.session_start, self.wall_base = self.window_start, state.wall_time
        self.last_eval: dict[str, float] = {}
        self.last_eval_iter = -1  # the iteration whose weights last_eval measured
        self.ckpt_iter = state.iteration if self.resumed else -1  # the iteration of checkpoints/last.pt
        self.warm_err = float("nan")  # the last running training error the warm-up saw
        if tr.pause_at is not None and state.iteration >= tr.pause_at:
            self.pause_reason = f"trainer.pause_at={tr.pause_at}"
            return self.pause_here(state.iteration)  # already there: trains nothing
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
        """SIGTERM/SIGINT seen. Every process must stop at the same iteration, so under
        torchrun the flag is agreed at log steps."""
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
            return True
        budget = tr.max_time_s
        if budget is None or (self.world.distributed and not log_due):
            return False
        over = float(_clock() - self.process_start >= budget)
        if self.world.distributed:
            over = self._reduced(over)[0]
        if over > 0:
            self.pause_reason = f"trainer.max_time={tr.max_time} reached"
            return True
        return False

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
            print(f"paused at iteration {done} of {self.tr.max_iters} after {took // 3600}:{took % 3600 // 60:02d} "
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
        ev = self.last_eval
        state.wall_time = self.wall_base + _clock() - self.session_start
        peak, peak_kind = peak_memory(self.device)
        summary = {
            "exp_name": s.exp_name, "model": s.model.name, "arch": self.arch.as_dict(), "seed": s.seed,
            "status": status,
            "paused_by": self.pause_reason if status == "paused" else None,
            "test_err": ev.get("test/err"), "test_top5_err": ev.get("test/top5_err"), "test_loss": ev.get("test/loss"),
            "final_val_err": ev.get("val/err"), "best_val_err": state.best_val_err, "best_val_iter": state.best_val_iter,
            "iterations": state.iteration,
            "epochs": round(state.iteration / data.stream.steps_per_epoch, 2),
            "warmup_switch_iter": None if self.warmup is None else self.warmup.ended_by(state.iteration),
            "params": self.params, "macs": self.macs,
            "train_time_s": round(state.train_time, 2), "wall_time_s": round(state.wall_time, 2),
            "images_per_s": round((state.timed_iters or state.iteration) * tr.batch_size / max(state.train_time, 1e-9), 1),
            "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
            **environment(self.device), "world_size": self.world.size,
            "amp": "bf16" if self.amp else "off",
            "train_precision": precision(self.device, amp=self.amp, tf32=tr.tf32),
            "eval_precision": precision(self.device, amp=False, tf32=tr.tf32),
            "channels_last": self.channels_last,
            "precision_reason": self.precision.reason,
            "data": s.data.name, "data_fingerprint": data.fingerprint, "num_classes": data.num_classes,
            "train_size": data.sizes["train"], "val_size": data.sizes["val"], "test_size": data.sizes["test"],
            "batch_size": tr.batch_size, "max_iters": tr.max_iters,
            "schedule": {
                "kind": s.schedule.kind, "base_lr": s.schedule.base_lr, "milestones": list(s.schedule.milestones),
                "gamma": s.schedule.gamma, "warmup": bool((s.schedule.warmup or {}).get("enabled")),
            },
            "bn_group_size": s.model.bn_group_size, "weights": s.model.weights,
            "weights_digest": weights_digest(self.model.state_dict()),  # what eval_*.json records name
            # ImageNet, data.decode=device: training images skipped as undecodable (this session)
            "skipped_images": data.extra["bad_images"].total if "bad_images" in data.extra else 0,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "run_dir": str(self.run_dir),
        }
        summary = round_floats(summary)  # as summary.json holds it (12 significant digits)
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
