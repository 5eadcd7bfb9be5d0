"""Early-training comparisons, read from the logged curves of any run, finished or paused (a
prefix of the recipe is enough): the paper's ResNet-110 warm-up (§4.2), the ordering of the
training-error curves by depth (Figure 6), and ours, bf16 autocast against fp32 on one recipe.
These sections state facts and counts; they are not Table 6 verdicts, and they never pool
different data sets or training precisions."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from resnet_repro.report.collect import Run, data_label, number
from resnet_repro.runs.state import display_path
from resnet_repro.report.compare import Group, mean_curve, points
from resnet_repro.report.tables import fmt, md_table

# §4.2: "we use 0.01 to warm up the training until the training error is below 80% (about 400
# iterations), and then go back to 0.1".
PAPER_WARMUP_ITERS = 400


@dataclass(frozen=True)
class Warmup:
    """What one warm-up run's logged rows say about its switch to the main schedule."""

    run: Run
    last_iter: int | None  # the last logged iteration
    switch: int | None  # summary.json's warmup_switch_iter (None: not switched yet)
    err_at_switch: float | None  # the logged training error of the row at or just before the switch
    lr_after: float | None  # the lr of the first row after the switch
    max_err_after: float | None
    last_err: float | None
    outcome: str


def _rows(run: Run) -> list[dict[str, Any]]:
    return sorted((r for r in run.rows if isinstance(r.get("iter"), int) and "train/err" in r), key=lambda r: r["iter"])


def _has_warmup(run: Run) -> bool:
    sched = run.summary.get("schedule")
    return isinstance(sched, dict) and bool(sched.get("warmup"))


def warmup_of(run: Run) -> Warmup | None:
    """None for a run without the warm-up (summary.json's schedule.warmup is false)."""
    if not _has_warmup(run):
        return None
    rows = _rows(run)
    last = rows[-1]["iter"] if rows else None
    switch = run.summary.get("warmup_switch_iter")
    switch = switch if isinstance(switch, int) else None
    if switch is None:
        return Warmup(run, last, None, None, None, None, None,
                      f"still warming up at iteration {last}" if last is not None else "nothing logged")
    before = [r for r in rows if r["iter"] <= switch]
    after = [r for r in rows if r["iter"] > switch]
    err0 = number(before[-1]["train/err"]) if before else None
    errs = [number(r["train/err"]) for r in after]
    finite = all(isinstance(r.get("train/loss"), (int, float)) and math.isfinite(r["train/loss"]) for r in after)
    if run.summary.get("status") == "diverged" or not finite:
        outcome = "diverged after the switch (a non-finite loss)"
    elif not after:
        outcome = "switched at its last logged iteration: nothing logged after it"
    elif err0 is not None and errs[-1] is not None and errs[-1] < err0:
        outcome = f"trains on: {len(after)} logged rows after the switch, every loss finite, training error falling"
    else:
        outcome = "no progress after the switch: the training error did not fall below its value at the switch"
    return Warmup(run, last, switch, err0, number(after[0].get("lr")) if after else None,
                  max((e for e in errs if e is not None), default=None),
                  errs[-1] if errs else None, outcome)


def warmup_section(runs: Sequence[Run]) -> list[str]:
    """§4.2's warm-up, one row per run that has it; [] when none does."""
    found = sorted((w for r in runs if (w := warmup_of(r)) is not None),
                   key=lambda w: (w.run.exp, w.run.data, w.run.seed, w.run.path))
    if not found:
        return []

    rows = [[w.run.exp, str(w.run.seed), data_label(w.run.data), w.run.precision, fmt(w.last_iter, "d"),
             fmt(w.switch, "d"), fmt(w.err_at_switch, ".1f"), fmt(w.lr_after, "g"), fmt(w.max_err_after, ".1f"), fmt(w.last_err, ".1f"),
             w.outcome, display_path(w.run.path)] for w in found]
    switches = [w.switch for w in found if w.switch is not None]
    summary = (f"Switch iterations: {', '.join(map(str, switches))} (mean {statistics.fmean(switches):.0f}; the paper: "
               f"about {PAPER_WARMUP_ITERS})." if switches else "No run has switched yet.")
    return [
        "## The ResNet-110 warm-up (§4.2)", "",
        "§4.2: lr 0.01 \"until the training error is below 80% (about 400 iterations), and then go back to 0.1\". "
        "The switch comes at the first check (every `schedule.warmup.check_every` iterations) whose running "
        "training error is below the threshold; 'training error at the switch' is the logged row at or just "
        "before it. Errors in % over augmented training batches. Paused runs count: a prefix is enough.", "",
        *md_table(["exp", "seed", "data", "precision", "last logged iteration", "switch iteration",
                   "training error at the switch", "lr after", "highest training error after",
                   "training error at the end", "after the switch", "run"], rows),
        "", summary, "",
    ]


