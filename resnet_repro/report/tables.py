"""Rendering the report's tables: Table 6, the plain nets, Tables 2/3/4, other runs and the run
list, as Markdown and as `results.csv` rows (one metric per line)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from resnet_repro.paper import judge
from resnet_repro.paper import numbers as paper
from resnet_repro.config.archs import NAMED_MODELS
from resnet_repro.report.collect import EVAL_GLOB, EVAL_MISSING, MISSING, Incomplete, Run, data_label, number
from resnet_repro.runs.state import display_path
from resnet_repro.report.compare import PAPER_RECIPE, Group, Stats, final_train_err, judge_group, stats

# band: the half-width of the "reproduced" band; recipe: "paper" or how the runs' recipe differs;
# precision: what training computed in; bn_stats: the BN statistics of an ImageNet evaluation.
CSV_FIELDS = ("table", "model", "data", "metric", "paper", "ours_mean", "ours_std", "ours_best", "n", "diff",
              "band", "verdict", "recipe", "precision", "bn_stats", "context")

References = Callable[[str], "judge.Recipe | None"]  # paper row -> its exp's recipe (recipes.reference)


def _default_refs(row: str) -> judge.Recipe | None:
    from resnet_repro.recipes import reference

    return reference(row)



def fmt(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _csv_row(table: str, model: str, data: str, metric: str, paper_value: float | None, s: Stats | None,
             diff: float | None, band: float | None, verdict_: str, context: str = "",
             missing: str = MISSING, recipe: str = "", precision: str = "", bn_stats: str = "") -> dict[str, Any]:
    return {
        "table": table, "model": model, "data": data, "metric": metric, "paper": paper_value,
        "ours_mean": s.mean if s else missing, "ours_std": s.std if s else None, "ours_best": s.best if s else None,
        "n": s.n if s else 0, "diff": diff, "band": band, "verdict": verdict_, "recipe": recipe,
        "precision": precision, "bn_stats": bn_stats, "context": context,
    }


@dataclass
class Section:
    markdown: list[str]
    csv_rows: list[dict[str, Any]] = field(default_factory=list)


def _peers_on(model: str, data: str, measured: Sequence[dict[str, Any]]) -> str:
    """Peer errors measured on this data set (report --peers), e.g. "akamaster 18.97"."""
    cells = [f"{m['peer'].split('/')[0]} {m['err']:.2f}" for m in measured if m["model"] == model and m["data"] == data]
    return "; ".join(cells) or "-"


def table6(groups: Sequence[Group], sigma: float = judge.SIGMA_CIFAR, refs: References = _default_refs,
           measured: Sequence[dict[str, Any]] = ()) -> Section:
    """Table 6: CIFAR-10 test error (%), one row per paper model, data set, recipe and precision.
    `measured`: public weights evaluated on our runs' data sets (peer rows on the same data)."""
    by_exp = {g.exp: [x for x in groups if x.exp == g.exp] for g in groups}
    mean110, std110 = paper.TABLE6_RESNET110_MEAN_STD
    headers = ["model", "params (paper / ours)", "paper", "published peers (context)", "data", "precision", "iters",
               "n", "ours mean", "std", "best", "ours − paper", "band", "peers on this data (context)", "verdict"]
    rows, csv_rows = [], []
    for model, paper_err in paper.TABLE6_ERROR.items():
        _, ref, n_paper = judge.paper_value(model)  # type: ignore[misc]  # 110: the paper's mean of 5 runs
        best_of_5 = model == "cifar_resnet110"
        paper_cell = f"{paper_err:.2f}" + (f" (best of 5; mean {mean110:.2f} ± {std110:.2f})" if best_of_5 else "")
        published = "; ".join(f"{p.name.split('/')[0]} {p.errors[model]:.2f}" for p in paper.PEERS if model in p.errors)
        context = (f"paper best of 5 {paper_err}; " if best_of_5 else "") + f"published peers: {published or '-'}"
        params_paper = f"{paper.TABLE6_PARAMS[model] / 1e6:.2f}M"
        reference = refs(model)
        for g in by_exp.get(model) or [None]:
            s = stats(g.values("test_err")) if g else None
            params = g.values("params") if g else []
            params_cell = f"{params_paper} / {params[0] / 1e6:.2f}M" if params else params_paper
            v, half, recipe = judge_group(model, g, s, ref, n_paper, sigma, reference) if g else ("", None, "")
            prec = g.precision if g else ""
            same_data = _peers_on(model, g.data, measured) if g else "-"
            if s is None:
                rows.append([model, params_cell, paper_cell, published or "-", data_label(g.data) if g else "-",
                             prec or "-", g.iterations() if g else "-", "0", MISSING, "-", "-", "-", "-", same_data,
                             v or "-"])
                csv_rows.append(_csv_row("table6", model, g.data if g else "", "test_err", ref, None, None,
                                         None, v, context, recipe=recipe, precision=prec))
                continue
            diff = s.mean - ref
            rows.append([model, params_cell, paper_cell, published or "-", data_label(g.data), prec, g.iterations(),
                         str(s.n), fmt(s.mean), fmt(s.std), fmt(s.best), fmt(diff, "+.2f"), _band(half), same_data, v])
            csv_rows.append(_csv_row("table6", model, g.data, "test_err", ref, s, diff, half, v, context,
                                     recipe=recipe, precision=prec))
    md = [
        "## Table 6: CIFAR-10 test error (%)",
        "",
        "Test error of the final weights on the 10k test images (`summary.json` `test_err`). A verdict "
        "needs the paper row's recipe: every setting that changes what is learned equal to the row's exp "
        "(`+exp=<model>` with no overrides: the net, data pipeline, optimiser, schedule and warm-up, batch, "
        "iterations, BN grouping, starting weights), on the paper's data (50k training, 10k test images); "
        "other runs name each difference. Runs on the JPEG copy get their gap but no verdict (another data "
        "set: compare with the peers on the same data). 'Band': ours is 'reproduced' when |ours mean − "
        f"paper| ≤ 2 × {sigma:g} × √(1/n + 1/n_paper) ({sigma:g}: the per-run std, Table 6's ResNet-110 "
        "spread); below the band is 'better than the paper', above it 'worse'. n counts seeds. ResNet-110's "
        f"6.43 is the best of 5 runs: our mean is compared with the paper's mean {mean110:.2f} (n_paper = 5). "
        "'Published peers' are public reproductions (their recipes differ: see the peers table); "
        "'peers on this data' are public weights evaluated on the row's data set (`report --peers`). "
        "Both are context, never verdicts.",
        "",
        *md_table(headers, rows),
        "",
    ]
    return Section(md, csv_rows)


