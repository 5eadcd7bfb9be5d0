"""Killed, preempted, corrupted or diverging runs lose nothing and say what happened."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, compose_config
from resnet_repro.runs.checkpoint import load_checkpoint
from resnet_repro.errors import CheckpointError, ReproError
from resnet_repro.runs.sinks import read_jsonl
from resnet_repro.training.loop import Diverged
from resnet_repro.train import train_from_config

# Long enough to be killed mid-way: 48 iterations, a checkpoint every 4.
LONG = [*TINY, "trainer.max_iters=48", "trainer.eval_every=12", "trainer.ckpt_every=4", "trainer.log_every=2"]

# Imported by every subprocess of the kill test (PYTHONPATH): announces each checkpoint write
# on stderr and lingers half-way through it, so a SIGKILL can land inside the write.
SLOW_SAVE = """
import sys, time, torch
_save = torch.save
def slow_save(obj, f, *a, **k):
    sys.stderr.write("CKPT-WRITE\\n"); sys.stderr.flush()
    _save(obj, f, *a, **k)
    f.flush()
    time.sleep(0.3)
torch.save = slow_save
"""

# Imported by a subprocess that is to be stopped at a known iteration: after its first
# checkpoint (iteration 4 of LONG) it announces it and waits for the test's SIGTERM, so the
# signal lands at that iteration on a machine of any speed. Its handler is in place before the
# announcement (no race); Python runs signal handlers in the main thread, whichever thread the
# signal reaches; the run's own handler then sees the signal as usual.
WAIT_AT_FIRST_CHECKPOINT = """
import signal, sys, time, torch
_save, _waited = torch.save, []
def save_then_wait(obj, f, *a, **k):
    _save(obj, f, *a, **k)
    if not _waited:
        _waited.append(True)
        run_handler, seen = signal.getsignal(signal.SIGTERM), []
        def note(signum, frame):
            seen.append(signum)
            run_handler(signum, frame)
        signal.signal(signal.SIGTERM, note)
        sys.stderr.write("FIRST-CKPT\\n"); sys.stderr.flush()
        while not seen:
            time.sleep(0.01)
        signal.signal(signal.SIGTERM, run_handler)
