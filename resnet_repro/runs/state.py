"""Where a run stands, from its directory alone: `status`, the end-of-sweep lines and `report`
read it here, so they agree.

  complete  summary.json says complete and the checkpoint is at its iteration
  running   a process holds the run's lock (`.lock`, an flock; its pid is in the file)
  paused    summary.json says paused (trainer.max_time / trainer.pause_at) at the checkpoint's iteration
  killed    a checkpoint and no current summary, nobody holding the lock: re-run to continue
  failed    failed.json at the checkpoint's iteration: the last attempt ended with an error (its reason)

Reads only; never takes the lock (a `status` must not make a starting run think its dir is in
use). images/s and the time left come from the last rows of metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_repro.runs.units import duration
from resnet_repro.errors import ReproError
from resnet_repro.runs.rundir import CONFIG_FILE, LAST, PREV

FAILED_FILE = "failed.json"  # written by the train entry when an attempt fails (train._record_failure)
RUN_MARKERS = ("summary.json", "metrics.jsonl", FAILED_FILE, CONFIG_FILE, ".lock")
SKIP_DIRS = {".hydra", "checkpoints", "wandb", "__pycache__", ".git"}
RATE_ROWS = 5  # images/s: the median of the last rows' (one row may hold a compile or an evaluation)


@dataclass
class RunState:
    path: Path
    state: str  # complete | running | paused | killed | failed
    iteration: int | None = None
    max_iters: int | None = None
    test_err: float | None = None
    pid: int | None = None
    reason: str | None = None
    images_per_s: float | None = None
    seconds_left: float | None = None

    def short(self, complete: str = "complete") -> str:
        """`complete (test error 7.12%, ...)` (`done` in the end-of-sweep lines),
        `running (pid 123) at iteration 400 of 64000, ...`."""
        of = f" of {self.max_iters}" if self.max_iters else ""
        if self.state == "complete":
            err = f"test error {self.test_err:.2f}%" if isinstance(self.test_err, (int, float)) else "no test error"
            return f"{complete} ({err}, {self.iteration} iterations)"
        if self.state == "failed":
            at = f" at iteration {self.iteration}" if self.iteration is not None else ""
            return f"failed{at} ({self.reason})"
        if self.state == "running":
            text = f"running (pid {self.pid})" + (f" at iteration {self.iteration}{of}" if self.iteration is not None else "")
        elif self.state == "paused":
            text = f"paused at iteration {self.iteration}{of}"
        elif self.iteration:
            text = f"killed at iteration {self.iteration}{of} (last checkpoint)"
        else:
            text = "killed before its first checkpoint (re-running starts it over)"
        if self.images_per_s:
            text += f", {self.images_per_s:.0f} images/s"
            if self.seconds_left is not None:
                text += f", {duration(self.seconds_left)} left at that rate"
        return text


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's resolved config.yaml (plain YAML), or None when it is missing or unreadable."""
    import yaml

    try:
        c = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return c if isinstance(c, dict) else None


def summary_status(summary: dict[str, Any]) -> str:
    """summary.json's status: complete, paused (summaries from before it was recorded: complete)."""
    return str(summary.get("status", "complete"))


def not_final_weights(summary: dict[str, Any], iteration: Any, digest: Any) -> str | None:
    """Why weights at `iteration` (with `digest`) are not the run's final ones, or None when
    they are: the summary says complete at that iteration and, when both record one, the same
    weights digest. What `eval` names its records by and what the report judges."""
    final_iter = summary.get("iterations")
    if not isinstance(iteration, int):
        return "records no iteration (re-run `eval` to judge it)"
    if summary_status(summary) != "complete":
        return f"iteration {iteration}, the run is {summary_status(summary)}"
    if iteration != final_iter:
        return f"iteration {iteration}, not the final weights ({final_iter})"
    if digest and summary.get("weights_digest") and digest != summary["weights_digest"]:
        return "other weights than the run's final ones (digest differs)"
    return None


def lock_holder(run_dir: Path) -> int | None:
    """The pid holding `<run>/.lock`, or None. Looks the flock up in /proc/locks (Linux) by the
    file's inode, without taking it; elsewhere, whether the pid in the file is alive."""
    lock = run_dir / ".lock"
    try:
        st = lock.stat()
        text = lock.read_text().strip()
    except OSError:
        return None
    pid = int(text) if text.isdigit() else None
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        lines = None
    if lines is not None:
        for line in lines:
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 7209 fe:00:2147139 0 EOF"
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
                return int(parts[4]) if parts[4].isdigit() else pid
        return None
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def checkpoint_iteration(run_dir: Path) -> int | None:
    """The iteration of the newest readable checkpoint (last.pt, else prev.pt), read without
    loading its tensors (memory-mapped); None without one."""
    import torch  # only here: a run dir without checkpoints never pays for it

    for rel in (LAST, PREV):
        path = run_dir / rel
        if not path.is_file():
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return int(ckpt["meta"]["iteration"])
        except Exception:  # torn or not a checkpoint: the older one, if any
            continue
    return None


