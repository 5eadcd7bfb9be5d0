"""Pausable runs (trainer.pause_at, trainer.max_time) and the CPU precision rule (issue 19):
a paused run is a prefix of its recipe that resumes exactly, the report shows it as incomplete
with curves and no verdict, and `auto` picks bf16 only on CPUs with native bf16."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_config
from resnet_repro.training import loop
from resnet_repro.training import policy
from resnet_repro.runs.checkpoint import load_checkpoint
from resnet_repro.errors import ConfigError
from resnet_repro.runs.sinks import read_jsonl
from resnet_repro.report import build_report
from resnet_repro.config.settings import parse_duration
from resnet_repro.schema import run_settings
from resnet_repro.train import train_from_config

# TINY: 12 iterations, an evaluation every 6, a checkpoint every 4. Iteration 5 is neither.
PAUSE = 5


def train(run_dir: Path, overrides: list[str]) -> dict:
    return train_from_config(compose_config(TINY + overrides), run_dir, overrides)


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in read_jsonl(run / "metrics.jsonl")]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def assert_same_run(a: Path, b: Path) -> None:
    assert _rows(a) == _rows(b)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert (sa["test_err"], sa["test_loss"], sa["iterations"]) == (sb["test_err"], sb["test_loss"], sb["iterations"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    train(run, [])
    return run


def test_a_paused_run_is_an_incomplete_prefix_that_resumes_exactly(tmp_path: Path, reference: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    summary = train(run, [f"trainer.pause_at={PAUSE}"])
    out = capsys.readouterr().out
    assert re.search(rf"paused at iteration {PAUSE} of 12 after (\d+s|\d+m|\d+h\d\dm) ", out) and f"resume={run}" in out
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == "paused" and summary["iterations"] == PAUSE and summary["max_iters"] == 12
    assert summary["paused_by"] == f"trainer.pause_at={PAUSE}"
    assert 0 <= summary["test_err"] <= 100  # the weights at the pause, evaluated
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["iteration"] == PAUSE
    # The recipe is unchanged: the run dir's config keeps 12 iterations and no pause.
    saved = (run / "config.yaml").read_text()
    assert "max_iters: 12" in saved and "pause_at: null" in saved
    # No metrics row at the pause: the curve is the uninterrupted run's prefix.
    assert _rows(run) == [r for r in _rows(reference) if r["iter"] <= PAUSE]

    final = train(run, [f"resume={run}"])
    assert final["status"] == "complete" and final["iterations"] == 12
    assert_same_run(run, reference)


def test_rerunning_a_command_whose_pause_is_reached_trains_nothing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(run, [f"trainer.pause_at={PAUSE}"])
    before = (run / "metrics.jsonl").read_bytes(), (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    again = train(run, [f"trainer.pause_at={PAUSE}"])  # the same command (e.g. a re-run sweep)
    assert again["status"] == "paused" and again["iterations"] == PAUSE
    assert f"paused at iteration {PAUSE} of 12" in capsys.readouterr().out
    assert ((run / "metrics.jsonl").read_bytes(), (run / "checkpoints" / "last.pt").read_bytes()) == before


def test_max_time_pauses_when_this_process_has_spent_its_budget(tmp_path: Path, reference: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock that advances 10 s per training step: a 35 s budget is spent after 4 steps.
    now = [0.0]
    monkeypatch.setattr(loop, "_clock", lambda: now[0])
    step = loop.Trainer.step

    def timed_step(self, *a, **k):
        step(self, *a, **k)
        now[0] += 10.0

    monkeypatch.setattr(loop.Trainer, "step", timed_step)
    run = tmp_path / "run"
    summary = train(run, ["trainer.max_time=00:00:35"])
    assert summary["status"] == "paused" and summary["iterations"] == 4
    assert summary["paused_by"] == "trainer.max_time=00:00:35 reached"
    # The same command again: a new 35 s budget, from iteration 4 to 8, then to the end.
    assert train(run, ["trainer.max_time=00:00:35"])["iterations"] == 8
    monkeypatch.undo()
    assert train(run, ["trainer.max_time=00:00:35"])["status"] == "complete"
    assert_same_run(run, reference)


@pytest.mark.parametrize("value, seconds", [("02:30:00", 9000.0), ("1:00:00:05", 86405.0), (90, 90.0),
                                            ("45", 45.0), (None, None)])
def test_max_time_reads_lightnings_formats_and_seconds(value, seconds) -> None:
    assert parse_duration(value, "trainer.max_time") == seconds


@pytest.mark.parametrize("override", ["trainer.max_time=soon", "trainer.max_time=00:61", "trainer.max_time=0",
                                      "trainer.pause_at=0", "trainer.pause_at=-3"])
def test_bad_pause_settings_are_one_line_errors_before_anything_runs(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        run_settings(compose_config(TINY + [override]))


# -- the CPU precision rule -----------------------------------------------------------------


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch):
    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(policy, "cpu_flags", lambda *a, **k: frozenset({"avx2", "fma", *flags}))
    return set_flags


@pytest.mark.parametrize("flags, bf16", [(("avx512_bf16", "avx512f"), True), (("amx_bf16",), True),
                                         (("avx512f",), False), ((), False)])
def test_auto_picks_bf16_and_channels_last_only_on_cpus_with_native_bf16(fake_cpu, flags, bf16: bool) -> None:
    fake_cpu(*flags)
    p = policy.resolve_precision("auto", "auto", torch.device("cpu"))
    assert (p.amp, p.channels_last) == (bf16, bf16)
    assert ("with native bf16 (" in p.reason) == bf16 and ("without native bf16" in p.reason) == (not bf16)
    forced = policy.resolve_precision("off", "off", torch.device("cpu"))  # the fp32 reference, anywhere
    assert (forced.amp, forced.channels_last) == (False, False) and "trainer.amp=off" in forced.reason


@pytest.mark.parametrize("fake, bf16", [("native", True), ("none", False)])
def test_the_suites_cpu_switch_makes_the_policy_act_as_on_that_kind_of_cpu_and_says_so(
        monkeypatch: pytest.MonkeyPatch, fake: str, bf16: bool) -> None:
    # `pytest --cpu-bf16=native|none` (tests/conftest.py) sets this for the suite and its subprocesses
    monkeypatch.setenv(policy.FAKE_BF16_ENV, fake)
    p = policy.resolve_precision("auto", "auto", torch.device("cpu"))
    assert (p.amp, p.channels_last) == (bf16, bf16)
    assert p.reason.endswith(f"[faked: {policy.FAKE_BF16_ENV}={fake}]")  # a record made under it says so
    assert bool(policy.cpu_bf16_flags()) == bf16
    assert policy.cpu_record()["faked_bf16"] == fake
    # CUDA's choice does not depend on the CPU, and its reason names no fake
    assert "faked" not in policy.resolve_precision("auto", "auto", torch.device("cuda")).reason


def test_a_bad_value_of_the_cpu_switch_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(policy.FAKE_BF16_ENV, "yes")
    with pytest.raises(ConfigError, match=f"{policy.FAKE_BF16_ENV} must be native or none"):
        policy.resolve_precision("auto", "auto", torch.device("cpu"))


def test_a_tiny_auto_run_trains_in_what_the_cpu_kind_calls_for(tmp_path: Path, cpu_bf16: str) -> None:
    summary = train(tmp_path / "run", ["trainer.max_iters=2"])
    assert summary["train_precision"] == {"native": "bf16", "none": "fp32"}[cpu_bf16]
    assert summary["channels_last"] is (cpu_bf16 == "native")


@pytest.mark.parametrize("flags, amp, warned", [((), "bf16", True), (("avx512_bf16",), "bf16", False),
                                                ((), "auto", False), ((), "off", False)])
def test_bf16_on_a_cpu_without_native_bf16_is_said_to_be_emulated(fake_cpu, flags, amp: str, warned: bool) -> None:
    fake_cpu(*flags)
    p = policy.resolve_precision(amp, "auto", torch.device("cpu"))
    note = policy.emulated_bf16_note(p, torch.device("cpu"))
    assert (note is not None) == warned
    if warned:
        assert "emulated" in note and "trainer.amp=off" in note


def test_a_run_started_in_bf16_goes_on_in_fp32_on_a_cpu_without_it_and_the_record_says_where(
        tmp_path: Path, fake_cpu, capsys: pytest.CaptureFixture) -> None:
    fake_cpu("avx512_bf16")
    run = tmp_path / "run"
    first = train(run, ["trainer.pause_at=2"])
    assert (first["amp"], first["train_precision"], first["channels_last"]) == ("bf16", "bf16", True)
    assert "avx512_bf16" in first["precision_reason"] and first["eval_precision"] == "fp32"
    assert first["precision_history"] == [{"from": 0, "to": 2, "train_precision": "bf16", "channels_last": True}]
    fake_cpu()  # resumed on a CPU without native bf16: auto follows this CPU (emulated bf16 is 15.3x slower there)
    capsys.readouterr()
    final = train(run, [f"resume={run}", "trainer.max_iters=4"])
    assert (final["amp"], final["channels_last"], final["iterations"]) == ("off", False, 4)
    assert final["train_precision"] == "mixed"
    assert final["precision_history"] == [{"from": 0, "to": 2, "train_precision": "bf16", "channels_last": True},
                                          {"from": 2, "to": 4, "train_precision": "fp32", "channels_last": False}]
    out = capsys.readouterr().out
    assert "note: this run trained in bf16 + channels_last up to iteration 2; it goes on in fp32" in out
    assert "is emulated" not in out
    # the report names the stretches wherever it names the precision
    from resnet_repro.report import load_run

    assert load_run(run).precision == "bf16 0-2, fp32 2-4"
    # and back on a native-bf16 CPU, forced to keep fp32: no change, no note
    fake_cpu("amx_bf16")
    capsys.readouterr()
    same = train(run, [f"resume={run}", "trainer.max_iters=6", "trainer.amp=off", "trainer.channels_last=off"])
    assert same["precision_history"][-1] == {"from": 2, "to": 6, "train_precision": "fp32", "channels_last": False}
    assert "note: this run trained in" not in capsys.readouterr().out


@pytest.mark.parametrize("older", [("precision_history",), ("precision_history", "amp", "channels_last")])
def test_a_checkpoint_from_before_the_precision_history_resumes_with_its_precision_as_the_first_stretch(
        tmp_path: Path, fake_cpu, older: tuple[str, ...]) -> None:
    fake_cpu()
    run = tmp_path / "run"
    train(run, ["trainer.pause_at=4"])
    from resnet_repro.runs.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    for key in older:  # as a checkpoint written before these were recorded
        del ckpt["loop"][key]
    save_checkpoint(run / "checkpoints" / "last.pt", ckpt)
    final = train(run, [f"resume={run}", "trainer.max_iters=8"])
    # with its precision recorded, the history starts at 0; without, where this session starts
    start = 0 if "amp" not in older else 4
    assert final["precision_history"] == [{"from": start, "to": 8, "train_precision": "fp32", "channels_last": False}]
    assert final["train_precision"] == "fp32"


def test_an_old_checkpoint_of_a_gpu_run_names_its_first_stretch_by_the_summary_not_this_device(
        tmp_path: Path, fake_cpu) -> None:
    # a run begun in TF32 on a GPU (before the precision history existed), resumed on a CPU
    fake_cpu()
    run = tmp_path / "run"
    train(run, ["trainer.pause_at=4"])
    from resnet_repro.runs.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    del ckpt["loop"]["precision_history"]
    save_checkpoint(run / "checkpoints" / "last.pt", ckpt)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(summary | {"train_precision": "tf32"}))
    final = train(run, [f"resume={run}", "trainer.max_iters=8"])
    assert [(x["from"], x["to"], x["train_precision"]) for x in final["precision_history"]] == [(0, 4, "tf32"),
                                                                                                (4, 8, "fp32")]
    assert final["train_precision"] == "mixed"


# -- paused runs in the report --------------------------------------------------------------


def test_the_report_lists_a_paused_run_as_incomplete_with_its_curves_and_no_verdict(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    over = ["exp_name=cifar_resnet20", f"trainer.pause_at={PAUSE}"]
    train(runs / "cifar_resnet20-seed0", over)
    rep = build_report([runs], out=tmp_path / "out")
    md = rep.markdown
    assert "0 finished run(s) and 1 incomplete run(s)" in md
    incomplete = md.split("### Incomplete runs", 1)[1]
    assert f"paused at iteration {PAUSE} of 12" in incomplete and "no verdict" in incomplete
    assert f"train resume={runs / 'cifar_resnet20-seed0'}" in incomplete  # its checkpoint is there
    import csv

    rows = list(csv.DictReader((rep.out / "results.csv").open()))
    verdicts = {r.get("verdict", "") for r in rows}
    assert not verdicts & {"reproduced", "better than the paper", "worse than the paper"}, verdicts
    fig6 = rep.out / "figure6_cifar.png"
    assert fig6 in rep.files and fig6.stat().st_size > 10_000  # the paused run's curves are drawn


def test_a_copied_record_of_a_paused_run_is_not_offered_a_resume_it_cannot_do(tmp_path: Path) -> None:
    # The committed records (summary.json, metrics.jsonl, config.yaml; no checkpoints).
    run, record = tmp_path / "runs" / "cifar_resnet20-seed0", tmp_path / "records" / "cifar_resnet20-seed0"
    train(run, ["exp_name=cifar_resnet20", f"trainer.pause_at={PAUSE}"])
    record.mkdir(parents=True)
    for name in ("summary.json", "metrics.jsonl", "config.yaml"):
        (record / name).write_bytes((run / name).read_bytes())
    incomplete = build_report([record.parent], out=tmp_path / "out").markdown.split("### Incomplete runs", 1)[1]
    assert f"paused at iteration {PAUSE} of 12" in incomplete and "train resume=" not in incomplete
    assert "no checkpoint here (a copied record)" in incomplete