torch.save = save_then_wait
"""


def train(run_dir: Path, overrides: list[str]) -> dict:
    return train_from_config(compose_config(overrides), run_dir, overrides)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(run_dir: Path, extra_env: dict[str, str] | None = None, args: list[str] = LONG) -> subprocess.Popen:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "resnet_repro", "train", *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def hook(tmp_path: Path, code: str) -> dict[str, str]:
    """The environment of a subprocess that runs `code` at start-up (as its sitecustomize)."""
    d = tmp_path / "hook"
    d.mkdir()
    (d / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": str(d)}


def wait_for(proc: subprocess.Popen, marker: str, count: int = 1) -> None:
    """Read the process's stderr until `marker` has appeared `count` times (a hang is ended by
    pytest-timeout, not a deadline here)."""
    seen = 0
    while True:
        line = proc.stderr.readline()
        if not line:
            break
        if marker in line:
            seen += 1
            if seen >= count:
                return
    raise AssertionError(f"{marker!r} seen {seen} times before the process ended")


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    assert strip(read_jsonl(a / "metrics.jsonl")) == strip(read_jsonl(b / "metrics.jsonl"))
    wa = load_checkpoint(a / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(b / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("reference")
    train(run, LONG)
    return run


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path: Path, reference: Path) -> None:
    env = hook(tmp_path, SLOW_SAVE)
    run = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    # Inside the 1st, 3rd, ... checkpoint write, and at random moments between writes.
    for attempt in range(4):
        proc = start(run, env)
        if attempt % 2 == 0:
            wait_for(proc, "CKPT-WRITE", count=1 + attempt // 2)
            time.sleep(0.1)  # half-way through the slow write
        else:
            wait_for(proc, "CKPT-WRITE", count=1)
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    assert kills >= 3
    proc = start(run, env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert_same_run(run, reference)
    assert not list((run / "checkpoints").glob("*.tmp-*"))


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path: Path, reference: Path) -> None:
    run = tmp_path / "run"
    proc = start(run, hook(tmp_path, WAIT_AT_FIRST_CHECKPOINT))
    wait_for(proc, "FIRST-CKPT")  # at iteration 4, waiting for the signal
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at iteration" in err and f"resume={run}" in err
    assert "Traceback" not in err
    stopped_at = int(err.split("stopped by SIGTERM at iteration ")[1].split(";")[0])
    assert load_checkpoint(run / "checkpoints" / "last.pt")["meta"]["iteration"] == stopped_at == 4
    r = subprocess.run([sys.executable, "-m", "resnet_repro", "train", f"resume={run}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same_run(run, reference)


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, reference: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    over = [*LONG, "trainer.max_iters=24"]
    train(run, over)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # torn
    summary = train(run, LONG)  # prev.pt is at 20: trains 21..48 again
    assert re.search(r"^note: .*; resuming from .*prev.pt instead$", capsys.readouterr().err, re.M)
    assert summary["iterations"] == 48
    assert_same_run(run, reference)


def test_after_falling_back_the_good_checkpoint_survives_the_next_write(tmp_path: Path, reference: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """The first checkpoint after a fall-back to prev.pt must not rotate the torn last.pt onto
    prev.pt: a crash before the second write would leave no readable checkpoint."""
    run = tmp_path / "run"
    train(run, [*LONG, "trainer.max_iters=24"])  # checkpoints at 20 (prev.pt) and 24 (last.pt)
    ckpts = run / "checkpoints"
    torn = (ckpts / "last.pt").read_bytes()[: (ckpts / "last.pt").stat().st_size // 2]
    (ckpts / "last.pt").write_bytes(torn)
    summary = train(run, [*LONG, "trainer.pause_at=24"])  # from 20: one checkpoint, at 24
    assert "; resuming from " in capsys.readouterr().err
    assert summary["status"] == "paused" and summary["iterations"] == 24
    assert load_checkpoint(ckpts / "prev.pt")["meta"]["iteration"] == 20  # still readable
    assert load_checkpoint(ckpts / "last.pt")["meta"]["iteration"] == 24
    kept = [p for p in ckpts.iterdir() if p.name.startswith("last.pt.unreadable-")]
    assert len(kept) == 1 and kept[0].read_bytes() == torn  # set aside, not deleted
    train(run, LONG)
    assert_same_run(run, reference)


def test_a_torn_last_checkpoint_that_cannot_be_moved_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    import resnet_repro.runs.rundir as rundir

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"torn")

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(rundir.os, "replace", refuse)
    with pytest.raises(CheckpointError, match=r"could not set the unreadable .*last.pt aside: Permission denied"):
        rundir.set_aside_unreadable_last(tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == b"torn"


def test_no_readable_checkpoint_stops_and_touches_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(run, [*LONG, "trainer.max_iters=8"])
    ckpts = run / "checkpoints"
    for name in ("last.pt", "prev.pt"):
        (ckpts / name).write_bytes(b"garbage")
    before = {p.name: sha(p) for p in ckpts.iterdir()}
    rows = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(CheckpointError, match="no readable checkpoint .* not training from a broken state"):
        train(run, [*LONG, "trainer.max_iters=8"])
    assert {p.name: sha(p) for p in ckpts.iterdir()} == before
    assert (run / "metrics.jsonl").read_bytes() == rows


def nan_loss_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The training loss of the `step`-th training step (1-based) becomes nan."""
    import resnet_repro.training.step as engine

    real, calls = engine.F.cross_entropy, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == step else loss

    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan_loss_at_step(monkeypatch, 7)
    with pytest.raises(Diverged, match="nan/inf at iteration 7; stopped, the last good checkpoint is"):
        train(tmp_path, LONG)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["meta"]["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_a_run_that_fails_after_training_records_why_and_keeps_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnet_repro.cli import main
    from resnet_repro.runs.state import run_state

    nan_loss_at_step(monkeypatch, 7)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(["train", *LONG, f"hydra.run.dir={run}"])
    assert stop.value.code == 2
    assert (run / "metrics.jsonl").is_file() and (run / "checkpoints" / "last.pt").is_file()  # nothing removed
    st = run_state(run)
    assert (st.state, st.iteration) == ("failed", 4) and "nan/inf at iteration 7" in st.short()


def test_skipped_steps_allowance_skips_nan_steps_then_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import resnet_repro.training.step as engine

    real, calls = engine.F.cross_entropy, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] in (3, 5) else loss

    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)
    summary = train(tmp_path / "ok", [*LONG, "trainer.max_iters=8", "trainer.max_skipped_steps=2"])
    assert summary["iterations"] == 8
    ckpt = load_checkpoint(tmp_path / "ok" / "checkpoints" / "last.pt")
    assert ckpt["loop"]["skipped"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    calls["n"] = 0
    with pytest.raises(Diverged, match="at iteration 5"):
        train(tmp_path / "stop", [*LONG, "trainer.max_iters=8", "trainer.max_skipped_steps=1"])


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import resnet_repro.runs.checkpoint as checkpoint

    real, calls = checkpoint.torch.save, {"n": 0}

    def fill_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", fill_disk)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*No space left on device"):
        train(tmp_path, LONG)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["meta"]["iteration"] == 4
    assert not list((tmp_path / "checkpoints").glob("*.tmp-*"))


def test_an_unwritable_metrics_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_repro.runs.sinks import JsonlSink

    def refuse(self, row):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(JsonlSink, "log", refuse)
    with pytest.raises(ReproError, match="could not write metrics in .*Permission denied"):
        train(tmp_path, LONG)


@pytest.mark.slow
def test_a_second_process_on_a_run_dir_in_use_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start(run, hook(tmp_path, WAIT_AT_FIRST_CHECKPOINT), args=[*LONG, "trainer.max_iters=100000"])
    try:
        wait_for(first, "FIRST-CKPT")  # training, holding the run dir, waiting
        second = subprocess.run([sys.executable, "-m", "resnet_repro", "train", *LONG, f"hydra.run.dir={run}"],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"run dir {run} is in use by process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    # The lock died with its holder: the directory is usable again.
    assert train(run, [*LONG, "trainer.max_iters=4"])["iterations"] >= 4


def test_a_crafted_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Evil()}))
    r = subprocess.run([sys.executable, "-m", "resnet_repro", "eval", f"ckpt={evil}"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "evil.pt" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()
