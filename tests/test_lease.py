"""The GPU lease (issue 22), rehearsed on the CPU: the paper-runs sweep's job list and recipes,
the lease script's bench choice, time box, poll and collect, and (slow) the whole script end to
end with tiny settings, so a typo fails here and not on the 15-minute GPU lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import REPO, compose_config
from omegaconf import OmegaConf

from resnet_repro.errors import ReproError
from resnet_repro.runs.rundir import RunLock

# experiments/gpu/lease/: the lease is an experiment's tool, not the library (conftest puts
# experiments/gpu on the path, as lease.sh does)
from lease.bench_plan import choose, run_benches
from lease.cli import main
from lease.records import _alive
from lease.settings import LeaseSettings
from lease.sweep import jobs, sweep_commands

SCRIPT = REPO / "experiments" / "gpu" / "lease.sh"
WHEELS = REPO.parent / "shared" / "wheels"

# The priority order (issue 22, point 1), seed 0 first, then seeds 1 and 2.
PRIORITY = ["cifar_resnet20", "cifar_plain20", "cifar_resnet56", "cifar_plain56", "cifar_resnet110",
            "cifar_resnet32", "cifar_plain32", "cifar_resnet44", "cifar_plain44"]

# Runs Hydra's real multirun (basic sweeper and launcher) for each argument list, with a task
# that records each job's overrides and composed config instead of training. With "overrides"
# as the first argument, the launcher only records each job's overrides (no composition).
RECORDER = r"""
import json, sys
import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from omegaconf import OmegaConf
from resnet_repro.hydra_entry import register_resolvers
from resnet_repro.config.paths import CONF_DIR

register_resolvers()
mode, argvs, out_path, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], []
jobs = []
if mode == "overrides":  # the sweeper's batches, as the launcher would receive them
    class Recorder:
        def launch(self, job_overrides, initial_job_idx):
            jobs.extend({"overrides": list(o)} for o in job_overrides)
            return []
    Plugins.instantiate_launcher = lambda self, **kw: Recorder()
for argv in argvs:
    jobs = []
    def task(cfg):
        jobs.append({"overrides": list(HydraConfig.get().overrides.task),
                     "cfg": OmegaConf.to_container(cfg, resolve=True)})
    sys.argv = ["train", *argv]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)()
    GlobalHydra.instance().clear()
    out.append(jobs)
open(out_path, "w").write(json.dumps(out))
"""


def hydra_jobs(tmp: Path, mode: str, *argvs: list[str]) -> list[list[dict]]:
    """The jobs Hydra launches for each `train` argument list, in launch order."""
    out = tmp / "jobs.json"
    argvs = [[*a, f"hydra.sweep.dir={tmp / f'sweep{i}'}", "hydra.output_subdir=null"] for i, a in enumerate(argvs)]
    r = subprocess.run([sys.executable, "-c", RECORDER, mode, json.dumps(argvs), str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def exp_seed(job: dict) -> tuple[str, int]:
    if "cfg" in job:
        return job["cfg"]["exp_name"], job["cfg"]["seed"]
    o = dict(a.split("=", 1) for a in job["overrides"])  # the job's exp choice and seed
    return o["exp"], int(o["seed"])


# -- point 1: the sweep -----------------------------------------------------------------------

SHARES = LeaseSettings(python="python", data=[], args=["trainer.max_iters=2"])
DEADLINE = 1_900_000_000  # unix time (2030)
SUBSET = LeaseSettings(python="python", data=[], args=[], exps=["cifar_resnet20", "cifar_resnet110"], seeds=["0", "2"])


def _train_args(cmds: list[list[str]]) -> list[list[str]]:
    return [c[c.index("train") + 1:] for c in cmds]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The job lists Hydra's sweeper hands the launcher for the sweep as a user types it and for
    the lease's shares (one subprocess for all)."""
    two = _train_args(sweep_commands(SHARES, 2, "default", DEADLINE))
    four = _train_args(sweep_commands(SHARES, 4, "default", DEADLINE))
    subset = _train_args(sweep_commands(SUBSET, 4, None, None))
    assert len(two) == 2 and len(four) == 4 and len(subset) == 2  # no more processes than networks
    res = hydra_jobs(tmp_path_factory.mktemp("sweeps"), "overrides", ["+exp=cifar_paper_runs"], *two, *four, *subset)
    return {"full": res[0], 2: res[1:3], 4: res[3:7], "subset": res[7:], "four_args": four}


