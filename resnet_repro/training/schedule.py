"""Iteration-indexed learning-rate schedules.

Every schedule answers `lr(it)` for the global SGD step `it` (0-based: iteration `it` is the
`it`-th update). The paper counts iterations, not epochs (§4.2: "divided by 10 at 32k and 48k
iterations"), so nothing here knows about epochs or data-set sizes.

A schedule's `lr` is a pure function of its constructor arguments and its state; the state
(what it has learned from observed errors) is plain python values, so it round-trips through
`torch.load(weights_only=True)` and a resumed run gets exactly the same learning rates.
The trainer calls `observe_train_error` / `observe_val_error` on every schedule; schedules that
do not react to errors ignore them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol, runtime_checkable

from resnet_repro.config.settings import ScheduleSettings
from resnet_repro.errors import CheckpointError, ConfigError

SCHEDULE_KINDS = ("step", "plateau")


@runtime_checkable
class Schedule(Protocol):
    def lr(self, it: int) -> float: ...

    def observe_train_error(self, it: int, err: float) -> bool: ...

    def observe_val_error(self, it: int, err: float) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def _check_kind(state: Mapping[str, Any], kind: str) -> None:
    # A resumed run must rebuild the same kind of schedule, or its state means nothing.
    saved = state.get("kind")
    if saved != kind:
        raise CheckpointError(
            f"checkpoint holds schedule state for {saved!r} but this run builds {kind!r}"
        )


def _check_error(err: float, what: str) -> None:
    # Errors are fractions: a percentage (e.g. 85.0) would silently never cross 0.8.
    if not 0.0 <= err <= 1.0:
        raise ValueError(f"{what} must be a fraction in [0, 1], got {err!r}")


class StepSchedule:
    """lr = base_lr * gamma ** (number of milestones <= it).

    CIFAR-10 (§4.2): StepSchedule(0.1, [32000, 48000]) and stop at 64k iterations.
    """

    kind = "step"

    def __init__(self, base_lr: float, milestones: Sequence[int] = (), gamma: float = 0.1) -> None:
        if not base_lr > 0:
            raise ConfigError(f"schedule.base_lr must be > 0, got {base_lr}")
        if not 0 < gamma <= 1:  # a milestone divides the lr (the paper: by 10); above 1 it would grow
            raise ConfigError(f"schedule.gamma must be in (0, 1] (the paper: 0.1), got {gamma}")
        ms = [int(m) for m in milestones]
        if any(m < 0 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ConfigError(
                f"schedule milestones must be non-negative and strictly increasing, got {ms}"
            )
        self.base_lr = float(base_lr)
        self.milestones = ms
        self.gamma = float(gamma)

    def lr(self, it: int) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, it)

    def observe_train_error(self, it: int, err: float) -> bool:
        return False

    def observe_val_error(self, it: int, err: float) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        # Stateless: milestones come from the config, so there is nothing to restore.
        return {"kind": self.kind}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_kind(state, self.kind)


class PlateauSchedule:
    """Divide the LR by 10 when the validation error plateaus (ImageNet, §3.4).

    Like torch's `ReduceLROnPlateau(mode="min", threshold_mode="abs", cooldown=0)`, but on a
    SMOOTHED error, indexed by iteration and deterministic to resume. After each evaluation the
    trainer calls `observe_val_error(it, err)`; the schedule keeps the last `window` errors and
    judges their mean `m` (nothing is judged until `window` errors are in):

    - if `m < best - threshold`, the error improved: `best = m`, `bad = 0`;
    - otherwise `bad += 1`; when `bad > patience` (i.e. patience + 1 evaluations in a row
      without improvement), the LR is multiplied by `factor` (never below `min_lr`), `bad`
      resets to 0, and the drop is recorded at `it`. The new LR applies from iteration `it + 1`.

    Why smoothed: one evaluation on a 10k holdout has a standard error of ~0.46 points, far
    more than a slowly improving error gains between evaluations, so a raw-error rule drops on
    noise (tests/test_schedule.py shows it). `window=1` is the raw rule, exactly torch's.

    `lr(it)` is piecewise constant over the recorded drops, so it is a pure function of the
    state (`best`, `bad`, `recent`, `drops`), which is all `state_dict` holds.
    """

    kind = "plateau"

    def __init__(
        self,
        base_lr: float = 0.1,
        factor: float = 0.1,
        patience: int = 5,
        threshold: float = 1e-3,
        min_lr: float = 0.0,
        window: int = 1,
    ) -> None:
        if not base_lr > 0:
            raise ConfigError(f"schedule.base_lr must be > 0, got {base_lr}")
        if not 0 < factor < 1:
            raise ConfigError(f"plateau factor must be in (0, 1), got {factor}")
        if patience < 0:
            raise ConfigError(f"plateau patience must be >= 0 evaluations, got {patience}")
        if threshold < 0:
            raise ConfigError(f"plateau threshold must be >= 0, got {threshold}")
        if not 0 <= min_lr <= base_lr:
            raise ConfigError(f"plateau min_lr must be in [0, base_lr={base_lr}], got {min_lr}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"plateau window must be a positive number of evaluations, got {window!r}")
        self.base_lr = float(base_lr)
        self.factor = float(factor)
        self.patience = int(patience)
        self.threshold = float(threshold)
        self.min_lr = float(min_lr)
        self.window = window
        self.best: float | None = None  # best smoothed error so far
        self.bad = 0
        self.recent: list[float] = []  # the last `window` errors
        self.drops: list[int] = []

    def _lr_after(self, n_drops: int) -> float:
        return max(self.base_lr * self.factor**n_drops, self.min_lr)

    def lr(self, it: int) -> float:
        # A drop recorded at iteration d applies from d + 1.
        return self._lr_after(bisect.bisect_left(self.drops, it))

    def observe_train_error(self, it: int, err: float) -> bool:
        return False

    def observe_val_error(self, it: int, err: float) -> bool:
        """Record one evaluation; returns True when this evaluation lowers the LR."""
        _check_error(err, "validation error")
        if self.drops and it < self.drops[-1]:
            raise ValueError(f"evaluation at iteration {it} precedes the last drop {self.drops[-1]}")
        self.recent = [*self.recent, float(err)][-self.window :]
        if len(self.recent) < self.window:
            return False  # a mean of fewer errors is noisier than the threshold allows for
        mean = sum(self.recent) / self.window
        if self.best is None or mean < self.best - self.threshold:
            self.best, self.bad = mean, 0
            return False
        self.bad += 1
        if self.bad <= self.patience:
            return False
        self.bad = 0
        # Like torch, no drop is recorded once the LR sits at min_lr.
        if self._lr_after(len(self.drops) + 1) >= self._lr_after(len(self.drops)):
            return False
        self.drops.append(int(it))
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "best": self.best, "bad": self.bad, "recent": list(self.recent),
            "drops": list(self.drops),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_kind(state, self.kind)
        self.drops = [int(d) for d in state["drops"]]  # the LR so far is always restored exactly
        if "recent" not in state and self.window > 1:
            # A checkpoint from before smoothing: its `best` is a raw error, lower than a mean of
            # errors by the noise, so comparing with it would drop early. Restart the watch.
            self.best, self.bad, self.recent = None, 0, []
            return
        best = state["best"]
        self.best = None if best is None else float(best)
        self.bad = int(state["bad"])
        self.recent = [float(e) for e in state.get("recent", [])][-self.window :]


class WarmupUntilError:
    """Hold a small LR until the training error drops below a threshold, then hand over.

    ResNet-110/1202 (§4.2): "we use 0.01 to warm up the training until the training error is
    below 80% (about 400 iterations), and then go back to 0.1 and continue training". The main
    schedule stays indexed by the global iteration, so the 32k/48k milestones do not move.

    The trainer calls `observe_train_error(it, err)` with the training error (a fraction) over
    the iterations since its last call. When `err < error_threshold` the warm-up ends at
    iteration `it + 1`. `max_iters` caps the warm-up: from iteration `max_iters` on the main
    schedule applies whether or not the error ever dropped, and whether or not `observe` was
    called at that exact iteration (the effective switch is min(recorded switch, max_iters)).
    """

    kind = "warmup_until_error"

    def __init__(
        self,
        main: Schedule,
        warmup_lr: float = 0.01,
        error_threshold: float = 0.8,
        max_iters: int | None = None,
    ) -> None:
        if not warmup_lr > 0:
            raise ConfigError(f"warm-up lr must be > 0, got {warmup_lr}")
        if not 0 < error_threshold <= 1:
            raise ConfigError(
                f"warm-up error_threshold must be a fraction in (0, 1], got {error_threshold}"
            )
        if max_iters is not None and max_iters <= 0:
            raise ConfigError(f"warm-up max_iters must be > 0 or null, got {max_iters}")
        self.main = main
        self.warmup_lr = float(warmup_lr)
        self.error_threshold = float(error_threshold)
        self.max_iters = None if max_iters is None else int(max_iters)
        self._switch: int | None = None  # iteration from which the error-triggered switch applies

    def _effective_switch(self) -> float:
        candidates = [s for s in (self._switch, self.max_iters) if s is not None]
        return min(candidates) if candidates else math.inf

    @property
    def switch_iter(self) -> int | None:
        """First iteration on the main schedule; None while the warm-up has not ended."""
        return self._switch

    def active(self, it: int) -> bool:
        return it < self._effective_switch()

    def ended_by(self, it: int) -> int | None:
        """The switch iteration if the warm-up has ended by iteration `it` (by the error
        threshold or by the cap), else None."""
        switch = self._effective_switch()
        return int(switch) if switch <= it else None

    def lr(self, it: int) -> float:
        return self.warmup_lr if self.active(it) else self.main.lr(it)

    def observe_train_error(self, it: int, err: float) -> bool:
        """Returns True exactly once: on the call that ends the warm-up."""
        _check_error(err, "training error")
        self.main.observe_train_error(it, err)
        if self._switch is not None:
            return False
        at = it + 1 if err < self.error_threshold else None
        if self.max_iters is not None and it + 1 >= self.max_iters:
            at = self.max_iters if at is None else min(at, self.max_iters)
        if at is None:
            return False
        self._switch = at
        return True

    def observe_val_error(self, it: int, err: float) -> bool:
        return self.main.observe_val_error(it, err)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "switch_iter": self._switch, "main": self.main.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_kind(state, self.kind)
        switch = state["switch_iter"]
        self._switch = None if switch is None else int(switch)
        self.main.load_state_dict(state["main"])


_WARMUP_KEYS = {"enabled", "lr", "error_threshold", "max_iters"}
_PLATEAU_KEYS = {"factor", "patience", "threshold", "min_lr", "window"}


def _unknown_keys(d: Mapping[str, Any], allowed: set[str], what: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ConfigError(f"unknown {what} setting(s) {extra}; valid: {sorted(allowed)}")


def build_schedule(
    kind: str,
    *,
    base_lr: float,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup: Mapping[str, Any] | None = None,
    plateau: Mapping[str, Any] | None = None,
) -> Schedule:
    """Build a schedule from plain settings; `warmup` (when enabled) wraps the result."""
    schedule: Schedule
    if kind == "step":
        if plateau:
            raise ConfigError("plateau settings are only used by schedule kind 'plateau'")
        schedule = StepSchedule(base_lr, milestones, gamma)
    elif kind == "plateau":
        if milestones:
            raise ConfigError("milestones are only used by schedule kind 'step'")
        p = dict(plateau or {})
        _unknown_keys(p, _PLATEAU_KEYS, "plateau")
        schedule = PlateauSchedule(base_lr, **p)
    else:
        raise ConfigError(f"unknown schedule kind {kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")

    if warmup is not None:
        w = dict(warmup)
        _unknown_keys(w, _WARMUP_KEYS, "warm-up")
        if w.pop("enabled", True):  # the constructor's defaults for what `w` leaves out
            schedule = WarmupUntilError(schedule, **{("warmup_lr" if k == "lr" else k): v for k, v in w.items()})
    return schedule


def schedule_from(s: ScheduleSettings) -> Schedule:
    """The schedule `schedule.*` describes (the warm-up's check_every paces the loop, not the LR)."""
    warmup = None if s.warmup is None else {k: v for k, v in asdict(s.warmup).items() if k != "check_every"}
    return build_schedule(s.kind, base_lr=s.base_lr, milestones=s.milestones, gamma=s.gamma, warmup=warmup,
                          plateau=None if s.plateau is None else asdict(s.plateau))
