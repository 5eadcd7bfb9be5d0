"""Issue 32: the commands walked through as a new user would. A command that trains nothing
changes nothing; every optimiser value is range-checked in one line; `resume=` says when it
conflicts; the report's peer rows say when they cannot find their data; labels, titles and
durations say what they mean."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY, cli, compose_config, train_tiny
from resnet_repro.errors import ConfigError, ReproError
from resnet_repro.schema import run_settings


def _files(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> content digest), folders too (-> "dir"); the
    `.lock` file's content is the last process that held the run dir (rundir.RunLock), no record."""
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run, trained by the CLI (so it has Hydra's .hydra/ record)."""
    run = tmp_path_factory.mktemp("walk") / "run"
    r = cli("train", *TINY, "trainer.max_iters=4", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr
    assert (run / ".hydra" / "overrides.yaml").is_file()
    return run


# -- 1, 2: commands that train nothing change nothing ---------------------------------------------


def test_resuming_a_finished_run_with_fewer_iterations_changes_nothing(finished: Path) -> None:
    before = _files(finished)
    r = cli("train", f"resume={finished}", "trainer.max_iters=2")
    assert r.returncode == 0 and "run already complete" in r.stdout, r.stderr
    assert _files(finished) == before  # config.yaml keeps max_iters 4: the record is what it trained with
    assert "max_iters: 4" in (finished / "config.yaml").read_text()


@pytest.mark.parametrize("case", [["model.depth=14"], ["seed=3"]])
def test_a_refused_command_into_a_run_dir_leaves_hydras_record_as_it_was(finished: Path, case: list[str]) -> None:
    before = _files(finished)
    # the run dir spelled with `..`, as Hydra's own output_dir never spells it
    spelled = finished.parent / "x" / ".." / finished.name
    r = cli("train", *TINY, "trainer.max_iters=4", *case, f"hydra.run.dir={spelled}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _files(finished) == before


def test_a_paused_run_is_not_finished_below_the_iteration_it_reached(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_tiny(run, ["trainer.pause_at=8"])
    before = _files(run)
    with pytest.raises(ConfigError, match="is at iteration 8, past trainer.max_iters=4"):
        train_tiny(run, [f"resume={run}", "trainer.max_iters=4"])
    assert _files(run) == before


def test_restoring_hydras_record_keeps_what_it_could_not_read(tmp_path: Path) -> None:
    from resnet_repro.runs.rundir import read_folder, restore_folder

    d = tmp_path / ".hydra"
    d.mkdir()
    (d / "config.yaml").write_text("a: 1\n")
    (tmp_path / "elsewhere").write_text("mine")
    (d / "link").symlink_to(tmp_path / "elsewhere")
    saved = read_folder(d)
    (d / "config.yaml").write_text("a: 2\n")  # Hydra rewrites its record
    (d / "overrides.yaml").write_text("[]\n")  # and adds one
    restore_folder(d, saved)
    assert (d / "config.yaml").read_text() == "a: 1\n" and not (d / "overrides.yaml").exists()
    assert (d / "link").is_symlink() and (tmp_path / "elsewhere").read_text() == "mine"


def test_rerunning_a_finished_runs_own_command_keeps_hydras_record(finished: Path) -> None:
    before = _files(finished)
    r = cli("train", *TINY, "trainer.max_iters=4", f"hydra.run.dir={finished}", "trainer.progress=false")
    assert r.returncode == 0 and "run already complete" in r.stdout, r.stderr
    assert _files(finished) == before


# -- 3, 4: refused before anything is written ------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("logger.mode=bogus", "logger.mode must be one of online, offline, disabled, got 'bogus'"),
    ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
    ("optim.weight_decay=nan", "optim.weight_decay must be >= 0"),
    ("optim.weight_decay=inf", "optim.weight_decay must be >= 0"),
    ("optim.momentum=-0.5", "optim.momentum must be in [0, 1)"),
    ("optim.momentum=1.5", "optim.momentum must be in [0, 1)"),
    ("optim.momentum=1", "optim.momentum must be in [0, 1)"),
    ("schedule.gamma=2", "schedule.gamma must be in (0, 1]"),
    ("schedule.gamma=0", "schedule.gamma must be in (0, 1]"),
    ("schedule.base_lr=-0.1", "schedule.base_lr must be > 0"),
])
def test_out_of_range_optimiser_and_schedule_values_are_refused_by_the_settings(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_settings(compose_config(TINY + [override]))


def test_nesterov_without_momentum_is_refused() -> None:
    with pytest.raises(ConfigError, match="optim.nesterov=true needs optim.momentum > 0"):
        run_settings(compose_config(TINY + ["optim.nesterov=true", "optim.momentum=0"]))


@pytest.mark.parametrize("case", [["optim.weight_decay=-1"], ["logger=wandb", "logger.mode=bogus"]])
def test_a_refused_value_leaves_no_run_dir(tmp_path: Path, case: list[str]) -> None:
    run = tmp_path / "run"
    r = cli("train", *TINY, *case, f"hydra.run.dir={run}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not run.exists()


def test_a_failed_offline_download_leaves_no_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    from resnet_repro.data.sources import load_cifar10

    def offline(root, train=True, download=False, **kw):  # torchvision without a network
        if download:
            Path(root).mkdir(parents=True, exist_ok=True)
            raise OSError("[Errno -3] Temporary failure in name resolution")
        raise RuntimeError("Dataset not found or corrupted.")

    monkeypatch.setattr(datasets, "CIFAR10", offline)
    with pytest.raises(ReproError, match="could not be downloaded"):
        load_cifar10(tmp_path / "data" / "cifar10")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()  # a folder that was there before stays
    with pytest.raises(ReproError):
        load_cifar10(tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()


# -- 5, 6: resume= is one run dir ------------------------------------------------------------------


def test_resume_with_a_sweep_or_another_run_dir_is_refused_in_one_line(finished: Path, tmp_path: Path) -> None:
    before = _files(finished)
    r = cli("train", "-m", f"resume={finished}", cwd=tmp_path)
    assert r.returncode == 2 and "resume= continues one run and -m runs a sweep" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
    other = tmp_path / "other"
    r = cli("train", f"resume={finished}", f"hydra.run.dir={other}")
    assert r.returncode == 2 and f"resume={finished} and hydra.run.dir={other} name two run dirs" in r.stderr
    assert not other.exists() and _files(finished) == before


# -- 7: published weights are for eval and report --------------------------------------------------


def test_an_akamaster_file_as_starting_weights_says_what_it_is_for(tmp_path: Path) -> None:
    from resnet_repro.models.pretrained import check_weights_norm

    path = tmp_path / "resnet20-x.th"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(16, 3, 3, 3),
                               "module.linear.weight": torch.zeros(10, 64)}}, path)
    with pytest.raises(ConfigError, match=r"akamaster/pytorch_resnet_cifar10 file.*`eval ckpt=.*`report <runs> --peers"):
        check_weights_norm(path, "per_pixel")


# -- 8, 9: report arguments ---------------------------------------------------------------------------


def test_report_out_naming_a_file_is_one_line_and_the_file_is_kept(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    out.write_text("mine")
    r = cli("report", str(finished), "--out", str(out))
    assert r.returncode == 2 and "--out" in r.stderr and "is a file" in r.stderr and "Traceback" not in r.stderr
    assert out.read_text() == "mine"


def test_peers_that_cannot_find_their_data_warn_on_the_console_and_data_root_fixes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from resnet_repro.report import build
    from resnet_repro.report.collect import Run

    peers = tmp_path / "peers"
    peers.mkdir()
    (peers / "resnet20-x.th").write_bytes(b"")
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(compose_config(["+exp=cifar_resnet20", "data=cifar10_folder",
                                                    "data.root=../nowhere/cifar.tar.gz"]), resolve=True)
    run = Run(str(tmp_path / "r"), {"exp_name": "cifar_resnet20", "data": "cifar10_folder"}, [], config=config)
    run.local = True
    seen = []

    def evaluate_peer(f, d, dev):
        seen.append(d.root)
        if d.root != "/the/data":
            raise ReproError(f"data.root {d.root} not found")
        return {"model": "cifar_resnet20", "err": 19.0}

    monkeypatch.setattr("resnet_repro.models.peers.evaluate_peer", evaluate_peer)
    measured, notes = build._measure_peers(peers, [run], "cpu", tmp_path)
    assert measured == [] and len(notes) == 1
    err = capsys.readouterr().err
    assert err.startswith("warning: peer resnet20-x.th on cifar10_folder (../nowhere/cifar.tar.gz): not measured")
    assert "--data-root" in err
    measured, notes = build._measure_peers(peers, [run], "cpu", tmp_path, data_root="/the/data")
    assert measured == [{"model": "cifar_resnet20", "err": 19.0}] and notes == [] and seen[-1] == "/the/data"


def test_report_data_root_without_peers_is_refused(finished: Path) -> None:
    from resnet_repro.report import cli_main

    with pytest.raises(ConfigError, match="--data-root is the data --peers evaluates on"):
        cli_main([str(finished), "--data-root", "/x"])


# -- 10, 11: the report's words and figures ---------------------------------------------------------


def test_the_papers_training_set_is_50000_images_whatever_the_run_held_out() -> None:
    from resnet_repro.paper import judge
    from resnet_repro.recipes import reference

    ref = reference("cifar_resnet20")
    run = judge.Recipe(tuple(sorted({**ref.as_dict(), "data.val_size": 1000}.items())))
    facts = judge.Facts(data="cifar10", num_classes=10, train_size=9000, test_size=10000, status="complete",
                        iterations=64000)
    diffs = judge._fact_differences("cifar_resnet20", ref, facts, run)
    assert "trained on 9000 images (paper 50000)" in diffs
    # held out 1,000 of 50,000: the held-out count is the difference, not the training set twice
    facts = judge.Facts(data="cifar10", num_classes=10, train_size=49000, test_size=10000, status="complete",
                        iterations=64000)
    assert not any("trained on" in d for d in judge._fact_differences("cifar_resnet20", ref, facts, run))


def test_peer_rows_read_resnet110_against_the_same_paper_number_as_its_table6_row() -> None:
    from resnet_repro.report.tables import peers_table

    rows = [r for r in peers_table().csv_rows if r["model"] == "cifar_resnet110"]
    assert rows and {r["paper"] for r in rows} == {6.61}


def test_two_curves_of_one_net_are_told_apart_by_what_differs() -> None:
    from resnet_repro.report.collect import Run
    from resnet_repro.report.compare import group_runs
    from resnet_repro.report.figures import data_title, distinct_labels

    def run(path: str, precision: str, data: str = "cifar10_folder") -> Run:
        return Run(path, {"exp_name": "cifar_resnet20", "seed": 0, "data": data, "train_precision": precision,
                          "arch": {"family": "cifar", "depth": 20, "residual": True}}, [])

    groups = group_runs([run("/a", "fp32"), run("/b", "bf16"), run("/c", "fp32", "synthetic")])
    labels = sorted(distinct_labels(groups))
    assert len(set(labels)) == 3 and all(label.startswith("ResNet-20 (") for label in labels)
    assert any("bf16" in label for label in labels) and any("synthetic" in label for label in labels)
    assert data_title(groups, "cifar") != "CIFAR-10"  # synthetic data is not CIFAR-10
    assert data_title([g for g in groups if g.data == "cifar10_folder"], "cifar") == "CIFAR-10"


def test_an_empty_panel_draws_no_axis_scale() -> None:
    import matplotlib.pyplot as plt

    from resnet_repro.report.figures import Curves, draw_figure6

    c = Curves("ResNet-20", 20, [100, 200], [50.0, 40.0], [200], [45.0])
    fig = draw_figure6([], [c], [], data="synthetic")
    empty = fig.axes[0]
    assert list(empty.get_xticks()) == [] and list(empty.get_yticks()) == []
    assert "synthetic (cf. Figure 6)" in fig._suptitle.get_text()
    plt.close(fig)


def test_figure7_says_when_max_images_limited_the_count(tmp_path: Path) -> None:
    from resnet_repro.report.collect import Run
    from resnet_repro.report.compare import group_runs
    from resnet_repro.report.figures import figure7_section

    r = Run("/r", {"exp_name": "cifar_resnet20", "seed": 0, "data": "cifar10_folder", "train_precision": "fp32",
                   "test_size": 10000, "arch": {"family": "cifar", "depth": 20, "residual": True}}, [])
    r.responses = {"std": [1.0, 0.9, 0.8], "n_images": 1000}
    section, files = figure7_section(group_runs([r]), tmp_path, [])
    assert "Measured on the first 1,000 of 10,000 test images" in "\n".join(section.markdown)
    assert files and files[0].stat().st_size > 0


def test_a_paused_plain_prefix_is_not_called_absent(tmp_path: Path) -> None:
    from resnet_repro.report import build_report

    runs = tmp_path / "runs"
    train_tiny(runs / "cifar_plain20-seed0", ["exp_name=cifar_plain20", "model=cifar_plain20", "model.depth=8",
                                              "trainer.pause_at=4"])
    md = build_report([runs], out=tmp_path / "out").markdown
    assert "No finished runs for: Table 6 (CIFAR-10); plain nets (CIFAR-10) (paused prefixes only" in md


# -- 12, 13: messages --------------------------------------------------------------------------------


def test_wandb_prints_our_one_line_and_none_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capfd: pytest.CaptureFixture) -> None:
    pytest.importorskip("wandb")
    from resnet_repro.runs.sinks import WandbSink

    monkeypatch.delenv("WANDB_SILENT", raising=False)  # as a user's shell has it
    sink = WandbSink("resnet-test", tmp_path, {"lr": 0.1}, mode="offline")
    sink.log({"iter": 1, "train/loss": 1.0})
    sink.close()
    out, err = capfd.readouterr()
    both = out + err
    assert "wandb online" not in both and "WANDB_MODE" not in both and "Find logs at" not in both
    assert "wandb:" not in both  # not a line of W&B's own (its warnings included)
    assert f"W&B: offline run in {tmp_path.absolute() / 'wandb'}; upload with: wandb sync " in out
    assert out.rstrip().endswith("/offline-run-*")


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (59.6, "1m"), (300, "5m"),
                                           (3599, "1h00m"), (3900, "1h05m"), (27047, "7h31m")])
def test_durations_carry_their_units(seconds: float, text: str) -> None:
    from resnet_repro.runs.units import duration

    assert duration(seconds) == text


def test_analyze_table_shows_whole_run_paths() -> None:
    from resnet_repro.analyze import format_responses

    long = "/home/someone/runs/multirun/cifar_degradation/cifar_plain56-seed0-data=cifar10_folder"
    table = format_responses([{"_run": long, "model": "cifar_plain56", "std": [1.0, 2.0]}])
    assert long in table
