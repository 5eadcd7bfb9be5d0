"""The lease's run records: each run's state from its files, what `poll` shows and the one
tarball `collect` packs (no checkpoints)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from resnet_repro.errors import ReproError
from resnet_repro.lease.machine import environment
from resnet_repro.lease.settings import SWEEP_EXP, LeaseSettings

# Run files that `collect` packs (checkpoints stay behind).
RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", ".hydra/overrides.yaml")


def run_dirs(root: Path) -> list[Path]:
    """Every run dir (one with a config.yaml) under `root`, oldest first (the job order)."""
    dirs = {p.parent for p in root.rglob("config.yaml") if ".hydra" not in p.parts}
    return sorted(dirs, key=lambda d: (_started(d), d.name))


def _started(run: Path) -> float:
    hydra = run / ".hydra"
    return (hydra if hydra.is_dir() else run).stat().st_mtime


def _last_row(metrics: Path) -> dict[str, Any] | None:
    if not metrics.is_file():
        return None
    last = None
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a row being written
        if "iter" in row and "images_per_s" in row:
            last = row
    return last


def run_state(run: Path) -> dict[str, Any]:
    """One run's state from its files: status, iteration of max_iters, images/s."""
    from omegaconf import OmegaConf

    max_iters = OmegaConf.load(run / "config.yaml").trainer.max_iters
    row = _last_row(run / "metrics.jsonl")
    state: dict[str, Any] = {"run": run.name, "iter": row["iter"] if row else 0, "max_iters": max_iters,
                             "images_per_s": round(row["images_per_s"], 1) if row else None, "status": "running"}
    summary = run / "summary.json"
    if summary.is_file():
        sm = json.loads(summary.read_text())
        state.update(status=sm.get("status", "complete"), iter=sm.get("iterations", state["iter"]),
                     images_per_s=sm.get("images_per_s", state["images_per_s"]), test_err=sm.get("test_err"))
    return state


def format_state(st: dict[str, Any]) -> str:
    ips = f"{st['images_per_s']:.0f} images/s" if st.get("images_per_s") else "no rate yet"
    err = f", test error {st['test_err']:.2f}%" if st.get("test_err") is not None else ""
    return f"{st['run']}: {st['status']} at iteration {st['iter']} of {st['max_iters']}, {ips}{err}"


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


def has_status_command() -> bool:
    from resnet_repro.cli import COMMANDS

    return "status" in COMMANDS


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
    if runs and has_status_command():
        r = subprocess.run([s.python, "-m", "resnet_repro", "status", *map(str, runs)], text=True,
                           capture_output=True)
        print(r.stdout, end="")
        if r.returncode == 0:
            return 0
        print(f"(`resnet_repro status` failed: {r.stderr.strip()[-200:]}; reading the files instead)")
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
