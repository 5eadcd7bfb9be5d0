"""Judging runs against the paper: runs grouped by exp, data and recipe (never pooled across
architectures), their statistics (mean, sample std, best) and the verdict of each group against
the paper row (the rule itself is `resnet_repro.paper.judge`, shared with W&B)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from resnet_repro.paper import judge
from resnet_repro.report.collect import Run, data_label, number
from resnet_repro.runs.state import display_path

PAPER_RECIPE = "paper"



@dataclass
class Group:
    """The runs of one experiment on one data set with one recipe and one training precision.
    Runs of the same seed (after folding copies) are one seed: n counts seeds."""

    exp: str
    data: str
    runs: list[Run]
    recipe: judge.Recipe | None
    precision: str = "not recorded"

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

    @property
    def facts(self) -> judge.Facts:
        """The group's measured facts: the first run's, unless its runs disagree (then the
        disagreeing field is not one value, and counts as not recorded)."""
        fs = [r.facts for r in self.runs]
        first = fs[0]
        return judge.Facts(*(getattr(first, f) if all(getattr(x, f) == getattr(first, f) for x in fs) else None
                             for f in first.__dataclass_fields__))

    def seeds(self) -> dict[int, list[Run]]:
        out: dict[int, list[Run]] = {}
        for r in self.runs:
            out.setdefault(r.seed, []).append(r)
        return out

    def furthest_per_seed(self) -> Group:
        """The group with one run per seed, the one that logged furthest: a seed trained twice
        (started again on another machine when its checkpoint stayed on the first) is drawn and
        compared as one curve, the longer, not as a mean that stops where the shorter stopped."""
        last = lambda r: max(points(r.rows, "train/err"), default=-1)  # noqa: E731
        keep = [max(runs, key=last) for runs in self.seeds().values()]
        return self if len(keep) == len(self.runs) else replace(self, runs=keep)

    def per_seed(self, value: Callable[[Run], float | None]) -> list[float]:
        """One number per seed: the mean over that seed's distinct runs (two runs of one seed,
        e.g. on two machines, are not independent seeds)."""
        out = []
        for runs in self.seeds().values():
            vals = [v for r in runs if (v := value(r)) is not None]
            if vals:
                out.append(statistics.fmean(vals))
        return out

    def values(self, key: str) -> list[float]:
        return self.per_seed(lambda r: number(r.summary.get(key)))

    def iterations(self) -> str:
        its = sorted({r.summary.get("iterations") for r in self.runs if isinstance(r.summary.get("iterations"), int)})
        return "-" if not its else str(its[0]) if len(its) == 1 else f"{its[0]}-{its[-1]}"

    def judgement(self, row: str, reference: judge.Recipe | None) -> judge.Judgement:
        return judge.judgement(row, reference, self.recipe, self.facts)


def fold_copies(runs: Iterable[Run]) -> tuple[list[Run], list[str]]:
    """One run per content: runs of the same exp, data, recipe, seed and data fingerprint with
    the same digest (a copied run dir, a re-run that reproduced it bit for bit) count once; the
    first (by path) keeps the others in `also`. Returns (runs, one note per fold)."""
    kept: dict[tuple, Run] = {}
    for r in sorted(runs, key=lambda r: r.path):
        key = (r.exp, r.data, r.recipe, r.seed, r.summary.get("data_fingerprint"), r.digest())
        if key in kept:
            kept[key].also.append(r.path)
        else:
            kept[key] = r
    notes = [f"{r.exp} seed {r.seed}: {', '.join([display_path(r.path), *map(display_path, r.also)])} are one run "
             f"(same content), counted once" for r in kept.values() if r.also]
    return list(kept.values()), notes


def same_seed_notes(groups: Sequence[Group]) -> list[str]:
    """Different runs of one seed and recipe (e.g. two machines): kept, averaged as one seed."""
    notes = []
    for g in groups:
        for seed, runs in sorted(g.seeds().items()):
            if len(runs) > 1:
                notes.append(f"{g.exp} seed {seed} ({data_label(g.data)}): {len(runs)} different runs "
                             f"({', '.join(display_path(r.path) for r in runs)}), averaged as one seed")
    return notes


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Group by (exp_name, data, recipe, precision): the seeds of one recipe on one data set.
    Runs of one exp name with any other setting that changes what is learned are another
    group, never pooled; nor are runs trained in different precisions."""
    groups: dict[tuple[str, str, Any, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.exp, r.data, r.recipe, r.precision), []).append(r)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]), kv[0][3]))
    return [Group(exp, data, sorted(rs, key=lambda r: (r.seed, r.path)), recipe, prec)
            for (exp, data, recipe, prec), rs in ordered]


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
                sigma: float, reference: judge.Recipe | None) -> tuple[str, float | None, str]:
    """(verdict, band, recipe) of group `g` against paper row `row`, whose recipe is
    `reference`: a verdict only for the row's recipe on the paper's data (resnet_repro/paper/judge.py);
    "no verdict: <why>" for the recipe on the JPEG copy; else "not the paper's recipe: <what>"."""
    j = g.judgement(row, reference)
    if not j.follows:
        return judge.not_recipe(j.differences), None, "; ".join(j.differences)
    if j.no_verdict or s is None:
        return judge.verdict_text(j, None, paper_value, None), None, PAPER_RECIPE
    half = judge.band(sigma, s.n, n_paper)
    return judge.verdict(s.mean, paper_value, half), half, PAPER_RECIPE