def peers_table(measured: Sequence[dict[str, Any]] = ()) -> Section:
    """The public reproductions (published numbers, with recipe and source) and any public
    weights measured on our runs' data sets: context rows, never verdict rows."""
    rows, csv_rows = [], []
    for p in paper.PEERS:
        for model, err in p.errors.items():
            spread = f" ± {p.std[model]:.2f} (n={p.runs.get(model, 1)})" if model in p.std else ""
            rows.append([model, p.name, data_label(p.data), f"{err:.2f}{spread}", "published", p.recipe, p.source])
            csv_rows.append({"table": "peers", "model": model, "data": p.data, "metric": "test_err",
                             "ours_mean": None, "paper": _paper_ref(model), "n": p.runs.get(model, 1),
                             "verdict": "", "context": f"{p.name}: {err} ({p.recipe}; {p.source})"})
    for m in measured:
        rows.append([m["model"], m["peer"], data_label(m["data"]), f"{m['err']:.2f}",
                     f"measured here on {m['n']} test images", "their released weights, our `eval`",
                     m["file"]])
        csv_rows.append({"table": "peers", "model": m["model"], "data": m["data"], "metric": "test_err",
                         "paper": _paper_ref(m["model"]), "n": 1, "verdict": "",
                         "context": f"{m['peer']} {m['file']} measured on {m['data']} ({m['data_fingerprint']}): {m['err']}"})
    md = ["## Public reproductions of Table 6 (context, never verdicts)", "",
          *md_table(["model", "who", "data", "test err", "number", "recipe", "source"], rows), ""]
    return Section(md, csv_rows)


