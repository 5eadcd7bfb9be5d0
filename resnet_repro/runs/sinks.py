"""Metrics sinks: `metrics.jsonl` (always) and W&B (optional), behind one small interface.

The trainer logs plain rows keyed by the global iteration (`iter`), the same index the
paper's curves use (Figure 4, Figure 6). `metrics.jsonl` is the one metrics format the
report reads; W&B mirrors it. wandb is imported only inside `WandbSink`, so runs without it
never pay for (or need) the package.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from resnet_repro.atomic import atomic_write
from resnet_repro.errors import ConfigError
from resnet_repro.config.settings import WANDB_MODES
SECRET_MARKERS = ("api_key", "apikey", "token", "secret", "password", "passwd", "credential")


class MetricsSink(Protocol):
    def log(self, row: Mapping[str, Any]) -> None: ...

    def summary(self, d: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def to_plain(v: Any, *, finite_json: bool = True) -> Any:
    """Tensors and numpy values -> python numbers/lists; paths -> str.

    With `finite_json`, NaN/inf become None: strict JSON has no NaN, and a diverged run's loss
    should still leave a file every JSON reader can parse.
    """
    if hasattr(v, "detach"):  # torch.Tensor, without importing torch here
        v = v.detach().cpu()
        v = v.item() if v.dim() == 0 else v.tolist()
    elif hasattr(v, "item") and hasattr(v, "dtype") and getattr(v, "shape", None) == ():
        v = v.item()  # numpy scalar
    elif hasattr(v, "tolist") and hasattr(v, "dtype"):
        v = v.tolist()  # numpy array
    if isinstance(v, Mapping):
        return {str(k): to_plain(x, finite_json=finite_json) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_plain(x, finite_json=finite_json) for x in v]
    if isinstance(v, float):
        return None if finite_json and not math.isfinite(v) else v
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot log a value of type {type(v).__name__}: {v!r}")


# Records (summary.json, eval_*.json, ...) keep 12 significant digits: far more than any
# measured number means, and the binary noise of `100 * 0.781` (78.10000000000001) is gone.
RECORD_DIGITS = 12


def round_floats(v: Any, digits: int = RECORD_DIGITS) -> Any:
    """Every float in a plain JSON value rounded to `digits` significant digits."""
    if isinstance(v, float):
        return float(f"{v:.{digits}g}")
    if isinstance(v, dict):
        return {k: round_floats(x, digits) for k, x in v.items()}
    if isinstance(v, list):
        return [round_floats(x, digits) for x in v]
    return v


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write a record as JSON via a temp file + rename (readers never see half a summary.json),
    floats rounded to RECORD_DIGITS significant digits. A failed write (full disk, no permission,
    a file where a folder should be) is a `ReproError`: one line, the old file intact."""
    from resnet_repro.runs.rundir import write_text_atomic

    text = json.dumps(round_floats(to_plain(obj)), indent=2, allow_nan=False) + "\n"
    write_text_atomic(Path(path), text)


def _parsed_lines(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, row) for every JSON-object line of a metrics.jsonl; a torn line (crash
    mid-write) is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                out.append((line if line.endswith("\n") else line + "\n", row))
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (crash mid-write) is skipped."""
    return [row for _, row in _parsed_lines(path)]


def _lines_up_to(path: Path, last_iter: int) -> list[str]:
    """The lines of `path` whose row has iter <= last_iter, verbatim; torn lines dropped."""
    return [
        line for line, row in _parsed_lines(path) if isinstance(row.get("iter"), int) and row["iter"] <= last_iter
    ]


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class JsonlSink:
    """Appends one JSON object per `log` call to `path` (normally `<run>/metrics.jsonl`).

    On resume pass `truncate_after_iter=<checkpoint iteration>`: rows logged after that
    checkpoint will be logged again, so they are dropped first (the rewrite is atomic).
    `summary` writes nothing: the trainer owns summary.json (see `write_json_atomic`).
    """

    def __init__(self, path: str | Path, truncate_after_iter: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_iter is not None and self.path.exists():
            kept = _lines_up_to(self.path, truncate_after_iter)
            with atomic_write(self.path, "w") as f:
                f.writelines(kept)
        self._f = open(self.path, "a", encoding="utf-8", buffering=1)  # line-buffered
        if self._f.tell() > 0 and not _ends_with_newline(self.path):
            self._f.write("\n")  # a torn last line must not swallow the next row

    def log(self, row: Mapping[str, Any]) -> None:
        plain = to_plain(row)
        if not isinstance(plain.get("iter"), int):
            raise ValueError(f"a metrics row needs an integer 'iter', got {row.get('iter')!r}")
        self._f.write(json.dumps(plain, allow_nan=False) + "\n")
        self._f.flush()

    def summary(self, d: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def scrub_secrets(d: Mapping[str, Any]) -> dict[str, Any]:
    """Drop, at any depth, keys that look like credentials: a config is logged verbatim."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if any(m in str(k).lower() for m in SECRET_MARKERS):
            continue
        if isinstance(v, Mapping):
            v = scrub_secrets(v)
        elif isinstance(v, (list, tuple)):
            v = [scrub_secrets(x) if isinstance(x, Mapping) else x for x in v]
        out[k] = v
    return out


