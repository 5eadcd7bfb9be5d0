"""Metrics sinks: metrics.jsonl rows, resume truncation, secrets, offline W&B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_repro.errors import ConfigError, ReproError
from resnet_repro.runs.sinks import (
    JsonlSink,
    MultiSink,
    WandbSink,
    read_jsonl,
    scrub_secrets,
    write_json_atomic,
)

REPO = Path(__file__).resolve().parents[1]


def test_jsonl_rows_roundtrip_as_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    sink.log({"iter": 0, "train/loss": torch.tensor(2.3), "lr": 0.1})
    sink.log({"iter": 100, "train/err": np.float32(0.75), "hist": np.arange(3),
              "val": {"top1": torch.tensor([0.5])}})
    # Flushed per line: readable while the run is still going.
    assert len(path.read_text().splitlines()) == 2
    sink.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"iter": 0, "train/loss": pytest.approx(2.3), "lr": 0.1}
    assert rows[1] == {"iter": 100, "train/err": 0.75, "hist": [0, 1, 2], "val": {"top1": [0.5]}}
    assert read_jsonl(path) == rows


def test_diverged_loss_still_writes_strict_json(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    sink.log({"iter": 5, "train/loss": float("nan"), "x": torch.tensor(float("inf"))})
    sink.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(c)) == {
        "iter": 5, "train/loss": None, "x": None}


def test_row_without_iteration_is_a_bug(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    with pytest.raises(ValueError, match="iter"):
        sink.log({"loss": 1.0})
    sink.close()


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    for it in (100, 200, 300, 400):
        sink.log({"iter": it, "loss": 1.0 / it})
    sink.close()
    with open(path, "a") as f:
        f.write('{"iter": 500, "lo')  # the crash tore the last line
    sink = JsonlSink(path, truncate_after_iter=200)  # last checkpoint at 200
    assert [r["iter"] for r in read_jsonl(path)] == [100, 200]
    sink.log({"iter": 300, "loss": 0.5})
    sink.close()
    assert [r["iter"] for r in read_jsonl(path)] == [100, 200, 300]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_fresh_sink_appends_without_truncating(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for it in (1, 2):
        sink = JsonlSink(path)
        sink.log({"iter": it})
        sink.close()
    with open(path, "a") as f:
        f.write('{"iter": 3, "lo')  # torn line: the next row must still parse
    sink = JsonlSink(path)
    sink.log({"iter": 4})
    sink.close()
    assert [r["iter"] for r in read_jsonl(path)] == [1, 2, 4]


def test_write_json_atomic_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"test_err": np.float64(0.0697), "paper": 6.97})
    write_json_atomic(path, {"test_err": torch.tensor(0.0643)})
    assert json.loads(path.read_text()) == {"test_err": pytest.approx(0.0643)}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_record_that_cannot_be_written_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where the folder should be\n")
    with pytest.raises(ReproError, match=f"could not write {blocker / 'bench.json'}: {blocker} is a file, not a folder"):
        write_json_atomic(blocker / "bench.json", {"images_per_s": 385.8})
    assert blocker.read_text() == "a file where the folder should be\n"
    # A failure mid-write (a full disk) keeps the old record and leaves no temp file behind.
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"test_err": 8.75})
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ReproError, match="could not write .*summary.json: No space left on device"):
        write_json_atomic(path, {"test_err": 6.97})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"test_err": 8.75}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "summary.json"]


def test_records_are_written_without_binary_float_noise(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    assert 100 * 0.781 == 78.10000000000001  # what a percentage of a fraction gives
    write_json_atomic(path, {"test_err": 100 * 0.781, "runs": [{"loss": 0.1 + 0.2}], "iters": 64000,
                             "ok": True, "tiny": 1.234567890123456e-08})
    text = path.read_text()
    assert '"test_err": 78.1,' in text and '"loss": 0.3' in text
    assert json.loads(text) == {"test_err": 78.1, "runs": [{"loss": 0.3}], "iters": 64000, "ok": True,
                                "tiny": 1.23456789012e-08}  # 12 significant digits, at any scale


def test_scrub_secrets_drops_credentials_at_any_depth() -> None:
    cfg = {
        "lr": 0.1,
        "logger": {"project": "resnet", "WANDB_API_KEY": "k", "apikey": "k", "Token": "t"},
        "data": {"root": "/data", "hf_token": "t", "s3": {"secret_access_key": "s"}},
        "db": [{"user": "u", "password": "p", "passwd": "p"}],
        "credentials_file": "/home/u/.netrc",
    }
    assert scrub_secrets(cfg) == {
        "lr": 0.1,
        "logger": {"project": "resnet"},
        "data": {"root": "/data", "s3": {}},
        "db": [{"user": "u"}],
    }
    assert cfg["logger"]["Token"] == "t"  # the input is not modified


def test_multisink_fans_out_and_closes_all(tmp_path: Path) -> None:
    a, b = JsonlSink(tmp_path / "a.jsonl"), JsonlSink(tmp_path / "b.jsonl")
    sink = MultiSink([a, b])
    sink.log({"iter": 7, "loss": 1.5})
    sink.summary({"best": 1})
    sink.close()
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl") == [
        {"iter": 7, "loss": 1.5}]


def test_loggers_module_does_not_import_wandb() -> None:
    code = "import sys, resnet_repro.runs.sinks; assert 'wandb' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_missing_wandb_package_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(ConfigError, match="pip install wandb"):
        WandbSink("p", tmp_path, {}, mode="offline")


def test_unknown_wandb_mode_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="online, offline, disabled"):
        WandbSink("p", tmp_path, {}, mode="dryrun")


def test_offline_wandb_run_logs_without_secrets_and_resumes(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = {"lr": 0.1, "logger": {"project": "resnet", "api_key": "SUPERSECRET42"}}
    sink = WandbSink("resnet-test", tmp_path, config, mode="offline", name="r20", tags=["t"])
    run_id = sink.run_id
    assert "api_key" not in str(dict(sink._run.config))
    sink.log({"iter": 100, "train/loss": torch.tensor(1.5), "lr": 0.1})
    sink.summary({"test_err": 0.0875})
    sink.close()
    sink.close()  # idempotent: the trainer may close again in a finally

    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].glob("*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"resnet-test" in data and b"SUPERSECRET42" not in data

    again = WandbSink("resnet-test", tmp_path, config, mode="offline", run_id=run_id)
    assert again.run_id == run_id
    again.log({"iter": 200, "train/loss": 1.2})
    again.close()
    names = [p.name for p in (tmp_path / "wandb").glob("offline-run-*")]
    # wandb names a same-second restart "offline-run-<time>-<id>-1": same id, same run.
    assert names and all(run_id in n for n in names), names