def _seed_words(seeds: Sequence[int]) -> str:
    """"seed 0", "seeds 0, 1"."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


@dataclass(frozen=True)
class Ordering:
    """Two depths of one kind of net on one data set: where the deeper one's
    mean training-error curve lies against the shallower one's, at the iterations both logged."""

    kind: str  # "plain" or "ResNet"
    shallow: Group
    deep: Group
    iters: list[int]
    gaps: list[float]  # deep minus shallow, points, per common iteration
    paired: tuple[int, ...] = ()  # the seeds both trained, when the groups were cut down to them
    # (iteration, shallow, deep): the mean test error at each evaluation both logged
    tests: tuple[tuple[int, float, float], ...] = ()

    @property
    def higher(self) -> int:
        return sum(g > 0 for g in self.gaps)

    def line(self) -> str:
        n, d, s = len(self.gaps), self.deep.label, self.shallow.label
        if self.kind == "plain":
            claim = f"The paper: {d} higher throughout (the degradation problem)."
        else:
            claim = f"The paper: {d} lower once trained (deeper is better)."
        warm = [g.label for g in (self.shallow, self.deep) if any(_has_warmup(r) for r in g.runs)]
        if warm:
            claim += f" {' and '.join(warm)} began with the §4.2 warm-up at lr 0.01."
        prec = (self.deep.precision if self.deep.precision == self.shallow.precision
                else f"{d} {self.deep.precision}, {s} {self.shallow.precision}")
        if self.paired:
            prec += f", {_seed_words(self.paired)} of each"
        return (f"- {d} vs {s} ({data_label(self.deep.data)}, {prec}), iterations "
                f"{self.iters[0]:,}-{self.iters[-1]:,}: {d}'s training error is higher at {self.higher} of {n} "
                f"logged points, lower at {sum(g < 0 for g in self.gaps)}; mean gap {statistics.fmean(self.gaps):+.2f} "
                f"points, {statistics.fmean(self.gaps[-max(1, n // 5):]):+.2f} over the last fifth."
                f"{self.tested()}{self.finished()} {claim}")

    def tested(self) -> str:
        """The test errors (bold in Figure 6) at the evaluations both nets logged: Table 6's measure,
        along the way; a paused prefix's last evaluation is not its final error."""
        if not self.tests:
            return ""
        d, s = self.deep.label, self.shallow.label
        first, (last, a, b) = self.tests[0][0], self.tests[-1]
        span = f"at {last:,}" if first == last else f"{first:,}-{last:,}"
        lower = sum(deep < shallow for _, shallow, deep in self.tests)
        higher = sum(deep > shallow for _, shallow, deep in self.tests)
        return (f" Test error at the {len(self.tests)} evaluation{'s' if len(self.tests) > 1 else ''} both logged ({span}): {d}'s lower at {lower}, "
                f"higher at {higher}; at {last:,} {d} {b:.2f}% vs {s} {a:.2f}%.")

    def finished(self) -> str:
        """Once both nets have finished the recipe: their final test errors (the paper's Table 6
        claim for ResNets; for plain nets Figure 6 only), each the mean over its finished seeds."""
        ends = []
        for g in (self.deep, self.shallow):
            errs = g.per_seed(lambda r: number(r.summary.get("test_err")) if r.summary.get("status") == "complete"
                              else None)
            if not errs:
                return ""
            ends.append((g.label, statistics.fmean(errs), len(errs)))
        (d, ed, nd), (s, es, ns) = ends
        seeds = "" if nd == ns == 1 else f" (means over {nd} and {ns} seeds)"
        return (f" Finished: final test error {d} {ed:.2f}% vs {s} {es:.2f}%, {d} "
                f"{'lower' if ed < es else 'higher' if ed > es else 'equal'} by {abs(ed - es):.2f} points{seeds}.")


# What may differ between two depths compared in Figure 6: the depth, and ResNet-110's warm-up.
_DEPTH_KEYS = ("model.depth", "schedule.warmup")