def _rate(run_dir: Path) -> tuple[float | None, int | None]:
    from resnet_repro.runs.sinks import read_jsonl

    metrics = run_dir / "metrics.jsonl"
    rows = read_jsonl(metrics) if metrics.is_file() else []
    rates = [r["images_per_s"] for r in rows[-RATE_ROWS:] if isinstance(r.get("images_per_s"), (int, float))]
    last = next((r["iter"] for r in reversed(rows) if isinstance(r.get("iter"), int)), None)
    return (statistics.median(rates) if rates else None), last


def run_state(run_dir: Path) -> RunState:
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json")
    config = read_config(run_dir) or {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    max_iters = trainer.get("max_iters") or (summary or {}).get("max_iters")
    batch = trainer.get("batch_size") or (summary or {}).get("batch_size")
    st = RunState(run_dir, "killed", max_iters=max_iters if isinstance(max_iters, int) else None)
    pid = lock_holder(run_dir)
    failed = _read_json(run_dir / FAILED_FILE)
    if pid is not None:
        st.state, st.pid = "running", pid
        rate, st.iteration = _rate(run_dir)
        st.images_per_s = rate
    else:
        ckpt = checkpoint_iteration(run_dir)
        # failed.json is the last attempt's unless a later one got further (a newer checkpoint)
        if failed is not None and failed.get("iteration") == ckpt:
            st.state, st.reason, st.iteration = "failed", str(failed.get("reason", "unknown reason")), ckpt
            return st
        status = None if summary is None else summary_status(summary)
        if status is not None and (ckpt is None or ckpt == summary.get("iterations")):
            if status == "complete":
                st.state, st.iteration, st.test_err = "complete", summary.get("iterations"), summary.get("test_err")
                return st
            if status == "paused":
                st.state = "paused"
                st.max_iters = summary.get("max_iters") or st.max_iters
                ckpt = summary.get("iterations")
        st.iteration = ckpt
        st.images_per_s = _rate(run_dir)[0]
    if st.images_per_s and st.max_iters and isinstance(batch, int) and st.iteration is not None:
        st.seconds_left = max(st.max_iters - st.iteration, 0) * batch / st.images_per_s
    return st


def _has_run_marker(d: Path, names: set[str]) -> bool:
    return bool(names & set(RUN_MARKERS)) or (d / "checkpoints").is_dir()


def find_run_dirs(paths: Sequence[str | Path], is_run: Callable[[Path, set[str]], bool] = _has_run_marker) -> list[Path]:
    """Run dirs at or under `paths`, sorted, each once (links followed to one real
    dir); a run dir's own subdirectories are not searched. `is_run(dir, file names)` says what
    counts as a run dir (by default any trace of one: `status` lists runs that only started);
    `report` passes its own."""
    found: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        root = Path(p)
        if not root.is_dir():
            raise ReproError(f"not a directory: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            if d.resolve() in seen:
                dirnames[:] = []
                continue
            seen.add(d.resolve())
            if is_run(d, set(filenames)):
                found.append(d)
                dirnames[:] = []
            else:
                dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS)
    return sorted(found)


def cli_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m resnet_repro status",
        description="Where each run stands: complete (test error), running (the lock's pid), paused or killed at "
        "iteration N (its last checkpoint), or failed (the reason); unfinished runs with their images/s and "
        "the time left at that rate. Reads only.",
    )
    parser.add_argument("dirs", nargs="+", help="run dirs or dirs holding runs (a sweep dir, runs/)")
    args = parser.parse_args(argv)
    dirs = find_run_dirs(args.dirs)
    if not dirs:
        raise ReproError(f"no run dirs under {', '.join(args.dirs)}")
    counts: dict[str, int] = {}
    for d in dirs:
        st = run_state(d)
        counts[st.state] = counts.get(st.state, 0) + 1
        print(f"{display_path(d)}: {st.short()}")
    print(f"{len(dirs)} run(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0


def display_path(p: str | Path) -> str:
    """Relative to the working directory when inside it, else as given."""
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return str(p)
    return str(p) if rel.startswith("..") else rel