def _paper_ref(model: str) -> float | None:
    """The paper's number a row of results.csv is read against: Table 6's, and for ResNet-110
    the mean of its 5 runs (6.61), as in the Table 6 rows, not the best (6.43)."""
    return judge.paper_value(model)[1] if model in paper.TABLE6_ERROR else None


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
    vals = g.per_seed(lambda r: final_train_err(r.rows))
    return statistics.fmean(vals) if vals else None


def _recipe_cell(g: Group, refs: References) -> str:
    """"paper", or how the group's recipe differs from the paper's for its exp name ("" when the
    exp name is no paper model)."""
    if g.exp not in NAMED_MODELS:
        return ""
    j = g.judgement(g.exp, refs(g.exp))
    return "; ".join(j.differences) if j.differences else PAPER_RECIPE


def plain_table(cifar: Sequence[Group], refs: References = _default_refs) -> Section:
    """Plain nets on CIFAR-10: the paper prints no numbers for them (Figure 6 only), so ours
    alone, with the degradation check (deeper plain nets train worse)."""
    plain = sorted((g for g in cifar if not g.residual), key=lambda g: (g.depth, g.data, g.exp))
    md = ["## Plain nets on CIFAR-10 (Figure 6, left)", ""]
    if not plain:
        return Section(md + ["No plain-net runs.", ""])
    headers = ["exp", "depth", "data", "precision", "iters", "n", "test err mean", "std", "best", "final train err",
               "params", "recipe"]
    rows, csv_rows = [], []
    for g in plain:
        s = stats(g.values("test_err"))
        tr = _group_train_err(g)
        params = g.values("params")
        recipe = _recipe_cell(g, refs)
        rows.append([g.exp, str(g.depth), data_label(g.data), g.precision, g.iterations(), str(s.n if s else 0),
                     fmt(s.mean if s else None), fmt(s.std if s else None), fmt(s.best if s else None), fmt(tr),
                     f"{params[0] / 1e6:.2f}M" if params else "-", recipe or "-"])
        csv_rows.append(_csv_row("plain_cifar", g.exp, g.data, "test_err", None, s, None, None, "",
                                 f"final train err {fmt(tr)}", recipe=recipe, precision=g.precision))
    md += [
        "The paper gives no plain-net numbers in Table 6; its Figure 6 shows that deeper plain nets have "
        "*higher* training error (the degradation problem). 'Final train err' is the mean logged training "
        "error over the last 10% of iterations (augmented batches), averaged over seeds. 'Recipe': "
        "'paper' for the exp's own recipe (§4.2), else what differs.",
        "",
        *md_table(headers, rows),
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
                   groups: Sequence[Group], sigma: float = judge.SIGMA_IMAGENET,
                   refs: References = _default_refs) -> Section:
    """Tables 2 (top-1), 3 and 4 (top-1 / top-5) from the evaluations of the runs' final
    weights (`eval_<protocol>.json`). One row per BN-statistics kind: running and precise
    statistics are never averaged together."""
    top5 = any(isinstance(v, tuple) for v in paper_values.values())
    by_exp = {g.exp: [x for x in groups if x.exp == g.exp] for g in groups}
    headers = ["model", "paper top-1" + (" / top-5" if top5 else ""), "data", "precision", "BN statistics", "n",
               "ours top-1 mean", "std", "best"]
    headers += ["ours top-5 mean", "std"] if top5 else []
    headers += ["Δ top-1"] + (["Δ top-5"] if top5 else []) + ["band", "verdict",
                                                              "centre crop during training (top-1, mean)"]
    rows, csv_rows = [], []
    for model, pv in paper_values.items():
        p1, p5 = (pv if isinstance(pv, tuple) else (pv, None))
        paper_cell = f"{p1:.2f}" + (f" / {p5:.2f}" if p5 is not None else "")
        reference = refs(model)
        for g in by_exp.get(model) or [None]:
            kinds = sorted({r.evals[protocol]["bn_stats"] for r in g.runs if protocol in r.evals}) if g else []
            for bn in kinds or [None]:
                def pick(r: Run, key: str, bn: str | None = bn) -> float | None:
                    e = r.evals.get(protocol)
                    return e[key] if e is not None and e["bn_stats"] == bn else None

                s1 = stats(g.per_seed(lambda r: pick(r, "err"))) if g else None
                s5 = stats(g.per_seed(lambda r: pick(r, "top5_err"))) if g else None
                centre = stats(g.values("test_err")) if g else None
                centre_cell = f"{centre.mean:.2f} (n={centre.n})" if centre else "-"
                data, prec = (g.data, g.precision) if g else ("", "")
                v1, b1, recipe = judge_group(model, g, s1, p1, 1, sigma, reference) if g else ("", None, "")
                if s1 is None:
                    ours = EVAL_MISSING if g else MISSING
                    rows.append([model, paper_cell, data_label(data) if g else "-", prec or "-", "-", "0", ours, "-",
                                 "-"] + (["-", "-"] if top5 else []) + ["-"] + (["-"] if top5 else [])
                                + ["-", v1 or "-", centre_cell])
                    csv_rows.append(_csv_row(table, model, data, f"top1_{protocol}", p1, None, None, None, v1,
                                             f"centre crop {centre_cell}", missing=ours, recipe=recipe, precision=prec))
                    if top5:
                        csv_rows.append(_csv_row(table, model, data, f"top5_{protocol}", p5, None, None, None, v1,
                                                 missing=ours, recipe=recipe, precision=prec))
                    continue
                d1 = s1.mean - p1
                d5 = s5.mean - p5 if (s5 and p5 is not None) else None
                v5, b5, _ = judge_group(model, g, s5, p5, 1, sigma, reference) if d5 is not None else ("", None, "")
                v = v1 if v5 in ("", v1) else f"top-1 {v1}; top-5 {v5}"
                row = [model, paper_cell, data_label(data), prec, bn, str(s1.n), fmt(s1.mean), fmt(s1.std),
                       fmt(s1.best)]
                row += [fmt(s5.mean if s5 else None), fmt(s5.std if s5 else None)] if top5 else []
                row += [fmt(d1, "+.2f")] + ([fmt(d5, "+.2f")] if top5 else []) + [_band(b1), v, centre_cell]
                rows.append(row)
                csv_rows.append(_csv_row(table, model, data, f"top1_{protocol}", p1, s1, d1, b1, v1,
                                         f"centre crop {centre_cell}", recipe=recipe, precision=prec, bn_stats=bn or ""))
                if top5:
                    csv_rows.append(_csv_row(table, model, data, f"top5_{protocol}", p5, s5, d5, b5, v5,
                                             missing=EVAL_MISSING, recipe=recipe, precision=prec, bn_stats=bn or ""))
    md = [f"## {title}", "", *md_table(headers, rows), ""]
    return Section(md, csv_rows)


