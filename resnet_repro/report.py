"""`python -m resnet_repro report RUN_OR_SWEEP_DIR...`: our runs beside the paper's tables.

Reads every run under the given directories (a run dir is one with `summary.json`; a dir with
`metrics.jsonl` or a checkpoint but no summary is an unfinished run, listed as incomplete),
groups the runs by experiment name, data set and recipe (architecture, length, schedule, data
sizes: runs of different recipes are never averaged together), and writes into `--out`
(default `./report`: the run directories are only read, never written):

  report.md            Table 6 (CIFAR-10), plain nets, Tables 2/3/4 (ImageNet), figures, runs
  results.csv          every table row, one metric per line
  figure6_cifar.png    CIFAR-10 curves (Figure 6), when there are CIFAR runs
  figure4_imagenet.png ImageNet curves (Figure 4), when there are ImageNet runs
  figure7_layer_responses.png  layer responses (Figure 7), when runs have layer_responses.json

Ours = mean ± sample std (n-1) over seeds, with the best run and n. A row gets a verdict only
when its runs followed the paper row's recipe, else "not the paper's recipe: <what differs>".
The verdict compares our mean of n runs with the paper's number (a mean of n_paper runs) within
band = 2 * sigma * sqrt(1/n + 1/n_paper): "reproduced", "better than the paper" (below the
band) or "worse than the paper" (above). The rule and the arithmetic: resnet_repro/judge.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_repro import judge, paper
from resnet_repro.errors import ConfigError, ReproError
from resnet_repro.loggers import read_jsonl
from resnet_repro.archs import NAMED_MODELS


# The ImageNet tables' protocols (§3.4): 10-crop for Tables 2 and 3, multi-scale for Table 4.
# `eval` writes `<run>/eval_*.json` files: {"protocol": ..., "err": top-1 %, "top5_err": %}.
EVAL_GLOB = "eval_*.json"
EVAL_PROTOCOLS = ("ten_crop", "multi_scale", "center")
EVAL_MISSING = "missing (run `eval protocol=all`)"
MISSING = "missing"

# What a run's `data` was. Only cifar10 and imagenet are the paper's data sets.
DATA_LABELS = {
    "cifar10": "CIFAR-10",
    "cifar10_folder": "CIFAR-10 (JPEG copy)",
    "synthetic": "synthetic (not CIFAR-10)",
    "imagenet": "ImageNet",
}

FIGURE6 = "figure6_cifar.png"
FIGURE4 = "figure4_imagenet.png"
FIGURE7 = "figure7_layer_responses.png"
# band: the half-width of the "reproduced" band; recipe: "paper" or how the runs' recipe differs.
CSV_FIELDS = ("table", "model", "data", "metric", "paper", "ours_mean", "ours_std", "ours_best", "n", "diff",
              "band", "verdict", "recipe", "context")
PAPER_RECIPE = "paper"


def data_label(name: str | None) -> str:
    return DATA_LABELS.get(str(name), str(name))


# --------------------------------------------------------------------------------------------
# Finding runs
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A finished run: its summary.json, metrics rows and any `eval_*.json` results."""

    path: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    evals: dict[str, dict[str, float | None]] = field(default_factory=dict)  # protocol -> errors
    responses: dict[str, Any] | None = None  # layer_responses.json (Figure 7)
    local: bool = True  # a run directory (False: read from W&B)
    config: dict[str, Any] | None = None  # the resolved config (config.yaml, or W&B's run config)

    @property
    def exp(self) -> str:
        return str(self.summary.get("exp_name") or self.summary.get("model") or "?")

    @property
    def data(self) -> str:
        return str(self.summary.get("data") or "?")

    @property
    def arch(self) -> dict[str, Any]:
        a = self.summary.get("arch")
        return a if isinstance(a, dict) else {}

    @property
    def seed(self) -> int:
        s = self.summary.get("seed")
        return s if isinstance(s, int) else -1

    @property
    def recipe(self) -> judge.Recipe:
        return judge.recipe_of(self.summary, self.config)