def test_paper_runs_sweep_is_27_jobs_in_priority_order(launched: dict) -> None:
    expected = [(e, s) for s in (0, 1, 2) for e in PRIORITY]
    assert [exp_seed(j) for j in launched["full"]] == expected
    assert jobs() == expected  # the lease's job list is the sweep's


# Composing a job takes about a second on the 2-core machine: seed 0's nine in the normal set.
@pytest.mark.parametrize("seeds", ["0", pytest.param("1,2", marks=pytest.mark.slow)])
def test_each_paper_runs_job_trains_its_exps_recipe(tmp_path: Path, seeds: str) -> None:
    (jobs,) = hydra_jobs(tmp_path, "compose", ["+exp=cifar_paper_runs", f"seed={seeds}"])
    assert [exp_seed(j) for j in jobs] == [(e, int(s)) for s in seeds.split(",") for e in PRIORITY]
    for job in jobs:
        exp, seed = exp_seed(job)
        alone = OmegaConf.to_container(compose_config([f"+exp={exp}", f"seed={seed}"]), resolve=True)
        assert job["cfg"] == alone, f"{exp} seed {seed} differs from +exp={exp} seed={seed}"
        # ResNet-110 alone has §4.2's warm-up (the recipe reached the job, not only the name)
        assert bool((job["cfg"]["schedule"].get("warmup") or {}).get("enabled")) == (exp == "cifar_resnet110")


def test_lease_shares_cover_the_job_list_once_each_in_order(launched: dict) -> None:
    for args in launched["four_args"]:
        assert "trainer.compile=default" in args and f"trainer.max_time=${{until:{DEADLINE}}}" in args
    everything = [(e, sd) for sd in (0, 1, 2) for e in PRIORITY]
    for n in (2, 4):
        shares = launched[n]
        got = [exp_seed(j) for share in shares for j in share]
        assert sorted(got) == sorted(everything) and len(set(got)) == len(got)  # each job exactly once
        assert [exp_seed(share[0]) for share in shares] == [(e, 0) for e in PRIORITY[:n]]  # the n most wanted first
        for share in shares:  # within a share: the global order (seed first, then priority)
            order = [everything.index(exp_seed(j)) for j in share]
            assert order == sorted(order)
            assert all("trainer.max_iters=2" in j["overrides"] for j in share)


def test_a_share_of_one_network_still_sweeps_its_seeds(launched: dict) -> None:
    assert [[exp_seed(j) for j in share] for share in launched["subset"]] == [
        [("cifar_resnet20", 0), ("cifar_resnet20", 2)], [("cifar_resnet110", 0), ("cifar_resnet110", 2)]]


def test_max_time_until_a_deadline_is_the_time_left_when_the_job_starts() -> None:
    from resnet_repro.errors import ConfigError
    from resnet_repro.schema import run_settings

    now = time.time()
    cfg = compose_config(["+exp=cifar_resnet20", f"trainer.max_time=${{until:{int(now) + 1000}}}"])
    left = run_settings(cfg).trainer.max_time_s
    assert 0 < left <= 1000  # whole seconds, counted from when the config is resolved
    late = compose_config(["+exp=cifar_resnet20", f"trainer.max_time=${{until:{int(now) - 5}}}"])
    with pytest.raises(ConfigError, match="trainer.max_time must be a positive duration, got 0"):
        run_settings(late)  # past the deadline a job is refused, so the sweep starts no more


