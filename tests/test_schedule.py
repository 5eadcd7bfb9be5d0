"""Learning-rate schedules: the paper's recipes at the exact iterations where they change."""

from __future__ import annotations

import io

import pytest
import torch

from resnet_repro.errors import CheckpointError, ConfigError
from resnet_repro.schedule import (
    PlateauSchedule,
    Schedule,
    StepSchedule,
    WarmupUntilError,
    build_schedule,
)

CIFAR_ITERS = [0, 1, 399, 400, 31999, 32000, 47999, 48000, 63999, 64000]


def cifar() -> StepSchedule:
    return StepSchedule(0.1, [32000, 48000])  # §4.2


def roundtrip(state: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint would."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_cifar_step_schedule_changes_lr_exactly_at_32k_and_48k() -> None:
    s = cifar()
    expected = {0: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 63999: 0.001,
                64000: 0.001}
    for it, lr in expected.items():
        assert s.lr(it) == pytest.approx(lr, rel=1e-12), it


def test_every_schedule_accepts_the_trainers_uniform_calls() -> None:
    for s in (cifar(), PlateauSchedule(), WarmupUntilError(cifar())):
        assert isinstance(s, Schedule)
    s = cifar()
    assert s.observe_train_error(10, 0.5) is False
    assert s.observe_val_error(10, 0.5) is False
    assert s.lr(10) == 0.1


def observe_scripted(s: WarmupUntilError, script: list[tuple[int, float]]) -> list[bool]:
    return [s.observe_train_error(it, err) for it, err in script]


def test_warmup_ends_at_the_iteration_after_error_drops_below_80_percent() -> None:
    s = WarmupUntilError(cifar(), warmup_lr=0.01, error_threshold=0.8)
    assert s.switch_iter is None and s.active(0)
    fired = observe_scripted(s, [(99, 0.9), (199, 0.88), (299, 0.85), (399, 0.79)])
    assert fired == [False, False, False, True]
    assert s.switch_iter == 400
    assert s.lr(0) == 0.01 and s.lr(399) == 0.01
    assert s.active(399) and not s.active(400)
    assert s.lr(400) == pytest.approx(0.1)
    # "go back to 0.1 and continue training": milestones stay on the global iteration.
    assert s.lr(31999) == pytest.approx(0.1)
    assert s.lr(32000) == pytest.approx(0.01)
    assert s.lr(48000) == pytest.approx(0.001)


def test_warmup_reports_the_switch_exactly_once() -> None:
    s = WarmupUntilError(cifar())
    fired = observe_scripted(s, [(99, 0.79), (199, 0.5), (299, 0.9), (399, 0.1)])
    assert fired == [True, False, False, False]
    assert s.switch_iter == 100  # a later high error does not restart the warm-up


def test_warmup_error_exactly_at_threshold_does_not_end_it() -> None:
    s = WarmupUntilError(cifar(), error_threshold=0.8)
    assert s.observe_train_error(99, 0.8) is False  # "below 80%" is strict
    assert s.switch_iter is None


def test_warmup_cap_ends_it_even_if_error_never_drops() -> None:
    s = WarmupUntilError(cifar(), max_iters=1000)
    # lr() is pure: the cap applies before any observation reaches it.
    assert s.lr(999) == 0.01 and s.lr(1000) == pytest.approx(0.1)
    fired = observe_scripted(s, [(it, 0.95) for it in range(99, 2000, 100)])
    assert fired.count(True) == 1 and fired[9]  # observed at 999 -> next iteration is 1000
    assert s.switch_iter == 1000
    assert s.lr(999) == 0.01 and s.lr(1000) == pytest.approx(0.1)


def test_warmup_cap_is_exact_when_observations_skip_over_it() -> None:
    s = WarmupUntilError(cifar(), max_iters=1000)
    assert s.observe_train_error(1499, 0.95) is True
    assert s.switch_iter == 1000 and s.lr(1000) == pytest.approx(0.1)
    s = WarmupUntilError(cifar(), max_iters=1000)
    assert s.observe_train_error(1499, 0.5) is True  # error dropped too, but the cap came first
    assert s.switch_iter == 1000


def test_warmup_rejects_percentages_that_would_never_cross_the_threshold() -> None:
    with pytest.raises(ValueError, match="fraction"):
        WarmupUntilError(cifar()).observe_train_error(99, 85.0)


@pytest.mark.parametrize("after_switch", [False, True])
def test_warmup_state_roundtrip_gives_identical_lr(after_switch: bool) -> None:
    s = WarmupUntilError(cifar(), max_iters=5000)
    script = [(99, 0.9), (199, 0.85)] + ([(299, 0.7)] if after_switch else [])
    observe_scripted(s, script)
    fresh = WarmupUntilError(cifar(), max_iters=5000)
    fresh.load_state_dict(roundtrip(s.state_dict()))
    assert fresh.switch_iter == s.switch_iter == (300 if after_switch else None)
    for it in CIFAR_ITERS + [4999, 5000]:
        assert fresh.lr(it) == s.lr(it), it
    # The resumed schedule keeps going the same way as the original.
    assert fresh.observe_train_error(399, 0.5) == s.observe_train_error(399, 0.5)
    assert fresh.switch_iter == s.switch_iter


def plateau(**kw: float) -> PlateauSchedule:
    return PlateauSchedule(**{"base_lr": 0.1, "patience": 2, "threshold": 0.01, **kw})


def test_plateau_drops_after_patience_plus_one_bad_evaluations_not_before() -> None:
    s = plateau()
    assert s.observe_val_error(1000, 0.50) is False  # first evaluation sets the best
    assert s.observe_val_error(2000, 0.50) is False  # bad 1
    assert s.observe_val_error(3000, 0.50) is False  # bad 2 == patience: not yet
    assert s.lr(3001) == 0.1
    assert s.observe_val_error(4000, 0.50) is True  # bad 3 > patience: drop
    assert s.drops == [4000]
    assert s.lr(4000) == 0.1 and s.lr(4001) == pytest.approx(0.01)
    # The count restarts after a drop.
    assert [s.observe_val_error(it, 0.50) for it in (5000, 6000, 7000)] == [False, False, True]
    assert s.drops == [4000, 7000]
    assert s.lr(7001) == pytest.approx(0.001)
    assert s.lr(5000) == pytest.approx(0.01)  # lr() stays piecewise over the recorded drops


def test_plateau_improvements_smaller_than_threshold_count_as_bad() -> None:
    s = plateau()
    s.observe_val_error(1000, 0.500)
    for it, err in [(2000, 0.495), (3000, 0.491), (4000, 0.4905)]:  # each < 0.01 better
        s.observe_val_error(it, err)
    assert s.drops == [4000]
    s = plateau()
    s.observe_val_error(1000, 0.50)
    for it, err in [(2000, 0.48), (3000, 0.46), (4000, 0.44)]:  # each > 0.01 better
        assert s.observe_val_error(it, err) is False
    assert s.drops == [] and s.bad == 0


def test_plateau_never_goes_below_min_lr() -> None:
    s = plateau(patience=0, min_lr=0.005)
    s.observe_val_error(0, 0.5)
    assert s.observe_val_error(1, 0.5) is True
    assert s.observe_val_error(2, 0.5) is True
    assert s.observe_val_error(3, 0.5) is False  # already at min_lr: no further drop recorded
    assert s.drops == [1, 2]
    assert s.lr(10) == pytest.approx(0.005)


def test_plateau_state_roundtrip_resumes_identically() -> None:
    s = plateau()
    for it, err in [(1000, 0.5), (2000, 0.5), (3000, 0.5), (4000, 0.5), (5000, 0.5)]:
        s.observe_val_error(it, err)
    fresh = plateau()
    fresh.load_state_dict(roundtrip(s.state_dict()))
    for it in (0, 4000, 4001, 5000, 99999):
        assert fresh.lr(it) == s.lr(it)
    for it, err in [(6000, 0.5), (7000, 0.5), (8000, 0.3)]:
        assert fresh.observe_val_error(it, err) == s.observe_val_error(it, err)
    assert fresh.state_dict() == s.state_dict()


def test_state_of_a_different_schedule_kind_is_refused() -> None:
    with pytest.raises(CheckpointError, match="warmup_until_error"):
        cifar().load_state_dict(WarmupUntilError(cifar()).state_dict())


def test_build_schedule_makes_the_paper_recipes() -> None:
    s = build_schedule("step", base_lr=0.1, milestones=[32000, 48000])
    assert isinstance(s, StepSchedule) and s.lr(48000) == pytest.approx(0.001)
    w = build_schedule(
        "step", base_lr=0.1, milestones=[32000, 48000],
        warmup={"enabled": True, "lr": 0.01, "error_threshold": 0.8, "max_iters": None},
    )
    assert isinstance(w, WarmupUntilError) and w.lr(0) == 0.01
    off = build_schedule("step", base_lr=0.1, milestones=[32000], warmup={"enabled": False})
    assert isinstance(off, StepSchedule)
    p = build_schedule("plateau", base_lr=0.1, plateau={"patience": 3})
    assert isinstance(p, PlateauSchedule) and p.patience == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda: StepSchedule(0.1, [48000, 32000]),
        lambda: StepSchedule(0.1, [32000, 32000]),
        lambda: StepSchedule(0.1, [-1]),
        lambda: StepSchedule(0.0, [32000]),
        lambda: WarmupUntilError(cifar(), warmup_lr=0.0),
        lambda: WarmupUntilError(cifar(), error_threshold=80),
        lambda: WarmupUntilError(cifar(), max_iters=0),
        lambda: PlateauSchedule(factor=1.0),
        lambda: PlateauSchedule(patience=-1),
        lambda: build_schedule("cosine", base_lr=0.1),
        lambda: build_schedule("step", base_lr=0.1, warmup={"lr": 0.01, "iters": 400}),
        lambda: build_schedule("plateau", base_lr=0.1, plateau={"patients": 3}),
        lambda: build_schedule("plateau", base_lr=0.1, milestones=[32000]),
    ],
)
def test_bad_schedule_settings_raise_config_error(call) -> None:
    with pytest.raises(ConfigError):
        call()


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="step, plateau"):
        build_schedule("cosine", base_lr=0.1)