@dataclass
class Incomplete:
    """A run directory without summary.json: still training, killed or crashed."""

    path: str
    exp: str
    last_iter: int | None
    note: str


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def read_eval_results(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """protocol -> {"err", "top5_err"} from `<run>/eval_*.json` (newest file wins per
    protocol). A file may hold one result, a list, or {"all": [...]} as `eval` returns."""
    out: dict[str, dict[str, float | None]] = {}
    for path in sorted(run_dir.glob(EVAL_GLOB), key=lambda p: p.stat().st_mtime):
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        items = d if isinstance(d, list) else d.get("all", [d]) if isinstance(d, dict) else []
        for item in items:
            if not isinstance(item, dict) or item.get("protocol") not in EVAL_PROTOCOLS:
                continue
            if item.get("split", "test") != "test" or _number(item.get("err")) is None:
                continue  # held-out (val) results do not go beside the paper's val-set numbers
            out[item["protocol"]] = {"err": _number(item["err"]), "top5_err": _number(item.get("top5_err"))}
    return out


def load_run(run_dir: Path) -> Run:
    from resnet_repro.analyze import read_responses

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ReproError(f"could not read {run_dir / 'summary.json'}: {e}") from None
    if not isinstance(summary, dict):
        raise ReproError(f"{run_dir / 'summary.json'} is not a run summary (not a JSON object)")
    metrics = run_dir / "metrics.jsonl"
    rows = read_jsonl(metrics) if metrics.is_file() else []
    return Run(str(run_dir), summary, rows, read_eval_results(run_dir), read_responses(run_dir),
               config=_read_config(run_dir))


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's resolved config.yaml (plain YAML), or None: the recipe then says what is
    not recorded."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _incomplete(run_dir: Path) -> Incomplete:
    exp = "?"
    try:
        from omegaconf import OmegaConf

        exp = str(OmegaConf.load(run_dir / "config.yaml").get("exp_name", "?"))
    except Exception:  # no or unreadable config.yaml: the name stays unknown
        pass
    metrics = run_dir / "metrics.jsonl"
    iters = [r["iter"] for r in read_jsonl(metrics) if isinstance(r.get("iter"), int)] if metrics.is_file() else []
    return Incomplete(str(run_dir), exp, max(iters) if iters else None,
                      f"no summary.json (still running, or stopped): `train resume={run_dir}` continues it")


SKIP_DIRS = {".hydra", "checkpoints", "wandb", "__pycache__", ".git"}


def find_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[Incomplete]]:
    """Finished and unfinished runs under `paths`, searched recursively (a run dir's own
    subdirectories are not searched)."""
    runs: list[Run] = []
    incomplete: list[Incomplete] = []
    seen: set[Path] = set()
    for p in paths:
        root = Path(p)
        if not root.is_dir():
            raise ReproError(f"not a directory: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            real = d.resolve()
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            names = set(filenames)
            if "summary.json" in names:
                runs.append(load_run(d))
                dirnames[:] = []
            elif "metrics.jsonl" in names or (d / "checkpoints" / "last.pt").is_file():
                incomplete.append(_incomplete(d))
                dirnames[:] = []
            else:
                dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS)
    return runs, incomplete


def runs_from_wandb(project: str) -> tuple[list[Run], list[Incomplete]]:
    from resnet_repro.wandb_runs import fetch_runs

    runs: list[Run] = []
    incomplete: list[Incomplete] = []
    for rec in fetch_runs(project):
        if rec["finished"]:
            runs.append(Run(rec["path"], rec["summary"], rec["rows"], local=False, config=rec.get("config")))
        else:
            iters = [r["iter"] for r in rec["rows"]]
            incomplete.append(Incomplete(rec["path"], str(rec["summary"].get("exp_name", "?")),
                                         max(iters) if iters else None, f"W&B run {rec['state']}, no test_err"))
    return runs, incomplete


# --------------------------------------------------------------------------------------------
# Groups and statistics
# --------------------------------------------------------------------------------------------


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
        return [v for r in self.runs if (v := _number(r.summary.get(key))) is not None]

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
    return {r["iter"]: v for r in rows if isinstance(r.get("iter"), int) and (v := _number(r.get(key))) is not None}


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


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _csv_row(table: str, model: str, data: str, metric: str, paper_value: float | None, s: Stats | None,
             diff: float | None, band: float | None, verdict_: str, context: str = "",
             missing: str = MISSING, recipe: str = "") -> dict[str, Any]:
    return {
        "table": table, "model": model, "data": data, "metric": metric, "paper": paper_value,
        "ours_mean": s.mean if s else missing, "ours_std": s.std if s else None, "ours_best": s.best if s else None,
        "n": s.n if s else 0, "diff": diff, "band": band, "verdict": verdict_, "recipe": recipe, "context": context,
    }