def test_job_subset_rejects_names_outside_the_sweep() -> None:
    with pytest.raises(ReproError, match="cifar_resnet1202 not in cifar_paper_runs"):
        jobs(["cifar_resnet20", "cifar_resnet1202"])


# -- point 2: the bench choice ----------------------------------------------------------------


def _bench(exp: str, mode: str, rate: float, fell_back: bool = False, concurrent: tuple[int, float] | None = None) -> dict:
    b = {"exp_name": exp, "configured": {"images_per_s": rate, "compile": mode, "compile_fell_back": fell_back}}
    if concurrent:
        n, gain = concurrent
        b["concurrent"] = {"processes": n, "images_per_s_total": rate * gain, "vs_one_run": gain}
    return b


def test_choice_takes_the_faster_mode_over_the_networks_both_timed() -> None:
    # reduce-overhead wins big on ResNet-20 and loses a little on ResNet-110
    c = choose([_bench("cifar_resnet20", "default", 20000), _bench("cifar_resnet20", "reduce-overhead", 40000),
                _bench("cifar_resnet110", "default", 9000), _bench("cifar_resnet110", "reduce-overhead", 8000)])
    assert c["compile"] == "reduce-overhead" and c["processes"] == 1
    # a network timed in one mode only does not count: default wins on the one both timed
    c = choose([_bench("cifar_resnet20", "default", 30000), _bench("cifar_resnet20", "reduce-overhead", 25000),
                _bench("cifar_resnet110", "reduce-overhead", 99999)])
    assert c["compile"] == "default"


def test_choice_ignores_a_mode_whose_compile_fell_back() -> None:
    c = choose([_bench("cifar_resnet20", "default", 20000),
                _bench("cifar_resnet20", "reduce-overhead", 90000, fell_back=True)])
    assert c["compile"] == "default"


def test_choice_adds_processes_only_for_a_real_gain() -> None:
    one = _bench("cifar_resnet20", "default", 20000)
    assert choose([one, _bench("cifar_resnet20", "default", 20000, concurrent=(4, 1.05))])["processes"] == 1
    c = choose([one, _bench("cifar_resnet20", "default", 20000, concurrent=(2, 1.6)),
                _bench("cifar_resnet20", "default", 20000, concurrent=(4, 1.7))])
    assert c["processes"] == 2  # 4 gives under 10% more than 2
    c = choose([one, _bench("cifar_resnet20", "default", 20000, concurrent=(2, 1.6)),
                _bench("cifar_resnet20", "default", 20000, concurrent=(4, 2.4))])
    assert c["processes"] == 4


def test_choice_without_any_bench_keeps_the_config_and_one_process() -> None:
    c = choose([])
    assert c["compile"] is None and c["processes"] == 1
    cmd = sweep_commands(LeaseSettings(data=[], args=[]), c["processes"], c["compile"], None)
    assert len(cmd) == 1 and not any(a.startswith("trainer.compile=") for a in cmd[0])


FAKE_PYTHON = """#!{python}
# A stand-in for `python -m resnet_repro bench ...`: reduce-overhead hangs (with a child, as a
# concurrent bench has), the other modes write a bench JSON at once.
import json, os, subprocess, sys, time
args = dict(a.split("=", 1) for a in sys.argv[4:] if "=" in a)
mode, out = args["trainer.compile"], args["bench.json"]
with open(os.path.join(os.path.dirname(out), "calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if mode == "reduce-overhead":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(out + ".pids", "w").write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(600)
rate = {{"default": 1000.0, "off": 500.0}}[mode]
json.dump({{"exp_name": args["+exp"], "configured": {{"images_per_s": rate, "compile": mode}}}}, open(out, "w"))
"""


