"""Data-parallel training under torchrun (CPU, gloo): N processes train exactly what one
process trains with the same global batch, and only rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY
from resnet_repro.loggers import read_jsonl

# Global batch 32; BN over 16 images: two processes of 16, or one process with BN groups of 16.
SETUP = [*TINY, "trainer.batch_size=32", "model.bn_group_size=16"]


def run(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    return subprocess.run(
        [*launcher, "-m", "resnet_repro", "train", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run([*SETUP, f"hydra.run.dir={one}"], 1)
    r2 = run([*SETUP, f"hydra.run.dir={two}"], 2)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    rows1, rows2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [r["iter"] for r in rows2] == [r["iter"] for r in rows1]  # rank 0 alone logged
    for a, b in zip(rows1, rows2):
        for key in ("train/loss", "train/err", "lr", "val/err", "val/loss", "test/err", "test/loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), (a["iter"], key)
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    assert s2["test_err"] == pytest.approx(s1["test_err"])
    # Rank 0 alone printed the result and wrote the files.
    assert r2.stdout.count("run dir:") == 1
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in one.iterdir() if not p.name.startswith(".")
    )


@pytest.mark.slow
def test_global_batch_must_divide_over_the_processes(tmp_path: Path) -> None:
    r = run([*TINY, "trainer.batch_size=33", f"hydra.run.dir={tmp_path}"], 2)
    assert r.returncode != 0
    assert "not divisible by 2 processes" in r.stderr