@dataclass
class Section:
    markdown: list[str]
    csv_rows: list[dict[str, Any]] = field(default_factory=list)


def table6(groups: Sequence[Group], sigma: float = judge.SIGMA_CIFAR) -> Section:
    """Table 6: CIFAR-10 test error (%), one row per paper model, data set and recipe."""
    by_exp = {g.exp: [x for x in groups if x.exp == g.exp] for g in groups}
    mean110, std110 = paper.TABLE6_RESNET110_MEAN_STD
    headers = ["model", "params (paper / ours)", "paper", "other port (context)", "data", "iters", "n",
               "ours mean", "std", "best", "ours − paper", "band", "verdict"]
    rows, csv_rows = [], []
    for model, paper_err in paper.TABLE6_ERROR.items():
        _, ref, n_paper = judge.paper_value(model)  # type: ignore[misc]  # 110: the paper's mean of 5 runs
        best_of_5 = model == "cifar_resnet110"
        paper_cell = f"{paper_err:.2f}" + (f" (best of 5; mean {mean110:.2f} ± {std110:.2f})" if best_of_5 else "")
        port = paper.PORT_CIFAR_ERROR.get(model)
        context = (f"paper best of 5 {paper_err}; " if best_of_5 else "") + f"other port {port}"
        params_paper = f"{paper.TABLE6_PARAMS[model] / 1e6:.2f}M"
        for g in by_exp.get(model) or [None]:
            s = stats(g.values("test_err")) if g else None
            params = g.values("params") if g else []
            params_cell = f"{params_paper} / {params[0] / 1e6:.2f}M" if params else params_paper
            v, half, recipe = judge_group(model, g, s, ref, n_paper, sigma) if g else ("", None, "")
            if s is None:
                rows.append([model, params_cell, paper_cell, _f(port), data_label(g.data) if g else "-",
                             g.iterations() if g else "-", "0", MISSING, "-", "-", "-", "-", v or "-"])
                csv_rows.append(_csv_row("table6", model, g.data if g else "", "test_err", ref, None, None,
                                         None, v, context, recipe=recipe))
                continue
            diff = s.mean - ref
            rows.append([model, params_cell, paper_cell, _f(port), data_label(g.data), g.iterations(), str(s.n),
                         _f(s.mean), _f(s.std), _f(s.best), _f(diff, "+.2f"), _band(half), v])
            csv_rows.append(_csv_row("table6", model, g.data, "test_err", ref, s, diff, half, v, context,
                                     recipe=recipe))
    md = [
        "## Table 6: CIFAR-10 test error (%)",
        "",
        "Test error of the final weights on the 10k test images (`summary.json` `test_err`). A verdict "
        "needs the paper's recipe (§4.2: the row's net, 64k iterations of batch 128, lr 0.1 divided by 10 "
        "at 32k and 48k, the lr-0.01 warm-up for ResNet-110/1202 only, trained on all 50k training "
        "images); other runs say what differs. 'Band': ours is 'reproduced' when |ours mean − paper| ≤ "
        f"2 × {sigma:g} × √(1/n + 1/n_paper) ({sigma:g}: the per-run std, Table 6's ResNet-110 spread); "
        "below the band is 'better than the paper', above it 'worse'. ResNet-110's 6.43 is the best of 5 "
        f"runs: our mean is compared with the paper's mean {mean110:.2f} (n_paper = 5) and 'ours − paper' is "
        "against that mean; every other row is one paper run. 'Other port' is a popular PyTorch port's "
        "result (200 epochs, test set used as validation): context, not a target.",
        "",
        *_md_table(headers, rows),
        "",
    ]
    return Section(md, csv_rows)


def _band(half: float | None) -> str:
    return "-" if half is None else f"±{half:.2f}"


def _trend(groups: Sequence[Group], key: Callable[[Group], float | None], what: str, rises: bool) -> list[str]:
    """One line per consecutive pair of depths: does the error rise (plain) / fall (ResNet)?"""
    lines = []
    for data in sorted({g.data for g in groups}):
        gs = sorted((g for g in groups if g.data == data and key(g) is not None), key=lambda g: g.depth)
        if len(gs) < 2:
            continue
        checks = []
        for a, b in zip(gs, gs[1:]):
            ea, eb = key(a), key(b)
            ok = (eb > ea) if rises else (eb < ea)  # type: ignore[operator]
            checks.append(f"{b.label} {eb:.2f}% vs {a.label} {ea:.2f}%: {'yes' if ok else 'no'}")
        lines.append(f"- {what} ({data_label(data)}): " + "; ".join(checks))
    return lines


