"""`python -m resnet_repro train ...`: build everything from the config, run the loop, checkpoint,
log. The only module that reads the Hydra config (through `settings.run_settings`).

Run directory (Hydra's output dir):
  config.yaml          the resolved config of record (what the run trained with)
  metrics.jsonl        one JSON object per log step (errors in %)
  summary.json         final results, cost and provenance, written at the end
  checkpoints/last.pt  full resume state, written atomically every trainer.ckpt_every iterations
  .hydra/              Hydra's record of the composition and overrides
  wandb/               the W&B run (logger=wandb)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

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
from resnet_repro import distributed
from resnet_repro.data.build import build_training_data
from resnet_repro.distributed import World, all_reduce_sum, per_process_batch, world_from_env
from resnet_repro.engine import make_sgd, maybe_compile, precision, set_tf32, train_step
from resnet_repro.errors import CheckpointError, ConfigError, ReproError
from resnet_repro.judge import planned_reference, with_paper_reference
from resnet_repro.loggers import JsonlSink, MetricsSink, MultiSink, WandbSink, write_json_atomic
from resnet_repro.models import Arch, build_from_arch, count_macs, count_params, input_size, names_after_network
from resnet_repro.schedule import WarmupUntilError, build_schedule
from resnet_repro.rundir import RunLock, remove_stale_temp_files, resume_checkpoint, write_text_atomic
from resnet_repro.provenance import device_name, git_commit, peak_memory
from resnet_repro.pretrained import apply_weights, check_weights_norm, freeze_backbone, load_weights, set_train_mode
from resnet_repro.paths import CONF_DIR
from resnet_repro.settings import (
    RunSettings,
    compile_mode,
    resolve_device,
    per_process_batch_checked,
    run_settings,
    use_amp,
    use_channels_last,
)

CONFIG_FILE = "config.yaml"
_clock = time.perf_counter  # the loop's clock (a test replaces it with a fake one)

# Settings a resumed run may change: where the data lies, how long, how often, where, and how
# it is logged.
# Everything else (model, data, recipe, seed, batch) must match the run being continued.
RESUMABLE_KEYS = (
    "data.root",  # the data may move (another node, another mount): its fingerprint must match
    "data.cache_dir",
    "trainer.max_iters",
    "trainer.eval_every",
    "trainer.log_every",
    "trainer.ckpt_every",
    "trainer.eval_batch_size",
    "trainer.device",
    "trainer.progress",
    "trainer.compile",
    "trainer.max_skipped_steps",
    "logger",
    "bench",
    "resume",
)


# --------------------------------------------------------------------------------------------
# Hydra entry
# --------------------------------------------------------------------------------------------


def run_stamp() -> str:
    """A timestamp for run-dir names that every process of one `torchrun` launch agrees on:
    they share the elastic agent (their parent process), so its start time is the stamp.
    Multi-node runs should name `hydra.run.dir` on a shared filesystem explicitly."""
    t = time.time()
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        try:
            t = os.stat(f"/proc/{os.getppid()}").st_mtime
        except OSError:
            pass
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(t))


def _run_name(exp_name: str, model_name: str, family: str, depth: int, residual: bool, shortcut: str,
              bottleneck_stride: str) -> str:
    try:
        arch = Arch(family, int(depth), bool(residual), shortcut, bottleneck_stride)
        return names_after_network(model_name, exp_name, arch)[1]
    except (TypeError, ValueError):  # a malformed setting: run_settings names it properly
        return exp_name


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_name"):
        # The run dir is named after the network trained (models.names_after_network).
        OmegaConf.register_new_resolver("run_name", _run_name)
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)
    # hydra.run.dir: the `resume=` dir if given, else a fresh timestamped one.
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", lambda resume, default: resume or default)
    # Hydra's .hydra/ record is skipped on `resume=`: config.yaml stays the run's record.
    if not OmegaConf.has_resolver("hydra_subdir"):
        OmegaConf.register_new_resolver("hydra_subdir", lambda resume: None if resume else ".hydra")


def hydra_train() -> None:
    import hydra

    register_resolvers()
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_task)()


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
# Resume: which config a run continues with
# --------------------------------------------------------------------------------------------


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def reconcile_resume(composed: dict[str, Any], saved: dict[str, Any], overrides: list[str], explicit_resume: bool) -> dict[str, Any]:
    """The config a resumed run continues with.

    `resume=<dir>`: the saved config, plus command-line overrides of RESUMABLE_KEYS only.
    Re-running into an existing run dir: the composed config must equal the saved one outside
    RESUMABLE_KEYS. Anything else is refused, so a run dir never mixes two recipes.
    """
    if explicit_resume:
        merged = OmegaConf.create(saved)
        for item in overrides:
            key = item.split("=", 1)[0].lstrip("+~")
            if key.startswith("hydra.") or key == "resume":
                continue
            if not _resumable(key):
                raise ConfigError(
                    f"{item.lstrip('+~')!r} cannot change when resuming (the run continues with its saved settings); "
                    f"only {', '.join(k for k in RESUMABLE_KEYS if k != 'resume')} may"
                )
            OmegaConf.update(merged, key, OmegaConf.select(OmegaConf.create(composed), key), force_add=True)
        return OmegaConf.to_container(merged)  # type: ignore[return-value]
    new, old = _flatten(composed), _flatten(saved)
    # The data set or model that differs is named before any of its settings that follow.
    for key in sorted(set(new) | set(old), key=lambda k: (not (k.endswith(".name") or k == "exp_name"), k)):
        if not _resumable(key) and new.get(key, "<unset>") != old.get(key, "<unset>"):
            raise ConfigError(
                f"this run dir was started with {key}={old.get(key, '<unset>')!r} but this command sets "
                f"{new.get(key, '<unset>')!r}; use the same settings to resume, or a new run dir"
            )
    return composed


def train_from_config(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
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
    if not world.is_main:
        return fit(settings, run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReproError(f"could not create run dir {run_dir}: {e.strerror or e}") from None
    with RunLock(run_dir):  # a second process on this run dir is refused
        remove_stale_temp_files(run_dir)
        saved = OmegaConf.to_yaml(OmegaConf.create({k: v for k, v in config.items() if k != "resume"}))
        write_text_atomic(saved_path, saved)
        return fit(settings, run_dir)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


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
    """What the loop carries between iterations besides model/optimizer/schedule."""

    iteration: int = 0  # iterations completed
    best_val_err: float | None = None
    best_val_iter: int | None = None
    train_time: float = 0.0  # seconds in training steps (evaluation excluded)
    timed_iters: int = 0  # iterations whose time is in train_time (0 in checkpoints before it existed)
    skipped: int = 0  # steps skipped for a non-finite loss (trainer.max_skipped_steps)
    wall_time: float = 0.0  # seconds in the loop, evaluation included, over all sessions
    wandb_id: str | None = None
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


def _build_sinks(settings: RunSettings, run_dir: Path, state: LoopState, resumed: bool) -> MetricsSink:
    sinks: list[MetricsSink] = [
        JsonlSink(run_dir / "metrics.jsonl", truncate_after_iter=state.iteration if resumed else 0)
    ]
    lg = settings.logger
    if lg.name == "wandb":
        wb = WandbSink(
            project=lg.project,
            run_dir=run_dir,
            config=settings.config,
            mode=lg.mode,
            entity=lg.entity,
            run_id=state.wandb_id,
            name=f"{settings.exp_name}-seed{settings.seed}",
            tags=list(lg.tags),
        )
        state.wandb_id = wb.run_id
        sinks.append(wb)
    return MultiSink(sinks)


def _pct(x: float) -> float:
    return 100.0 * x


def make_model(settings: RunSettings, device: torch.device, world: World) -> nn.Module:
    """The model as training uses it: from its seed or from `model.weights` (optionally with a
    frozen backbone), SyncBN when asked, on its device, channels_last when enabled. `bench`
    times exactly this. DDP wrapping and compilation happen in the loop."""
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
    if use_channels_last(settings.trainer.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def fit(settings: RunSettings, run_dir: Path) -> dict[str, Any]:
    """Train (or continue training) the run in `run_dir`; returns the summary.

    Under torchrun every process runs this; rank 0 alone writes files and logs."""
    from tqdm import tqdm

    world = world_from_env()
    device = distributed.setup(world, resolve_device(settings.trainer.device))
    try:
        return _fit(settings, run_dir, world, device, tqdm)
    finally:
        distributed.teardown(world)


def _fit(settings: RunSettings, run_dir: Path, world: World, device: torch.device, tqdm) -> dict[str, Any]:
    tr = settings.trainer
    amp = use_amp(tr.amp, device)
    channels_last = use_channels_last(tr.channels_last, device)
    set_tf32(tr.tf32)
    ckpt_path = run_dir / LAST
    data = build_training_data(
        settings.data, settings.seed, batch_size=per_process_batch(tr.batch_size, world),
        eval_batch_size=tr.eval_batch_size, device=device, world=world,
    )
    arch = replace(settings.model.arch, num_classes=settings.model.arch.num_classes or data.num_classes)
    settings = replace(settings, model=replace(settings.model, arch=arch))
    ckpt, ckpt_from = resume_checkpoint(run_dir)  # last.pt, or prev.pt if last.pt is broken
    if ckpt is not None:
        check_same_data(ckpt, data.fingerprint, settings.data.root or settings.data.name)  # first: the likelier cause
        check_compatible(ckpt, model_name=settings.model.name, arch=arch.as_dict(), path=ckpt_from)

    model = make_model(settings, device, world)
    schedule = build_schedule(
        settings.schedule.kind,
        base_lr=settings.schedule.base_lr,
        milestones=settings.schedule.milestones,
        gamma=settings.schedule.gamma,
        warmup=settings.schedule.warmup,
        plateau=settings.schedule.plateau,
    )
    warmup = schedule if isinstance(schedule, WarmupUntilError) else None
    optimizer = make_sgd(
        [p for p in model.parameters() if p.requires_grad],
        lr=schedule.lr(0),
        momentum=settings.optim.momentum,
        weight_decay=settings.optim.weight_decay,
        nesterov=settings.optim.nesterov,
        device=device,
    )
    params = count_params(model)
    macs = count_macs(model, input_size(arch.family) if settings.data.resize is None else settings.data.resize)

    state = LoopState()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        set_rng_state(ckpt["rng"])
        state = LoopState.from_dict(ckpt["loop"], device)
    resumed = ckpt is not None
    if resumed and state.iteration >= tr.max_iters and (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
        if world.is_main:
            print(f"run already complete at iteration {state.iteration}: {run_dir}")
            print(f"test error {summary['test_err']:.2f}% (raise trainer.max_iters to train further)")
        return summary

    net = model
    if world.distributed:
        # BN running statistics stay per process during training (no buffer broadcast) and are
        # averaged over processes before each evaluation and checkpoint: the same statistics a
        # single process with BN groups of the per-process batch would keep.
        with warnings.catch_warnings():  # newer torch renames the flag; this spelling is the one all versions read
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
    net = maybe_compile(net, compile_mode(tr.compile, device))
    sink = _build_sinks(settings, run_dir, state, resumed) if world.is_main else MultiSink([])
    frozen = settings.model.freeze_backbone
    set_train_mode(net, frozen)

    bad_iter = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite loss, on device

    def check_finite() -> None:
        """Stop on a nan/inf loss (one sync; called at log steps and before every save, so a
        diverged state is never written over the last good checkpoint)."""
        first = int(distributed.all_reduce_max(bad_iter.clone(), world))
        if first >= 0:
            good = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written"
            raise Diverged(
                f"training diverged: the loss became nan/inf at iteration {first + 1}; stopped, {good} "
                f"(lower the learning rate, or allow skipped steps with trainer.max_skipped_steps=N)"
            )

    def save() -> None:
        check_finite()
        state.wall_time = wall_base + _clock() - session_start
        distributed.average_buffers(model, world)
        if not world.is_main:
            return
        save_checkpoint(
            ckpt_path,
            {
                "meta": checkpoint_meta(
                    model_name=settings.model.name, arch=arch.as_dict(), num_classes=data.num_classes,
                    iteration=state.iteration, data_fingerprint=data.fingerprint,
                ),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": rng_state(),
                "loop": state.to_dict(),
                "config": settings.config,
            },
            keep_previous=run_dir / PREV,
        )

    def stop_requested(log_due: bool) -> bool:
        if not world.distributed:
            return stop.signum is not None
        return log_due and reduced(float(stop.signum is not None))[0] > 0

    def log(row: dict[str, Any]) -> None:
        try:
            sink.log(row)
        except OSError as e:
            raise ReproError(f"could not write metrics in {run_dir}: {e.strerror or e}") from None

    def reduced(*values: torch.Tensor | float) -> list[float]:
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
        return all_reduce_sum(t, world).tolist()

    if resumed and world.is_main:
        print(f"resuming {run_dir} from iteration {state.iteration}")
    bar = tqdm(
        total=tr.max_iters, initial=state.iteration, disable=not (tr.progress and world.is_main),
        desc=settings.exp_name, dynamic_ncols=True, file=sys.stderr,
    )
    # Throughput windows count the iterations timed in this process: after a resume, the metric
    # sums restored from the checkpoint include images trained before it, in another session.
    window_start, window_time, window_iters = _clock(), 0.0, 0
    session_start, wall_base = window_start, state.wall_time
    err = float("nan")  # the last running training error seen by the warm-up
    last_eval: dict[str, float] = {}
    batches = data.stream.iterate(state.iteration)
    stop = StopSignal().install()
    try:
        for it in range(state.iteration, tr.max_iters):
            lr = schedule.lr(it)
            x, y = next(batches)
            loss_sum, wrong = train_step(
                net, optimizer, x, y, lr, amp=amp, channels_last=channels_last,
                skip_nonfinite=tr.max_skipped_steps > 0,
            )
            if tr.max_skipped_steps > 0 and not torch.isfinite(loss_sum):
                # The step was not applied (trainer.max_skipped_steps allows a few).
                state.skipped += 1
                if world.is_main:
                    bar.write(f"skipped iteration {it + 1}: non-finite loss ({state.skipped}/{tr.max_skipped_steps})")
                if state.skipped > tr.max_skipped_steps:
                    bad_iter.fill_(it)
                    check_finite()
                loss_sum, wrong = torch.zeros_like(loss_sum), torch.zeros_like(wrong)
            else:
                bad_iter = torch.where((bad_iter < 0) & ~torch.isfinite(loss_sum), it, bad_iter)
            # float64 sums on the device: no sync per step, and identical before and after resume.
            state.log_loss = state.log_loss + loss_sum.double()
            state.log_wrong = state.log_wrong + wrong.double()
            state.warm_wrong = state.warm_wrong + wrong.double()
            state.log_n += y.shape[0]
            state.warm_n += y.shape[0]
            state.iteration = done = it + 1
            window_iters += 1

            if done % settings.schedule.check_every == 0:
                # §4.2 warm-up: the running training error over the last check_every iterations,
                # over all processes (so every process switches at the same iteration).
                wrong_all, n_all = reduced(state.warm_wrong, state.warm_n)
                err = wrong_all / n_all
                state.warm_wrong, state.warm_n = 0.0, 0
                schedule.observe_train_error(it, err)
            if warmup is not None and warmup.active(it) and not warmup.active(done) and world.is_main:
                bar.write(f"warm-up ended at iteration {done} (training error {_pct(err):.1f}% over the last "
                          f"{settings.schedule.check_every} iterations); lr {schedule.lr(done):g}")

            log_due = done % tr.log_every == 0 or done == tr.max_iters
            eval_due = done % tr.eval_every == 0 or done == tr.max_iters
            if log_due or eval_due:
                check_finite()
                loss_all, wrong_all, n_all = reduced(state.log_loss, state.log_wrong, state.log_n)
                now = _clock()
                window_time += now - window_start
                state.train_time += now - window_start
                row: dict[str, Any] = {
                    "iter": done,
                    "epoch": round(done / data.stream.steps_per_epoch, 4),
                    "lr": lr,
                    "train/loss": loss_all / n_all,
                    "train/err": _pct(wrong_all / n_all),
                    "images_per_s": window_iters * tr.batch_size / max(window_time, 1e-9),
                }
                bar.set_postfix(
                    loss=f"{row['train/loss']:.3f}", err=f"{row['train/err']:.1f}%", lr=f"{lr:g}",
                    img_s=f"{row['images_per_s']:.0f}", refresh=False,
                )
                state.log_loss, state.log_wrong, state.log_n = 0.0, 0.0, 0
                state.timed_iters += window_iters
                window_time, window_iters = 0.0, 0
                if eval_due:
                    distributed.average_buffers(model, world)
                    last_eval = data.evaluate(model)  # fp32: the reported numbers are never bf16
                    set_train_mode(net, frozen)
                    row.update(last_eval)
                    row.update(planned_reference(settings.exp_name, settings.config, arch.as_dict(), data.sizes))
                    if "val/err" in last_eval:
                        if state.best_val_err is None or last_eval["val/err"] < state.best_val_err:
                            state.best_val_err, state.best_val_iter = last_eval["val/err"], done
                        schedule.observe_val_error(it, last_eval["val/err"] / 100)
                    if world.is_main:
                        bar.write(
                            f"iter {done}: "
                            + " ".join(f"{k} {v:.2f}%" for k, v in last_eval.items() if k.endswith("err"))
                            + f"  train/err {row['train/err']:.2f}%  lr {lr:g}"
                        )
                log(row)
                window_start = _clock()
            if done % tr.ckpt_every == 0 or done == tr.max_iters:
                save()
            bar.update(1)
            # SIGTERM/SIGINT: checkpoint and leave. Every process must stop at the same
            # iteration, so under torchrun the flag is agreed at log steps.
            if stop_requested(log_due):
                if done % tr.ckpt_every and done != tr.max_iters:
                    save()
                if world.is_main:
                    bar.close()
                    print(
                        f"stopped by {signal.Signals(stop.signum or signal.SIGTERM).name} at iteration {done}; "
                        f"checkpoint written. Resume with: python -m resnet_repro train resume={run_dir}",
                        file=sys.stderr,
                    )
                raise SystemExit(128 + (stop.signum or signal.SIGTERM))
    except BaseException:
        sink.close()  # what was logged stays; W&B's run is closed properly
        raise
    finally:
        stop.uninstall()
        bar.close()

    if not last_eval:  # resumed at or past trainer.max_iters: the checkpoint's final numbers
        distributed.average_buffers(model, world)
        last_eval = data.evaluate(model)
    state.wall_time = wall_base + _clock() - session_start
    peak, peak_kind = peak_memory(device)
    summary = {
        "exp_name": settings.exp_name,
        "model": settings.model.name,
        "arch": arch.as_dict(),
        "seed": settings.seed,
        "status": "complete",
        "test_err": last_eval.get("test/err"),
        "test_top5_err": last_eval.get("test/top5_err"),
        "test_loss": last_eval.get("test/loss"),
        "final_val_err": last_eval.get("val/err"),
        "best_val_err": state.best_val_err,
        "best_val_iter": state.best_val_iter,
        "iterations": state.iteration,
        "epochs": round(state.iteration / data.stream.steps_per_epoch, 2),
        "warmup_switch_iter": None if warmup is None else warmup.ended_by(state.iteration),
        "params": params,
        "macs": macs,
        "train_time_s": round(state.train_time, 2),
        "wall_time_s": round(state.wall_time, 2),
        "images_per_s": round((state.timed_iters or state.iteration) * tr.batch_size / max(state.train_time, 1e-9), 1),
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "device": device_name(device),
        "world_size": world.size,
        "amp": "bf16" if amp else "off",
        "train_precision": precision(device, amp=amp, tf32=tr.tf32),
        "eval_precision": precision(device, amp=False, tf32=tr.tf32),
        "channels_last": channels_last,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "data": settings.data.name,
        "data_fingerprint": data.fingerprint,
        "num_classes": data.num_classes,
        "train_size": data.sizes["train"],
        "val_size": data.sizes["val"],
        "test_size": data.sizes["test"],
        "batch_size": tr.batch_size,
        "max_iters": tr.max_iters,
        "schedule": {
            "kind": settings.schedule.kind,
            "base_lr": settings.schedule.base_lr,
            "milestones": list(settings.schedule.milestones),
            "gamma": settings.schedule.gamma,
            "warmup": bool((settings.schedule.warmup or {}).get("enabled")),
        },
        "bn_group_size": settings.model.bn_group_size,
        "weights": settings.model.weights,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
    }
    if world.is_main:
        write_json_atomic(run_dir / "summary.json", summary)
        sink.summary(with_paper_reference(summary, settings.config))  # W&B: the paper's number and the gap
        print(f"run dir: {run_dir}")
        print(
            f"test error {summary['test_err']:.2f}% after {state.iteration} iterations"
            + (f"; best val error {state.best_val_err:.2f}% at iteration {state.best_val_iter}"
               if state.best_val_err is not None else "")
        )
    sink.close()
    return summary