class WandbSink:
    """Mirror metrics to a W&B run under `<run_dir>/wandb`.

    `resume="allow"` with a saved `run_id` continues the same W&B run after a restart. W&B
    ignores steps at or below ones it already has, so rows between the checkpoint and a crash
    are not rewritten there (metrics.jsonl is the record of truth).
    """

    def __init__(
        self,
        project: str,
        run_dir: str | Path,
        config: Mapping[str, Any],
        mode: str = "offline",
        entity: str | None = None,
        run_id: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        if mode not in WANDB_MODES:
            raise ConfigError(f"unknown wandb mode {mode!r}; valid: {', '.join(WANDB_MODES)}")
        try:
            import wandb
        except ImportError as e:
            raise ConfigError(
                "logger=wandb needs the wandb package: pip install wandb, or use logger=none"
            ) from e
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._run = wandb.init(
                project=project,
                entity=entity,
                dir=str(run_dir),
                config=to_plain(scrub_secrets(config), finite_json=False),
                mode=mode,
                id=run_id,
                resume="allow",  # same id after a restart -> the same W&B run
                name=name,
                tags=list(tags) if tags else None,
                # W&B's own console lines name its CLI switches (`wandb online`), not ours
                # (logger.mode), and garble relative paths: `close` prints our one line instead.
                settings=wandb.Settings(silent=True),
            )
        except Exception as e:  # no login, no network, bad entity: a setup problem
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(
                f"could not start the W&B run (mode={mode}): {reason}; "
                "use mode=offline, or logger=none"
            ) from e
        self._wandb = wandb
        self._closed = False
        self._mode, self._dir = mode, run_dir.absolute()

    @property
    def run_id(self) -> str:
        return self._run.id

    def log(self, row: Mapping[str, Any]) -> None:
        data = {k: v for k, v in row.items() if k != "iter"}
        self._run.log(to_plain(data, finite_json=False), step=int(row["iter"]))

    def summary(self, d: Mapping[str, Any]) -> None:
        self._run.summary.update(to_plain(d, finite_json=False))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._run.finish()
            # finish() can return before the service has written the run file; teardown
            # waits for it, so the run directory is complete once close() returns.
            teardown = getattr(self._wandb, "teardown", None)
            if teardown is not None:
                teardown()
            # (an offline run's url property prints a warning of W&B's own: asked online only)
            print(wandb_hint(self._mode, self._dir, getattr(self._run, "url", None) if self._mode == "online" else None))


def wandb_hint(mode: str, run_dir: Path, url: str | None) -> str:
    """Our one line where W&B would print several: where the run is, how to upload it."""
    if mode == "offline":  # one folder per session of the run (a resume adds one): the glob takes all
        return f"W&B: offline run in {run_dir / 'wandb'}; upload with: wandb sync {run_dir / 'wandb'}/offline-run-*"
    if mode == "online":
        return f"W&B: {url}" if url else "W&B: synced online"
    return "W&B: disabled (logger.mode=disabled): nothing recorded"


class MultiSink:
    """Fan out to several sinks; `close` closes all of them even if one fails."""

    def __init__(self, sinks: Iterable[MetricsSink]) -> None:
        self.sinks = list(sinks)

    def log(self, row: Mapping[str, Any]) -> None:
        for s in self.sinks:
            s.log(row)

    def summary(self, d: Mapping[str, Any]) -> None:
        for s in self.sinks:
            s.summary(d)

    def close(self) -> None:
        errors: list[BaseException] = []
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


def run_sinks(run_dir: Path, logger: Any, *, is_main: bool, truncate_after_iter: int, record: dict[str, Any],
              wandb_id: str | None, name: str) -> tuple[MetricsSink, str | None]:
    """A run's sinks: metrics.jsonl, plus W&B with `logger.name == "wandb"` (`logger`: the
    typed LoggerSettings), on rank 0 only (other ranks log nothing). Returns the sink and the
    W&B run id to keep in the checkpoint (so a resumed run continues the same W&B run)."""
    if not is_main:
        return MultiSink([]), wandb_id
    sinks: list[MetricsSink] = [JsonlSink(run_dir / "metrics.jsonl", truncate_after_iter=truncate_after_iter)]
    if logger.name == "wandb":
        wb = WandbSink(project=logger.project, run_dir=run_dir, config=record, mode=logger.mode, entity=logger.entity,
                       run_id=wandb_id, name=name, tags=list(logger.tags))
        wandb_id = wb.run_id
        sinks.append(wb)
    return MultiSink(sinks), wandb_id