def _group_train_err(g: Group) -> float | None:
    vals = [v for r in g.runs if (v := final_train_err(r.rows)) is not None]
    return statistics.fmean(vals) if vals else None


def _recipe_cell(g: Group) -> str:
    """"paper", or how the group's recipe differs from the paper's for its exp name ("" when the
    exp name is no paper model)."""
    if g.exp not in NAMED_MODELS:
        return ""
    diffs = judge.recipe_differences(g.exp, g.recipe)
    return "; ".join(diffs) if diffs else PAPER_RECIPE


def plain_table(cifar: Sequence[Group]) -> Section:
    """Plain nets on CIFAR-10: the paper prints no numbers for them (Figure 6 only), so ours
    alone, with the degradation check (deeper plain nets train worse)."""
    plain = sorted((g for g in cifar if not g.residual), key=lambda g: (g.depth, g.data, g.exp))
    md = ["## Plain nets on CIFAR-10 (Figure 6, left)", ""]
    if not plain:
        return Section(md + ["No plain-net runs.", ""])
    headers = ["exp", "depth", "data", "iters", "n", "test err mean", "std", "best", "final train err", "params",
               "recipe"]
    rows, csv_rows = [], []
    for g in plain:
        s = stats(g.values("test_err"))
        tr = _group_train_err(g)
        params = g.values("params")
        recipe = _recipe_cell(g)
        rows.append([g.exp, str(g.depth), data_label(g.data), g.iterations(), str(s.n if s else 0),
                     _f(s.mean if s else None), _f(s.std if s else None), _f(s.best if s else None), _f(tr),
                     f"{params[0] / 1e6:.2f}M" if params else "-", recipe or "-"])
        csv_rows.append(_csv_row("plain_cifar", g.exp, g.data, "test_err", None, s, None, None, "",
                                 f"final train err {_f(tr)}", recipe=recipe))
    md += [
        "The paper gives no plain-net numbers in Table 6; its Figure 6 shows that deeper plain nets have "
        "*higher* training error (the degradation problem). 'Final train err' is the mean logged training "
        "error over the last 10% of iterations (augmented batches), averaged over seeds. 'Recipe': "
        "'paper' for the paper's CIFAR recipe (§4.2), else what differs.",
        "",
        *_md_table(headers, rows),
        "",
        "Degradation check, deeper plain net has higher training error than shallower:",
        *(_trend(plain, _group_train_err, "plain nets, final training error", rises=True)
          or ["- needs plain nets of at least two depths on one data set"]),
        *_trend([g for g in cifar if g.residual], _group_train_err,
                "for contrast, deeper ResNet has lower training error", rises=False),
        "",
    ]
    return Section(md, csv_rows)