def test_bench_stops_at_its_time_limit_and_chooses_from_what_finished(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    s = LeaseSettings(python=str(fake), data=[], args=[], bench_s=4, bench_modes=["default", "reduce-overhead"],
                      bench_exps=["cifar_resnet20", "cifar_resnet110"], bench_concurrent=[2])
    r = run_benches(s, tmp_path / "lease")
    status = {st["step"]: st["status"] for st in r["steps"]}
    assert status["cifar_resnet20-default"] == "ok"
    assert status["cifar_resnet20-reduce-overhead"] == "timed out"
    assert all(v.startswith("skipped") for k, v in status.items() if k not in (
        "cifar_resnet20-default", "cifar_resnet20-reduce-overhead"))
    assert r["choice"]["compile"] == "default" and r["choice"]["processes"] == 1
    # the hung bench and its child were killed, not left on the GPU
    pids = [int(p) for p in (tmp_path / "lease" / "bench_cifar_resnet20-reduce-overhead.json.pids").read_text().split()]
    for _ in range(50):
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive
    assert json.loads((tmp_path / "lease" / "bench_plan.json").read_text())["choice"] == r["choice"]


def test_launch_refuses_when_the_lease_leaves_no_training_time(tmp_path: Path, monkeypatch, capsys) -> None:
    lease = tmp_path / "lease"
    lease.mkdir()
    (lease / "bench_plan.json").write_text(json.dumps({"choice": choose([])}))
    monkeypatch.setenv("LEASE_DIR", str(lease))
    monkeypatch.setenv("LEASE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LEASE_BUDGET_S", "200")
    monkeypatch.setenv("LEASE_MARGIN_S", "150")
    assert main(["launch", f"--since={time.time()}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: only ") and "not starting the sweep" in err[0]
    assert not (lease / "plan.json").exists() and not (tmp_path / "runs").exists()


def run_lease(verb: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), verb], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600)


# -- point 2: poll and collect ----------------------------------------------------------------


