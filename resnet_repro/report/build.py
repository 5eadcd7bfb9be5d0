"""`python -m resnet_repro report`: collect the runs, judge them, render the tables and draw
the figures into `--out` (default `./report`): report.md, results.csv and the PNGs."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_repro.paper import judge
from resnet_repro.paper import numbers as paper
from resnet_repro.errors import ConfigError, ReproError
from resnet_repro.report.claims import ordering_section, precision_section, warmup_section
from resnet_repro.report.collect import Incomplete, Run, data_label, find_runs, runs_from_wandb
from resnet_repro.runs.state import display_path
from resnet_repro.report.compare import fold_copies, group_runs, same_seed_notes
from resnet_repro.report.figures import add_layer_responses, figure7_section, figure_sections
from resnet_repro.report.tables import (
    CSV_FIELDS,
    Section,
    imagenet_sections,
    other_table,
    peers_table,
    plain_table,
    runs_table,
    table6,
)

# results.csv keeps the tables' digits: errors, gaps and bands in points to 2 decimals.
CSV_DIGITS = 2



@dataclass
class Report:
    markdown: str
    out: Path
    files: list[Path]


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from resnet_repro.runs.rundir import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else f"{r[k]:.{CSV_DIGITS}f}" if isinstance(r[k], float) else r[k])
                    for k in CSV_FIELDS})
    write_text_atomic(path, buf.getvalue())


def _header(paths: Sequence[str], wandb: str | None, runs: Sequence[Run], incomplete: Sequence[Incomplete],
            sigma_cifar: float, sigma_imagenet: float, absent: Sequence[str]) -> list[str]:
    datas = sorted({r.data for r in runs})
    sources = [f"`{p}`" for p in paths] + ([f"W&B project `{wandb}`"] if wandb else [])
    md = [
        "# Reproduction report: He et al. 2016, *Deep Residual Learning for Image Recognition*",
        "",
        f"{len(runs)} finished run(s) and {len(incomplete)} incomplete run(s) from {', '.join(sources)}.",
        "",
        "- Ours: mean ± sample standard deviation (n−1) over seeds ('-' for one seed), the best (lowest) "
        "run and n, the number of seeds. Copies of a run count once; different runs of one seed are one seed. "
        "Errors in %.",
        "- Verdicts only for runs of the paper row's recipe: every setting that changes what is learned equals "
        "the row's exp with no overrides, on the paper's data, trained to the end. Other rows say \"not the "
        "paper's recipe: <each difference>\". Runs of different recipes or training precisions are never "
        "averaged together; 'precision' is what training computed in (bf16 autocast with fp32 weights, tf32 "
        "or fp32). What the judge compares and ignores: experiments/fidelity.md.",
        "- Band: 'reproduced' when |ours mean − paper| ≤ 2 σ √(1/n + 1/n_paper), "
        f"σ = {sigma_cifar:g} points on CIFAR-10 (Table 6's ResNet-110 spread), {sigma_imagenet:g} on ImageNet "
        "(our choice); below the band 'better than the paper', above it 'worse than the paper'.",
        "- Data of our runs: " + (", ".join(data_label(d) for d in datas) or "none") + ".",
    ]
    if any(d not in ("cifar10", "imagenet") for d in datas):
        md.append("- **Not the paper's data:** rows on 'CIFAR-10 (JPEG copy)' (a quality-75 re-encoding, another data set) show "
                  "their gap to the paper and the peers on the same data, without a verdict; synthetic data and "
                  "other image folders are not the paper's recipe.")
    if absent:
        md.append(f"- No finished runs for: {'; '.join(absent)}; not shown as tables.")
    return md + [""]


def _measure_peers(peers_dir: Path, runs: Sequence[Run], device: str, out_dir: Path,
                   data_root: str | None = None) -> tuple[list[dict], list[str]]:
    """Evaluate every akamaster weights file in `peers_dir` on each CIFAR-10 data set our local
    runs used (their config's data.name/root, or `data_root` for all of them: a record's relative
    path is read from the current directory). Results go to `<out>/peers.json` only; each data
    set that cannot be read is a warning line on stderr as well as a note."""
    import sys

    import torch

    from resnet_repro.errors import ReproError
    from resnet_repro.runs.sinks import write_json_atomic
    from resnet_repro.models.peers import evaluate_peer, peer_data_settings
    from resnet_repro.training.policy import resolve_device
    from resnet_repro.schema import run_settings

    files = sorted(p for p in peers_dir.glob("*.th")) if peers_dir.is_dir() else []
    if not files:
        raise ConfigError(f"--peers {peers_dir}: no akamaster .th weights files there")
    datas: dict[tuple, Any] = {}
    for r in runs:
        if not r.local or r.data not in ("cifar10", "cifar10_folder") or not r.config:
            continue
        try:
            d = run_settings(r.config).data
        except ReproError:
            continue
        if data_root is not None:  # the data set at that path, named by what is there (folder or archive)
            d = peer_data_settings(data_root)
        datas.setdefault((d.name, d.root), d)
    dev = resolve_device(device)
    measured, notes = [], []
    for d in datas.values():
        for f in files:
            try:
                with torch.no_grad():
                    measured.append(evaluate_peer(f, d, dev))
            except ReproError as e:
                notes.append(f"peer {f.name} on {d.name} ({d.root}): not measured: {e}")
                print(f"warning: {notes[-1]}" + ("" if data_root else "; --data-root DIR names the data"),
                      file=sys.stderr)
    write_json_atomic(out_dir / "peers.json", measured)
    return measured, notes


def build_report(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    sigma_cifar: float = judge.SIGMA_CIFAR,
    sigma_imagenet: float = judge.SIGMA_IMAGENET,
    wandb: str | None = None,
    layer_responses: bool = False,
    device: str = "auto",
    peers: str | Path | None = None,
    refs: Any = None,
    data_root: str | None = None,
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
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file: name a directory (it is created if missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out_dir}: cannot create it ({e.strerror or e})") from None
    if refs is None:
        from resnet_repro.recipes import reference as refs  # the paper rows' exps, composed

    runs, fold_notes = fold_copies(runs)
    groups = group_runs(runs)
    cifar = [g for g in groups if g.family == "cifar"]
    imagenet = [g for g in groups if g.family == "imagenet"]
    in_tables = {*paper.TABLE6_ERROR, *paper.TABLE2_TOP1, *paper.TABLE3_TOP1_TOP5, *paper.TABLE4_TOP1_TOP5}
    other = [g for g in groups if g.exp not in in_tables and not (g.family == "cifar" and not g.residual)]
    measured, peer_notes = _measure_peers(Path(peers), runs + [i.run for i in incomplete if i.run is not None], device, out_dir,
                                         data_root) if peers else ([], [])

    notes = add_layer_responses(runs, out_dir, device) if layer_responses else []
    # Curves of paused runs too (prefixes of their recipe, labelled in the runs table); no verdicts.
    curve_runs = runs + [i.run for i in incomplete if i.run is not None]
    curve_groups = group_runs(curve_runs)
    figs, files = figure_sections([g for g in curve_groups if g.family == "cifar"],
                                  [g for g in curve_groups if g.family == "imagenet" and g.data == "imagenet"], out_dir)
    fig7, files7 = figure7_section(cifar, out_dir, notes)
    precision_md, precision_files = precision_section(curve_runs, out_dir)
    # A table with no finished run is not shown; its paused prefixes are in the figures and the runs table.
    prefixes = {"Table 6 (CIFAR-10)": any(g.family == "cifar" and g.residual for g in curve_groups),
                "plain nets (CIFAR-10)": any(g.family == "cifar" and not g.residual for g in curve_groups),
                "Tables 2, 3, 4 (ImageNet)": any(g.family == "imagenet" for g in curve_groups)}
    absent = [f"{name}{' (paused prefixes only: in the figures and the runs table)' if prefixes[name] else ''}"
              for name, have in (("Table 6 (CIFAR-10)", bool(cifar)),
                                 ("plain nets (CIFAR-10)", any(not g.residual for g in cifar)),
                                 ("Tables 2, 3, 4 (ImageNet)", bool(imagenet))) if not have]
    sections = [
        Section(_header([str(p) for p in paths], wandb, runs, incomplete, sigma_cifar, sigma_imagenet, absent)),
        *([table6(cifar, sigma_cifar, refs, measured), peers_table(measured)] if cifar else [peers_table(measured)] if measured else []),
        *([plain_table(cifar, refs)] if any(not g.residual for g in cifar) else []),
        *(imagenet_sections(imagenet, sigma_imagenet, refs) if imagenet else []),
        figs,
        Section(ordering_section(curve_groups)),
        Section(warmup_section([r for r in curve_runs if r.arch.get("family") == "cifar"])),
        Section(precision_md),
        fig7,
        *([other_table(other, refs)] if other else []),
        runs_table(runs, incomplete, [*fold_notes, *same_seed_notes(groups), *peer_notes]),
    ]
    markdown = "\n".join(line for s in sections for line in s.markdown).rstrip() + "\n"

    from resnet_repro.runs.rundir import write_text_atomic

    write_text_atomic(out_dir / "report.md", markdown)
    _write_csv(out_dir / "results.csv", [r for s in sections for r in s.csv_rows])
    extra = [out_dir / "peers.json"] if peers else []
    return Report(markdown, out_dir, [out_dir / "report.md", out_dir / "results.csv", *files, *files7, *precision_files, *extra])


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
                        help="measure Figure 7's layer responses for runs without layer_responses.json "
                        "(written under --out/layer_responses/, never into the run dirs)")
    parser.add_argument("--peers", metavar="DIR", default=None,
                        help="evaluate the akamaster CIFAR-10 weights (*.th) in DIR on each CIFAR-10 data set the "
                        "runs used, as context rows (e.g. ../shared/weights/akamaster; written to --out/peers.json)")
    parser.add_argument("--data-root", default=None, metavar="PATH",
                        help="the CIFAR-10 data --peers evaluates on, instead of each run's data.root (a record's "
                        "relative path is read from the current directory)")
    parser.add_argument("--device", default="auto", help="device for --layer-responses and --peers (default: auto)")
    args = parser.parse_args(argv)
    if args.data_root is not None and args.peers is None:
        raise ConfigError("--data-root is the data --peers evaluates on: give --peers DIR too")
    rep = build_report(args.dirs, args.out, args.sigma_cifar, args.sigma_imagenet, args.wandb,
                       args.layer_responses, args.device, args.peers, data_root=args.data_root)
    print(rep.markdown, end="")
    print(f"\nwrote {', '.join(display_path(str(f)) for f in rep.files)}")
    return 0