def imagenet_table(title: str, table: str, paper_values: dict[str, Any], protocol: str,
                   groups: Sequence[Group], sigma: float = judge.SIGMA_IMAGENET) -> Section:
    """Tables 2 (top-1), 3 and 4 (top-1 / top-5) from the runs' `eval_*.json` results."""
    top5 = any(isinstance(v, tuple) for v in paper_values.values())
    by_exp = {g.exp: [x for x in groups if x.exp == g.exp] for g in groups}
    headers = ["model", "paper top-1" + (" / top-5" if top5 else ""), "data", "n", "ours top-1 mean", "std", "best"]
    headers += ["ours top-5 mean", "std"] if top5 else []
    headers += ["Δ top-1"] + (["Δ top-5"] if top5 else []) + ["band", "verdict",
                                                              "centre crop during training (top-1, mean)"]
    rows, csv_rows = [], []
    for model, pv in paper_values.items():
        p1, p5 = (pv if isinstance(pv, tuple) else (pv, None))
        paper_cell = f"{p1:.2f}" + (f" / {p5:.2f}" if p5 is not None else "")
        for g in by_exp.get(model) or [None]:
            evald = [r.evals[protocol] for r in g.runs if protocol in r.evals] if g else []
            s1 = stats([e["err"] for e in evald if e["err"] is not None])
            s5 = stats([e["top5_err"] for e in evald if e["top5_err"] is not None])
            centre = stats(g.values("test_err")) if g else None
            centre_cell = f"{centre.mean:.2f} (n={centre.n})" if centre else "-"
            data = g.data if g else ""
            v1, b1, recipe = judge_group(model, g, s1, p1, 1, sigma) if g else ("", None, "")
            if s1 is None:
                ours = EVAL_MISSING if g else MISSING
                rows.append([model, paper_cell, data_label(data) if g else "-", "0", ours, "-", "-"]
                            + (["-", "-"] if top5 else []) + ["-"] + (["-"] if top5 else [])
                            + ["-", v1 or "-", centre_cell])
                csv_rows.append(_csv_row(table, model, data, f"top1_{protocol}", p1, None, None, None, v1,
                                         f"centre crop {centre_cell}", missing=ours, recipe=recipe))
                if top5:
                    csv_rows.append(_csv_row(table, model, data, f"top5_{protocol}", p5, None, None, None, v1,
                                             missing=ours, recipe=recipe))
                continue
            d1 = s1.mean - p1
            d5 = s5.mean - p5 if (s5 and p5 is not None) else None
            v5, b5, _ = judge_group(model, g, s5, p5, 1, sigma) if d5 is not None else ("", None, "")
            v = v1 if v5 in ("", v1) else f"top-1 {v1}; top-5 {v5}"
            row = [model, paper_cell, data_label(data), str(s1.n), _f(s1.mean), _f(s1.std), _f(s1.best)]
            row += [_f(s5.mean if s5 else None), _f(s5.std if s5 else None)] if top5 else []
            row += [_f(d1, "+.2f")] + ([_f(d5, "+.2f")] if top5 else []) + [_band(b1), v, centre_cell]
            rows.append(row)
            csv_rows.append(_csv_row(table, model, data, f"top1_{protocol}", p1, s1, d1, b1, v1,
                                     f"centre crop {centre_cell}", recipe=recipe))
            if top5:
                csv_rows.append(_csv_row(table, model, data, f"top5_{protocol}", p5, s5, d5, b5, v5,
                                         missing=EVAL_MISSING, recipe=recipe))
    md = [f"## {title}", "", *_md_table(headers, rows), ""]
    return Section(md, csv_rows)


def imagenet_sections(groups: Sequence[Group], sigma: float = judge.SIGMA_IMAGENET) -> list[Section]:
    intro = Section([
        "## ImageNet (Tables 2, 3, 4)",
        "",
        "The paper's ImageNet numbers are 10-crop (Tables 2 and 3) and multi-scale fully-convolutional "
        "(Table 4) errors on the 50k val images (our test split). Training only records the centre-crop "
        "error (`test/err`, Figure 4's curves; shown as context). The 10-crop and multi-scale numbers are "
        f"read from `<run>/{EVAL_GLOB}` files ({{\"protocol\": \"ten_crop\"|\"multi_scale\"|\"center\", "
        "\"err\": top-1 %, \"top5_err\": %}); a run without them shows "
        f"'{EVAL_MISSING}'. A verdict needs the paper's recipe (§3.4: the row's net, batch 256, 600k "
        "iterations, lr 0.1 divided by 10 on plateaus (or a step schedule), the 1.28M training images "
        f"(at most {judge.IMAGENET_MAX_HELD_OUT} held out for the plateau), 1000 classes, tested on the "
        f"50k val images). 'Band': 2 × {sigma:g} × √(1/n + 1) ({sigma:g} points: our choice of per-run "
        "std, the paper gives single runs); below it 'better than the paper', above it 'worse'.",
        "",
    ])
    return [
        intro,
        imagenet_table("Table 2: ImageNet top-1 error (%), 10-crop, plain vs ResNet (option A)", "table2",
                       paper.TABLE2_TOP1, "ten_crop", groups, sigma),
        imagenet_table("Table 3: ImageNet top-1 / top-5 error (%), 10-crop", "table3",
                       paper.TABLE3_TOP1_TOP5, "ten_crop", groups, sigma),
        imagenet_table("Table 4: ImageNet top-1 / top-5 error (%), single model, multi-scale", "table4",
                       paper.TABLE4_TOP1_TOP5, "multi_scale", groups, sigma),
    ]


