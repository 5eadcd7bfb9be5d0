"""Sweeps that survive (issue 21): the same multirun command run again lands in the same sweep
dir and continues it; a failed job does not stop or hide; `status` says where each run stands;
job k of a joblib sweep trains on GPU k mod n."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, cli, compose_config
from resnet_repro import cli as cli_module
from resnet_repro.runs.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint
from resnet_repro.hydra_entry import job_dir_name, sweep_name
from resnet_repro.runs.sinks import read_jsonl
from resnet_repro.runs.rundir import RunLock
from resnet_repro.runs.state import FAILED_FILE, find_run_dirs, run_state
from resnet_repro.train import _with_job_device, job_device

SWEEP = ["train", "-m", *TINY]


# -- names: from what the command asks for -----------------------------------------------------


def test_a_sweep_is_named_after_its_exp_and_unswept_overrides_not_the_clock() -> None:
    base = ["+exp=cifar_resnet20", "data=cifar10_folder", "seed=0,1,2"]
    name = sweep_name(base)
    assert name.startswith("cifar_resnet20") and name == sweep_name(base)
    # Adding a seed, changing what may change on resume, or reordering: the same sweep.
    assert sweep_name(["+exp=cifar_resnet20", "data=cifar10_folder", "seed=0,1,2,3"]) == name
    assert sweep_name(["+exp=cifar_resnet20", "data=cifar10_folder", "seed=0"]) == name
    assert sweep_name(["seed=0,1,2", "data=cifar10_folder", "+exp=cifar_resnet20", "trainer.max_iters=80000",
                       "data.root=/elsewhere", "trainer.device=cuda:1", "logger=none",
                       "+trainer.max_time=01:00:00"]) == name
    # Another recipe or exp: another sweep.
    assert sweep_name([*base, "optim.weight_decay=0.0005"]) != name
    assert sweep_name(["+exp=cifar_resnet32", "data=cifar10_folder", "seed=0,1,2"]) != name


def test_a_job_dir_comes_from_its_own_settings_not_its_position() -> None:
    job = ["+exp=cifar_resnet20", "data=cifar10_folder", "seed=1"]
    name = job_dir_name("cifar_resnet20", 1, job)
    assert name.startswith("cifar_resnet20-seed1")
    assert job_dir_name("cifar_resnet20", 1, list(reversed(job)) + ["trainer.max_iters=10"]) == name
    assert job_dir_name("cifar_resnet20", 2, job[:2] + ["seed=2"]) != name
    assert job_dir_name("cifar_resnet20", 1, [*job, "optim.weight_decay=0.0005"]) != name
    # A model named by the run name adds nothing; an exp not named after its model keeps it apart.
    assert job_dir_name("cifar_plain20", 0, ["model=cifar_plain20", "seed=0"]) == "cifar_plain20-seed0"
    assert job_dir_name("demo", 0, ["+exp=demo", "model=cifar_resnet32"]) != job_dir_name("demo", 0, ["+exp=demo"])


# -- where a run stands ----------------------------------------------------------------------------


def _fake_run(d: Path, *, ckpt: int | None, summary: dict | None = None, rate: float = 1280.0) -> Path:
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("trainer:\n  max_iters: 64000\n  batch_size: 128\n")
    (d / "metrics.jsonl").write_text("".join(json.dumps({"iter": i, "images_per_s": rate}) + "\n"
                                             for i in (1000, 2000, 3000, 4000)))
    if ckpt is not None:
        meta = checkpoint_meta(model_name="m", arch={}, num_classes=10, iteration=ckpt)
        save_checkpoint(d / "checkpoints" / "last.pt", {"meta": meta, "w": torch.zeros(2)})
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_status_tells_done_paused_killed_failed_and_running_apart(tmp_path: Path) -> None:
    done = _fake_run(tmp_path / "done", ckpt=64000, summary={"status": "complete", "iterations": 64000, "test_err": 7.5})
    paused = _fake_run(tmp_path / "paused", ckpt=4000,
                       summary={"status": "paused", "iterations": 4000, "max_iters": 64000})
    # Paused at 4000, resumed, killed after the checkpoint at 6000: the summary is stale.
    killed = _fake_run(tmp_path / "killed", ckpt=6000, summary={"status": "paused", "iterations": 4000})
    failed = _fake_run(tmp_path / "failed", ckpt=6000)
    (failed / FAILED_FILE).write_text(json.dumps({"reason": "training diverged", "iteration": 6000}))
    assert run_state(done).short() == "complete (test error 7.50%, 64000 iterations)"
    # 60000 iterations of 128 images at 1280 images/s: 6000 s.
    assert run_state(paused).short() == "paused at iteration 4000 of 64000, 1280 images/s, 1h40m left at that rate"
    assert run_state(killed).short().startswith("killed at iteration 6000 of 64000 (last checkpoint)")
    assert run_state(failed).short() == "failed at iteration 6000 (training diverged)"
    # A later attempt that got further makes the failure history.
    meta = checkpoint_meta(model_name="m", arch={}, num_classes=10, iteration=8000)
    save_checkpoint(failed / "checkpoints" / "last.pt", {"meta": meta, "w": torch.zeros(2)})
    assert run_state(failed).state == "killed" and run_state(failed).iteration == 8000
    with RunLock(killed):
        st = run_state(killed)
        assert (st.state, st.pid) == ("running", os.getpid())
        assert st.short().startswith(f"running (pid {os.getpid()}) at iteration 4000 of 64000")
    assert run_state(killed).state == "killed"  # the lock dies with its holder
    assert find_run_dirs([tmp_path]) == sorted([done, paused, killed, failed])


def test_status_command_lists_every_run_under_a_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fake_run(tmp_path / "sweep" / "a", ckpt=64000, summary={"iterations": 64000, "test_err": 7.5})
    _fake_run(tmp_path / "sweep" / "b", ckpt=2000)
    assert cli_module.main(["status", str(tmp_path / "sweep")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("a: complete (test error 7.50%, 64000 iterations)")
    # 62000 iterations of 128 images at 1280 images/s: 6200 s, 1 h 43 min.
    assert lines[1].endswith("b: killed at iteration 2000 of 64000 (last checkpoint), 1280 images/s, 1h43m left at that rate")
    assert lines[2] == "2 run(s): 1 complete, 1 killed"
    assert cli_module.main(["status", str(tmp_path / "nope")]) == 2


# -- one GPU per job -----------------------------------------------------------------------------


def test_job_k_trains_on_gpu_k_mod_n_unless_the_device_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [job_device("auto", k, 2) for k in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert [job_device("auto", k, 1) for k in range(3)] == ["cuda:0"] * 3  # one GPU: the jobs share it
    assert job_device("auto", 3, 0) == "auto"  # no GPU
    assert job_device("cpu", 3, 2) == "cpu" and job_device("cuda:0", 3, 2) == "cuda:0"  # the user's choice
    assert job_device("auto", None, 2) == "auto"  # a single run
    import resnet_repro.train as train_module

    monkeypatch.setattr(train_module, "_gpu_count", lambda: 4)  # a faked 4-GPU machine
    cfg = compose_config(["trainer.device=auto"])
    assert _with_job_device(cfg, 5).trainer.device == "cuda:1"
    assert cfg.trainer.device == "auto"  # the composed config itself is untouched
    assert _with_job_device(compose_config(["trainer.device=cpu"]), 5).trainer.device == "cpu"


def test_the_joblib_launcher_without_its_plugin_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins.hydra_joblib") else real(name, *a))
    assert cli_module.main(["train", "-m", "hydra/launcher=joblib", "seed=0,1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install hydra-joblib-launcher" in err[0]


# -- sweeps as a user runs them -------------------------------------------------------------------


def _jobs(root: Path) -> list[Path]:
    return sorted(p.parent.relative_to(root) for p in root.glob("runs/multirun/*/*/config.yaml"))


def _same_results(a: Path, b: Path) -> None:
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(a / "metrics.jsonl")) == strip(read_jsonl(b / "metrics.jsonl"))
    wa, wb = (load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["test_err"] == sb["test_err"] and sa["iterations"] == sb["iterations"]


@pytest.mark.slow
def test_a_sweep_killed_in_its_second_job_continues_when_rerun(tmp_path: Path) -> None:
    ref, work = tmp_path / "ref", tmp_path / "work"
    ref.mkdir(), work.mkdir()
    args = [*SWEEP, "seed=0,1"]
    assert cli(*args, cwd=ref).returncode == 0  # the uninterrupted sweep
    proc = subprocess.Popen([sys.executable, "-m", "resnet_repro", *args], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Killed (SIGKILL, no goodbye) once the second job has written its first checkpoint.
    while not list(work.glob("runs/multirun/*/*seed1*/checkpoints/last.pt")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    second = next(work.glob("runs/multirun/*/*seed1*"))
    assert not (second / "summary.json").exists()
    assert run_state(second).state == "killed"
    r = cli(*args, cwd=work)  # the same command again
    assert r.returncode == 0, r.stderr
    assert "run already complete at iteration 12" in r.stdout  # the first job trains nothing
    assert f"resuming {second} from iteration" in r.stdout
    assert _jobs(work) == _jobs(ref) and len(_jobs(ref)) == 2  # the same dirs, no orphaned sweep
    for job in _jobs(ref):
        _same_results(work / job, ref / job)
    assert [ln.split(": ")[1].split(" (")[0] for ln in r.stdout.splitlines() if ln.startswith("  ")] == ["done", "done"]


@pytest.mark.slow
def test_adding_a_seed_reuses_the_finished_runs_and_a_failing_job_leaves_the_others_complete(tmp_path: Path) -> None:
    short = [*SWEEP, "trainer.max_iters=2", "trainer.eval_every=2"]
    assert cli(*short, "seed=0", cwd=tmp_path).returncode == 0
    (first,) = _jobs(tmp_path)
    before = (tmp_path / first / "summary.json").read_bytes()
    r = cli(*short, "seed=0,1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("run already complete") == 1 and "resuming" not in r.stdout  # seed 0 kept, seed 1 new
    assert (tmp_path / first / "summary.json").read_bytes() == before
    assert len(_jobs(tmp_path)) == 2 and first in _jobs(tmp_path)
    # A job refused for bad input (depth 21) is recorded; the next one still trains.
    r = cli(*short, "seed=0", "model.depth=21,14", cwd=tmp_path)
    assert r.returncode == 1
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.startswith("  ")]
    assert lines[0].startswith("cifar_resnet21-seed0") and "failed (CIFAR ResNet depth must be 6n+2" in lines[0]
    assert lines[1].startswith("cifar_resnet14-seed0") and ": done (test error" in lines[1]
    (failed,) = tmp_path.glob("runs/multirun/*/cifar_resnet21*")
    assert run_state(failed).state == "failed"


@pytest.mark.slow
def test_a_paused_sweep_resumes_every_job_when_rerun(tmp_path: Path) -> None:
    short = [*SWEEP, "trainer.max_iters=4", "trainer.eval_every=4", "seed=0,1"]
    r = cli(*short, "trainer.pause_at=2", cwd=tmp_path)  # a budget of 2 iterations per job (issue 19)
    assert r.returncode == 0, r.stderr
    ends = [ln.split(": ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("  ")]
    assert len(ends) == 2 and all(e.startswith("paused at iteration 2 of 4, ") and "images/s" in e for e in ends)
    jobs = _jobs(tmp_path)
    # A deadline already past (the GPU lease's `${until:...}`): no job starts, none is failed.
    r = cli(*short, f"trainer.max_time=${{until:{int(time.time()) - 5}}}", cwd=tmp_path)
    assert r.returncode == 0 and "no further job of this sweep starts" in r.stderr, r.stderr
    assert [run_state(tmp_path / j).state for j in jobs] == ["paused", "paused"] and _jobs(tmp_path) == jobs
    r = cli(*short, cwd=tmp_path)  # the same sweep, no budget: both continue from iteration 2
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("from iteration 2") == 2 and _jobs(tmp_path) == jobs
    assert all(run_state(tmp_path / j).short().startswith("complete (test error") for j in jobs)


@pytest.mark.slow
def test_a_submitit_local_sweep_runs_one_process_per_job_like_the_basic_launcher(tmp_path: Path) -> None:
    """Hydra's submitit launcher as on SLURM (`submitit_slurm`, experiments/distributed.md), but
    its local executor: each job in its own process, no cluster. Same job dirs, the same
    end-of-sweep lines and `status`, and a re-run continues the sweep."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    short = [*SWEEP, "trainer.max_iters=2", "trainer.eval_every=2", "seed=0,1"]
    r = cli(*short, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = _jobs(tmp_path)
    assert len(jobs) == 2 and jobs[0].parent == jobs[1].parent
    assert all(run_state(tmp_path / j).state == "complete" for j in jobs)
    assert "2 job(s)" in r.stdout and r.stdout.count(": done") == 2, r.stdout
    status = cli("status", str(tmp_path / jobs[0].parent), cwd=tmp_path)
    assert status.returncode == 0 and "2 run(s): 2 complete" in status.stdout, status.stdout
    r = cli(*short, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "trainer.max_iters=4",
            cwd=tmp_path)  # a longer recipe: both jobs resume from their checkpoints
    assert r.returncode == 0, r.stderr
    assert _jobs(tmp_path) == jobs
    assert all(json.loads((tmp_path / j / "summary.json").read_text())["iterations"] == 4 for j in jobs)


@pytest.mark.slow
def test_a_joblib_sweep_runs_its_jobs_into_the_same_dirs_as_the_basic_launcher(tmp_path: Path) -> None:
    short = [*SWEEP, "trainer.max_iters=2", "trainer.eval_every=2", "seed=0,1"]
    r = cli(*short, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = _jobs(tmp_path)
    assert len(jobs) == 2 and jobs[0].parent == jobs[1].parent  # one sweep dir for both workers
    assert all(run_state(tmp_path / j).state == "complete" for j in jobs)
    r = cli(*short, cwd=tmp_path)  # the basic launcher finds them finished
    assert r.returncode == 0 and r.stdout.count("run already complete") == 2, r.stderr
    assert _jobs(tmp_path) == jobs