def imagenet_sections(groups: Sequence[Group], sigma: float = judge.SIGMA_IMAGENET,
                      refs: References = _default_refs) -> list[Section]:
    intro = Section([
        "## ImageNet (Tables 2, 3, 4)",
        "",
        "The paper's ImageNet numbers are 10-crop (Tables 2 and 3) and multi-scale fully-convolutional "
        "(Table 4) errors on the 50k val images (our test split). Training only records the centre-crop "
        "error (`test/err`, Figure 4's curves; shown as context). The 10-crop and multi-scale numbers are "
        f"read from `<run>/{EVAL_GLOB}` files that `eval` writes ({{\"protocol\": \"ten_crop\"|\"multi_scale\"|"
        "\"center\", \"err\": top-1 %, \"top5_err\": %, \"iteration\", \"weights_digest\", \"bn_stats\", "
        "\"precision\"}); only evaluations of the run's final weights count (others are listed under Runs), and "
        "runs evaluated with running and with precise BN statistics are separate rows. A run without them "
        f"shows '{EVAL_MISSING}'. A verdict needs the paper row's recipe: every setting that changes what is "
        "learned equal to the row's exp (§3.4: the net, batch 256, 600k iterations, lr 0.1 divided by 10 on "
        "plateaus of the held-out error, BN groups, augmentation), the 1.28M training images less the exp's "
        f"held-out ones, 1000 classes, tested on the 50k val images. 'Band': 2 × {sigma:g} × √(1/n + 1) "
        f"({sigma:g} points: our choice of per-run std, the paper gives single runs); below it 'better than "
        "the paper', above it 'worse'.",
        "",
    ])
    return [
        intro,
        imagenet_table("Table 2: ImageNet top-1 error (%), 10-crop, plain vs ResNet (option A)", "table2",
                       paper.TABLE2_TOP1, "ten_crop", groups, sigma, refs),
        imagenet_table("Table 3: ImageNet top-1 / top-5 error (%), 10-crop", "table3",
                       paper.TABLE3_TOP1_TOP5, "ten_crop", groups, sigma, refs),
        imagenet_table("Table 4: ImageNet top-1 / top-5 error (%), single model, multi-scale", "table4",
                       paper.TABLE4_TOP1_TOP5, "multi_scale", groups, sigma, refs),
    ]


