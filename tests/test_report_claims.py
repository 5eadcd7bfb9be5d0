"""The report's early-training claims (issue 19, point 4): the §4.2 warm-up (switch iteration,
what happens after it) and Figure 6's ordering of training error by depth, from finished and
paused runs' logged curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_config
from resnet_repro.training import policy
from resnet_repro.report import build_report
from resnet_repro.report.claims import (
    ordering_section,
    orderings,
    precision_comparisons,
    precision_section,
    warmup_of,
    warmup_section,
)
from resnet_repro.report.collect import Run
from resnet_repro.report.compare import group_runs
from resnet_repro.train import train_from_config


def _summary(exp: str, depth: int, residual: bool, seed: int = 0, data: str = "cifar10_folder",
             precision: str = "fp32", **changes) -> dict:
    return {"exp_name": exp, "seed": seed, "data": data, "status": "paused", "iterations": 1000,
            "max_iters": 64000, "train_precision": precision, "schedule": {"warmup": False},
            "arch": {"family": "cifar", "depth": depth, "residual": residual}} | changes


def _run(exp: str, depth: int, residual: bool, curve: dict[int, float], lrs: dict[int, float] | None = None,
         losses: dict[int, float] | None = None, tests: dict[int, float] | None = None, **kw) -> Run:
    rows = [{"iter": i, "train/err": e, "train/loss": (losses or {}).get(i, 1.0), "lr": (lrs or {}).get(i, 0.1)}
            | ({"test/err": tests[i]} if tests and i in tests else {}) for i, e in curve.items()]
    return Run(f"/runs/{exp}-{kw.get('seed', 0)}-{kw.get('data', '')}-{kw.get('precision', '')}",
               _summary(exp, depth, residual, **kw), rows)


def _warm(curve: dict[int, float], switch: int | None, **kw) -> Run:
    lrs = {i: (0.01 if switch is None or i <= switch else 0.1) for i in curve}
    return _run("cifar_resnet110", 110, True, curve, lrs, schedule={"warmup": True}, warmup_switch_iter=switch, **kw)


def test_a_warmup_that_switched_and_kept_learning_is_reported_with_its_numbers() -> None:
    w = warmup_of(_warm({300: 85.0, 400: 79.0, 500: 82.0, 600: 70.0}, switch=400))
    assert w is not None
    assert (w.switch, w.err_at_switch, w.lr_after, w.max_err_after, w.last_err) == (400, 79.0, 0.1, 82.0, 70.0)
    assert w.outcome.startswith("trains on")
    # A switch between two logged rows: the error of the row just before it.
    assert warmup_of(_warm({300: 85.0, 400: 79.0, 500: 70.0}, switch=450)).err_at_switch == 79.0


def test_divergence_stalling_and_a_warmup_not_ended_are_named() -> None:
    nan = _warm({400: 79.0, 500: 75.0, 600: 90.0}, switch=400)
    nan.rows[-1]["train/loss"] = math.nan
    assert warmup_of(nan).outcome.startswith("diverged")
    assert warmup_of(_warm({400: 79.0, 500: 75.0}, switch=400, status="diverged")).outcome.startswith("diverged")
    assert warmup_of(_warm({400: 79.0, 500: 80.0, 600: 79.5}, switch=400)).outcome.startswith("no progress")
    assert warmup_of(_warm({100: 90.0, 200: 85.0}, switch=None)).outcome == "still warming up at iteration 200"
    assert warmup_of(_warm({300: 85.0, 400: 79.0}, switch=400)).outcome.startswith("switched at its last")
    assert warmup_of(_run("cifar_resnet20", 20, True, {100: 50.0})) is None  # no warm-up in its recipe


def test_the_warmup_section_lists_each_seed_and_the_mean_switch_against_the_paper() -> None:
    runs = [_warm({300: 85.0, 400: 79.0, 500: 70.0}, switch=400, seed=0),
            _warm({200: 79.5, 300: 75.0}, switch=200, seed=1),
            _run("cifar_resnet20", 20, True, {100: 50.0})]
    md = "\n".join(warmup_section(runs))
    assert md.count("| cifar_resnet110 |") == 2 and "cifar_resnet20 |" not in md
    assert "Switch iterations: 400, 200 (mean 300; the paper: about 400)." in md
    assert warmup_section(runs[2:]) == []


def test_orderings_count_where_the_deeper_nets_training_error_lies() -> None:
    p20 = _run("cifar_plain20", 20, False, {100: 80.0, 200: 70.0, 300: 60.0, 400: 50.0, 500: 45.0})
    p56 = _run("cifar_plain56", 56, False, {100: 85.0, 200: 72.0, 300: 59.0, 400: 55.0})
    r20 = _run("cifar_resnet20", 20, True, {100: 70.0, 200: 60.0})
    on_other_data = _run("cifar_plain32", 32, False, {100: 1.0, 200: 1.0}, data="cifar10")
    pairs = orderings(group_runs([p20, p56, r20, on_other_data]))
    assert len(pairs) == 1  # plain with plain only, on one data set
    (p,) = pairs
    assert (p.shallow.exp, p.deep.exp, p.iters) == ("cifar_plain20", "cifar_plain56", [100, 200, 300, 400])
    assert p.gaps == [5.0, 2.0, -1.0, 5.0] and p.higher == 3
    line = p.line()
    assert "higher at 3 of 4 logged points, lower at 1" in line and "mean gap +2.75 points" in line
    assert "+5.00 over the last fifth" in line  # the last fifth of 4 points: the last one
    assert "warm-up" not in line


def test_depths_trained_in_other_precisions_are_compared_using_each_depths_furthest_run() -> None:
    # ResNet-20: a finished fp32 run and a bf16 prefix; ResNet-56 trained in bf16 (auto on another CPU)
    r20 = _run("cifar_resnet20", 20, True, {100: 70.0, 200: 60.0, 300: 50.0, 400: 40.0})
    r20_bf16 = _run("cifar_resnet20", 20, True, {100: 71.0, 200: 61.0}, precision="bf16", seed=0)
    r56 = _run("cifar_resnet56", 56, True, {100: 75.0, 200: 58.0, 300: 45.0, 400: 35.0}, precision="bf16")
    (p,) = orderings(group_runs([r20, r20_bf16, r56]))
    assert p.shallow.precision == "fp32" and p.iters == [100, 200, 300, 400]  # not the 200-iteration prefix
    assert "(CIFAR-10 (JPEG copy), ResNet-56 bf16, ResNet-20 fp32)" in p.line()
    assert p.gaps == [5.0, -2.0, -5.0, -5.0]


def test_depths_sharing_some_seeds_are_compared_seed_for_seed_to_the_end_of_both() -> None:
    # ResNet-20: seed 0 went on, seed 1 paused early; ResNet-56: seed 0 only. A two-seed mean of
    # ResNet-20 would stop the comparison at 200; seed 0 against seed 0 goes to 400.
    r20 = _run("cifar_resnet20", 20, True, {100: 70.0, 200: 60.0, 300: 50.0, 400: 40.0}, seed=0)
    r20_s1 = _run("cifar_resnet20", 20, True, {100: 80.0, 200: 70.0}, seed=1)
    r56 = _run("cifar_resnet56", 56, True, {100: 75.0, 200: 58.0, 300: 45.0, 400: 35.0}, seed=0)
    (p,) = orderings(group_runs([r20, r20_s1, r56]))
    assert p.iters == [100, 200, 300, 400] and p.paired == (0,)
    assert p.gaps == [5.0, -2.0, -5.0, -5.0]  # against seed 0 alone, not the mean (75 at 100)
    assert "(CIFAR-10 (JPEG copy), fp32, seed 0 of each), iterations 100-400" in p.line()
    # Finished seeds: the final test errors of the shared seed only.
    done = {"status": "complete", "test_err": 12.0}
    r20, r56 = (_run(r.summary["exp_name"], r.arch["depth"], True, {100: 1.0, 200: 1.0}, seed=0, **done)
                for r in (r20, r56))
    (p,) = orderings(group_runs([r20, _run("cifar_resnet20", 20, True, {100: 1.0}, seed=1, status="complete",
                                           test_err=20.0), r56]))
    assert "ResNet-56 12.00% vs ResNet-20 12.00%" in p.line()  # seed 1's 20.0 left out of ResNet-20's


def test_a_seed_trained_twice_counts_once_by_its_furthest_run() -> None:
    # ResNet-56 seed 0 started again on another machine (its checkpoint stayed on the first):
    # the restart (to 200) must not cut the comparison short of the first start (to 400).
    r20 = _run("cifar_resnet20", 20, True, {100: 70.0, 200: 60.0, 300: 50.0, 400: 40.0})
    first = _run("cifar_resnet56", 56, True, {100: 75.0, 200: 58.0, 300: 45.0, 400: 35.0}, precision="bf16")
    again = Run("/runs/restart", first.summary, [{"iter": i, "train/err": 99.0} for i in (100, 200)])
    (p,) = orderings(group_runs([r20, first, again]))
    assert p.iters == [100, 200, 300, 400] and p.gaps == [5.0, -2.0, -5.0, -5.0]
    assert [r.path for r in p.deep.runs] == [first.path]
    # Figure 6 draws it the same way: the first start's curve, not a mean of the two.
    from resnet_repro.report.figures import _curves

    (c,) = _curves(group_runs([first, again]))
    assert (c.iters, c.train_err) == ([100, 200, 300, 400], [75.0, 58.0, 45.0, 35.0])


def test_the_section_gives_a_depth_cut_to_shared_seeds_its_own_column() -> None:
    r20 = [_run("cifar_resnet20", 20, True, {i: 50.0 + s for i in range(500, 2001, 500)}, seed=s) for s in (0, 1)]
    r110 = [_run("cifar_resnet110", 110, True, {i: 40.0 + s for i in range(500, 2001, 500)}, seed=s) for s in (0, 1)]
    r56 = _run("cifar_resnet56", 56, True, {i: 45.0 for i in range(500, 2001, 500)}, seed=0)
    md = ordering_section(group_runs([*r20, *r110, r56]))
    head = next(line for line in md if line.startswith("| iteration"))
    assert head == ("| iteration | ResNet-20 (CIFAR-10 (JPEG copy), fp32, seed 0) | ResNet-20 (CIFAR-10 (JPEG copy), "
                    "fp32, seeds 0, 1) | ResNet-56 | ResNet-110 (CIFAR-10 (JPEG copy), fp32, seed 0) | ResNet-110 "
                    "(CIFAR-10 (JPEG copy), fp32, seeds 0, 1) |")
    assert "| 500 | 50.0 | 50.5 | 45.0 | 40.0 | 40.5 |" in md
    assert sum(line.startswith("- ResNet-") for line in md) == 3  # 56 vs 20, 110 vs 20, 110 vs 56


def test_two_finished_depths_are_compared_by_final_test_error_and_prefixes_are_not() -> None:
    r20 = _run("cifar_resnet20", 20, True, {100: 70.0, 200: 60.0}, status="complete", test_err=12.30)
    r56 = _run("cifar_resnet56", 56, True, {100: 75.0, 200: 58.0}, status="complete", test_err=11.05)
    (p,) = orderings(group_runs([r20, r56]))
    assert "Finished: final test error ResNet-56 11.05% vs ResNet-20 12.30%, ResNet-56 lower by 1.25 points." in p.line()
    paused = _run("cifar_resnet56", 56, True, {100: 75.0, 200: 58.0}, test_err=20.0)  # status "paused"
    (p,) = orderings(group_runs([r20, paused]))
    assert "Finished" not in p.line()


def test_the_test_errors_of_two_depths_are_compared_at_the_evaluations_both_logged() -> None:
    # Table 6's claim is about test error: along the way, the bold curves at common evaluations.
    r20 = _run("cifar_resnet20", 20, True, {i: 50.0 for i in range(100, 401, 100)}, tests={200: 30.0, 400: 25.0})
    r56 = _run("cifar_resnet56", 56, True, {i: 55.0 for i in range(100, 601, 100)},
               tests={200: 32.0, 400: 24.5, 600: 20.0}, precision="bf16")  # 600: ResNet-20 has no evaluation
    (p,) = orderings(group_runs([r20, r56]))
    assert p.tests == ((200, 30.0, 32.0), (400, 25.0, 24.5))
    assert ("Test error at the 2 evaluations both logged (200-400): ResNet-56's lower at 1, higher at 1; "
            "at 400 ResNet-56 24.50% vs ResNet-20 25.00%.") in p.line()
    # Two seeds each: the mean test error over the seeds at each evaluation.
    r20b = _run("cifar_resnet20", 20, True, {i: 50.0 for i in range(100, 401, 100)}, tests={200: 20.0, 400: 21.0},
                seed=1)
    r56b = _run("cifar_resnet56", 56, True, {i: 55.0 for i in range(100, 401, 100)}, tests={200: 22.0, 400: 20.5},
                precision="bf16", seed=1)
    (p,) = orderings(group_runs([r20, r20b, r56, r56b]))
    assert p.tests == ((200, 25.0, 27.0), (400, 23.0, 22.5))
    # No evaluation in common: no test-error sentence.
    (p,) = orderings(group_runs([_run("cifar_resnet20", 20, True, {100: 50.0, 200: 40.0}, tests={100: 30.0}),
                                 _run("cifar_resnet56", 56, True, {100: 50.0, 200: 40.0}, tests={200: 30.0})]))
    assert p.tests == () and "Test error" not in p.line()


def test_a_pair_with_a_warmup_run_says_so() -> None:
    r20 = _run("cifar_resnet20", 20, True, {100: 70.0, 200: 60.0})
    (p,) = orderings(group_runs([r20, _warm({100: 80.0, 200: 75.0}, switch=100)]))
    assert p.line().endswith("The paper: ResNet-110 lower once trained (deeper is better). ResNet-110 began with "
                             "the §4.2 warm-up at lr 0.01.")


def test_the_ordering_section_tabulates_the_curves_on_a_500_iteration_grid() -> None:
    its = range(100, 3001, 100)
    p20 = _run("cifar_plain20", 20, False, {i: 60.0 for i in its})
    p56 = _run("cifar_plain56", 56, False, {i: 70.0 for i in its})
    md = ordering_section(group_runs([p20, p56]))
    rows = [line for line in md if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 500", "| 1,000", "| 1,500", "| 2,000", "| 2,500", "| 3,000"]
    assert rows[0] == "| 500 | 60.0 | 70.0 |"
    assert "Seeds: plain-20 1, plain-56 1. Paused (prefixes of the recipe, compared over the iterations they " \
           "reached): plain-20, plain-56." in "\n".join(md)
    assert ordering_section(group_runs([p20])) == []


def test_the_report_shows_a_paused_warmup_run_with_the_switch_it_recorded(tmp_path: Path) -> None:
    # Threshold 100%: the warm-up ends at the first check (iteration 4); the run pauses at 8 of 12.
    run = tmp_path / "run"
    overrides = ["schedule.warmup.enabled=true", "schedule.warmup.error_threshold=1.0",
                 "schedule.warmup.check_every=4", "trainer.log_every=2", "trainer.pause_at=8"]
    train_from_config(compose_config(TINY + overrides), run, overrides)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "paused" and summary["warmup_switch_iter"] == 4
    md = build_report([run], tmp_path / "report").markdown
    section = md.split("## The ResNet-110 warm-up (§4.2)")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| cifar"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:6] == ["8", "4"] and cells[7] == "0.1"  # last logged iteration, switch, lr after
    assert "Switch iterations: 4 (mean 4; the paper: about 400)." in section


@pytest.fixture(scope="module")
def r20_config() -> dict:
    from omegaconf import OmegaConf

    cfg = compose_config(["+exp=cifar_resnet20", "data=cifar10_folder"])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _prec_run(config: dict, precision: str, seed: int, tests: dict[int, float], last: int = 4000) -> Run:
    rows = [{"iter": i, "train/loss": i / 1000 + seed + (precision == "bf16"), "train/err": 50.0} for i in
            range(100, last + 1, 100)]
    rows += [{"iter": i, "test/err": e} for i, e in tests.items()]
    return Run(f"/runs/r20-{precision}-{seed}", _summary("cifar_resnet20", 20, True, seed=seed, precision=precision,
                                                         iterations=last), rows, config=config)


def test_bf16_and_fp32_runs_of_one_recipe_are_compared_beside_the_seed_spread(r20_config: dict,
                                                                             tmp_path: Path) -> None:
    fp0 = _prec_run(r20_config, "fp32", 0, {2000: 30.0, 4000: 25.0, 6000: 20.0}, last=6000)
    fp1 = _prec_run(r20_config, "fp32", 1, {2000: 29.0, 4000: 24.0})
    bf0 = _prec_run(r20_config, "bf16", 0, {2000: 31.0, 4000: 26.5})
    (c,) = precision_comparisons([fp0, fp1, bf0])
    assert c.at == 4000  # the last iteration all three logged a test error
    assert [(r.run.precision, r.run.seed, r.test_err) for r in c.rows] == [
        ("bf16", 0, 26.5), ("fp32", 0, 25.0), ("fp32", 1, 24.0)]
    # Loss window (3500, 4000]: the rows at 3.6k..4k; fp32 seed 0 logs loss i/1000.
    assert c.rows[1].train_loss == pytest.approx((3.6 + 3.7 + 3.8 + 3.9 + 4.0) / 5)
    assert c.lines() == ["- seed 0: bf16 − fp32 = +1.50 points of test error at iteration 4,000.",
                         "- run-to-run spread in fp32 (seeds 0, 1): 1.00 points (max − min) at iteration 4,000."]
    md, files = precision_section([fp0, fp1, bf0], tmp_path)
    assert "### cifar_resnet20 (CIFAR-10 (JPEG copy)), at iteration 4,000" in md
    assert [f.name for f in files] == ["precision_cifar_resnet20_cifar10_folder.png"] and files[0].stat().st_size > 0
    assert not any("emulated" in line for line in md)  # bf16 of unknown kernels: no claim either way


def test_two_bf16_runs_of_one_seed_are_each_compared_with_fp32(r20_config: dict) -> None:
    fp0 = _prec_run(r20_config, "fp32", 0, {4000: 25.0})
    fp1 = _prec_run(r20_config, "fp32", 1, {4000: 24.0})
    emulated = _prec_run(r20_config, "bf16", 0, {4000: 26.5})
    native = Run("/runs/r20-bf16-native-0", dict(emulated.summary), emulated.rows, config=r20_config)
    native.rows = [r | {"test/err": 25.5} if "test/err" in r else r for r in emulated.rows]
    (c,) = precision_comparisons([fp0, fp1, emulated, native])
    assert c.lines() == [
        "- seed 0: bf16 (/runs/r20-bf16-0) − fp32 = +1.50 points of test error at iteration 4,000.",
        "- seed 0: bf16 (/runs/r20-bf16-native-0) − fp32 = +0.50 points of test error at iteration 4,000.",
        "- run-to-run spread in fp32 (seeds 0, 1): 1.00 points (max − min) at iteration 4,000."]


def test_a_bf16_prefix_that_stopped_early_does_not_hold_back_the_later_comparison(r20_config: dict,
                                                                                 tmp_path: Path) -> None:
    fp0 = _prec_run(r20_config, "fp32", 0, {2000: 30.0, 4000: 25.0})
    fp1 = _prec_run(r20_config, "fp32", 1, {2000: 29.0, 4000: 24.0})
    stopped = _prec_run(r20_config, "bf16", 0, {2000: 31.0}, last=2100)  # paused at 2,100
    native = Run("/runs/r20-bf16-native-0", dict(fp0.summary, train_precision="bf16"),
                 [r | {"test/err": r["test/err"] - 1} if "test/err" in r else r for r in fp0.rows], config=r20_config)
    later, common = precision_comparisons([fp0, fp1, stopped, native])
    assert (later.at, common.at) == (4000, 2000)
    assert [r.run.path for r in later.rows] == ["/runs/r20-bf16-native-0", "/runs/r20-fp32-0", "/runs/r20-fp32-1"]
    assert later.lines()[0] == "- seed 0: bf16 − fp32 = -1.00 points of test error at iteration 4,000."
    assert len(common.rows) == 4 and {r.test_err for r in common.rows if r.run.path.endswith("bf16-0")} == {31.0}
    md, files = precision_section([fp0, fp1, stopped, native], tmp_path)
    assert "### cifar_resnet20 (CIFAR-10 (JPEG copy)), at iteration 4,000" in md
    assert "### cifar_resnet20 (CIFAR-10 (JPEG copy)), at iteration 2,000" in md
    assert [f.name for f in files] == ["precision_cifar_resnet20_cifar10_folder.png",
                                       "precision_cifar_resnet20_cifar10_folder_at2000.png"]


@pytest.mark.parametrize("flags, emulated", [((), True), (("avx512_bf16",), False)])
def test_a_bf16_run_that_emulated_bf16_on_its_cpu_is_said_to_be_one(r20_config: dict, monkeypatch: pytest.MonkeyPatch,
                                                                    flags: tuple[str, ...], emulated: bool) -> None:
    monkeypatch.setattr(policy, "cpu_flags", lambda *a, **k: frozenset({"avx2", *flags}))
    fp0 = _prec_run(r20_config, "fp32", 0, {4000: 25.0})
    bf0 = _prec_run(r20_config, "bf16", 0, {4000: 26.5})
    bf0.summary["precision_reason"] = policy.resolve_precision("bf16", "on", torch.device("cpu")).reason
    md, _ = precision_section([fp0, bf0])
    said = [line for line in md if "emulated" in line]
    assert len(said) == int(emulated) and all("r20-bf16-0" in line for line in said)


def test_runs_of_one_precision_or_of_other_recipes_are_not_compared(r20_config: dict) -> None:
    fp0 = _prec_run(r20_config, "fp32", 0, {2000: 30.0})
    fp1 = _prec_run(r20_config, "fp32", 1, {2000: 29.0})
    other = dict(r20_config, optim=dict(r20_config["optim"], weight_decay=5e-4))
    bf_other = _prec_run(other, "bf16", 0, {2000: 31.0})
    assert precision_comparisons([fp0, fp1]) == []
    assert precision_comparisons([fp0, bf_other]) == []  # another weight decay: another recipe
    assert precision_comparisons([fp0, _prec_run(r20_config, "bf16", 0, {3000: 31.0})]) == []  # no common eval
