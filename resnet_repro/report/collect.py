"""Collecting runs for the report: run directories (a `summary.json` each; `metrics.jsonl` or a
checkpoint without one is an unfinished run), the `eval_*.json` records beside them, and runs
logged to W&B. Produces `Run` and `Incomplete` records; judges nothing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from resnet_repro.paper import judge
from resnet_repro.paper import numbers as paper
from resnet_repro.errors import ReproError
from resnet_repro.runs.sinks import read_jsonl
from resnet_repro.runs.state import FAILED_FILE, find_run_dirs, not_final_weights, read_config, run_state, summary_status

# The ImageNet tables' protocols (§3.4): 10-crop for Tables 2 and 3, multi-scale for Table 4.
# `eval` writes `<run>/eval_<protocol>.json` for the final weights ({"protocol", "err": top-1 %,
# "top5_err": %, "iteration", "weights_digest", "bn_stats", "precision"}) and
# `eval_<protocol>_iter<N>.json` for other checkpoints, `_bn-<kind>` for other BN statistics than
# the default. Only evaluations of the final weights count (the default BN kind first); the
# others are listed as not judged or not shown.
EVAL_GLOB = "eval_*.json"
from resnet_repro.evaluation.names import PROTOCOLS as EVAL_PROTOCOLS  # noqa: E402
EVAL_MISSING = "missing (run `eval protocol=all`)"
MISSING = "missing"

# What a run's `data` was. Only cifar10 and imagenet are the paper's data sets; "image_folder" is
# a run on data=imagenet whose data is not ImageNet (another class count or val size: a small or
# generated photo folder, experiments/make_photo_folder.py).
DATA_LABELS = {
    "cifar10": "CIFAR-10",
    "cifar10_folder": "CIFAR-10 (JPEG copy)",
    "synthetic": "synthetic (not CIFAR-10)",
    "imagenet": "ImageNet",
    "image_folder": "image folder (not ImageNet)",
}


def data_label(name: str | None) -> str:
    return DATA_LABELS.get(str(name), str(name))


def _is_imagenet(summary: dict[str, Any]) -> bool:
    arch = summary.get("arch") if isinstance(summary.get("arch"), dict) else {}
    classes = summary.get("num_classes", arch.get("num_classes"))  # type: ignore[union-attr]
    return classes == paper.IMAGENET_CLASSES and summary.get("test_size") == paper.IMAGENET_TEST_SIZE


def recipe_of_config(config: dict[str, Any] | None) -> tuple[judge.Recipe | None, str | None]:
    """(recipe, None) from a run's resolved config (config.yaml or a W&B run's config), or
    (None, why) when there is none or it no longer makes valid settings."""
    from resnet_repro.errors import ReproError
    from resnet_repro.schema import run_settings

    if not config:
        return None, "no config.yaml"
    try:
        return judge.recipe(run_settings(config)), None
    except (ReproError, KeyError, TypeError, ValueError) as e:
        return None, f"config.yaml does not make valid settings: {e}"


@dataclass
class Run:
    """A finished run: its summary.json, metrics rows and its evaluations' records."""

    path: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> the final weights' record
    responses: dict[str, Any] | None = None  # layer_responses.json (Figure 7)
    local: bool = True  # a run directory (False: read from W&B)
    config: dict[str, Any] | None = None  # the resolved config (config.yaml, or W&B's run config)
    stale_evals: list[str] = field(default_factory=list)  # evaluations not judged or not shown, why
    also: list[str] = field(default_factory=list)  # copies of this run folded into it (paths)

    def __post_init__(self) -> None:
        self._recipe, self.recipe_note = recipe_of_config(self.config)

    @property
    def exp(self) -> str:
        return str(self.summary.get("exp_name") or self.summary.get("model") or "?")

    @property
    def data(self) -> str:
        d = str(self.summary.get("data") or "?")
        return "image_folder" if d == "imagenet" and not _is_imagenet(self.summary) else d

    @property
    def arch(self) -> dict[str, Any]:
        a = self.summary.get("arch")
        return a if isinstance(a, dict) else {}

    @property
    def seed(self) -> int:
        s = self.summary.get("seed")
        return s if isinstance(s, int) else -1

    @property
    def recipe(self) -> judge.Recipe | None:
        """The settings that change what was learned (None: not recorded)."""
        return self._recipe

    @property
    def facts(self) -> judge.Facts:
        return judge.facts_of(self.summary)

    @property
    def precision(self) -> str:
        """What training computed in: bf16 (autocast, fp32 weights), tf32 or fp32; a run that
        changed precision on resume names its stretches ("bf16 0-2,000, fp32 2,000-4,000")."""
        p = str(self.summary.get("train_precision") or "not recorded")
        if p != "mixed":
            return p
        merged: list[list] = []
        for x in self.summary.get("precision_history") or []:
            if x["to"] <= x["from"]:
                continue
            if merged and merged[-1][0] == x["train_precision"]:
                merged[-1][2] = x["to"]
            else:
                merged.append([x["train_precision"], x["from"], x["to"]])
        return ", ".join(f"{k} {a:,}-{b:,}" for k, a, b in merged) or p

    def digest(self) -> str:
        """The run's content: its final weights' digest when recorded, else its results. Copies
        of a run dir, and re-runs that reproduce it bit for bit, have the same digest."""
        import hashlib

        s = self.summary
        if s.get("weights_digest"):
            key: Any = ["weights", s["weights_digest"], s.get("data_fingerprint"), s.get("seed")]
        else:
            key = ["results", *(s.get(k) for k in RESULT_KEYS)]
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The results that name a run's content when its summary has no weights digest (older runs).
RESULT_KEYS = ("exp_name", "seed", "data", "data_fingerprint", "iterations", "test_err", "test_top5_err", "test_loss",
               "final_val_err", "best_val_err", "best_val_iter", "params")


