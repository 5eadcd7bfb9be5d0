"""The report: our runs beside the paper's tables, figures that open, Figure 7's layer
responses, and the degradation sweep exp. CPU, tiny runs trained once per module."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO, TINY, compose_config
from resnet_repro.analyze import analyze_run, layer_response_stds
from resnet_repro.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint
from resnet_repro.cli import CONF_DIR, main
from resnet_repro.data.build import load_cifar_splits
from resnet_repro.data.pipeline import eval_batches
from resnet_repro.errors import ReproError
from resnet_repro.models import build_from_arch, build_model
from resnet_repro.report import (
    EVAL_MISSING,
    Run,
    build_report,
    group_runs,
    imagenet_sections,
    read_eval_results,
    table6,
    verdict,
)
from resnet_repro.settings import run_settings
from resnet_repro.train import register_resolvers, train_from_config
from resnet_repro.wandb_runs import record_from_run, rows_from_history

# Even shorter than TINY: 4 iterations, an evaluation every 2 (two test points per curve).
FAST = ["trainer.max_iters=4", "trainer.eval_every=2", "trainer.log_every=1", "trainer.ckpt_every=4",
        "trainer.batch_size=16", "data.n_train=160", "data.n_test=64", "data.val_size=32"]
# exp name -> ResNet depth. TINY sets model.depth=8, so the exp names tell the groups apart:
# "cifar_resnet20" here is a ResNet-8 and "cifar_resnet32" a ResNet-14.
DEPTHS = {"cifar_plain20": 8, "cifar_plain32": 14, "cifar_resnet20": 8, "cifar_resnet32": 14}
SEEDS = (0, 1)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_repro", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 tiny runs: plain and residual nets of 2 depths, 2 seeds each (a sweep-like tree)."""
    root = tmp_path_factory.mktemp("sweep")
    for exp, depth in DEPTHS.items():
        model = exp.replace("32", "20")  # a named model of the right kind; the depth is overridden
        for seed in SEEDS:
            ov = [f"model={model}", f"exp_name={exp}", f"model.depth={depth}", f"seed={seed}", *FAST]
            train_from_config(compose_config(TINY + ov), root / f"{exp}-seed{seed}", ov)
    return root


