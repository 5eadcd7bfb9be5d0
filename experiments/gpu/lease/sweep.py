"""The lease's sweep: the (exp, seed) jobs of +exp=cifar_paper_runs in order, their shares
over N processes, each share's `train` multirun command, and the detached launch."""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import subprocess
import time
from typing import Any

from resnet_repro.errors import ReproError
from lease.machine import _now
from lease.settings import SWEEP_EXP, LeaseSettings, _csv
from resnet_repro.config.paths import CONF_DIR

# Below this many seconds of training time, the sweep is not started.
MIN_TRAIN_S = 60


def sweep_params(exp: str = SWEEP_EXP) -> dict[str, list[str]]:
    """The swept keys of an exp file, in the file's order, each with its values in order."""
    from omegaconf import OmegaConf

    params = OmegaConf.load(CONF_DIR / "exp" / f"{exp}.yaml").hydra.sweeper.params
    return {str(k): _csv(str(v)) for k, v in params.items()}


def jobs(exps: list[str] | None = None, seeds: list[str] | None = None) -> list[tuple[str, int]]:
    """The sweep's (exp, seed) jobs in the order it runs them: every network with the first
    seed, in priority order, then the next seed. `exps`/`seeds` pick a subset (order kept)."""
    p = sweep_params()
    all_exps, all_seeds = p["exp"], p["seed"]
    for name, given, valid in (("exp", exps, all_exps), ("seed", seeds, all_seeds)):
        bad = [v for v in given or [] if v not in valid]
        if bad:
            raise ReproError(f"LEASE_{name.upper()}S: {', '.join(bad)} not in {SWEEP_EXP}'s {name} list {','.join(valid)}")
    es = [e for e in all_exps if exps is None or e in exps]
    ss = [s for s in all_seeds if seeds is None or s in seeds]
    return [(e, int(s)) for s in ss for e in es]


def shares(exps: list[str], n: int) -> list[list[str]]:
    """`n` disjoint shares of the networks, dealt in priority order (the first n networks start
    at once). Each share runs all its seeds; fewer shares when there are fewer networks."""
    n = max(1, min(n, len(exps)))
    return [exps[i::n] for i in range(n)]


def sweep_commands(s: LeaseSettings, n: int, compile_mode: str | None, deadline: int | None) -> list[list[str]]:
    """One `train` multirun per share. `-m` and the explicit seed and exp lists make a share of
    one network a sweep too; seed before exp keeps every share seed-major (Hydra's product
    varies the first key slowest). The sweep dir is named here, so every share and a re-run of
    the same command land in the same place. `deadline` (unix time): every job pauses by then
    (trainer.max_time counts from each run's start, so it is resolved as each job starts)."""
    all_jobs = jobs(s.exps, s.seeds)
    exps = list(dict.fromkeys(e for e, _ in all_jobs))
    seeds = list(dict.fromkeys(str(sd) for _, sd in all_jobs))
    extra = [f"trainer.compile={compile_mode}"] if compile_mode else []
    if deadline is not None:
        extra.append(f"trainer.max_time=${{until:{deadline}}}")
    return [[s.python, "-m", "resnet_repro", "train", "-m", f"+exp={SWEEP_EXP}", f"seed={','.join(seeds)}",
             f"exp={','.join(share)}", *s.data, *s.args, *extra, *s.sweep_args, f"hydra.sweep.dir={s.sweep_dir}"]
            for share in shares(exps, n)]


def launch(s: LeaseSettings, choice: dict[str, Any], since: float) -> dict[str, Any]:
    """Start the sweep processes detached (setsid nohup), record what was started, return.
    `since`: the unix time `start` began, when LEASE_BUDGET_S seconds were left."""
    deadline = None if s.budget_s is None else int(since + s.budget_s - s.margin_s)
    if deadline is not None and deadline - time.time() < MIN_TRAIN_S:
        raise ReproError(f"only {deadline - time.time():.0f} s of training would be left before the lease ends "
                         f"(LEASE_BUDGET_S={s.budget_s:g}, {time.time() - since:.0f} s spent, "
                         f"LEASE_MARGIN_S={s.margin_s:g}): not starting the sweep")
    cmds = sweep_commands(s, choice["processes"], choice["compile"], deadline)
    s.runs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, cmd in enumerate(cmds):
        log = s.lease_dir / f"sweep-{i}.log"
        with open(log, "a") as f:  # a re-run of start appends: an earlier attempt's log stays
            # Not a process-group leader here, so setsid(1) execs without forking: p.pid is the run's
            p = subprocess.Popen(["setsid", "nohup", *cmd], stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        procs.append({"pid": p.pid, "log": str(log), "command": shlex.join(cmd)})
        print(f"started sweep process {i} (pid {p.pid}): {shlex.join(cmd)}", flush=True)
    plan = {"choice": choice, "pause_by": None if deadline is None else _iso(deadline),
            "max_time_s_at_launch": None if deadline is None else int(deadline - time.time()), "sweep_dir": str(s.sweep_dir),
            "jobs": [f"{e} seed{sd}" for e, sd in jobs(s.exps, s.seeds)], "processes": procs,
            "started": _now()}
    (s.lease_dir / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")