@dataclass
class Incomplete:
    """A run directory that has not finished its recipe: still training, killed, crashed, or
    paused (trainer.pause_at / max_time: summary.json says "paused"; its curves are drawn, it
    gets no verdict)."""

    path: str
    exp: str
    last_iter: int | None
    note: str
    run: Run | None = None  # a paused run: its summary and curves


def resume_hint(run_dir: str | Path) -> str:
    """How an unfinished run goes on: from its checkpoint, or, for a copied record (summary and
    curves without checkpoints, as committed under experiments/results/), from where the
    checkpoint is; a resume here would have nothing to load."""
    from resnet_repro.runs.rundir import LAST, PREV

    if any((Path(run_dir) / p).is_file() for p in (LAST, PREV)):
        return f"`train resume={run_dir}` continues it"
    return "no checkpoint here (a copied record): continue it where its checkpoint is, or retrain from its config.yaml"


def paused(run: Run) -> Incomplete:
    s = run.summary
    err = number(s.get("test_err"))
    at = f" (test error {err:.2f}% there)" if err is not None else ""
    return Incomplete(run.path, run.exp, s.get("iterations"),
                      f"paused at iteration {s.get('iterations')} of {s.get('max_iters')}{at}: a prefix of the "
                      f"recipe, no verdict; {resume_hint(run.path)}", run=run)


def number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _eval_items(path: Path) -> list[dict[str, Any]]:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    items = d if isinstance(d, list) else d.get("all", [d]) if isinstance(d, dict) else []
    return [i for i in items if isinstance(i, dict)]


def read_eval_results(run_dir: Path, summary: dict[str, Any] | None = None
                      ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(protocol -> the record of the final weights' evaluation, notes on the others) from
    `<run>/eval_*.json`. A record counts when it is of the run's final weights: the summary's
    iteration of a complete run and, when both record one, the same weights digest. Of several
    final records of one protocol, the data set's default BN statistics (`eval_<protocol>.json`)
    win over `eval_<protocol>_bn-<kind>.json`, and the note names the one not shown. Held-out
    (val) results never go beside the paper's val-set numbers."""
    summary = summary or {}
    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    # Records of the default BN statistics (no `_bn-` in the name) come last: they win.
    for path in sorted(run_dir.glob(EVAL_GLOB), key=lambda p: ("_bn-" not in p.name, p.stat().st_mtime, p.name)):
        for item in _eval_items(path):
            if item.get("protocol") not in EVAL_PROTOCOLS or item.get("split", "test") != "test":
                continue
            if number(item.get("err")) is None:
                continue
            it = item.get("iteration")
            why = not_final_weights(summary, it, item.get("weights_digest"))
            if why:
                notes.append(f"{path.name} ({item['protocol']}): {why}: not judged")
                continue
            if item["protocol"] in out:
                shadowed = out[item["protocol"]]
                notes.append(f"{shadowed['file']} ({item['protocol']}, BN statistics {shadowed['bn_stats']}): "
                             f"{path.name} is shown instead")
            out[item["protocol"]] = {"err": number(item["err"]), "top5_err": number(item.get("top5_err")),
                                     "bn_stats": str(item.get("bn_stats") or "not recorded"),
                                     "precision": str(item.get("precision") or "not recorded"),
                                     "iteration": it, "file": path.name}
    return out, notes


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
    evals, stale = read_eval_results(run_dir, summary)
    return Run(str(run_dir), summary, rows, evals, read_responses(run_dir), config=read_config(run_dir),
               stale_evals=stale)


def _incomplete(run_dir: Path) -> Incomplete:
    exp = str((read_config(run_dir) or {}).get("exp_name", "?"))  # no or unreadable config.yaml: unknown
    metrics = run_dir / "metrics.jsonl"
    iters = [r["iter"] for r in read_jsonl(metrics) if isinstance(r.get("iter"), int)] if metrics.is_file() else []
    st = run_state(run_dir)
    return Incomplete(str(run_dir), exp, max(iters) if iters else None,
                      st.short() + (f": {resume_hint(run_dir)}" if st.state in ("paused", "killed") else ""))


def _is_report_run(d: Path, names: set[str]) -> bool:
    """A run dir for the report: a summary, metrics, a failure record or a checkpoint (a dir
    with only config.yaml never trained, and is searched further)."""
    return bool(names & {"summary.json", "metrics.jsonl", FAILED_FILE}) or (d / "checkpoints" / "last.pt").is_file()


def find_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[Incomplete]]:
    """Finished and unfinished runs under `paths`, searched recursively (a run dir's own
    subdirectories are not searched)."""
    runs: list[Run] = []
    incomplete: list[Incomplete] = []
    for d in find_run_dirs(paths, _is_report_run):
        if not (d / "summary.json").is_file():
            incomplete.append(_incomplete(d))
            continue
        run = load_run(d)
        if summary_status(run.summary) == "paused":
            incomplete.append(paused(run))
        else:
            runs.append(run)
    return runs, incomplete


def runs_from_wandb(project: str) -> tuple[list[Run], list[Incomplete]]:
    from resnet_repro.runs.wandb_history import fetch_runs

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
