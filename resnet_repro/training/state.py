"""What the training loop carries between iterations (`LoopState`, saved in every checkpoint)
and the signal flag that stops it at an iteration boundary (`StopSignal`)."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch


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
    # The training precision of the current session (None in checkpoints from before it was
    # recorded), and every change of it: [first iteration, train precision, channels_last] per
    # stretch (None in checkpoints from before it was kept). `auto` follows each machine, so a
    # run started in bf16 on a CPU with native bf16 continues in fp32 on one without.
    amp: bool | None = None
    channels_last: bool | None = None
    precision_history: list[list[Any]] | None = None
    # Running sums since the last log row / warm-up check (device tensors, read at those steps).
    log_loss: torch.Tensor | float = 0.0
    log_wrong: torch.Tensor | float = 0.0
    log_n: int = 0
    warm_wrong: torch.Tensor | float = 0.0
    warm_n: int = 0

    def train_in(self, precision: str, channels_last: bool,
                 earlier: tuple[str, bool] | None = None) -> tuple[str, bool] | None:
        """Training goes on from this iteration in `precision` (bf16, tf32, fp32) and layout:
        recorded when it differs from the last stretch's, which is returned then (None when
        unchanged or new). `earlier`: what a checkpoint from before the history trained in."""
        if self.precision_history is None:
            self.precision_history = [[0, *earlier]] if earlier is not None and self.iteration > 0 else []
        last = (self.precision_history[-1][1], self.precision_history[-1][2]) if self.precision_history else None
        if last == (precision, channels_last):
            return None
        self.precision_history.append([self.iteration, precision, channels_last])
        return last

    def precision_stretches(self) -> list[dict[str, Any]]:
        """The history as summary.json holds it: from, to, train_precision, channels_last."""
        h = self.precision_history or []
        ends = [x[0] for x in h[1:]] + [self.iteration]
        return [{"from": a, "to": b, "train_precision": p, "channels_last": cl} for (a, p, cl), b in zip(h, ends)]

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