def _training_recipe(g: Group) -> tuple | None:
    """The group's recipe but for its depth (and warm-up): two depths are compared only when
    the rest of what they learned from is the same."""
    if g.recipe is None:
        return None
    return tuple((k, v) for k, v in g.recipe.items if not k.startswith(_DEPTH_KEYS))


def _furthest(groups: Sequence[Group]) -> list[Group]:
    """One group per (kind, data, recipe but for depth, depth): the one whose training-error
    curve reaches furthest (then the one with more seeds). Precision is not recipe, so a bf16
    ResNet-56 is compared with the fp32 ResNet-20 that finished, not with a bf16 prefix of it;
    the line names both. "Furthest" is the furthest any of its seeds logged: a finished seed 0
    beside a paused seed 1 reaches the end (`_paired` then compares seed 0 with seed 0)."""
    best: dict[tuple, tuple[tuple[int, int], Group]] = {}
    for g in (g.furthest_per_seed() for g in groups):
        iters, _ = mean_curve(g.runs, "train/err", past_shortest=True)
        rank = (iters[-1] if iters else -1, len(g.seeds()))
        k = (g.residual, g.data, _training_recipe(g), g.depth)
        if k not in best or rank > best[k][0]:
            best[k] = (rank, g)
    return [g for _, g in best.values()]


def _paired(a: Group, b: Group) -> tuple[Group, Group, tuple[int, ...]]:
    """Two depths compared seed for seed: each cut down to the seeds both trained, when they
    share some but not all (ResNet-20 seeds 0 and 1 against ResNet-56 seed 0 compare seed 0
    with seed 0, to the end of both, rather than a two-seed mean that stops where seed 1
    paused). Groups with no seed in common are compared as they are, means of all their seeds."""
    sa, sb = set(a.seeds()), set(b.seeds())
    both = sa & sb
    if not both or sa == sb:
        return a, b, ()
    cut = lambda g: replace(g, runs=[r for r in g.runs if r.seed in both])  # noqa: E731
    return cut(a), cut(b), tuple(sorted(both))


def orderings(groups: Sequence[Group]) -> list[Ordering]:
    """Each pair of depths of the same kind (plain or residual, CIFAR family), data and recipe
    but for the depth, from shallow to deep, that logged training error at two or more common
    iterations; per depth the group that reached furthest, whatever its precision (`_furthest`),
    seed for seed where they share seeds (`_paired`)."""
    out = []
    key = lambda g: (g.residual, g.data, repr(_training_recipe(g)))  # noqa: E731
    cifar = sorted(_furthest([g for g in groups if g.family == "cifar"]), key=lambda g: (key(g), g.depth))
    for i, a in enumerate(cifar):
        for b in cifar[i + 1:]:
            if key(a) != key(b) or a.depth == b.depth:
                continue
            sa, sb, paired = _paired(a, b)
            ia, ea = mean_curve(sa.runs, "train/err")
            ib, eb = mean_curve(sb.runs, "train/err")
            da, db = dict(zip(ia, ea)), dict(zip(ib, eb))
            common = sorted(set(da) & set(db))
            if len(common) >= 2:
                ta, tb = (dict(zip(*mean_curve(g.runs, "test/err"))) for g in (sa, sb))
                tests = tuple((t, ta[t], tb[t]) for t in sorted(set(ta) & set(tb)))
                out.append(Ordering("ResNet" if a.residual else "plain", sa, sb, common,
                                    [db[t] - da[t] for t in common], paired, tests))
    return out


def _grid(last: int) -> int:
    """The table's iteration step: 500, or a multiple of it giving at most about 12 rows."""
    return 500 * max(1, math.ceil(last / 6000))


def _head(g: Group, detail: int) -> str:
    """A column head: "ResNet-20", with `detail` more words where two columns share it."""
    parts = [data_label(g.data), g.precision, _seed_words(sorted(g.seeds()))]
    return f"{g.label} ({', '.join(parts[:detail])})" if detail else g.label


