"""The `train` and `eval` commands as a user types them: one clear line for bad input, no run
dir left behind by a refused command, runs named after their network, resume that follows moved
data, honest throughput (issue 14), and the real-data check on the JPEG copy of CIFAR-10."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import SHARED_CIFAR, SYNTH, TINY, TINY_TRAINER, compose_config, write_cifar_folder, cli, train_tiny as train
from resnet_repro.training import step as engine
from resnet_repro.runs.checkpoint import load_checkpoint
from resnet_repro.runs.sinks import read_jsonl
from resnet_repro.train import train_from_config



# -- the command line -----------------------------------------------------------------------------


def test_cli_train_then_eval(tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = cli("train", *TINY, f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr
    assert f"run dir: {run}" in r.stdout and "test error" in r.stdout
    r = cli("eval", f"ckpt={run}", "device=cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("test error ")


@pytest.mark.slow
def test_cli_multirun_gives_one_run_dir_per_job(tmp_path: Path) -> None:
    r = cli("train", "-m", *TINY, "trainer.max_iters=2", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    summaries = sorted(tmp_path.glob("*/summary.json"))
    # TINY trains depth 8: the jobs are named after the network they train, and their seed.
    assert [p.parent.name.split("-")[:2] for p in summaries] == [["cifar_resnet8", "seed0"], ["cifar_resnet8", "seed1"]]
    assert [json.loads(p.read_text())["seed"] for p in summaries] == [0, 1]


@pytest.mark.parametrize(
    "case, message",
    [
        (["+exp=cifar_resnet21"], "unknown exp 'cifar_resnet21'"),
        (["model=resnet9000"], "unknown model 'resnet9000'"),
        (["data=imagenet22k"], "unknown data 'imagenet22k'"),
        (["model.depth=21"], "CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...), got 21"),
        (["data=cifar10_folder", "data.root=/nonexistent/cifar"], "/nonexistent/cifar"),
        (["data=cifar10_folder"], "data=cifar10_folder needs data.root"),
        (["trainer.batch_size=0"], "trainer.batch_size must be a positive integer, got 0"),
        (["trainer.max_iters=-5"], "trainer.max_iters must be a positive integer, got -5"),
        (["trainer.device=tpu"], "trainer.device must be auto, cpu or cuda"),
        (["trainer.nonsense=1"], "unknown trainer setting(s) ['nonsense']"),
        (["data=cifar10", "data.root=/nonexistent/cifar10", "data.download=false"], "/nonexistent/cifar10"),
    ],
)
def test_bad_input_is_one_line_and_nonzero_exit(tmp_path: Path, case: list[str], message: str) -> None:
    r = cli("train", *TINY_TRAINER, *case, f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("problem", ["missing_class", "wrong_size", "unreadable", "empty"])
def test_malformed_image_folder_is_one_line(tmp_path: Path, problem: str) -> None:
    root = tmp_path / "folder"
    write_cifar_folder(root)
    if problem == "missing_class":
        for f in (root / "test" / "b").iterdir():
            f.unlink()
        (root / "test" / "b").rmdir()
        expect = "b"
    elif problem == "wrong_size":
        from PIL import Image

        Image.new("RGB", (31, 32)).save(root / "train" / "a" / "odd.png")
        expect = "odd.png"
    elif problem == "unreadable":
        (root / "train" / "b" / "broken.png").write_bytes(b"not an image")
        expect = "broken.png"
    else:
        for f in (root / "train" / "a").iterdir():
            f.unlink()
        expect = "a"
    r = cli("train", *TINY_TRAINER, "data=cifar10_folder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], r.stderr


@pytest.mark.slow
def test_eval_on_a_folder_of_other_classes_is_refused_naming_both_counts(tmp_path: Path) -> None:
    trained_on, other = tmp_path / "two", tmp_path / "three"
    write_cifar_folder(trained_on)
    write_cifar_folder(other, classes=("a", "b", "c"))
    run = tmp_path / "run"
    assert cli("train", *TINY_TRAINER, "data=cifar10_folder", f"data.root={trained_on}",
               f"data.cache_dir={tmp_path / 'cache'}", "data.val_size=0", "trainer.batch_size=2", "trainer.max_iters=2",
               "trainer.eval_every=2", "model.bn_group_size=2", f"hydra.run.dir={run}").returncode == 0
    r = cli("eval", f"ckpt={run}", f"data_root={other}", "device=cpu")
    assert r.returncode == 2 and "test error" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: the checkpoint's classifier has 2 classes but {other} has 3: "
                     "evaluate it on data with the same classes"]
    assert cli("eval", f"ckpt={run}", f"data_root={trained_on}", "device=cpu").returncode == 0  # same classes: fine


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused_and_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", *TINY, f"hydra.run.dir={run}").returncode == 0
    ckpt = run / "checkpoints" / "last.pt"
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    summary_before = (run / "summary.json").read_bytes()
    r = cli("train", *TINY, "model.depth=14", f"hydra.run.dir={run}")
    assert r.returncode == 2 and "model.depth=8" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("eval", f"ckpt={tmp_path / 'nope.pt'}")
    assert r.returncode == 2 and "nope.pt" in r.stderr
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage")
    r = cli("eval", f"ckpt={garbage}")
    assert r.returncode == 2 and "garbage.pt" in r.stderr and "Traceback" not in r.stderr
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == before
    assert (run / "summary.json").read_bytes() == summary_before


# -- real data ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason="../shared/data/cifar10-jpeg.tar.gz not present")
def test_resnet_learns_real_cifar10_jpeg_on_cpu(tmp_path: Path) -> None:
    overrides = [
        "+exp=cifar_resnet20", "data=cifar10_folder", f"data.root={SHARED_CIFAR}",
        f"data.cache_dir={tmp_path / 'cache'}", "model.depth=8", "logger=none", "trainer.device=cpu",
        "trainer.max_iters=300", "trainer.eval_every=300", "trainer.log_every=50", "trainer.ckpt_every=300",
        "trainer.progress=false",
    ]
    summary = train_from_config(compose_config(overrides), tmp_path / "run", overrides)
    assert summary["test_size"] == 10000 and summary["train_size"] == 50000
    assert summary["test_err"] < 65.0  # chance is 90%; ~300 iterations of ResNet-8 reach ~50%


# -- what a new user runs into (issue 14) ----------------------------------------------------------


def test_a_run_is_named_after_the_network_it_trains(tmp_path: Path) -> None:
    r = cli("train", "+exp=cifar_resnet20", "model.depth=32", *SYNTH, *TINY_TRAINER[1:], "trainer.max_iters=1",
            "model.bn_group_size=16", f"hydra.sweep.dir={tmp_path}", "hydra.run.dir=" + str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["exp_name"], summary["model"], summary["params"]) == ("cifar_resnet32", "cifar_resnet32", 464154)
    assert "note: the overrides make cifar_resnet20 a cifar_resnet32" in r.stdout  # and says so
    # Without hydra.run.dir the run dir carries the network's name too.
    r = cli("train", "+exp=cifar_resnet20", "model.depth=8", *SYNTH, *TINY_TRAINER[1:], "trainer.max_iters=1",
            "model.bn_group_size=16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["cifar_resnet8"]


def test_throughput_after_a_resume_counts_only_this_sessions_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock that advances one second per training step: every window is exactly
    # batch_size images per second, before and after the resume.
    import resnet_repro.training.loop as train_module

    clock = {"t": 0.0}
    real_step = engine.train_step

    def timed_step(*args, **kwargs):
        clock["t"] += 1.0
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_clock", lambda: clock["t"])
    monkeypatch.setattr(train_module, "train_step", timed_step)
    over = ["trainer.log_every=3", "trainer.ckpt_every=4", "trainer.eval_every=12", "trainer.max_iters=8"]
    train(tmp_path, over)
    # Continue from the checkpoint at iteration 4, whose metric sums hold iteration 4's images
    # (the last row was at 3): the first window after the resume times iterations 5 and 6 only.
    ckpts = tmp_path / "checkpoints"
    (ckpts / "prev.pt").replace(ckpts / "last.pt")
    (tmp_path / "summary.json").unlink()
    summary = train(tmp_path, over)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [3, 6, 8]
    assert [r["images_per_s"] for r in rows] == [32.0, 32.0, 32.0]
    assert summary["images_per_s"] == 32.0


@pytest.mark.slow
def test_a_resumed_run_follows_its_data_to_another_path_but_not_to_other_data(tmp_path: Path) -> None:
    first, moved, other = tmp_path / "first", tmp_path / "moved", tmp_path / "other"
    write_cifar_folder(first)
    write_cifar_folder(other, classes=("a", "b", "c"))  # another data set: more images, another class
    run = tmp_path / "run"
    base = ["data=cifar10_folder", "data.val_size=0", f"data.cache_dir={tmp_path / 'cache'}", *TINY_TRAINER,
            "trainer.batch_size=2", "trainer.max_iters=2", "trainer.ckpt_every=2", f"hydra.run.dir={run}"]
    assert cli("train", *base, f"data.root={first}").returncode == 0
    first.rename(moved)
    r = cli("train", *base, f"data.root={moved}", "trainer.max_iters=4")  # the same data, moved
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "summary.json").read_text())["iterations"] == 4
    config = (run / "config.yaml").read_bytes()
    r = cli("train", f"resume={run}", f"data.root={other}", "trainer.max_iters=6")
    assert r.returncode == 2 and "not the data this run trained on" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert load_checkpoint(run / "checkpoints" / "last.pt")["meta"]["iteration"] == 4  # untouched
    assert (run / "config.yaml").read_bytes() == config  # still the run's own recipe (`status` reads it)


@pytest.mark.slow
def test_resume_refusals_name_the_setting_that_differs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", *TINY, "trainer.max_iters=2", f"hydra.run.dir={run}").returncode == 0
    r = cli("train", "data=cifar10_folder", f"data.root={tmp_path}", *TINY_TRAINER, f"hydra.run.dir={run}")
    assert r.returncode == 2 and "data.name='synthetic'" in r.stderr and "'cifar10_folder'" in r.stderr
    # A setting the default composition lacks is not Hydra's business on resume: ours answers.
    r = cli("train", f"resume={run}", f"data.cache_dir={tmp_path / 'c'}", "trainer.max_iters=3")
    assert r.returncode == 0, r.stderr
    r = cli("train", f"resume={run}", "data.n_train=700")
    assert r.returncode == 2 and "'data.n_train=700' cannot change when resuming" in r.stderr and "+" not in r.stderr


@pytest.mark.parametrize("case", [
    ["trainer.max_iters=-1"],
    ["model.weights=/nonexistent/weights.pth"],
    ["data=cifar10_folder", "data.root=/nonexistent/cifar"],
])
def test_a_refused_command_leaves_no_run_dir(tmp_path: Path, case: list[str]) -> None:
    run = tmp_path / "run"
    r = cli("train", *TINY, *case, f"hydra.run.dir={run}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not run.exists()
    r = cli("train", f"resume={tmp_path / 'nope'}")
    assert r.returncode == 2 and not (tmp_path / "nope").exists()


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", ["resume_empty_dir", "existing_empty_run_dir", "new_nested_run_dir", "empty_run_dir"])
def test_a_refused_command_leaves_the_file_system_as_it_was(tmp_path: Path, case: str) -> None:
    work = tmp_path / "work"
    (work / "empty").mkdir(parents=True)
    (work / "runs").mkdir()
    args = {
        "resume_empty_dir": ["train", "resume=empty"],
        "existing_empty_run_dir": ["train", *TINY, "trainer.max_iters=-1", "hydra.run.dir=empty"],
        "new_nested_run_dir": ["train", *TINY, "trainer.max_iters=-1", "hydra.run.dir=a/x/y"],
        "empty_run_dir": ["train", *TINY, "hydra.run.dir="],
    }[case]
    before = _listing(work)
    r = cli(*args, cwd=work)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _listing(work) == before


def test_bench_writes_no_run_dir(tmp_path: Path) -> None:
    r = cli("bench", *TINY, "bench.iters=1", "bench.warmup=0", "bench.baseline=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "images/s" in r.stdout
    assert _listing(tmp_path) == []


def test_a_run_dir_holds_no_empty_log_file(tmp_path: Path) -> None:
    r = cli("train", *TINY, "trainer.max_iters=1", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob("*.log"))
