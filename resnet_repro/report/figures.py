"""The paper's figures from our runs, as PNGs: Figure 6 (CIFAR-10 curves), Figure 4 (ImageNet
curves) and Figure 7 (layer responses).

Each `figure*` function takes plain data (curves, lists of stds) and writes one PNG atomically;
`draw_figure*` returns the matplotlib Figure instead (tests inspect its axes). matplotlib is
imported inside them, with the Agg backend: no display, and no cost for callers that never plot.
Errors are percentages; the x axis counts iterations, labelled 500, 32k, 1.2M, so any run length
gets a few short, whole-number ticks (the paper's "1e4" units give 0.0002 on a 12-iteration run).
Legends sit outside the axes, where they can never hide a curve.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_repro.atomic import atomic_write
from resnet_repro.errors import ReproError
from resnet_repro.report.collect import Run, data_label
from resnet_repro.runs.state import display_path
from resnet_repro.report.compare import Group, mean_curve
from resnet_repro.report.tables import Section, fmt, md_table


@dataclass(frozen=True)
class Curves:
    """One line pair of Figure 4/6: training error and test (or centre-crop val) error."""

    label: str  # e.g. "ResNet-56"
    depth: int  # picks the colour: one colour per depth across panels
    iters: list[int]
    train_err: list[float]
    test_iters: list[int]
    test_err: list[float]
    variant: int = 0  # a second curve of one depth (say, another precision) gets a colour of its own


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _depth_colours(curves: Sequence[Curves]) -> dict[tuple[int, int], Any]:
    """One colour per depth across panels (plain-20 and ResNet-20 alike); a depth's other
    variants (another precision or data set) take colours after every depth's."""
    import matplotlib

    keys = sorted({(c.variant, c.depth) for c in curves})
    cmap = matplotlib.colormaps["tab10"]
    return {(d, v): cmap(i % 10) for i, (v, d) in enumerate(keys)}


# At most this many intervals between ticks: labels of a few characters never touch.
MAX_TICK_BINS = 6


def iteration_label(x: float, _pos: Any = None) -> str:
    """An iteration count as a short tick label: 12, 500, 32k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def _integer_ticks(axis: Any) -> None:
    """Whole-number ticks only (iterations, layer indices), a bounded number of them."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=MAX_TICK_BINS, steps=[1, 2, 5, 10], integer=True, min_n_ticks=2))


def _legend_outside(ax: Any) -> None:
    """The legend to the right of the axes (constrained layout makes room): never over a point.
    A panel with no curves (e.g. no plain nets yet) gets none."""
    if not ax.get_legend_handles_labels()[0]:
        return
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    """savefig to a temp file + rename: a report never links a half-written PNG."""
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


def _curve_panel(ax: Any, curves: Sequence[Curves], colours: dict[int, Any], title: str, thin_train: bool) -> None:
    """Dashed (Figure 6) or thin (Figure 4) training error, bold test error."""
    from matplotlib.ticker import FuncFormatter

    for c in sorted(curves, key=lambda c: (c.depth, c.variant)):
        colour = colours[(c.depth, c.variant)]
        if c.iters:  # the legend names the test curve, or this one when there is none (a short prefix)
            ax.plot(c.iters, c.train_err, color=colour, linewidth=0.8, label=None if c.test_iters else c.label,
                    linestyle="-" if thin_train else "--", alpha=0.9, marker="." if len(c.iters) < 3 else None)
        if c.test_iters:
            ax.plot(c.test_iters, c.test_err, color=colour, linewidth=2.2, label=c.label,
                    marker="o" if len(c.test_iters) < 3 else None)  # a line of one point is invisible
    ax.set_title(title)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    _integer_ticks(ax.xaxis)
    ax.xaxis.set_major_formatter(FuncFormatter(iteration_label))
    if curves:
        ax.set_xlim(left=0)  # training starts at iteration 0, as in the paper's plots
        _legend_outside(ax)
    else:  # no made-up 0-1 scales: an empty panel says so and draws no axes
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.set_ylabel("")


def draw_figure6(plain: Sequence[Curves], residual: Sequence[Curves], deep: Sequence[Curves], note: str = "",
                 data: str = "CIFAR-10") -> Any:
    """Figure 6: plain nets (left), ResNets (middle), ResNet-110 vs 1202 (right, only when
    `deep` has curves). Dashed: training error; bold: test error."""
    plt = _pyplot()
    panels = [(plain, "plain nets"), (residual, "ResNets")] + ([(deep, "ResNet-110 vs ResNet-1202")] if deep else [])
    colours = _depth_colours([*plain, *residual, *deep])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.2), squeeze=False, layout="constrained")
    for ax, (curves, title) in zip(axes[0], panels):
        _curve_panel(ax, curves, colours, title, thin_train=False)
    fig.suptitle(f"{data} (cf. Figure 6): dashed = training error, bold = test error" + (f"\n{note}" if note else ""),
                 fontsize=10)
    return fig


def figure6(plain: Sequence[Curves], residual: Sequence[Curves], deep: Sequence[Curves], path: str | Path,
            note: str = "", data: str = "CIFAR-10") -> Path:
    return _save(draw_figure6(plain, residual, deep, note, data), Path(path))


