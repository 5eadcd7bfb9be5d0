"""Rendering the report's tables: Table 6, the plain nets, Tables 2/3/4, other runs and the run
list, as Markdown and as `results.csv` rows (one metric per line)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from resnet_repro import judge, paper
from resnet_repro.archs import NAMED_MODELS
from resnet_repro.report.collect import EVAL_GLOB, EVAL_MISSING, MISSING, Incomplete, Run, data_label, display_path, number
from resnet_repro.report.compare import PAPER_RECIPE, Group, Stats, final_train_err, judge_group, stats

# band: the half-width of the "reproduced" band; recipe: "paper" or how the runs' recipe differs.
CSV_FIELDS = ("table", "model", "data", "metric", "paper", "ours_mean", "ours_std", "ours_best", "n", "diff",
              "band", "verdict", "recipe", "context")



def fmt(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
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
                rows.append([model, params_cell, paper_cell, fmt(port), data_label(g.data) if g else "-",
                             g.iterations() if g else "-", "0", MISSING, "-", "-", "-", "-", v or "-"])
                csv_rows.append(_csv_row("table6", model, g.data if g else "", "test_err", ref, None, None,
                                         None, v, context, recipe=recipe))
                continue
            diff = s.mean - ref
            rows.append([model, params_cell, paper_cell, fmt(port), data_label(g.data), g.iterations(), str(s.n),
                         fmt(s.mean), fmt(s.std), fmt(s.best), fmt(diff, "+.2f"), _band(half), v])
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
        *md_table(headers, rows),
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
                     fmt(s.mean if s else None), fmt(s.std if s else None), fmt(s.best if s else None), fmt(tr),
                     f"{params[0] / 1e6:.2f}M" if params else "-", recipe or "-"])
        csv_rows.append(_csv_row("plain_cifar", g.exp, g.data, "test_err", None, s, None, None, "",
                                 f"final train err {fmt(tr)}", recipe=recipe))
    md += [
        "The paper gives no plain-net numbers in Table 6; its Figure 6 shows that deeper plain nets have "
        "*higher* training error (the degradation problem). 'Final train err' is the mean logged training "
        "error over the last 10% of iterations (augmented batches), averaged over seeds. 'Recipe': "
        "'paper' for the paper's CIFAR recipe (§4.2), else what differs.",
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
            row = [model, paper_cell, data_label(data), str(s1.n), fmt(s1.mean), fmt(s1.std), fmt(s1.best)]
            row += [fmt(s5.mean if s5 else None), fmt(s5.std if s5 else None)] if top5 else []
            row += [fmt(d1, "+.2f")] + ([fmt(d5, "+.2f")] if top5 else []) + [_band(b1), v, centre_cell]
            rows.append(row)
            csv_rows.append(_csv_row(table, model, data, f"top1_{protocol}", p1, s1, d1, b1, v1,
                                     f"centre crop {centre_cell}", recipe=recipe))
            if top5:
                csv_rows.append(_csv_row(table, model, data, f"top5_{protocol}", p5, s5, d5, b5, v5,
                                         missing=EVAL_MISSING, recipe=recipe))
    md = [f"## {title}", "", *md_table(headers, rows), ""]
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
        rows.append([g.exp, model, data_label(g.data), g.iterations(), str(s.n if s else 0), fmt(s.mean if s else None),
                     fmt(s.std if s else None), fmt(s.best if s else None)])
        csv_rows.append(_csv_row("other", g.exp, g.data, "test_err", None, s, None, None, "", recipe=_recipe_cell(g)))
    md += md_table(["exp", "model", "data", "iters", "n", "test err mean", "std", "best"], rows) + [""]
    return Section(md, csv_rows)


def _short_commit(c: Any) -> str:
    c = str(c or "unknown")
    return c[:10] + ("-dirty" if c.endswith("-dirty") else "")


def runs_table(runs: Sequence[Run], incomplete: Sequence[Incomplete]) -> Section:
    headers = ["exp", "seed", "data", "test err", "best val err", "iterations", "images/s", "device", "git commit",
               "run"]
    rows = []
    for r in sorted(runs, key=lambda r: (r.exp, r.seed, r.path)):
        s = r.summary
        rows.append([r.exp, str(s.get("seed", "-")), data_label(r.data), fmt(number(s.get("test_err"))),
                     fmt(number(s.get("best_val_err"))), str(s.get("iterations", "-")),
                     fmt(number(s.get("images_per_s")), ".0f"), str(s.get("device", "-")),
                     _short_commit(s.get("git_commit")), display_path(r.path) if r.local else r.path])
    md = ["## Runs", "", *md_table(headers, rows), ""]
    if incomplete:
        md += ["### Incomplete runs", "",
               *md_table(["run", "exp", "last logged iteration", "note"],
                          [[display_path(i.path), i.exp, str(i.last_iter if i.last_iter is not None else "-"), i.note]
                           for i in incomplete]),
               ""]
    return Section(md)
