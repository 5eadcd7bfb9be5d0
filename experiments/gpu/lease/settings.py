"""What the GPU lease can be told: LEASE_* variables as typed settings."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from resnet_repro.errors import ReproError

SWEEP_EXP = "cifar_paper_runs"


def _words(value: str) -> list[str]:
    return shlex.split(value)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass(frozen=True)
class LeaseSettings:
    """Everything the lease can be told, from LEASE_* variables (defaults: the real lease)."""

    python: str = "python3"
    lease_dir: Path = Path("/tmp/lease")  # bench JSONs, logs, plan.json, pids
    runs: Path = Path("/tmp/runs")  # the sweep dir lands in here
    data: list[str] = field(default_factory=lambda: ["data=cifar10_folder",
                                                     "data.root=.gpu/cifar10-jpeg.tar.gz"])
    args: list[str] = field(default_factory=lambda: ["logger=none", "trainer.progress=false"])
    sweep_args: list[str] = field(default_factory=list)  # the sweep only (the rehearsal: trainer.max_iters=2)
    bench_args: list[str] = field(default_factory=list)  # the benches only
    exps: list[str] | None = None  # a subset of the sweep's networks (default: all, in order)
    seeds: list[str] | None = None  # a subset of its seeds
    bench_s: float = 90.0  # the whole bench, at most
    bench_iters: int = 30
    bench_warmup: int = 5
    bench_modes: list[str] = field(default_factory=lambda: ["default", "reduce-overhead"])
    bench_exps: list[str] = field(default_factory=lambda: ["cifar_resnet20", "cifar_resnet110"])
    bench_concurrent: list[int] = field(default_factory=lambda: [4, 2])
    budget_s: float | None = None  # device seconds left when `start` began (None: no time limit)
    margin_s: float = 150.0  # runs pause this long before the budget ends (the last poll and collect)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LeaseSettings:
        e = os.environ if env is None else env
        d = cls()

        def get(name: str) -> str | None:
            v = e.get(f"LEASE_{name}")
            return v if v is not None and v.strip() != "" else None

        try:
            return cls(
                python=get("PYTHON") or d.python,
                lease_dir=Path(get("DIR") or d.lease_dir),
                runs=Path(get("RUNS") or d.runs),
                data=_words(get("DATA")) if get("DATA") else d.data,
                args=_words(e["LEASE_ARGS"]) if "LEASE_ARGS" in e else d.args,
                sweep_args=_words(get("SWEEP_ARGS") or ""),
                bench_args=_words(get("BENCH_ARGS") or ""),
                exps=_csv(get("EXPS")) if get("EXPS") else None,
                seeds=_csv(get("SEEDS")) if get("SEEDS") else None,
                bench_s=float(get("BENCH_S") or d.bench_s),
                bench_iters=int(get("BENCH_ITERS") or d.bench_iters),
                bench_warmup=int(get("BENCH_WARMUP") or d.bench_warmup),
                bench_modes=_csv(get("BENCH_MODES")) if get("BENCH_MODES") else d.bench_modes,
                bench_exps=_csv(get("BENCH_EXPS")) if get("BENCH_EXPS") else d.bench_exps,
                bench_concurrent=[int(n) for n in _csv(get("BENCH_CONCURRENT"))] if get("BENCH_CONCURRENT")
                else ([] if "LEASE_BENCH_CONCURRENT" in e else d.bench_concurrent),
                budget_s=float(get("BUDGET_S")) if get("BUDGET_S") else None,
                margin_s=float(get("MARGIN_S") or d.margin_s),
            )
        except ValueError as err:
            raise ReproError(f"a LEASE_* variable is not a number: {err}") from None

    @property
    def sweep_dir(self) -> Path:
        return self.runs / SWEEP_EXP