def ordering_section(groups: Sequence[Group]) -> list[str]:
    """Figure 6's ordering by depth, measured on whatever the runs logged; [] with no pair."""
    pairs = orderings(groups)
    if not pairs:
        return []

    # One column per group as compared (a depth cut to the seeds of one pair is its own column).
    runs_of = lambda g: tuple(sorted(str(r.path) for r in g.runs))  # noqa: E731
    shown = sorted({runs_of(g): g for p in pairs for g in (p.shallow, p.deep)}.values(),
                   key=lambda g: (g.residual, g.data, g.precision, g.depth, sorted(g.seeds())))
    curves = {id(g): dict(zip(*mean_curve(g.runs, "train/err"))) for g in shown}
    last = max(p.iters[-1] for p in pairs)
    step = _grid(last)
    ticks = [t for t in range(step, last + 1, step) if any(t in c for c in curves.values())]
    heads = [_head(g, 0) for g in shown]
    for detail in (2, 3):  # told apart by data and precision, then by seeds
        heads = [h if heads.count(h) == 1 else _head(g, detail) for h, g in zip(heads, shown)]
    table = [[f"{t:,}", *(fmt(curves[id(g)].get(t), ".1f") for g in shown)] for t in ticks]
    seeds = ", ".join(f"{h} {len(g.seeds())}" for h, g in zip(heads, shown))
    prefixes = [h for h, g in zip(heads, shown) if any(r.summary.get("status") == "paused" for r in g.runs)]
    return [
        "## Training error by depth (Figure 6)", "",
        "Figure 6 (left): deeper plain nets have *higher* training error, the degradation problem; (middle) "
        "deeper ResNets do better. Measured here on the logged training error (augmented batches, each row the "
        "mean over `trainer.log_every` iterations; with several seeds the mean over them), at the iterations "
        f"both nets logged, seed for seed where the two share some seeds. Seeds: {seeds}."
        + (f" Paused (prefixes of the recipe, compared over the iterations they reached): {', '.join(prefixes)}."
           if prefixes else ""), "",
        *[p.line() for p in pairs], "",
        *md_table(["iteration", *heads], table), "",
    ]


# The training loss compared across precisions: the mean of the logged rows in this many
# iterations up to the common iteration (5 rows at trainer.log_every=100).
LOSS_WINDOW = 500


@dataclass(frozen=True)
class PrecisionRow:
    run: Run
    test_err: float | None  # test/err logged at the comparison iteration
    train_loss: float | None  # mean logged train/loss over the LOSS_WINDOW iterations up to it


@dataclass(frozen=True)
class PrecisionComparison:
    """Runs of one exp, data set and recipe trained in different precisions (bf16 autocast vs
    fp32), compared at one iteration at which each of `rows` logged a test error."""

    exp: str
    data: str
    at: int
    rows: list[PrecisionRow]

    def lines(self) -> list[str]:
        """Each non-fp32 run against the fp32 run(s) of its seed, then each precision's spread
        over its seeds. Two runs of one precision and seed (say bf16 emulated on one CPU, native
        on another) are told apart by their run dirs."""
        rows = sorted((r for r in self.rows if r.test_err is not None),
                      key=lambda r: (r.run.seed, r.run.precision, r.run.path))
        twins = {k for k, n in Counter((r.run.precision, r.run.seed) for r in rows).items() if n > 1}
        name = lambda r: f" ({display_path(r.run.path)})" if (r.run.precision, r.run.seed) in twins else ""  # noqa: E731
        out = []
        for r in (x for x in rows if x.run.precision != "fp32"):
            for ref in (x for x in rows if x.run.precision == "fp32" and x.run.seed == r.run.seed):
                d = r.test_err - ref.test_err  # type: ignore[operator]
                out.append(f"- seed {r.run.seed}: {r.run.precision}{name(r)} − fp32{name(ref)} = {d:+.2f} points "
                           f"of test error at iteration {self.at:,}.")
        for p in sorted({r.run.precision for r in rows}):
            mine = sorted((r for r in rows if r.run.precision == p), key=lambda r: r.run.seed)
            if len({r.run.seed for r in mine}) >= 2:
                errs = [r.test_err for r in mine]
                out.append(f"- run-to-run spread in {p} (seeds {', '.join(str(r.run.seed) for r in mine)}): "
                           f"{max(errs) - min(errs):.2f} points (max − min) at iteration {self.at:,}.")
        return out