def _fake_run(sweep: Path, name: str, it: int, rate: float, summary: dict | None) -> Path:
    run = sweep / name
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()  # Hydra's record of the job: its mtime is when the job started
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    (run / "config.yaml").write_text("trainer:\n  max_iters: 64000\n")
    rows = [{"iter": i, "images_per_s": rate / 2 if i == 100 else rate, "train/err": 50.0} for i in range(100, it + 1, 100)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iter": 9')  # a row being written
    if summary:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_poll_and_collect_read_every_run_and_pack_no_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    lease, runs, out = tmp_path / "lease", tmp_path / "runs", tmp_path / "out"
    lease.mkdir()
    sweep = runs / "cifar_paper_runs"
    _fake_run(sweep, "0-cifar_resnet20-seed0", 64000, 30000.0,
              {"status": "complete", "iterations": 64000, "images_per_s": 29000.0, "test_err": 8.5})
    training = _fake_run(sweep, "1-cifar_plain20-seed0", 2300, 28000.0, None)
    refused = sweep / "2-cifar_resnet56-seed0"  # refused while loading its data: no config.yaml, no rows
    (refused / ".hydra").mkdir(parents=True)
    (refused / "failed.json").write_text(json.dumps({"status": "failed", "reason": "no CIFAR-10 at /x", "iteration": None}))
    (lease / "plan.json").write_text(json.dumps({"processes": [{"pid": 2**22 + 7, "log": str(lease / "sweep-0.log")}],
                                                 "jobs": ["a", "b", "c"]}))
    (lease / "sweep-0.log").write_text("iter 2000: test/err 30.00%\n")
    (lease / "bench_cifar_resnet20-default.json").write_text("{}")
    for k, v in {"LEASE_DIR": lease, "LEASE_RUNS": runs}.items():
        monkeypatch.setenv(k, str(v))
    with RunLock(training):  # a process holds the second run: it is training
        assert main(["poll"]) == 0
    text = capsys.readouterr().out
    assert "sweep process 0 (pid 4194311): ended; last line: iter 2000" in text
    assert "3 of 3 runs started" in text
    assert "0-cifar_resnet20-seed0: complete (test error 8.50%, 64000 iterations)" in text  # as `status` says
    assert "2-cifar_resnet56-seed0: failed (no CIFAR-10 at /x)" in text
    assert f"1-cifar_plain20-seed0: running (pid {os.getpid()}) at iteration 2300 of 64000, 28000 images/s" in text
    assert main(["poll"]) == 0  # nobody holds it now, and its checkpoint is unreadable
    assert "1-cifar_plain20-seed0: killed before its first checkpoint" in capsys.readouterr().out

    # the script's own verbs on the same files
    env = {"LEASE_PYTHON": sys.executable, "LEASE_DIR": str(lease), "LEASE_RUNS": str(runs), "OUT": str(out)}
    r = run_lease("poll", env)
    assert r.returncode == 0, r.stderr
    assert "0-cifar_resnet20-seed0" in r.stdout and "1-cifar_plain20-seed0" in r.stdout
    with RunLock(training):
        r = run_lease("collect", env)
    assert r.returncode == 0, r.stderr
    (tar_path,) = out.glob("*.tar.gz")
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
    assert not [n for n in names if n.endswith(".pt")]
    for run in ("0-cifar_resnet20-seed0", "1-cifar_plain20-seed0"):
        assert {f"runs/cifar_paper_runs/{run}/metrics.jsonl", f"runs/cifar_paper_runs/{run}/config.yaml"} <= names
    assert "runs/cifar_paper_runs/0-cifar_resnet20-seed0/summary.json" in names
    assert "runs/cifar_paper_runs/2-cifar_resnet56-seed0/failed.json" in names  # why it failed travels too
    assert {"lease/bench_cifar_resnet20-default.json", "lease/plan.json", "lease/collected.json",
            "lease/sweep-0.log"} <= names
    collected = json.loads((lease / "collected.json").read_text())
    assert [r["status"] for r in collected["runs"]] == ["complete", "running", "failed"]
    assert "nvidia_smi_L" in collected["collected"] and "torch" in collected["collected"]


# -- point 3: the script ----------------------------------------------------------------------


def test_lease_script_parses_and_refuses_an_unknown_verb() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    r = run_lease("strat", {})
    assert r.returncode == 2 and "usage: experiments/gpu/lease.sh prepare|start|poll|collect" in r.stderr
    r = run_lease("collect", {"OUT": ""})
    assert r.returncode == 2 and "error: collect writes into $OUT, which is not set" in r.stderr


def test_prepare_copies_the_wheels_and_the_data_into_the_folder_that_travels(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "wheels").mkdir(parents=True)
    (shared / "data").mkdir()
    (shared / "wheels" / "hydra_core-1.3.8-py3-none-any.whl").write_bytes(b"wheel")
    (shared / "data" / "cifar10-jpeg.tar.gz").write_bytes(b"images")
    r = run_lease("prepare", {"LEASE_SHARED": str(shared), "LEASE_GPU_DIR": str(tmp_path / "gpu")})
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "gpu").iterdir()) == ["cifar10-jpeg.tar.gz", "hydra_core-1.3.8-py3-none-any.whl"]
    # a folder inside the checkout that git would commit is refused
    r = run_lease("prepare", {"LEASE_SHARED": str(shared), "LEASE_GPU_DIR": "experiments/gpu"})
    assert r.returncode == 2 and "is not ignored by git" in r.stderr
    assert not list((REPO / "experiments" / "gpu").glob("*.whl"))