def draw_figure4(plain: Sequence[Curves], residual: Sequence[Curves], note: str = "", data: str = "ImageNet") -> Any:
    """Figure 4: plain-18/34 (left), ResNet-18/34 (right). Thin: training error; bold:
    centre-crop validation error (our `test/err`: ImageNet's val set is our test split)."""
    plt = _pyplot()
    colours = _depth_colours([*plain, *residual])
    fig, axes = plt.subplots(1, 2, figsize=(11.6, 4.2), layout="constrained")
    _curve_panel(axes[0], plain, colours, "plain", thin_train=True)
    _curve_panel(axes[1], residual, colours, "ResNet", thin_train=True)
    fig.suptitle(f"{data} (cf. Figure 4): thin = training error, bold = centre-crop val error"
                 + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def figure4(plain: Sequence[Curves], residual: Sequence[Curves], path: str | Path, note: str = "",
            data: str = "ImageNet") -> Path:
    return _save(draw_figure4(plain, residual, note, data), Path(path))


def draw_figure7(responses: Sequence[tuple[str, Sequence[float]]], note: str = "", data: str = "CIFAR-10") -> Any:
    """Figure 7: std of each 3x3 layer's response, in network order (top) and sorted by
    magnitude, descending (bottom); one line per model, one legend (top) for both panels."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.8, 7), layout="constrained")
    for label, stds in responses:
        xs = range(1, len(stds) + 1)
        top.plot(xs, list(stds), marker=".", linewidth=1.2, label=label)
        bottom.plot(xs, sorted(stds, reverse=True), marker=".", linewidth=1.2, label=label)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(True, alpha=0.3)
        _integer_ticks(ax.xaxis)  # layers are counted: 1, 2, 3, never 2.5
    if responses:
        _legend_outside(top)  # constrained layout gives both panels the same width
    fig.suptitle(f"{data} layer responses (cf. Figure 7): std of each 3x3 layer's BN output"
                 + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def figure7(responses: Sequence[tuple[str, Sequence[float]]], path: str | Path, note: str = "",
            data: str = "CIFAR-10") -> Path:
    return _save(draw_figure7(responses, note, data), Path(path))


FIGURE6 = "figure6_cifar.png"
FIGURE4 = "figure4_imagenet.png"
FIGURE7 = "figure7_layer_responses.png"




def distinct_labels(groups: Sequence[Group]) -> list[str]:
    """Each group's label ("ResNet-20"), with what tells it from the others of that label, if
    any: the exp, the data set, the precision, only those that differ among them."""
    out = []
    for g in groups:
        twins = [x for x in groups if x.label == g.label]
        parts = [str(key(g)) for key in (lambda x: x.exp, lambda x: data_label(x.data), lambda x: x.precision)
                 if len({key(x) for x in twins}) > 1]
        out.append(f"{g.label} ({', '.join(parts)})" if parts else g.label)
    return out


def _curves(groups: Sequence[Group]) -> list[Any]:
    out = []
    for g, label in zip(groups, distinct_labels(groups)):
        runs = g.furthest_per_seed().runs
        it, tr = mean_curve(runs, "train/err", past_shortest=True)
        tit, te = mean_curve(runs, "test/err", past_shortest=True)
        variant = [x for x in groups if x.depth == g.depth].index(g)
        out.append(Curves(label, g.depth, it, tr, tit, te, variant))
    return out


def data_title(groups: Sequence[Group], family: str) -> str:
    """A figure's data set for its title: the paper's name only when every group used it."""
    paper_data = {"cifar": ("cifar10", "cifar10_folder"), "imagenet": ("imagenet",)}[family]
    datas = sorted({g.data for g in groups})
    if datas and all(d in paper_data for d in datas):
        return "CIFAR-10" if family == "cifar" else "ImageNet"
    return ", ".join(data_label(d) for d in datas) or ("CIFAR-10" if family == "cifar" else "ImageNet")


def _figure_note(groups: Sequence[Group]) -> str:
    seeds = max(len(g.seeds()) for g in groups)
    datas = ", ".join(sorted({data_label(g.data) for g in groups}))
    return f"data: {datas}" + (f"; mean over the seeds that reached each iteration (up to {seeds})"
                               if seeds > 1 else "")


def figure_sections(cifar: Sequence[Group], imagenet: Sequence[Group], out: Path) -> tuple[Section, list[Path]]:

    md: list[str] = []
    files: list[Path] = []
    if cifar:
        plain = [g for g in cifar if not g.residual]
        res = [g for g in cifar if g.residual and g.depth < 1202]
        deep = [g for g in cifar if g.residual and g.depth >= 110] if any(
            g.residual and g.depth >= 1202 for g in cifar) else []
        files.append(figure6(_curves(plain), _curves(res), _curves(deep), out / FIGURE6, _figure_note(cifar),
                             data_title(cifar, "cifar")))
        md += ["## Figure 6: CIFAR-10 training curves", "",
               f"![Figure 6]({FIGURE6})", "",
               "Dashed: training error (logged every `trainer.log_every` iterations, augmented batches); bold: "
               "test error (every `trainer.eval_every`). x axis: iterations (k = thousand, M = million). "
               "One colour per depth; with several seeds each curve is the mean over the seeds at the iterations "
               "they all logged and, past the shortest seed (a paused prefix), the mean of the seeds that got "
               "further. The right panel (ResNet-110 vs ResNet-1202) appears when a ResNet-1202 run exists.",
               ""]
    if imagenet:
        plain = [g for g in imagenet if not g.residual]
        res = [g for g in imagenet if g.residual and g.depth <= 34 and g.arch.get("shortcut") == "A"]
        files.append(figure4(_curves(plain), _curves(res), out / FIGURE4, _figure_note(imagenet),
                             data_title(imagenet, "imagenet")))
        md += ["## Figure 4: ImageNet training curves", "", f"![Figure 4]({FIGURE4})", "",
               "Thin: training error; bold: centre-crop validation error (`test/err`: ImageNet's val set is our "
               "test split). Plain nets left, option-A ResNet-18/34 right; mean over seeds (past the shortest, "
               "over the seeds that got further).", ""]
    return Section(md), files


def add_layer_responses(runs: Sequence[Run], out: Path, device: str = "auto") -> list[str]:
    """Run the Figure 7 analysis for local CIFAR runs without `layer_responses.json`, writing
    each result under `out` (`<out>/layer_responses/<n>-<run name>.json`, never into the run
    dir: the report only reads runs); returns one note per run that could not be analysed."""
    from resnet_repro.analyze import analyze_run

    notes = []
    for i, r in enumerate(runs):
        if r.responses is not None or not r.local or r.arch.get("family") != "cifar":
            continue
        try:
            target = out / "layer_responses" / f"{i:03d}-{Path(r.path).name}.json"
            r.responses = analyze_run(r.path, device=device, out=target)
        except ReproError as e:
            notes.append(f"- {display_path(r.path)}: not analysed: {e}")
    return notes


def figure7_section(groups: Sequence[Group], out: Path, notes: Sequence[str]) -> tuple[Section, list[Path]]:

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
    lines.sort(key=lambda t: (t[0].residual, t[0].depth))
    responses = list(zip(distinct_labels([g for g, _, _ in lines]), (m for _, m, _ in lines)))
    # --max-images (analyze) measures on the first N test images only: said in the figure's note
    limited = sorted({f"{r.responses['n_images']:,} of {r.summary['test_size']:,}" for g, _, _ in lines
                      for r in g.runs if r.responses and isinstance(r.responses.get("n_images"), int)
                      and isinstance(r.summary.get("test_size"), int)
                      and r.responses["n_images"] < r.summary["test_size"]})
    note = _figure_note([g for g, _, _ in lines]) + (
        f"; measured on the first {', '.join(limited)} test images (--max-images)" if limited else "")
    path = figure7(responses, out / FIGURE7, note, data_title([g for g, _, _ in lines], "cifar"))
    md = ["## Figure 7: layer responses", "", f"![Figure 7]({FIGURE7})", "",
          "Std of each 3x3 layer's output after BN and before the addition / ReLU, on the test split, in eval "
          "mode; network order (top) and sorted by magnitude (bottom). Layer 1 is the stem's 3x3 conv (its "
          "BN), then each block's two 3x3 layers: 6n+1 layers for a 6n+2-layer net. Several seeds: the "
          "mean over seeds per layer." + (f" Measured on the first {', '.join(limited)} test images "
                                           "(`analyze --max-images`), not all of them." if limited else ""), "",
          *md_table(["model", "exp", "data", "layers", "seeds", "mean std", "max", "min"],
                     [[g.label, g.exp, data_label(g.data), str(len(m)), str(k), fmt(statistics.fmean(m), ".3f"),
                       fmt(max(m), ".3f"), fmt(min(m), ".3f")] for g, m, k in lines]),
          "", *notes, ""]
    return Section(md), [path]


def draw_training_loss(curves: Sequence[tuple[str, str, Sequence[int], Sequence[float]]], title: str) -> Any:
    """Training-loss curves, one colour per precision (curves: label, precision, iters, losses)."""
    import matplotlib
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    kinds = sorted({p for _, p, _, _ in curves})
    cmap = matplotlib.colormaps["tab10"]
    seen: dict[str, int] = {}  # curves so far per precision: each seed of one precision its own dash
    for label, p, its, losses in curves:
        k = seen[p] = seen.get(p, -1) + 1
        ax.plot(its, losses, color=cmap(kinds.index(p) % 10), linewidth=1.0, label=label,
                linestyle=("-", "--", ":", "-.")[k % 4])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iterations")
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    _integer_ticks(ax.xaxis)
    ax.xaxis.set_major_formatter(FuncFormatter(iteration_label))
    _legend_outside(ax)
    return fig


def training_loss_figure(curves: Sequence[tuple[str, str, Sequence[int], Sequence[float]]], path: Path,
                         title: str) -> Path:
    return _save(draw_training_loss(curves, title), path)
