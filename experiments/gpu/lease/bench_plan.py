"""The lease's bench: the bench steps that fit in LEASE_BENCH_S, each killed with its children
at the limit, and the compile mode and number of sweep processes their JSONs favour."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lease.settings import LeaseSettings

# A step up in concurrency must give at least this much more total images/s than the best
# fewer processes: more processes also slow each run, so the first results come later.
CONCURRENCY_GAIN = 1.10


@dataclass(frozen=True)
class BenchStep:
    name: str
    exp: str
    mode: str
    baseline: bool
    concurrent: int = 1


def bench_command(s: LeaseSettings, step: BenchStep, json_path: Path) -> list[str]:
    return [s.python, "-m", "resnet_repro", "bench", f"+exp={step.exp}", *s.data, *s.args, *s.bench_args,
            f"trainer.compile={step.mode}", f"bench.iters={s.bench_iters}", f"bench.warmup={s.bench_warmup}",
            f"bench.baseline={str(step.baseline).lower()}", f"bench.concurrent={step.concurrent}",
            f"bench.json={json_path}"]


def first_steps(s: LeaseSettings) -> list[BenchStep]:
    """The first bench exp in every mode (its first mode also times the naive baseline)."""
    e = s.bench_exps[0]
    return [BenchStep(f"{e}-{m}", e, m, baseline=i == 0) for i, m in enumerate(s.bench_modes)]


def later_steps(s: LeaseSettings, mode: str) -> list[BenchStep]:
    """Concurrency on the first bench exp in the mode that won so far, then the other exps in
    every mode (again with the baseline in the first mode)."""
    e = s.bench_exps[0]
    steps = [BenchStep(f"{e}-{mode}-x{n}", e, mode, baseline=False, concurrent=n) for n in s.bench_concurrent if n > 1]
    for other in s.bench_exps[1:]:
        steps += [BenchStep(f"{other}-{m}", other, m, baseline=i == 0) for i, m in enumerate(s.bench_modes)]
    return steps


def _run_until(cmd: list[str], log: Path, deadline: float) -> tuple[str, float]:
    """Run `cmd` (its own process group) until it ends or the deadline; ("ok"|"failed"|"timed out", s)."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the bench and its concurrent children
            proc.wait()
            return "timed out", time.monotonic() - t0
    return ("ok" if rc == 0 else f"failed (exit {rc})"), time.monotonic() - t0


def run_benches(s: LeaseSettings, out_dir: Path) -> dict[str, Any]:
    """Every bench step that fits in s.bench_s seconds, in order; returns the record of each
    and the choice made from the JSONs they wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + s.bench_s
    record: list[dict[str, Any]] = []
    written: list[Path] = []  # this invocation's JSONs only (an earlier start's stay out of the choice)

    def run(steps: list[BenchStep]) -> None:
        for step in steps:
            path = out_dir / f"bench_{step.name}.json"
            cmd = bench_command(s, step, path)
            entry = {"step": step.name, "command": shlex.join(cmd)}
            if deadline - time.monotonic() < 1:
                record.append({**entry, "status": "skipped (the bench's time was spent)"})
                continue
            status, secs = _run_until(cmd, out_dir / f"bench_{step.name}.log", deadline)
            record.append({**entry, "status": status, "seconds": round(secs, 1)})
            if status == "ok" and path.is_file():
                written.append(path)
            print(f"bench {step.name}: {status} in {secs:.0f} s", flush=True)

    run(first_steps(s))
    mode_so_far = choose(load_benches(written))["compile"] or s.bench_modes[0]
    run(later_steps(s, mode_so_far))
    choice = choose(load_benches(written))
    result = {"steps": record, "choice": choice, "budget_s": s.bench_s}
    (out_dir / "bench_plan.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_benches(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in paths]


def choose(benches: list[dict[str, Any]]) -> dict[str, Any]:
    """The compile mode and the number of sweep processes that the bench JSONs favour.

    Mode: among modes timed on the same networks (a mode whose compile fell back to eager does
    not count), the one with the highest geometric-mean images/s over those networks; a mode
    timed alone wins by default. Concurrency: N processes' total images/s over one process's
    (each JSON's `concurrent.vs_one_run`); a larger N must beat the best smaller one by
    CONCURRENCY_GAIN. Nothing timed: compile None (the config's own `auto`) and 1 process."""
    rates: dict[str, dict[str, float]] = {}  # mode -> exp -> best images/s
    for b in benches:
        c = b.get("configured") or {}
        if not c.get("images_per_s") or c.get("compile_fell_back"):
            continue
        per = rates.setdefault(c["compile"], {})
        per[b["exp_name"]] = max(per.get(b["exp_name"], 0.0), float(c["images_per_s"]))
    mode, reason = None, "no bench finished: the config's own compile setting"
    if rates:
        common = set.intersection(*(set(v) for v in rates.values()))
        if len(rates) > 1 and common:
            def score(m: str) -> float:
                return sum(math.log(rates[m][e]) for e in common) / len(common)
            mode = max(sorted(rates), key=score)
            reason = f"highest geometric-mean images/s over {', '.join(sorted(common))}: " + ", ".join(
                f"{m} {math.exp(score(m)):.0f}" for m in sorted(rates))
        else:
            # Not comparable on any network: the mode timed on the most networks
            mode = max(sorted(rates), key=lambda m: len(rates[m]))
            reason = f"only {mode} timed on comparable networks"
    gains = {1: 1.0}
    for b in benches:
        c = b.get("concurrent")
        if c and c.get("vs_one_run"):
            gains[int(c["processes"])] = max(gains.get(int(c["processes"]), 0.0), float(c["vs_one_run"]))
    n = 1
    for k in sorted(gains):
        if gains[k] >= CONCURRENCY_GAIN * gains[n]:
            n = k
    return {"compile": mode, "compile_reason": reason, "processes": n,
            "concurrency_gain": {str(k): v for k, v in sorted(gains.items())}}
