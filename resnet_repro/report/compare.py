"""Judging runs against the paper: runs grouped by exp, data and recipe (never pooled across
architectures), their statistics (mean, sample std, best) and the verdict of each group against
the paper row (the rule itself is `resnet_repro.judge`, shared with W&B)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from resnet_repro import judge
from resnet_repro.report.collect import Run, number

PAPER_RECIPE = "paper"



@dataclass
class Group:
    """The runs (seeds) of one experiment on one data set with one recipe."""

    exp: str
    data: str
    runs: list[Run]
    recipe: judge.Recipe

    @property
    def arch(self) -> dict[str, Any]:
        return self.runs[0].arch

    @property
    def depth(self) -> int:
        d = self.arch.get("depth")
        return d if isinstance(d, int) else 0

    @property
    def family(self) -> str:
        return str(self.arch.get("family", "?"))

    @property
    def residual(self) -> bool:
        return bool(self.arch.get("residual", True))

    @property
    def label(self) -> str:
        """Figure legends: "ResNet-56", "plain-20" (the architecture's depth)."""
        return f"{'ResNet' if self.residual else 'plain'}-{self.depth}"

    def values(self, key: str) -> list[float]:
        return [v for r in self.runs if (v := number(r.summary.get(key))) is not None]

    def iterations(self) -> str:
        its = sorted({r.summary.get("iterations") for r in self.runs if isinstance(r.summary.get("iterations"), int)})
        return "-" if not its else str(its[0]) if len(its) == 1 else f"{its[0]}-{its[-1]}"


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Group by (exp_name, data, recipe): the seeds of one recipe on one data set. Runs of one
    exp name with another architecture, length or data size are another group, never pooled."""
    groups: dict[tuple[str, str, judge.Recipe], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.exp, r.data, r.recipe), []).append(r)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2])))
    return [Group(exp, data, sorted(rs, key=lambda r: (r.seed, r.path)), recipe) for (exp, data, recipe), rs in ordered]


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float | None  # sample std (n-1); None for a single run
    best: float  # the lowest error
    n: int


def stats(values: Sequence[float]) -> Stats | None:
    if not values:
        return None
    return Stats(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else None,
        best=min(values),
        n=len(values),
    )


def judge_group(row: str, g: Group, s: Stats | None, paper_value: float, n_paper: int,
                sigma: float) -> tuple[str, float | None, str]:
    """(verdict, band, recipe) of group `g` against paper row `row`: a verdict only for the
    row's recipe (see resnet_repro/judge.py), else "not the paper's recipe: <what differs>"."""
    diffs = judge.recipe_differences(row, g.recipe)
    if diffs:
        return judge.not_recipe(diffs), None, "; ".join(diffs)
    if s is None:
        return "", None, PAPER_RECIPE
    half = judge.band(sigma, s.n, n_paper)
    return judge.on_data(judge.verdict(s.mean, paper_value, half), g.data), half, PAPER_RECIPE


def _points(rows: Sequence[dict[str, Any]], key: str) -> dict[int, float]:
    """iter -> value of `key`, for the metrics rows that have both."""
    return {r["iter"]: v for r in rows if isinstance(r.get("iter"), int) and (v := number(r.get(key))) is not None}


def final_train_err(rows: Sequence[dict[str, Any]]) -> float | None:
    """Training error at the end of training: the mean logged `train/err` over the last 10%
    of iterations (at least the last row); logged errors are over augmented batches."""
    pts = _points(rows, "train/err")
    if not pts:
        return None
    last = max(pts)
    return statistics.fmean(v for i, v in pts.items() if i >= 0.9 * last)


def mean_curve(runs: Sequence[Run], key: str) -> tuple[list[int], list[float]]:
    """The mean of `key` over seeds at the iterations every seed logged; the first seed's
    curve when they share fewer than two."""
    per_run = [d for run in runs if (d := _points(run.rows, key))]
    if not per_run:
        return [], []
    common = sorted(set.intersection(*(set(d) for d in per_run)))
    if len(common) < min(2, len(per_run[0])):  # seeds logged at different iterations
        first = per_run[0]
        return sorted(first), [first[i] for i in sorted(first)]
    return common, [statistics.fmean(d[i] for d in per_run) for i in common]
