"""`bench` measures the configured path against a naive baseline (that the fast path trains the
same as the plain one is tests/test_fast_path.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY

BENCH = [*TINY, "bench.iters=3", "bench.warmup=1", "bench.baseline_workers=0"]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_repro", "bench", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_bench_times_configured_and_baseline_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = bench(*BENCH, f"bench.json={out}")
    assert r.returncode == 0, r.stderr
    assert "configured" in r.stdout and "baseline" in r.stdout and "speed-up:" in r.stdout
    res = json.loads(out.read_text())
    for path in ("configured", "baseline"):
        assert res[path]["images_per_s"] > 0 and res[path]["ms_per_iter"] > 0 and res[path]["peak_memory_bytes"] > 0
    assert res["speedup"] == pytest.approx(res["configured"]["images_per_s"] / res["baseline"]["images_per_s"], rel=0.01)
    for key in ("command", "device", "torch", "date", "git_commit", "batch_size", "iters"):
        assert key in res
    assert res["command"].startswith("python -m resnet_repro bench ")


@pytest.mark.slow
def test_bench_runs_several_benches_at_once(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = bench(*BENCH, "bench.baseline=false", "bench.concurrent=2", f"bench.json={out}")
    assert r.returncode == 0, r.stderr
    c = json.loads(out.read_text())["concurrent"]
    assert c["processes"] == 2 and len(c["images_per_s_each"]) == 2
    assert c["images_per_s_total"] == pytest.approx(sum(c["images_per_s_each"]), rel=0.01)


@pytest.mark.slow
def test_bench_rejects_bad_settings() -> None:
    r = bench(*BENCH, "bench.iters=0")
    assert r.returncode == 2 and "bench.iters must be >= 1" in r.stderr
    r = bench(*BENCH, "+bench.speed=11")
    assert r.returncode == 2 and "unknown bench setting" in r.stderr


def test_bench_times_each_precision_in_one_invocation_and_names_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = bench(*BENCH, "bench.precisions=[fp32,bf16+channels_last]", f"bench.json={out}")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    p = res["precisions"]
    assert list(p) == ["fp32", "bf16+channels_last"]
    assert (p["fp32"]["amp"], p["fp32"]["channels_last"]) == ("off", False)
    assert (p["bf16+channels_last"]["amp"], p["bf16+channels_last"]["channels_last"]) == ("bf16", True)
    for x in p.values():  # ratios to fp32 and to the naive baseline, from the timed rates
        assert x["vs_fp32"] == pytest.approx(x["images_per_s"] / p["fp32"]["images_per_s"], abs=0.01)
        assert x["vs_baseline"] == pytest.approx(x["images_per_s"] / res["baseline"]["images_per_s"], abs=0.01)
    assert res["cpu"]["model"] and "native_bf16" in res["cpu"] and res["auto_precision"].startswith("auto on a CPU")
    assert "CPU " in r.stdout and "bf16+channels_last" in r.stdout and "precision: " in r.stdout
    bad = bench(*BENCH, "bench.precisions=[fp16]")
    assert bad.returncode == 2 and "unknown bench.precisions ['fp16']" in bad.stderr
