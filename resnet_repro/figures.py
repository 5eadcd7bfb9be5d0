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

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Curves:
    """One line pair of Figure 4/6: training error and test (or centre-crop val) error."""

    label: str  # e.g. "ResNet-56"
    depth: int  # picks the colour: one colour per depth across panels
    iters: list[int]
    train_err: list[float]
    test_iters: list[int]
    test_err: list[float]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _depth_colours(curves: Sequence[Curves]) -> dict[int, Any]:
    import matplotlib

    depths = sorted({c.depth for c in curves})
    cmap = matplotlib.colormaps["tab10"]
    return {d: cmap(i % 10) for i, d in enumerate(depths)}


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
    """The legend to the right of the axes (constrained layout makes room): never over a point."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    """savefig to a temp file + rename: a report never links a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        _pyplot().close(fig)
    return path


def _curve_panel(ax: Any, curves: Sequence[Curves], colours: dict[int, Any], title: str, thin_train: bool) -> None:
    """Dashed (Figure 6) or thin (Figure 4) training error, bold test error."""
    from matplotlib.ticker import FuncFormatter

    for c in sorted(curves, key=lambda c: c.depth):
        colour = colours[c.depth]
        if c.iters:
            ax.plot(c.iters, c.train_err, color=colour, linewidth=0.8,
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
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)


def draw_figure6(plain: Sequence[Curves], residual: Sequence[Curves], deep: Sequence[Curves], note: str = "") -> Any:
    """Figure 6: plain nets (left), ResNets (middle), ResNet-110 vs 1202 (right, only when
    `deep` has curves). Dashed: training error; bold: test error."""
    plt = _pyplot()
    panels = [(plain, "plain nets"), (residual, "ResNets")] + ([(deep, "ResNet-110 vs ResNet-1202")] if deep else [])
    colours = _depth_colours([*plain, *residual, *deep])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.2), squeeze=False, layout="constrained")
    for ax, (curves, title) in zip(axes[0], panels):
        _curve_panel(ax, curves, colours, title, thin_train=False)
    fig.suptitle("CIFAR-10 (cf. Figure 6): dashed = training error, bold = test error" + (f"\n{note}" if note else ""),
                 fontsize=10)
    return fig


def figure6(plain: Sequence[Curves], residual: Sequence[Curves], deep: Sequence[Curves], path: str | Path,
            note: str = "") -> Path:
    return _save(draw_figure6(plain, residual, deep, note), Path(path))


def draw_figure4(plain: Sequence[Curves], residual: Sequence[Curves], note: str = "") -> Any:
    """Figure 4: plain-18/34 (left), ResNet-18/34 (right). Thin: training error; bold:
    centre-crop validation error (our `test/err`: ImageNet's val set is our test split)."""
    plt = _pyplot()
    colours = _depth_colours([*plain, *residual])
    fig, axes = plt.subplots(1, 2, figsize=(11.6, 4.2), layout="constrained")
    _curve_panel(axes[0], plain, colours, "plain", thin_train=True)
    _curve_panel(axes[1], residual, colours, "ResNet", thin_train=True)
    fig.suptitle("ImageNet (cf. Figure 4): thin = training error, bold = centre-crop val error"
                 + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def figure4(plain: Sequence[Curves], residual: Sequence[Curves], path: str | Path, note: str = "") -> Path:
    return _save(draw_figure4(plain, residual, note), Path(path))


def draw_figure7(responses: Sequence[tuple[str, Sequence[float]]], note: str = "") -> Any:
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
    fig.suptitle("CIFAR-10 layer responses (cf. Figure 7): std of each 3x3 layer's BN output"
                 + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def figure7(responses: Sequence[tuple[str, Sequence[float]]], path: str | Path, note: str = "") -> Path:
    return _save(draw_figure7(responses, note), Path(path))