def other_table(groups: Sequence[Group]) -> Section:
    md = ["## Other experiments", "", "Runs whose experiment is in none of the paper's tables above.", ""]
    rows, csv_rows = [], []
    for g in groups:
        s = stats(g.values("test_err"))
        model = str(g.runs[0].summary.get("model", "?"))
        rows.append([g.exp, model, data_label(g.data), g.iterations(), str(s.n if s else 0), _f(s.mean if s else None),
                     _f(s.std if s else None), _f(s.best if s else None)])
        csv_rows.append(_csv_row("other", g.exp, g.data, "test_err", None, s, None, None, "", recipe=_recipe_cell(g)))
    md += _md_table(["exp", "model", "data", "iters", "n", "test err mean", "std", "best"], rows) + [""]
    return Section(md, csv_rows)


def _short_commit(c: Any) -> str:
    c = str(c or "unknown")
    return c[:10] + ("-dirty" if c.endswith("-dirty") else "")


def _display_path(p: str) -> str:
    """Relative to the working directory when inside it, else as given."""
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return p
    return p if rel.startswith("..") else rel


def runs_table(runs: Sequence[Run], incomplete: Sequence[Incomplete]) -> Section:
    headers = ["exp", "seed", "data", "test err", "best val err", "iterations", "images/s", "device", "git commit",
               "run"]
    rows = []
    for r in sorted(runs, key=lambda r: (r.exp, r.seed, r.path)):
        s = r.summary
        rows.append([r.exp, str(s.get("seed", "-")), data_label(r.data), _f(_number(s.get("test_err"))),
                     _f(_number(s.get("best_val_err"))), str(s.get("iterations", "-")),
                     _f(_number(s.get("images_per_s")), ".0f"), str(s.get("device", "-")),
                     _short_commit(s.get("git_commit")), _display_path(r.path) if r.local else r.path])
    md = ["## Runs", "", *_md_table(headers, rows), ""]
    if incomplete:
        md += ["### Incomplete runs", "",
               *_md_table(["run", "exp", "last logged iteration", "note"],
                          [[_display_path(i.path), i.exp, str(i.last_iter if i.last_iter is not None else "-"), i.note]
                           for i in incomplete]),
               ""]
    return Section(md)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _curves(groups: Sequence[Group]) -> list[Any]:
    from resnet_repro.figures import Curves

    labels = [g.label for g in groups]
    out = []
    for g in groups:
        it, tr = mean_curve(g.runs, "train/err")
        tit, te = mean_curve(g.runs, "test/err")
        label = g.label if labels.count(g.label) == 1 else f"{g.label} ({g.exp}, {data_label(g.data)})"
        out.append(Curves(label, g.depth, it, tr, tit, te))
    return out


def _figure_note(groups: Sequence[Group]) -> str:
    seeds = max(len(g.runs) for g in groups)
    datas = ", ".join(sorted({data_label(g.data) for g in groups}))
    return f"data: {datas}" + (f"; mean over seeds (up to {seeds})" if seeds > 1 else "")


def figure_sections(cifar: Sequence[Group], imagenet: Sequence[Group], out: Path) -> tuple[Section, list[Path]]:
    from resnet_repro.figures import figure4, figure6

    md: list[str] = []
    files: list[Path] = []
    if cifar:
        plain = [g for g in cifar if not g.residual]
        res = [g for g in cifar if g.residual and g.depth < 1202]
        deep = [g for g in cifar if g.residual and g.depth >= 110] if any(
            g.residual and g.depth >= 1202 for g in cifar) else []
        files.append(figure6(_curves(plain), _curves(res), _curves(deep), out / FIGURE6, _figure_note(cifar)))
        md += ["## Figure 6: CIFAR-10 training curves", "",
               f"![Figure 6]({FIGURE6})", "",
               "Dashed: training error (logged every `trainer.log_every` iterations, augmented batches); bold: "
               "test error (every `trainer.eval_every`). x axis: iterations (k = thousand, M = million). "
               "One colour per depth; with several seeds each curve is the mean over seeds at the iterations "
               "they all logged. The right panel (ResNet-110 vs ResNet-1202) appears when a ResNet-1202 run exists.",
               ""]
    if imagenet:
        plain = [g for g in imagenet if not g.residual]
        res = [g for g in imagenet if g.residual and g.depth <= 34 and g.arch.get("shortcut") == "A"]
        files.append(figure4(_curves(plain), _curves(res), out / FIGURE4, _figure_note(imagenet)))
        md += ["## Figure 4: ImageNet training curves", "", f"![Figure 4]({FIGURE4})", "",
               "Thin: training error; bold: centre-crop validation error (`test/err`: ImageNet's val set is our "
               "test split). Plain nets left, option-A ResNet-18/34 right; mean over seeds.", ""]
    return Section(md), files


