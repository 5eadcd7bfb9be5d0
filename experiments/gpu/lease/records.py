"""The lease's run records: each run's state from its files, what `poll` shows and the one
tarball `collect` packs (no checkpoints)."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from resnet_repro.runs import state as runstate
from resnet_repro.errors import ReproError
from lease.machine import environment
from lease.settings import SWEEP_EXP, LeaseSettings
from resnet_repro.runs.rundir import CONFIG_FILE

# Run files that `collect` packs (checkpoints stay behind).
RUN_FILES = ("summary.json", "metrics.jsonl", CONFIG_FILE, runstate.FAILED_FILE, ".hydra/overrides.yaml")


def run_dirs(root: Path) -> list[Path]:
    """Every run dir under `root` (any trace of a run, as `status` finds them: a job still
    loading its data holds its `.lock`; one refused there left `failed.json`), oldest first
    (the job order)."""
    return sorted(runstate.find_run_dirs([root]), key=lambda d: (_started(d), d.name))


def _started(run: Path) -> float:
    hydra = run / ".hydra"
    return (hydra if hydra.is_dir() else run).stat().st_mtime


def run_state(run: Path) -> dict[str, Any]:
    """One run's state as `status` reads it (runstate), as a record for collected.json."""
    st = runstate.run_state(run)
    return {"run": run.name, "status": st.state, "iter": st.iteration, "max_iters": st.max_iters,
            "images_per_s": round(st.images_per_s, 1) if st.images_per_s else None, "test_err": st.test_err,
            "line": st.short()}


def format_state(st: dict[str, Any]) -> str:
    return f"{st['run']}: {st['line']}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def poll(s: LeaseSettings) -> int:
    plan_path = s.lease_dir / "plan.json"
    if not plan_path.is_file():
        raise ReproError(f"no {plan_path}: run `lease.sh start` first")
    plan = json.loads(plan_path.read_text())
    for i, p in enumerate(plan["processes"]):
        tail = Path(p["log"]).read_text().strip().splitlines()[-1:] if Path(p["log"]).is_file() else []
        print(f"sweep process {i} (pid {p['pid']}): {'running' if _alive(p['pid']) else 'ended'}"
              + (f"; last line: {tail[0][:160]}" if tail else ""))
    runs = run_dirs(s.sweep_dir) if s.sweep_dir.is_dir() else []
    print(f"{len(runs)} of {len(plan['jobs'])} runs started in {s.sweep_dir}")
    for run in runs:
        print(format_state(run_state(run)))
    return 0


def collect(s: LeaseSettings, out: Path) -> Path:
    """One tarball in `out`: each run's files, the bench JSONs and logs, the plan (the exact
    commands) and the environment at start and now. No checkpoints."""
    out.mkdir(parents=True, exist_ok=True)
    s.lease_dir.mkdir(parents=True, exist_ok=True)
    env_now = environment(s)
    runs = run_dirs(s.sweep_dir) if s.sweep_dir.is_dir() else []
    manifest = {"collected": env_now, "runs": [run_state(r) for r in runs]}
    (s.lease_dir / "collected.json").write_text(json.dumps(manifest, indent=2) + "\n")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    tar_path = out / f"lease-{stamp}.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for p in sorted(s.lease_dir.glob("*")):
            if p.is_file() and p.suffix in (".json", ".log", ".txt"):
                tar.add(p, arcname=f"lease/{p.name}")
        for run in runs:
            for name in RUN_FILES:
                if (run / name).is_file():
                    tar.add(run / name, arcname=f"runs/{SWEEP_EXP}/{run.relative_to(s.sweep_dir)}/{name}")
    for st in manifest["runs"]:
        print(format_state(st))
    print(f"wrote {tar_path} ({len(runs)} runs)")
    return tar_path
