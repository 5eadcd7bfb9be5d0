"""`python -m resnet_repro models`: every named model's size and cost beside the paper's."""

from __future__ import annotations

from resnet_repro.paper import numbers as paper
from resnet_repro.models.macs import count_macs, count_params
from resnet_repro.config.archs import NAMED_MODELS, Arch, input_size
from resnet_repro.models.resnet import build_meta


def model_rows(names: list[str] | None = None) -> list[dict]:
    """One row per named model: params and forward multiply-adds (counted from
    the layer shapes at the family's input size), the paper's figure and the
    relative difference. CIFAR rows compare parameters with Table 6, ImageNet rows compare
    multiply-adds with Table 1 (the paper prints no other figure for them)."""
    rows = []
    counted: dict[Arch, tuple[int, int]] = {}
    for name in names or list(NAMED_MODELS):
        arch = NAMED_MODELS[name]
        size = input_size(arch.family)
        if arch not in counted:  # names sharing an architecture are built and counted once
            model = build_meta(name)  # shapes only: no weights allocated, no initialisation
            counted[arch] = count_params(model), count_macs(model, size)
        params, macs = counted[arch]
        if name in paper.TABLE6_PARAMS:
            ours, ref, what = params, paper.TABLE6_PARAMS[name], "params (Table 6)"
        elif name in paper.TABLE1_MACS:
            ours, ref, what = macs, paper.TABLE1_MACS[name], "mult-adds (Table 1)"
        else:
            ours, ref, what = None, None, ""
        rows.append(
            {
                "model": name,
                "input": size,
                "params": params,
                "macs": macs,
                "paper_figure": what,
                "paper_value": ref,
                "rel_diff": None if ref is None else (ours - ref) / ref,
            }
        )
    return rows


def _human(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def format_table(rows: list[dict]) -> str:
    header = ("model", "input", "params", "mult-adds", "paper", "paper value", "diff")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["model"],
                f"{r['input']}x{r['input']}",
                f"{r['params']:,}",
                _human(r["macs"]),
                r["paper_figure"] or "-",
                "-" if r["paper_value"] is None else _human(r["paper_value"]),
                "-" if r["rel_diff"] is None else f"{100 * r['rel_diff']:+.1f}%",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