def add_layer_responses(runs: Sequence[Run], device: str = "auto") -> list[str]:
    """Run the Figure 7 analysis for local CIFAR runs without `layer_responses.json`;
    returns one note per run that could not be analysed."""
    from resnet_repro.analyze import analyze_run

    notes = []
    for r in runs:
        if r.responses is not None or not r.local or r.arch.get("family") != "cifar":
            continue
        try:
            r.responses = analyze_run(r.path, device=device)
        except ReproError as e:
            notes.append(f"- {_display_path(r.path)}: not analysed: {e}")
    return notes


def figure7_section(groups: Sequence[Group], out: Path, notes: Sequence[str]) -> tuple[Section, list[Path]]:
    from resnet_repro.figures import figure7

    lines = []
    for g in groups:
        resp = [r.responses["std"] for r in g.runs if r.responses]
        resp = [s for s in resp if len(s) == len(resp[0])] if resp else []
        if resp:
            mean = [statistics.fmean(col) for col in zip(*resp)]
            lines.append((g, mean, len(resp)))
    if not lines:
        return Section(["## Figure 7: layer responses", "", *(notes or []),
                        "No run has `layer_responses.json` (`report --layer-responses` or `analyze` makes them).",
                        ""] if notes else []), []
    labels = [g.label for g, _, _ in lines]
    responses = [(g.label if labels.count(g.label) == 1 else f"{g.label} ({g.exp}, {data_label(g.data)})", m)
                 for g, m, _ in sorted(lines, key=lambda t: (t[0].residual, t[0].depth))]
    path = figure7(responses, out / FIGURE7, _figure_note([g for g, _, _ in lines]))
    md = ["## Figure 7: layer responses", "", f"![Figure 7]({FIGURE7})", "",
          "Std of each 3x3 layer's output after BN and before the addition / ReLU, on the test split, in eval "
          "mode; network order (top) and sorted by magnitude (bottom). Layer 1 is the stem's 3x3 conv (its "
          "BN), then each block's two 3x3 layers: 6n+1 layers for a 6n+2-layer net. Several seeds: the "
          "mean over seeds per layer.", "",
          *_md_table(["model", "exp", "data", "layers", "seeds", "mean std", "max", "min"],
                     [[g.label, g.exp, data_label(g.data), str(len(m)), str(k), _f(statistics.fmean(m), ".3f"),
                       _f(max(m), ".3f"), _f(min(m), ".3f")] for g, m, k in lines]),
          "", *notes, ""]
    return Section(md), [path]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    markdown: str
    out: Path
    files: list[Path]


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from resnet_repro.rundir import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in CSV_FIELDS})
    write_text_atomic(path, buf.getvalue())


def _header(paths: Sequence[str], wandb: str | None, runs: Sequence[Run], incomplete: Sequence[Incomplete],
            sigma_cifar: float, sigma_imagenet: float) -> list[str]:
    datas = sorted({r.data for r in runs})
    sources = [f"`{p}`" for p in paths] + ([f"W&B project `{wandb}`"] if wandb else [])
    md = [
        "# Reproduction report: He et al. 2016, *Deep Residual Learning for Image Recognition*",
        "",
        f"{len(runs)} finished run(s) and {len(incomplete)} incomplete run(s) from {', '.join(sources)}.",
        "",
        "- Ours: mean ± sample standard deviation (n−1) over seeds ('-' for one run), the best (lowest) "
        "run and n. Errors in %.",
        "- Verdicts only for runs of the paper's recipe (the row's architecture, iterations, schedule, batch, "
        "training-set size and data set); other rows say \"not the paper's recipe: <what differs>\". "
        "Runs of different recipes are never averaged together.",
        "- Band: 'reproduced' when |ours mean − paper| ≤ 2 σ √(1/n + 1/n_paper), "
        f"σ = {sigma_cifar:g} points on CIFAR-10 (Table 6's ResNet-110 spread), {sigma_imagenet:g} on ImageNet "
        "(our choice); below the band 'better than the paper', above it 'worse than the paper'.",
        "- Data of our runs: " + (", ".join(data_label(d) for d in datas) or "none") + ".",
    ]
    if any(d not in ("cifar10", "imagenet") for d in datas):
        md.append("- **Not the paper's data:** rows on 'synthetic (not CIFAR-10)' data are not the paper's "
                  "recipe and get no verdict; rows on 'CIFAR-10 (JPEG copy)' use a re-encoded copy of "
                  "CIFAR-10, not the paper's files, and say so in their verdict.")
    return md + [""]


