"""The logic of experiments/gpu/lease.sh, the plan for a short GPU lease (issue 22): which jobs,
in which order and in how many sweep processes; which benches to run in the time allowed and
which compile mode and concurrency they favour; what `poll` shows and what `collect` packs.

`python -m resnet_repro.gpu_plan <verb>` with verbs jobs, env, data, bench, launch, poll and
collect. The lease script sets the environment (LEASE_* variables, read by
`LeaseSettings.from_env`; they are listed in experiments/gpu/README.md) and calls the verbs. The
runs and benches are `python -m resnet_repro ...` subprocesses, as a user would type them, so
this module reads no composed config (the job list comes from the exp file itself) and imports
torch only to decode the data (`data`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_repro.errors import ReproError
from resnet_repro.paths import CONF_DIR

SWEEP_EXP = "cifar_paper_runs"
# Run files that `collect` packs (checkpoints stay behind).
RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", ".hydra/overrides.yaml")
# A step up in concurrency must give at least this much more total images/s than the best
# fewer processes: more processes also slow each run, so the first results come later.
CONCURRENCY_GAIN = 1.10
# Below this many seconds of training time, the sweep is not started.
MIN_TRAIN_S = 60


def _words(value: str) -> list[str]:
    return shlex.split(value)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass(frozen=True)
class LeaseSettings:
    """Everything the lease can be told, from LEASE_* variables (defaults: the real lease)."""

    python: str = "python3"
    lease_dir: Path = Path("/tmp/lease")  # bench JSONs, logs, plan.json, pids
    runs: Path = Path("/tmp/runs")  # the sweep dir lands in here
    data: list[str] = field(default_factory=lambda: ["data=cifar10_folder",
                                                     "data.root=.gpu/cifar10-jpeg.tar.gz"])
    args: list[str] = field(default_factory=lambda: ["logger=none", "trainer.progress=false"])
    sweep_args: list[str] = field(default_factory=list)  # the sweep only (the rehearsal: trainer.max_iters=2)
    bench_args: list[str] = field(default_factory=list)  # the benches only
    exps: list[str] | None = None  # a subset of the sweep's networks (default: all, in order)
    seeds: list[str] | None = None  # a subset of its seeds
    bench_s: float = 90.0  # the whole bench, at most
    bench_iters: int = 30
    bench_warmup: int = 5
    bench_modes: list[str] = field(default_factory=lambda: ["default", "reduce-overhead"])
    bench_exps: list[str] = field(default_factory=lambda: ["cifar_resnet20", "cifar_resnet110"])
    bench_concurrent: list[int] = field(default_factory=lambda: [4, 2])
    budget_s: float | None = None  # device seconds left when `start` began (None: no time limit)
    margin_s: float = 150.0  # runs pause this long before the budget ends (the last poll and collect)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LeaseSettings:
        e = os.environ if env is None else env
        d = cls()

        def get(name: str) -> str | None:
            v = e.get(f"LEASE_{name}")
            return v if v is not None and v.strip() != "" else None

        try:
            return cls(
                python=get("PYTHON") or d.python,
                lease_dir=Path(get("DIR") or d.lease_dir),
                runs=Path(get("RUNS") or d.runs),
                data=_words(get("DATA")) if get("DATA") else d.data,
                args=_words(e["LEASE_ARGS"]) if "LEASE_ARGS" in e else d.args,
                sweep_args=_words(get("SWEEP_ARGS") or ""),
                bench_args=_words(get("BENCH_ARGS") or ""),
                exps=_csv(get("EXPS")) if get("EXPS") else None,
                seeds=_csv(get("SEEDS")) if get("SEEDS") else None,
                bench_s=float(get("BENCH_S") or d.bench_s),
                bench_iters=int(get("BENCH_ITERS") or d.bench_iters),
                bench_warmup=int(get("BENCH_WARMUP") or d.bench_warmup),
                bench_modes=_csv(get("BENCH_MODES")) if get("BENCH_MODES") else d.bench_modes,
                bench_exps=_csv(get("BENCH_EXPS")) if get("BENCH_EXPS") else d.bench_exps,
                bench_concurrent=[int(n) for n in _csv(get("BENCH_CONCURRENT"))] if get("BENCH_CONCURRENT")
                else ([] if "LEASE_BENCH_CONCURRENT" in e else d.bench_concurrent),
                budget_s=float(get("BUDGET_S")) if get("BUDGET_S") else None,
                margin_s=float(get("MARGIN_S") or d.margin_s),
            )
        except ValueError as err:
            raise ReproError(f"a LEASE_* variable is not a number: {err}") from None

    @property
    def sweep_dir(self) -> Path:
        return self.runs / SWEEP_EXP


# -- the job list -----------------------------------------------------------------------------


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




def warm_data(s: LeaseSettings) -> None:
    """Decode an image-folder data set into its cache once, before the bench (which would
    otherwise spend its first seconds on it) and the sweep processes (which would all decode it
    at once). Other data sources need nothing."""
    opts = dict(a.split("=", 1) for a in s.data if "=" in a)
    if opts.get("data") != "cifar10_folder" or not opts.get("data.root"):
        return
    from resnet_repro.data.sources import load_image_folder

    t0 = time.monotonic()
    load_image_folder(opts["data.root"], cache_dir=opts.get("data.cache_dir"))
    print(f"data ready in {time.monotonic() - t0:.0f} s", flush=True)


# -- the bench --------------------------------------------------------------------------------


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


# -- launch, poll, collect --------------------------------------------------------------------


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


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


def environment(s: LeaseSettings) -> dict[str, Any]:
    """What the numbers were measured on: the GPU line, torch version, date."""
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"({shlex.join(cmd)}: {e})"

    return {
        "date": _now(),
        "nvidia_smi_L": out(["nvidia-smi", "-L"]) if shutil.which("nvidia-smi") else "(no nvidia-smi)",
        "torch": out([s.python, "-c", "import torch; print(torch.__version__, torch.version.cuda)"]),
        "python": out([s.python, "-c", "import platform; print(platform.python_version())"]),
        "git_commit": os.environ.get("LEASE_COMMIT") or out(["git", "rev-parse", "HEAD"]),
        "cpu_count": os.cpu_count(),
        "lease_settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("LEASE_")},
    }


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


# -- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_repro.gpu_plan",
                                     description="The steps of experiments/gpu/lease.sh (settings: LEASE_* variables).")
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("jobs", help="the sweep's jobs, in order")
    sub.add_parser("env", help="write the environment record into LEASE_DIR/env_start.json")
    sub.add_parser("data", help="decode the image-folder data into its cache once")
    sub.add_parser("bench", help="the benches that fit in LEASE_BENCH_S, then the choice")
    p = sub.add_parser("launch", help="start the sweep detached with the bench's choice")
    p.add_argument("--since", type=float, required=True, help="`date +%%s` when start began")
    sub.add_parser("poll", help="each run's iteration and images/s")
    p = sub.add_parser("collect", help="one tarball of the records into OUT")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        s = LeaseSettings.from_env()
        if args.verb == "jobs":
            for e, sd in jobs(s.exps, s.seeds):
                print(f"{e} seed={sd}")
        elif args.verb == "env":
            s.lease_dir.mkdir(parents=True, exist_ok=True)
            env = environment(s)
            (s.lease_dir / "env_start.json").write_text(json.dumps(env, indent=2) + "\n")
            print(f"{env['nvidia_smi_L']}\ntorch {env['torch']}, {env['date']}")
        elif args.verb == "data":
            warm_data(s)
        elif args.verb == "bench":
            r = run_benches(s, s.lease_dir)
            c = r["choice"]
            print(f"chosen: trainer.compile={c['compile'] or '(config default)'} ({c['compile_reason']}); "
                  f"{c['processes']} sweep process(es) (total images/s vs one: {c['concurrency_gain']})")
        elif args.verb == "launch":
            bench_plan = s.lease_dir / "bench_plan.json"
            if not bench_plan.is_file():
                raise ReproError(f"no {bench_plan}: the bench has not run (lease.sh start runs it first)")
            choice = json.loads(bench_plan.read_text())["choice"]
            launch(s, choice, args.since)
        elif args.verb == "poll":
            return poll(s)
        elif args.verb == "collect":
            collect(s, Path(args.out))
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
