"""Training the paper's way: recipes compose, the loop writes a complete run dir, resume is
exact, bad input is one line and loses nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_config, write_cifar_folder, train_tiny as train
from resnet_repro import recipes
from resnet_repro.training import step as engine
from resnet_repro.paper import judge
from resnet_repro.paper import numbers as paper
from resnet_repro.runs.checkpoint import load_checkpoint, save_checkpoint
from resnet_repro.data.build import load_cifar_splits
from resnet_repro.config.paths import CONF_DIR
from resnet_repro.evaluate import evaluate_checkpoint
from resnet_repro.runs.sinks import read_jsonl, round_floats
from resnet_repro.training.schedule import schedule_from
from resnet_repro.schema import run_settings
from resnet_repro.train import train_from_config

EXPS = sorted(p.stem for p in (CONF_DIR / "exp").glob("*.yaml"))




# -- recipes ------------------------------------------------------------------------------------


def test_the_issue_names_every_cifar_exp() -> None:
    expected = {f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110, 1202)} | {
        f"cifar_plain{d}" for d in (20, 32, 44, 56, 110)
    }
    assert expected <= set(EXPS)


@pytest.mark.parametrize("exp", EXPS)
def test_every_exp_composes_into_valid_settings(exp: str) -> None:
    text = (CONF_DIR / "exp" / f"{exp}.yaml").read_text()
    assert text.startswith("# @package _global_")
    extra = ["model.weights=resnet18.pth"] if "finetune" in exp else []  # required there
    s = run_settings(compose_config([f"+exp={exp}", *extra]))
    # A sweep exp names each job after its model, so jobs group with the single exps.
    assert s.exp_name == (s.model.name if exp == "cifar_degradation" else exp)


PAPER_EXPS = [e for e in EXPS if e.startswith(("cifar_resnet", "cifar_plain", "imagenet_"))]


@pytest.mark.parametrize("exp", PAPER_EXPS)
def test_a_run_of_each_paper_exp_as_configured_on_the_papers_data_gets_the_papers_line(exp: str) -> None:
    # What training hands W&B: the exp's typed settings and the sizes of the data it loaded,
    # judged against the row's recipe (the same exp, composed by recipes.py).
    s = run_settings(compose_config([f"+exp={exp}", "data.root=/data"]))
    cifar = s.model.arch.family == "cifar"
    n_train, n_test, classes = (50_000, 10_000, 10) if cifar else (1_281_167, 50_000, 1000)
    sizes = {"train": n_train - s.data.val_size, "val": s.data.val_size, "test": n_test}
    facts = judge.planned_facts(s.data.name, classes, sizes, s.trainer.max_iters)
    ref = judge.paper_reference(exp, recipes.reference(exp), judge.recipe(s), facts)
    assert ref == ({"paper/test_err": judge.paper_value(exp)[1]} if exp in paper.TABLE6_ERROR
                   else {"paper/ten_crop_err": judge.paper_value(exp)[1]} if judge.paper_value(exp) else {})
    # 1000 fewer training images (a partial copy of the data) loses the line
    short = judge.planned_facts(s.data.name, classes, {**sizes, "train": sizes["train"] - 1000}, s.trainer.max_iters)
    assert judge.paper_reference(exp, recipes.reference(exp), judge.recipe(s), short) == {}


def test_cifar_recipe_learning_rate_by_iteration() -> None:
    s = run_settings(compose_config(["+exp=cifar_resnet56"]))
    sch = schedule_from(s.schedule)
    lrs = {it: sch.lr(it) for it in (0, 31999, 32000, 47999, 48000, 63999, s.trainer.max_iters)}
    assert lrs == pytest.approx({0: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 63999: 0.001, 64000: 0.001})


def test_resnet110_recipe_warms_up_at_001_until_train_error_below_80_percent() -> None:
    s = run_settings(compose_config(["+exp=cifar_resnet110"]))
    sch = schedule_from(s.schedule)
    assert sch.lr(0) == pytest.approx(0.01)
    assert sch.observe_train_error(99, 0.85) is False
    assert sch.observe_train_error(399, 0.79) is True
    assert (sch.lr(399), sch.lr(400), sch.lr(32000)) == pytest.approx((0.01, 0.1, 0.01))


# -- a run ----------------------------------------------------------------------------------------


def test_run_dir_holds_metrics_summary_checkpoint_and_config(tmp_path: Path) -> None:
    summary = train(tmp_path, [])
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [2, 4, 6, 8, 10, 12]
    for r in rows:
        assert {"iter", "epoch", "lr", "train/loss", "train/err"} <= r.keys()
    evals = [r for r in rows if "test/err" in r]
    assert [r["iter"] for r in evals] == [6, 12] and all("val/err" in r for r in evals)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary  # the summary returned is the one on disk (12 significant digits)
    assert summary["test_err"] == round_floats(evals[-1]["test/err"])
    assert summary["best_val_err"] == min(r["val/err"] for r in evals)
    for key in ("params", "macs", "seed", "iterations", "train_time_s", "wall_time_s", "images_per_s", "peak_memory_bytes",
                "device", "torch", "git_commit", "warmup_switch_iter", "exp_name", "best_val_iter"):
        assert key in summary
    assert summary["iterations"] == 12 and summary["val_size"] == 128 and summary["train_size"] == 512
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "config.yaml").is_file()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["meta"]["iteration"] == 12


def test_same_seed_same_run_and_seed_changes_it(tmp_path: Path) -> None:
    a = train(tmp_path / "a", ["seed=3"])
    b = train(tmp_path / "b", ["seed=3"])
    train(tmp_path / "c", ["seed=4"])
    rows = lambda d: [r["train/loss"] for r in read_jsonl(d / "metrics.jsonl")]  # noqa: E731
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert rows(tmp_path / "a") != rows(tmp_path / "c")
    assert a["test_err"] == b["test_err"]


def test_paper_cifar_exps_train_on_every_training_image(tmp_path: Path) -> None:
    # Table 6 / Figure 6 nets train on all 50k images (the 45k/5k split only chose the
    # schedule, §4.2): with the exp as configured, nothing is held out.
    write_cifar_folder(tmp_path / "folder")
    for exp in ("cifar_resnet20", "cifar_plain56"):
        s = run_settings(compose_config([f"+exp={exp}", "data=cifar10_folder", f"data.root={tmp_path / 'folder'}"]))
        splits = load_cifar_splits(s.data, s.seed)
        assert (len(splits.train), len(splits.val)) == (6, 0)


def test_schedule_study_holdout_is_the_same_images_for_every_seed(tmp_path: Path) -> None:
    # holdout=schedule_study (45k/5k) holds out images chosen by the data, not the run seed,
    # so seeds differ only in initialisation and order.
    write_cifar_folder(tmp_path / "folder")
    held = []
    for seed in (0, 1, 2):
        s = run_settings(compose_config(["+exp=cifar_resnet20", "data=cifar10_folder", f"data.root={tmp_path / 'folder'}",
                                         "holdout=schedule_study", "data.val_size=2", f"seed={seed}"]))
        held.append(load_cifar_splits(s.data, s.seed).val.x)
    assert held[0].shape[0] == 2 and all(torch.equal(held[0], h) for h in held)
    assert len({tuple(img[:, 0, 0].tolist()) for img in held[0]}) == 2  # two distinct images
    assert run_settings(compose_config(["holdout=schedule_study"])).data.val_size == 5000  # §4.2's 45k/5k


def test_val_size_zero_trains_on_every_training_image(tmp_path: Path) -> None:
    summary = train(tmp_path, ["data.val_size=0"])
    assert summary["train_size"] == 640 and summary["val_size"] == 0 and summary["best_val_err"] is None


def test_warmup_switch_iteration_is_recorded_in_summary_and_checkpoint(tmp_path: Path) -> None:
    # A threshold of 100% (any error below it) ends the warm-up at the first check: iteration check_every.
    summary = train(tmp_path, ["schedule.warmup.enabled=true", "schedule.warmup.error_threshold=1.0",
                               "schedule.warmup.check_every=4"])
    assert summary["warmup_switch_iter"] == 4
    lrs = {r["iter"]: r["lr"] for r in read_jsonl(tmp_path / "metrics.jsonl")}
    assert lrs[2] == pytest.approx(0.01) and lrs[4] == pytest.approx(0.01) and lrs[6] == pytest.approx(0.1)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["schedule"]  # the warm-up state travels with the checkpoint


def test_warmup_cap_ends_warmup_when_error_never_drops(tmp_path: Path) -> None:
    summary = train(tmp_path, ["schedule.warmup.enabled=true", "schedule.warmup.error_threshold=0.000001",
                               "schedule.warmup.max_iters=6"])
    assert summary["warmup_switch_iter"] == 6
    lrs = {r["iter"]: r["lr"] for r in read_jsonl(tmp_path / "metrics.jsonl")}
    assert lrs[6] == pytest.approx(0.01) and lrs[8] == pytest.approx(0.1)


@pytest.mark.parametrize("world, batch", [(1, 16), (2, 32)])
def test_bn_group_larger_than_the_per_process_batch_is_refused_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: int, batch: int
) -> None:
    from resnet_repro.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train(run_dir, [f"trainer.batch_size={batch}", "model.bn_group_size=32"])
    msg = str(e.value)
    assert "\n" not in msg and "32" in msg and (str(batch // world) in msg), msg  # names both numbers
    assert not run_dir.exists()  # refused before the run dir or any data


def test_imagenet_exps_take_bn_statistics_over_32_images() -> None:
    for exp in (e for e in EXPS if e.startswith("imagenet_")):
        s = run_settings(compose_config([f"+exp={exp}"]))
        assert s.model.bn_group_size == 32, exp  # released models: 256 over 8 GPUs


def test_bn_group_size_must_divide_the_batch(tmp_path: Path) -> None:
    from resnet_repro.errors import ConfigError

    with pytest.raises(ConfigError, match="not a multiple of model.bn_group_size=24"):
        train(tmp_path, ["model.bn_group_size=24"])


# -- resume ---------------------------------------------------------------------------------------


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = train(tmp_path / "ref", ["schedule.warmup.enabled=true", "schedule.warmup.error_threshold=0.85",
                                   "schedule.warmup.check_every=3"])
    over = ["schedule.warmup.enabled=true", "schedule.warmup.error_threshold=0.85", "schedule.warmup.check_every=3"]

    real_step, calls = engine.train_step, {"n": 0}

    def crash_at_10(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:  # after the checkpoint at 8 and the metrics row at 8
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr("resnet_repro.training.loop.train_step", crash_at_10)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", over)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["meta"]["iteration"] == 8
    monkeypatch.setattr("resnet_repro.training.loop.train_step", real_step)
    resumed = train(tmp_path / "run", over)  # re-running into the run dir continues it

    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "ref" / "metrics.jsonl"))
    for key in ("test_err", "best_val_err", "best_val_iter", "warmup_switch_iter", "iterations"):
        assert resumed[key] == ref[key]
    a = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    for k, v in b["model"].items():
        assert torch.equal(a["model"][k], v), k
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_a_checkpoint_from_before_the_loop_was_reshaped_resumes_exactly(tmp_path: Path) -> None:
    # Checkpoints written before this version lack the data fingerprint (meta) and the timed
    # iteration count (loop), and their config.yaml lacks settings added since (trainer.tf32).
    # Such a run resumes and ends where an uninterrupted run of today's code ends. (Checked by
    # hand once with the code itself: 8 iterations trained by commit bf35fe9, resumed to 12 here,
    # gave the metrics of 12 iterations of this code.)
    over = ["data.val_size=0", "trainer.max_iters=6"]  # ends on an evaluation, as the reference does
    ref = train(tmp_path / "ref", ["data.val_size=0"])
    train(tmp_path / "run", over)
    ckpt_path = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    del ckpt["meta"]["data_fingerprint"], ckpt["loop"]["timed_iters"]
    save_checkpoint(ckpt_path, ckpt)
    (tmp_path / "run" / "checkpoints" / "prev.pt").unlink()
    (tmp_path / "run" / "summary.json").unlink()
    config = tmp_path / "run" / "config.yaml"
    config.write_text("\n".join(ln for ln in config.read_text().splitlines() if not ln.strip().startswith("tf32:")))
    resumed = train(tmp_path / "run", ["data.val_size=0"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "ref" / "metrics.jsonl"))
    assert (resumed["test_err"], resumed["test_loss"], resumed["iterations"]) == (ref["test_err"], ref["test_loss"], 12)


def test_resume_option_continues_with_the_saved_settings_and_a_longer_budget(tmp_path: Path) -> None:
    ref = train(tmp_path / "ref", ["seed=1", "trainer.max_iters=16"])
    train(tmp_path / "run", ["seed=1"])  # stops at 12
    cfg = compose_config(["resume=" + str(tmp_path / "run"), "trainer.max_iters=16"])  # defaults otherwise
    resumed = train_from_config(cfg, tmp_path / "run", ["resume=" + str(tmp_path / "run"), "trainer.max_iters=16"])
    assert resumed["iterations"] == 16
    assert resumed["test_err"] == ref["test_err"]


def test_resume_refuses_a_changed_recipe_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    from resnet_repro.errors import ConfigError

    train(tmp_path, [])
    ckpt = tmp_path / "checkpoints" / "last.pt"
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    with pytest.raises(ConfigError, match="started with seed=0 but this command sets 1"):
        train(tmp_path, ["seed=1"])
    with pytest.raises(ConfigError, match="cannot change when resuming"):
        cfg = compose_config(TINY + [f"resume={tmp_path}", "model.depth=14"])
        train_from_config(cfg, tmp_path, [f"resume={tmp_path}", "model.depth=14"])
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == before


def test_rerunning_a_complete_run_keeps_its_results(tmp_path: Path) -> None:
    first = train(tmp_path, [])
    again = train(tmp_path, [])
    assert again == first  # read back from summary.json


# -- eval -----------------------------------------------------------------------------------------


def test_eval_reports_the_checkpoints_test_error(tmp_path: Path) -> None:
    summary = train(tmp_path, [])
    for target in (tmp_path, tmp_path / "checkpoints" / "last.pt"):
        r = evaluate_checkpoint(str(target), device="cpu", batch_size=100)
        assert r["err"] == pytest.approx(summary["test_err"])
        assert r["n"] == 256


def test_reported_numbers_are_fp32_even_when_training_runs_in_bf16(tmp_path: Path) -> None:
    summary = train(tmp_path, ["trainer.amp=bf16", "trainer.max_iters=4", "trainer.eval_every=4"])
    assert (summary["train_precision"], summary["eval_precision"]) == ("bf16", "fp32")
    # The run's own test numbers are those of an fp32 evaluation of its final weights: the
    # same loss to the last bit (a bf16 evaluation differs at the third significant digit).
    r = round_floats(evaluate_checkpoint(str(tmp_path), device="cpu", batch_size=1000))  # as summary.json
    assert r["loss"] == summary["test_loss"] and r["err"] == summary["test_err"]


def test_precision_names_what_a_number_was_computed_in() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert engine.precision(cuda, amp=True, tf32=True) == "bf16"
    assert engine.precision(cuda, amp=False, tf32=True) == "tf32"
    assert engine.precision(cuda, amp=False, tf32=False) == "fp32"  # trainer.tf32=false: strict
    assert engine.precision(cpu, amp=False, tf32=True) == "fp32"  # TF32 exists on CUDA only
    engine.set_tf32(False)
    try:
        assert not engine.tf32_enabled()
    finally:
        engine.set_tf32(True)


def test_eval_refuses_a_checkpoint_whose_weights_do_not_fit(tmp_path: Path) -> None:
    from resnet_repro.errors import CheckpointError

    train(tmp_path, [])
    path = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["model"].pop("fc.weight")
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, state)  # a well-formed checkpoint whose weights lack a tensor
    with pytest.raises(CheckpointError, match="weights do not fit"):
        evaluate_checkpoint(str(bad), device="cpu")


# -- W&B ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_wandb_offline_run_is_written_inside_the_run_dir_and_resumes_the_same_run(tmp_path: Path) -> None:
    train(tmp_path, ["logger=wandb", "trainer.max_iters=4"])
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    run_id = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["loop"]["wandb_id"]
    assert run_id and runs[0].name.endswith(run_id)
    cfg = compose_config(TINY + [f"resume={tmp_path}", "logger=wandb", "trainer.max_iters=8"])
    train_from_config(cfg, tmp_path, [f"resume={tmp_path}", "trainer.max_iters=8"])
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["loop"]["wandb_id"] == run_id