def precision_comparisons(runs: Sequence[Run]) -> list[PrecisionComparison]:
    """Each (exp, data, recipe) with runs in two or more training precisions and a common
    logged test-error iteration: compared there and, when runs of two precisions went on
    further, first at the last iteration they all logged (the runs that stopped left out)."""

    sets: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.recipe is not None:
            sets.setdefault((r.exp, r.data, r.recipe), []).append(r)
    out = []
    for (exp, data, _), rs in sorted(sets.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if len({r.precision for r in rs}) < 2:
            continue
        tests = [points(r.rows, "test/err") for r in rs]
        common = set.intersection(*(set(t) for t in tests))
        if not common:
            continue
        at = max(common)
        # A run that stopped early (a paused prefix) must not hold the others back: also compare,
        # at the last iteration at which runs of two precisions logged a test error, those runs.
        later = [i for i in set().union(*(set(t) for t in tests)) if i > at
                 and len({r.precision for r, t in zip(rs, tests) if i in t}) >= 2]
        for when in ([max(later)] if later else []) + [at]:
            rows = []
            for r, t in zip(rs, tests):
                if when in t:
                    loss = [v for i, v in points(r.rows, "train/loss").items() if when - LOSS_WINDOW < i <= when]
                    rows.append(PrecisionRow(r, t[when], statistics.fmean(loss) if loss else None))
            rows.sort(key=lambda x: (x.run.precision, x.run.seed, x.run.path))
            out.append(PrecisionComparison(exp, data, when, rows))
    return out


# The words of resnet_repro/training/policy.py's precision reason on a CPU without native bf16 (kept
# here without importing torch; tests/test_report_claims.py ties the two).
NO_NATIVE_BF16 = "without native bf16"


def emulated_note(run: Run) -> str | None:
    """A line for a bf16 run whose (last) sitting emulated bf16 on a CPU (its precision_reason says so)."""
    if run.precision != "bf16" or NO_NATIVE_BF16 not in str(run.summary.get("precision_reason", "")):
        return None
    return (f"- {display_path(run.path)}: bf16 emulated on a CPU without native bf16, where torch's fallback "
            "convolution sums each weight gradient over the batch in bf16 (8x one bf16 rounding's error at "
            "batch 128: experiments/results/cpu/bf16_conv_check_avx2.md): a harsher test of bf16 than native "
            "kernels, which accumulate in fp32.")


def _loss_curve(run: Run, until: int) -> tuple[list[int], list[float]]:
    pts = sorted((i, v) for i, v in points(run.rows, "train/loss").items() if i <= until)
    return [i for i, _ in pts], [v for _, v in pts]


def precision_section(runs: Sequence[Run], out_dir: Any = None) -> tuple[list[str], list[Any]]:
    """bf16 against fp32 on one recipe: test error and training loss at a common iteration,
    beside the run-to-run spread, and (with `out_dir`) a PNG of the training-loss curves."""
    comps = precision_comparisons(runs)
    if not comps:
        return [], []
    from pathlib import Path

    from resnet_repro.report.figures import training_loss_figure

    md = ["## Training precision: bf16 autocast against fp32", "",
          "Runs of one exp, data set and recipe that differ only in training precision (weights, SGD and "
          "evaluation fp32 in both), at the last iteration at which all of them logged a test error and, where "
          "some stopped earlier, also at the last iteration at which runs of two precisions did; the "
          f"training loss is the mean of the rows logged over the {LOSS_WINDOW} iterations up to it. A precision "
          "difference within the run-to-run spread of one precision does not change what is learned at this "
          "scale. Not a paper claim: the paper trained in fp32.", ""]
    files = []
    for c in comps:
        md += [f"### {c.exp} ({data_label(c.data)}), at iteration {c.at:,}", "",
               *md_table(["precision", "seed", "test error", "training loss", "iterations", "run"],
                         [[r.run.precision, str(r.run.seed), fmt(r.test_err, ".2f"), fmt(r.train_loss, ".4f"),
                           fmt(r.run.summary.get("iterations") if isinstance(r.run.summary.get("iterations"), int)
                              else None, "d"), display_path(r.run.path)] for r in c.rows]),
               "", *c.lines(), *(n for r in c.rows if (n := emulated_note(r.run))), ""]
        if out_dir is not None:
            first = next(x for x in comps if (x.exp, x.data) == (c.exp, c.data))
            name = f"precision_{c.exp}_{c.data}{'' if c is first else f'_at{c.at}'}"
            while f"{name}.png" in (f.name for f in files):  # another recipe of the exp at that iteration
                name += "_b"
            name += ".png"
            curves = [(f"{r.run.precision} seed {r.run.seed}", r.run.precision, *_loss_curve(r.run, c.at))
                      for r in c.rows]
            files.append(training_loss_figure([x for x in curves if x[2]], Path(out_dir) / name,
                                              f"{c.exp}, {data_label(c.data)}: training loss up to iteration {c.at:,}"))
            md += [f"![training loss by precision]({name})", ""]
    return md, files