@pytest.fixture(scope="module")
def report(runs_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_report([runs_dir], out=tmp_path_factory.mktemp("report"), layer_responses=True, device="cpu")


def _csv(report) -> list[dict[str, str]]:
    with open(report.out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _summaries(runs_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/summary.json"))]


# -- tables -------------------------------------------------------------------------------------


def test_table6_ours_is_the_mean_and_sample_std_of_the_seeds_test_errors(runs_dir: Path, report) -> None:
    rows = {r["model"]: r for r in _csv(report) if r["table"] == "table6"}
    for exp in ("cifar_resnet20", "cifar_resnet32"):
        errs = np.array([s["test_err"] for s in _summaries(runs_dir) if s["exp_name"] == exp])
        assert len(errs) == len(SEEDS)
        row = rows[exp]
        assert float(row["ours_mean"]) == pytest.approx(errs.mean())
        assert float(row["ours_std"]) == pytest.approx(errs.std(ddof=1))
        assert float(row["ours_best"]) == pytest.approx(errs.min())
        assert int(row["n"]) == len(SEEDS)
        assert float(row["diff"]) == pytest.approx(errs.mean() - {"cifar_resnet20": 8.75, "cifar_resnet32": 7.51}[exp])
        # synthetic numbers are never judged against the paper's CIFAR-10
        assert row["data"] == "synthetic" and row["verdict"] == "not comparable (synthetic data)"
    assert "synthetic (not CIFAR-10)" in report.markdown


def test_plain_nets_table_has_our_numbers_and_the_degradation_check(runs_dir: Path, report) -> None:
    rows = {r["model"]: r for r in _csv(report) if r["table"] == "plain_cifar"}
    assert set(rows) == {"cifar_plain20", "cifar_plain32"}
    for exp, row in rows.items():
        errs = np.array([s["test_err"] for s in _summaries(runs_dir) if s["exp_name"] == exp])
        assert float(row["ours_mean"]) == pytest.approx(errs.mean())
        assert float(row["ours_std"]) == pytest.approx(errs.std(ddof=1))
        assert row["paper"] == ""  # the paper prints no plain-net numbers
    md = report.markdown
    assert "deeper plain net has higher training error than shallower" in md
    assert "plain-14" in md and "plain-8" in md  # the check names the architectures' depths


def test_paper_rows_without_runs_are_listed_as_missing(report) -> None:
    rows = _csv(report)
    t6 = {r["model"]: r for r in rows if r["table"] == "table6"}
    for model in ("cifar_resnet44", "cifar_resnet56", "cifar_resnet110", "cifar_resnet1202"):
        assert t6[model]["ours_mean"] == "missing" and t6[model]["n"] == "0"
    for table, models in (("table2", 4), ("table3", 7), ("table4", 5)):
        assert len({r["model"] for r in rows if r["table"] == table}) == models
        assert all(r["ours_mean"] == "missing" for r in rows if r["table"] == table)
    line = next(ln for ln in report.markdown.splitlines() if ln.startswith("| cifar_resnet110 "))
    assert "| missing |" in line and "mean 6.61 ± 0.16" in line


def test_verdict_is_the_papers_spread_for_resnet110_and_the_tolerance_elsewhere() -> None:
    spread = (6.61, 0.16)
    assert verdict(6.93, 6.43, 0.5, spread) == "within the paper's spread"  # |6.93 - 6.61| = 2 x 0.16
    assert verdict(6.29, 6.43, 0.5, spread) == "within the paper's spread"
    assert verdict(6.94, 6.43, 0.5, spread) == "outside the paper's spread"
    assert verdict(6.20, 6.43, 0.5, spread) == "outside the paper's spread"  # 0.23 from 6.43, 0.41 from 6.61
    assert verdict(9.25, 8.75, 0.5) == "within tolerance"  # the boundary counts as within
    assert verdict(8.24, 8.75, 0.5) == "outside tolerance"
    assert verdict(26.0, 25.03, 1.0) == "within tolerance"
    assert verdict(26.1, 25.03, 1.0) == "outside tolerance"


def _fake_run(exp: str, seed: int, err: float, data: str = "cifar10", family: str = "cifar", depth: int = 20,
              residual: bool = True, path: str = "") -> Run:
    summary = {"exp_name": exp, "seed": seed, "test_err": err, "data": data, "iterations": 64000,
               "arch": {"family": family, "depth": depth, "residual": residual, "shortcut": "A"}}
    return Run(path or f"/runs/{exp}-{seed}", summary, [])


def test_table6_rows_judge_cifar10_numbers_and_label_the_jpeg_copy() -> None:
    runs = [_fake_run("cifar_resnet110", s, e, depth=110) for s, e in enumerate((6.5, 6.7, 6.9))]
    runs += [_fake_run("cifar_resnet20", 0, 9.4), _fake_run("cifar_resnet56", 0, 7.2, data="cifar10_folder")]
    sec = table6(group_runs(runs), tolerance=0.5)
    rows = {(r["model"], r["data"]): r for r in sec.csv_rows}
    r110 = rows[("cifar_resnet110", "cifar10")]
    assert r110["ours_mean"] == pytest.approx(6.7) and r110["ours_std"] == pytest.approx(0.2)
    assert r110["diff"] == pytest.approx(6.7 - 6.61)  # against the paper's mean of 5 runs
    assert r110["verdict"] == "within the paper's spread"
    assert rows[("cifar_resnet20", "cifar10")]["verdict"] == "outside tolerance"  # 9.4 - 8.75 = 0.65
    assert rows[("cifar_resnet56", "cifar10_folder")]["verdict"] == "within tolerance (JPEG copy)"
    assert any("CIFAR-10 (JPEG copy)" in ln and ln.startswith("| cifar_resnet56 ") for ln in sec.markdown)
    assert rows[("cifar_resnet20", "cifar10")]["ours_std"] is None  # one run: no std


def test_imagenet_tables_read_eval_json_files_or_say_how_to_make_them(tmp_path: Path) -> None:
    arch = {"family": "imagenet", "depth": 34, "residual": True, "shortcut": "B"}
    for seed, (top1, top5) in enumerate(((24.9, 7.5), (25.3, 7.7))):
        run = tmp_path / f"r34b-{seed}"
        run.mkdir()
        summary = {"exp_name": "imagenet_resnet34_b", "seed": seed, "test_err": 27.0, "data": "imagenet",
                   "arch": arch, "iterations": 600000}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "eval_ten_crop.json").write_text(json.dumps({"protocol": "ten_crop", "err": top1, "top5_err": top5}))
    runs = [Run(str(p), json.loads((p / "summary.json").read_text()), [], read_eval_results(p))
            for p in sorted(tmp_path.iterdir())]
    sections = imagenet_sections(group_runs(runs), tolerance=1.0)
    rows = {(r["table"], r["metric"]): r for s in sections for r in s.csv_rows if r["model"] == "imagenet_resnet34_b"}
    t3 = rows[("table3", "top1_ten_crop")]
    assert t3["ours_mean"] == pytest.approx(25.1) and t3["n"] == 2
    assert t3["diff"] == pytest.approx(25.1 - 24.52) and t3["verdict"] == "within tolerance"
    assert rows[("table3", "top5_ten_crop")]["ours_mean"] == pytest.approx(7.6)
    assert rows[("table4", "top1_multi_scale")]["ours_mean"] == EVAL_MISSING  # no multi-scale file yet
    md = "\n".join(ln for s in sections for ln in s.markdown)
    assert "eval protocol=all" in md and "eval_*.json" in md


# -- figures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["figure6_cifar.png", "figure7_layer_responses.png"])
def test_figures_are_nontrivial_pngs_linked_from_the_report(report, name: str) -> None:
    from PIL import Image

    path = report.out / name
    assert path.stat().st_size > 10_000
    with Image.open(path) as im:
        assert im.format == "PNG"
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20  # curves in several colours, not a blank canvas
    assert f"]({name})" in report.markdown


def test_figure7_section_is_skipped_when_no_run_has_layer_responses(runs_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    for f in ("summary.json", "metrics.jsonl"):  # a run without checkpoints/ or layer_responses.json
        shutil.copy(runs_dir / "cifar_resnet20-seed0" / f, tmp_path / "one" / f)
    rep = build_report([tmp_path], out=tmp_path / "out")
    assert "Figure 7" not in rep.markdown and not (tmp_path / "out" / "figure7_layer_responses.png").exists()
    assert (tmp_path / "out" / "figure6_cifar.png").is_file()


# -- Figure 7 analysis --------------------------------------------------------------------------


def test_layer_responses_give_one_positive_std_per_3x3_layer_stem_included(runs_dir: Path, report) -> None:
    for exp, depth in DEPTHS.items():
        r = json.loads((runs_dir / f"{exp}-seed0" / "layer_responses.json").read_text())
        assert len(r["std"]) == len(r["layers"]) == depth - 1  # 6n+1: the stem and 2 per block
        assert r["layers"][0] == "bn1" and r["layers"][1] == "layer1.0.bn1"
        assert all(math.isfinite(s) and s > 0 for s in r["std"])
    assert len(layer_response_stds(build_model("imagenet_resnet50"), [])) == 16  # bottlenecks: one 3x3 each


def test_layer_response_std_equals_the_std_of_the_whole_bn_output(runs_dir: Path) -> None:
    run = runs_dir / "cifar_resnet20-seed1"
    got = analyze_run(run, max_images=100)["std"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    s = run_settings(state["config"])
    model = build_from_arch(s.model.arch).eval()
    model.load_state_dict(state["model"])
    splits = load_cifar_splits(s.data, s.seed)
    x = torch.cat([xb for xb, _ in eval_batches(splits.test, splits.mean, 30, "cpu")])[:100]
    with torch.no_grad():  # recompute directly: the stem's BN output and the last block's branch F(x)
        stem = model.bn1(model.conv1(x))
        h = model.layer2(model.layer1(model.relu(stem.clone())))
        last_branch = model.layer3[0].branch(h)
    assert got[0] == pytest.approx(stem.double().std(unbiased=False).item(), rel=1e-5)
    assert got[-1] == pytest.approx(last_branch.double().std(unbiased=False).item(), rel=1e-5)


def test_analyze_refuses_imagenet_runs_and_missing_checkpoints_with_one_line(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    with pytest.raises(ReproError, match="checkpoint not found"):
        analyze_run(tmp_path)
    config = OmegaConf.to_container(compose_config(["+exp=imagenet_resnet18"]), resolve=True)
    s = run_settings(config)
    meta = checkpoint_meta(model_name=s.model.name, arch=s.model.arch.as_dict(), num_classes=1000, iteration=0)
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"meta": meta, "model": {}, "config": config})
    with pytest.raises(ReproError, match="CIFAR-10 nets only") as e:
        analyze_run(tmp_path)
    assert "\n" not in str(e.value)


# -- the command ----------------------------------------------------------------------------------


def test_report_on_a_dir_without_runs_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no runs found under")


def test_unfinished_run_is_listed_as_incomplete_not_an_error(runs_dir: Path, tmp_path: Path) -> None:
    done, unfinished = tmp_path / "sweep" / "0-done", tmp_path / "sweep" / "1-unfinished"
    shutil.copytree(runs_dir / "cifar_plain20-seed0", done)
    shutil.copytree(runs_dir / "cifar_plain32-seed0", unfinished)
    (unfinished / "summary.json").unlink()  # killed before the end: metrics.jsonl, no summary
    rep = build_report([tmp_path / "sweep"])
    assert rep.out == tmp_path / "sweep" and (rep.out / "report.md").is_file()
    incomplete = rep.markdown.split("### Incomplete runs", 1)[1]
    assert "1-unfinished" in incomplete and "cifar_plain32" in incomplete and "| 4 |" in incomplete
    assert "1 finished run(s) and 1 incomplete run(s)" in rep.markdown


def test_report_command_writes_report_md_and_results_csv_and_prints_the_markdown(runs_dir: Path,
                                                                                   tmp_path: Path) -> None:
    out = tmp_path / "rep"
    p = _cli("report", str(runs_dir), "--out", str(out), "--tolerance-cifar", "0.7")
    assert p.returncode == 0, p.stderr
    md = (out / "report.md").read_text()
    assert p.stdout.startswith(md)
    assert "±0.7 percentage points on CIFAR-10" in md and "## Runs" in md
    with open(out / "results.csv", newline="") as f:
        assert {r["table"] for r in csv.DictReader(f)} >= {"table6", "plain_cifar", "table2", "table3", "table4"}
    run_rows = [ln for ln in md.split("## Runs", 1)[1].splitlines() if ln.startswith("| cifar_")]
    assert len(run_rows) == 8 and all("synthetic (not CIFAR-10)" in ln for ln in run_rows)


# -- W&B ------------------------------------------------------------------------------------------


class _FakeWandbRun:
    """What `wandb.Api().runs(...)` yields, as far as the report reads it."""

    url = "https://wandb.ai/me/resnet/runs/abc"
    id = "abc"
    name = "cifar_resnet56"
    state = "finished"
    config = {"exp_name": "cifar_resnet56", "seed": 2,
              "model": {"name": "cifar_resnet56", "family": "cifar", "depth": 56, "residual": True, "shortcut": "A"},
              "data": {"name": "cifar10"}}
    summary = {"test_err": 6.9, "best_val_err": 6.5, "iterations": 64000, "_runtime": 3.0}

    def scan_history(self):
        return [
            {"_step": 200, "_timestamp": 1.0, "train/err": 40.0, "lr": 0.1},
            {"_step": 100, "_timestamp": 0.5, "train/err": 60.0, "lr": 0.1},
            {"_step": 2000, "train/err": 20.0, "test/err": 22.5, "test/loss": None, "note": "x"},
        ]


def test_wandb_runs_convert_to_summary_and_metrics_rows() -> None:
    rec = record_from_run(_FakeWandbRun())
    assert rec["finished"] and rec["path"] == _FakeWandbRun.url
    s = rec["summary"]
    assert (s["exp_name"], s["seed"], s["data"], s["test_err"]) == ("cifar_resnet56", 2, "cifar10", 6.9)
    assert s["arch"]["depth"] == 56 and "_runtime" not in s
    assert rec["rows"] == [
        {"iter": 100, "train/err": 60.0, "lr": 0.1},
        {"iter": 200, "train/err": 40.0, "lr": 0.1},
        {"iter": 2000, "train/err": 20.0, "test/err": 22.5},
    ]
    assert rows_from_history([{"train/err": 1.0}]) == []  # no step, no row
    (group,) = group_runs([Run(rec["path"], s, rec["rows"], local=False)])
    assert group.exp == "cifar_resnet56" and group.depth == 56


# -- the degradation sweep ------------------------------------------------------------------------


def test_degradation_exp_is_a_multirun_over_8_models_and_3_seeds() -> None:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+exp=cifar_degradation"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # `train +exp=cifar_degradation` sweeps without -m
    params = cfg.hydra.sweeper.params
    assert params.model.split(",") == [f"cifar_{k}{d}" for k in ("plain", "resnet") for d in (20, 32, 44, 56)]
    assert params.seed == "0,1,2"
    text = (CONF_DIR / "exp" / "cifar_degradation.yaml").read_text()
    assert text.startswith("# @package _global_")
    for model in params.model.split(","):  # each job = the single exp of the same name
        s = run_settings(compose_config(["+exp=cifar_degradation", f"model={model}"]))
        single = run_settings(compose_config([f"+exp={model}"]))
        assert s.exp_name == model
        assert (s.model, s.data, s.schedule, s.trainer, s.optim) == (
            single.model, single.data, single.schedule, single.trainer, single.optim)
        assert s.model.bn_group_size == 64


def test_degradation_sweep_launches_one_job_per_model_and_reports_them(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    tiny = [o for o in TINY + FAST if not o.startswith("trainer.max_iters")] + ["trainer.max_iters=2"]
    p = _cli("train", "+exp=cifar_degradation", "model=cifar_plain20,cifar_resnet20", "seed=0", *tiny,
             f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-2000:]
    summaries = {json.loads(f.read_text())["exp_name"]: f.parent.name for f in sweep.glob("*/summary.json")}
    assert summaries == {"cifar_plain20": "0-cifar_plain20-seed0", "cifar_resnet20": "1-cifar_resnet20-seed0"}
    rep = build_report([sweep])
    assert {r["model"] for r in csv.DictReader(open(rep.out / "results.csv")) if r["n"] == "1"} == {
        "cifar_resnet20", "cifar_plain20"}