def build_report(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    sigma_cifar: float = judge.SIGMA_CIFAR,
    sigma_imagenet: float = judge.SIGMA_IMAGENET,
    wandb: str | None = None,
    layer_responses: bool = False,
    device: str = "auto",
) -> Report:
    """Find the runs, write report.md, results.csv and the figures into `out`, return them."""
    if not (sigma_cifar > 0 and sigma_imagenet > 0):
        raise ConfigError("--sigma-cifar and --sigma-imagenet are per-run stds in percentage points and must be > 0")
    if not paths and not wandb:
        raise ConfigError("give run or sweep directories (or --wandb ENTITY/PROJECT)")
    runs, incomplete = find_runs(paths)
    if wandb:
        w_runs, w_incomplete = runs_from_wandb(wandb)
        runs, incomplete = runs + w_runs, incomplete + w_incomplete
    if not runs and not incomplete:
        where = ", ".join(str(p) for p in paths) + (f", W&B {wandb}" if wandb else "")
        raise ReproError(f"no runs found under {where} (a run directory has summary.json)")
    # One default whatever the inputs: run directories are records (maybe shared or read-only),
    # so a report never lands inside one unless --out says so.
    out_dir = Path(out) if out is not None else Path("report")
    out_dir.mkdir(parents=True, exist_ok=True)

    groups = group_runs(runs)
    cifar = [g for g in groups if g.family == "cifar"]
    imagenet = [g for g in groups if g.family == "imagenet"]
    in_tables = {*paper.TABLE6_ERROR, *paper.TABLE2_TOP1, *paper.TABLE3_TOP1_TOP5, *paper.TABLE4_TOP1_TOP5}
    other = [g for g in groups if g.exp not in in_tables and not (g.family == "cifar" and not g.residual)]

    notes = add_layer_responses(runs, device) if layer_responses else []
    figs, files = figure_sections(cifar, [g for g in imagenet if g.data == "imagenet"], out_dir)
    fig7, files7 = figure7_section(cifar, out_dir, notes)
    sections = [
        Section(_header([str(p) for p in paths], wandb, runs, incomplete, sigma_cifar, sigma_imagenet)),
        table6(cifar, sigma_cifar),
        plain_table(cifar),
        *imagenet_sections(imagenet, sigma_imagenet),
        figs,
        fig7,
        *([other_table(other)] if other else []),
        runs_table(runs, incomplete),
    ]
    markdown = "\n".join(line for s in sections for line in s.markdown).rstrip() + "\n"

    from resnet_repro.rundir import write_text_atomic

    write_text_atomic(out_dir / "report.md", markdown)
    _write_csv(out_dir / "results.csv", [r for s in sections for r in s.csv_rows])
    return Report(markdown, out_dir, [out_dir / "report.md", out_dir / "results.csv", *files, *files7])


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_repro report",
        description="Compare runs with the paper: Table 6 (CIFAR-10), Tables 2-4 (ImageNet), Figures 4, 6 "
        "and 7. Writes report.md, results.csv and PNGs into --out and prints the markdown.",
    )
    parser.add_argument("dirs", nargs="*", help="run directories or directories containing runs (searched recursively)")
    parser.add_argument("--out", default=None, help="output directory (default: ./report in the current directory; "
                        "the run directories are only read)")
    parser.add_argument("--sigma-cifar", type=float, default=judge.SIGMA_CIFAR,
                        help=f"per-run std of the test error in points (default {judge.SIGMA_CIFAR}: Table 6)")
    parser.add_argument("--sigma-imagenet", type=float, default=judge.SIGMA_IMAGENET,
                        help=f"per-run std of top-1/top-5 in points (default {judge.SIGMA_IMAGENET}: our choice)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None, help="also read the runs of a W&B project")
    parser.add_argument("--layer-responses", action="store_true",
                        help="measure Figure 7's layer responses for runs without layer_responses.json")
    parser.add_argument("--device", default="auto", help="device for --layer-responses (default: auto)")
    args = parser.parse_args(argv)
    rep = build_report(args.dirs, args.out, args.sigma_cifar, args.sigma_imagenet, args.wandb,
                       args.layer_responses, args.device)
    print(rep.markdown, end="")
    print(f"\nwrote {', '.join(_display_path(str(f)) for f in rep.files)}")
    return 0
