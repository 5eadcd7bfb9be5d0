"""Read finished runs from a W&B project, as the report reads run directories.

`report --wandb ENTITY/PROJECT` uses this. Our `WandbSink` logs every metrics row with
`step=iter` and the final summary.json into the run's summary, and the resolved config as the
run's config, so a W&B run carries what a run directory does:

- `run.summary`: the summary.json fields (test_err, best_val_err, iterations, images_per_s, ...);
- `run.config`: the resolved config (exp_name, seed, model.*, data.name), used where the
  summary lacks a field (a run that never finished has no summary.json fields);
- `run.scan_history()`: the metric rows, with `_step` = our `iter`.

wandb is imported only here, inside `fetch_runs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from resnet_repro.errors import ConfigError, ReproError

ARCH_KEYS = ("family", "depth", "residual", "shortcut", "bottleneck_stride", "num_classes")


def rows_from_history(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """W&B history rows -> metrics.jsonl rows: `_step` becomes `iter`, W&B's own keys
    (`_timestamp`, `_runtime`, ...) and non-numeric values are dropped; sorted by iter."""
    rows: list[dict[str, Any]] = []
    for h in history:
        step = h.get("_step")
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            continue
        row: dict[str, Any] = {"iter": int(step)}
        for k, v in h.items():
            if k.startswith("_") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(v):
                row[k] = v
        rows.append(row)
    return sorted(rows, key=lambda r: r["iter"])


def _summary_dict(run: Any) -> dict[str, Any]:
    s = getattr(run, "summary", None) or {}
    raw = getattr(s, "_json_dict", None)  # the public API's HTTPSummary keeps its values here
    d = dict(raw) if isinstance(raw, Mapping) else dict(s)
    return {k: v for k, v in d.items() if not str(k).startswith("_")}


def summary_from_run(run: Any) -> dict[str, Any]:
    """A summary.json-like dict from a W&B run: its summary, completed from its config."""
    config: Mapping[str, Any] = dict(getattr(run, "config", None) or {})
    summary = _summary_dict(run)
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    summary.setdefault("exp_name", config.get("exp_name") or model.get("name") or getattr(run, "name", None))
    summary.setdefault("seed", config.get("seed"))
    summary.setdefault("model", model.get("name"))
    if not isinstance(summary.get("arch"), Mapping):
        summary["arch"] = {k: model[k] for k in ARCH_KEYS if k in model}
    summary.setdefault("data", data.get("name"))
    summary["run_dir"] = getattr(run, "url", None) or f"wandb:{getattr(run, 'id', '?')}"
    return summary


def record_from_run(run: Any) -> dict[str, Any]:
    """{"path", "summary", "config", "rows", "finished", "state"} for one W&B run. A run counts as
    finished when its summary has a numeric test_err (the trainer's last act)."""
    summary = summary_from_run(run)
    rows = rows_from_history(run.scan_history())
    test_err = summary.get("test_err")
    finished = isinstance(test_err, (int, float)) and not isinstance(test_err, bool)
    config = getattr(run, "config", None)
    return {
        "path": summary["run_dir"],
        "summary": summary,
        "config": dict(config) if isinstance(config, Mapping) else None,  # the recipe's fallback
        "rows": rows,
        "finished": finished,
        "state": str(getattr(run, "state", "unknown")),
    }


def fetch_runs(project: str) -> list[dict[str, Any]]:
    """Every run of `ENTITY/PROJECT` as records (see `record_from_run`)."""
    parts = project.split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--wandb takes ENTITY/PROJECT, got {project!r}")
    try:
        import wandb
    except ImportError:
        raise ReproError("--wandb needs the wandb package: pip install wandb") from None
    try:
        api = wandb.Api()
        return [record_from_run(run) for run in api.runs(project)]
    except ReproError:
        raise
    except Exception as e:  # no login, no network, unknown project: W&B's errors vary
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ReproError(f"could not read W&B project {project}: {reason}") from None