def other_table(groups: Sequence[Group], refs: References = _default_refs) -> Section:
    md = ["## Other experiments", "", "Runs whose experiment is in none of the paper's tables above.", ""]
    rows, csv_rows = [], []
    for g in groups:
        s = stats(g.values("test_err"))
        model = str(g.runs[0].summary.get("model", "?"))
        rows.append([g.exp, model, data_label(g.data), g.precision, g.iterations(), str(s.n if s else 0),
                     fmt(s.mean if s else None), fmt(s.std if s else None), fmt(s.best if s else None)])
        csv_rows.append(_csv_row("other", g.exp, g.data, "test_err", None, s, None, None, "",
                                 recipe=_recipe_cell(g, refs), precision=g.precision))
    md += md_table(["exp", "model", "data", "precision", "iters", "n", "test err mean", "std", "best"], rows) + [""]
    return Section(md, csv_rows)


def _short_commit(c: Any) -> str:
    c = str(c or "unknown")
    return c[:10] + ("-dirty" if c.endswith("-dirty") else "")


def runs_table(runs: Sequence[Run], incomplete: Sequence[Incomplete], notes: Sequence[str] = ()) -> Section:
    """Every run, with its copies folded into it, and notes: folded copies, different runs of
    one seed, evaluations that are not of the final weights."""
    headers = ["exp", "seed", "data", "precision", "test err", "best val err", "iterations", "images/s", "device",
               "git commit", "run"]
    rows = []
    for r in sorted(runs, key=lambda r: (r.exp, r.seed, r.path)):
        s = r.summary
        rows.append([r.exp, str(s.get("seed", "-")), data_label(r.data), r.precision, fmt(number(s.get("test_err"))),
                     fmt(number(s.get("best_val_err"))), str(s.get("iterations", "-")),
                     fmt(number(s.get("images_per_s")), ".0f"), str(s.get("device", "-")),
                     _short_commit(s.get("git_commit")),
                     (display_path(r.path) if r.local else r.path)
                     + (f" (+ {len(r.also)} identical cop{'y' if len(r.also) == 1 else 'ies'})" if r.also else "")])
    md = ["## Runs", "", *md_table(headers, rows), ""]
    stale = [f"- {display_path(r.path)}: {n}" for r in runs for n in r.stale_evals]
    unread = [f"- {display_path(r.path)}: recipe not recorded ({r.recipe_note})" for r in runs if r.recipe_note]
    if notes or stale or unread:
        md += ["### Notes", "", *(f"- {n}" for n in notes), *stale, *unread, ""]
    if incomplete:
        md += ["### Incomplete runs", "",
               *md_table(["run", "exp", "last logged iteration", "note"],
                          [[display_path(i.path), i.exp, str(i.last_iter if i.last_iter is not None else "-"), i.note]
                           for i in incomplete]),
               ""]
    return Section(md)