@pytest.mark.slow
def test_lease_script_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    """start (install, bench, launch), poll, collect, as on the GPU, with tiny settings."""
    env = {
        "LEASE_PYTHON": sys.executable,
        "LEASE_INSTALL": "1" if WHEELS.is_dir() else "0",  # the venv has Hydra already
        "LEASE_GPU_DIR": str(WHEELS), "LEASE_SITE": str(tmp_path / "site"),
        "LEASE_DIR": str(tmp_path / "lease"), "LEASE_RUNS": str(tmp_path / "runs"),
        "LEASE_DATA": "data=synthetic data.n_train=640 data.n_test=256 data.val_size=0",
        "LEASE_ARGS": "logger=none trainer.progress=false trainer.device=cpu trainer.batch_size=64",
        "LEASE_SWEEP_ARGS": "trainer.max_iters=2 trainer.eval_every=2 trainer.log_every=1 trainer.ckpt_every=2",
        "LEASE_BENCH_ARGS": "bench.baseline_workers=0",
        "LEASE_BENCH_S": "400", "LEASE_BENCH_ITERS": "2", "LEASE_BENCH_WARMUP": "1",
        "LEASE_BENCH_MODES": "off", "LEASE_BENCH_EXPS": "cifar_resnet20", "LEASE_BENCH_CONCURRENT": "2",
        "LEASE_EXPS": "cifar_resnet20,cifar_plain20", "LEASE_SEEDS": "0,1",
        "LEASE_BUDGET_S": "3600", "LEASE_START_LOOK_S": "0", "OUT": str(tmp_path / "out"),
    }
    try:
        _start_poll_collect(tmp_path, env)
    finally:  # a failed assertion leaves no detached sweep behind
        plan = tmp_path / "lease" / "plan.json"
        for p in json.loads(plan.read_text())["processes"] if plan.is_file() else []:
            if _alive(p["pid"]):
                os.killpg(p["pid"], signal.SIGKILL)  # setsid: the process leads its own group


def _start_poll_collect(tmp_path: Path, env: dict[str, str]) -> None:
    r = run_lease("start", env)
    assert r.returncode == 0, r.stdout + r.stderr
    lease_dir = tmp_path / "lease"
    plan = json.loads((lease_dir / "plan.json").read_text())
    bench_plan = json.loads((lease_dir / "bench_plan.json").read_text())
    assert [st["status"] for st in bench_plan["steps"]] == ["ok", "ok"]  # off alone, then 2 at once
    assert len(plan["processes"]) == bench_plan["choice"]["processes"]
    for p in plan["processes"]:
        assert "trainer.compile=off" in p["command"]
        assert "'trainer.max_time=${until:" in p["command"]  # every job pauses by one deadline
    assert plan["pause_by"] is not None and 0 < plan["max_time_s_at_launch"] <= 3600 - 150
    if WHEELS.is_dir():
        assert (tmp_path / "site" / "hydra").is_dir()
    for p in plan["processes"]:  # the sweep runs detached; wait for it here
        for _ in range(1200):
            if not _alive(p["pid"]):
                break
            time.sleep(0.25)
        assert not _alive(p["pid"]), "the sweep did not finish"

    r = run_lease("poll", env)
    assert r.returncode == 0, r.stderr
    assert "4 of 4 runs started" in r.stdout
    assert r.stdout.count("complete (test error") == 4  # one `status` line per run

    r = run_lease("collect", env)
    assert r.returncode == 0, r.stderr
    (tar_path,) = (tmp_path / "out").glob("*.tar.gz")
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        summaries = [json.load(tar.extractfile(n)) for n in sorted(names) if n.endswith("summary.json")]
    assert sorted((s["exp_name"], s["seed"]) for s in summaries) == sorted(
        (e, sd) for e in ("cifar_resnet20", "cifar_plain20") for sd in (0, 1))
    assert all(s["status"] == "complete" and s["iterations"] == 2 for s in summaries)
    assert not [n for n in names if n.endswith(".pt")]
    assert {"lease/env_start.json", "lease/bench_plan.json", "lease/plan.json",
            "lease/bench_cifar_resnet20-off.json", "lease/bench_cifar_resnet20-off-x2.json"} <= names
    assert sum(n.endswith("metrics.jsonl") for n in names) == sum(n.endswith("config.yaml") for n in names) == 4