def points(rows: Sequence[dict[str, Any]], key: str) -> dict[int, float]:
    """iter -> value of `key`, for the metrics rows that have both."""
    return {r["iter"]: v for r in rows if isinstance(r.get("iter"), int) and (v := number(r.get(key))) is not None}


def final_train_err(rows: Sequence[dict[str, Any]]) -> float | None:
    """Training error at the end of training: the mean logged `train/err` over the last 10%
    of iterations (at least the last row); logged errors are over augmented batches.

    A row at iteration i is the mean over the iterations since the row before it, so the last
    10% of 64,000 iterations (57,601-64,000) are the rows after 57,600, not the row at 57,600
    (which covers 57,501-57,600)."""
    pts = points(rows, "train/err")
    if not pts:
        return None
    last = max(pts)
    return statistics.fmean(v for i, v in pts.items() if i > 0.9 * last)


def mean_curve(runs: Sequence[Run], key: str, *, past_shortest: bool = False) -> tuple[list[int], list[float]]:
    """The mean of `key` over seeds at the iterations every seed logged; the first seed's
    curve when they share fewer than two.

    With `past_shortest`, the curve goes on past the last iteration every seed logged, as the
    mean of the seeds that got further (a paused seed beside a longer one), and it falls back
    to the first seed only where the seeds share no iteration: figures draw the whole of the
    longer seeds. Claims leave it off, so they compare means of all seeds."""
    per_run = [d for run in runs if (d := points(run.rows, key))]
    if not per_run:
        return [], []
    if past_shortest:
        return _mean_of_seeds(per_run, past_shortest)
    common = set.intersection(*(set(d) for d in per_run))
    if len(common) < min(2, len(per_run[0])):  # seeds logged at different iterations
        return _curve(per_run[0])
    return _mean_of_seeds(per_run, past_shortest)


def _curve(d: dict[int, float]) -> tuple[list[int], list[float]]:
    return sorted(d), [d[i] for i in sorted(d)]


def _mean_of_seeds(per_run: list[dict[int, float]], past_shortest: bool) -> tuple[list[int], list[float]]:
    """The mean at the iterations all of `per_run` logged, then (past_shortest) the same over
    the seeds that logged later iterations; the first seed alone where they share none."""
    common = sorted(set.intersection(*(set(d) for d in per_run)))
    if not common:
        return _curve(per_run[0])
    its, values = common, [statistics.fmean(d[i] for d in per_run) for i in common]
    further = [rest for d in per_run if (rest := {i: v for i, v in d.items() if i > common[-1]})]
    if past_shortest and further:
        more_its, more_values = _mean_of_seeds(further, past_shortest)
        its, values = its + more_its, values + more_values
    return its, values
