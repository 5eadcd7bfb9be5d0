"""Hydra's side of `train`, `eval` and `bench`, without torch: the resolvers the configs use,
`RunDirGuard` (a Hydra callback: what existed before Hydra created a run dir, and the end of a
sweep), and `run`, which imports a command's module only once Hydra hands it a composed config
(so `train --help`, `--cfg job` and composition errors never pay for torch's import).

Sweep dirs are named after what the command asks for, never the clock, so the same multirun
command run again lands in the same sweep dir and continues it (issue 21):
  hydra.sweep.dir     runs/multirun/<exp>[-<tag>]: the `+exp=` and the overrides that are not swept
  hydra.sweep.subdir  <run name>-seed<N>[-<tag>]: the job's own settings, not its position
A tag is the overrides themselves (`data=cifar10_folder`) when short and plain, else a hash of
them. Settings that may change on resume (resume.RESUMABLE_KEYS: `trainer.max_iters`,
`trainer.device`, `data.root`, ...) name nothing: changing them continues the same runs.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resnet_repro.schema import register_schemas
from resnet_repro.config.paths import CONF_DIR


def run_stamp() -> str:
    """A timestamp for run-dir names that every process of one `torchrun` launch agrees on:
    they share the elastic agent (their parent process), so its start time is the stamp.
    Multi-node runs should name `hydra.run.dir` on a shared filesystem explicitly."""
    t = time.time()
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        try:
            t = os.stat(f"/proc/{os.getppid()}").st_mtime
        except OSError:
            pass
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(t))


def run_name(exp_name: str, model_name: str, family: str, depth: int, residual: bool, shortcut: str,
             bottleneck_stride: str) -> str:
    """The run dir's name: the exp's, or the network's when overrides made it another one
    (`+exp=cifar_resnet20 model.depth=32` -> cifar_resnet32; archs.names_after_network)."""
    from resnet_repro.config.archs import names_after_network

    try:
        # Unchecked (Arch would refuse a bad depth): the job dir is named after what was asked,
        # cifar_resnet21, and run_settings refuses it in one line there.
        shape = SimpleNamespace(family=family, depth=int(depth), residual=bool(residual), shortcut=shortcut,
                                bottleneck_stride=bottleneck_stride)
        return names_after_network(model_name, exp_name, shape)[1]  # type: ignore[arg-type]
    except (TypeError, ValueError):  # int() of a malformed depth: run_settings names it properly
        return exp_name


def until(deadline: float | int | str) -> int:
    return max(0, int(float(deadline) - time.time()))


_PLAIN = re.compile(r"^[A-Za-z0-9_.,=+:-]+$")
MAX_TAG = 64


def override_tag(items: list[str]) -> str:
    """A dir-name tag for overrides: `k=v,k2=v2` (sorted) when short and plain, else a hash."""
    if not items:
        return ""
    text = ",".join(sorted(items))
    if len(text) <= MAX_TAG and _PLAIN.match(text):
        return text
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


def _parsed(overrides: Any) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def _names_a_run(key: str) -> bool:
    from resnet_repro.config.resume import is_resumable

    return not (key == "exp" or key.startswith("hydra.") or key.startswith("hydra/") or is_resumable(key))


def _item(o: Any) -> str:
    return o.input_line.lstrip("+") if o.input_line else f"{o.key_or_group}={o.get_value_element_as_str()}"


def sweep_name(overrides: Any) -> str:
    """The sweep dir's name, from the sweep's master config: the `+exp=` choice (or `sweep` when
    there is none or it is swept) and a tag of the overrides that are not swept (nor `seed`). Registered
    with a cache keyed by the argument's text (`${hydra.overrides.task}`): Hydra copies the
    master's cache into every job's config, so every job resolves the master's sweep dir (also
    under the joblib launcher), not one from its own, single-valued, overrides."""
    parsed = _parsed(overrides)
    exp = next((o for o in parsed if o.key_or_group == "exp"), None)
    name = "sweep" if exp is None or exp.is_sweep_override() else str(exp.value())
    # `seed` never names a sweep: seeds are its replicates (seed=0, then seed=0,1: the same sweep).
    fixed = [_item(o) for o in parsed
             if not o.is_sweep_override() and o.key_or_group != "seed" and _names_a_run(o.key_or_group)]
    tag = override_tag(fixed)
    return f"{name}-{tag}" if tag else name


def job_dir_name(run: str, seed: Any, overrides: Any) -> str:
    """A sweep job's dir: its run name, seed, and a tag of its other overrides (swept or not)
    that name a run. `model=X` and `+exp=X` are in the run name already."""
    items = []
    for o in _parsed(overrides):
        key = o.key_or_group
        if key == "seed" or not _names_a_run(key) or (key == "model" and str(o.value()) == run):
            continue
        items.append(_item(o))
    tag = override_tag(items)
    return f"{run}-seed{seed}" + (f"-{tag}" if tag else "")


def register_resolvers() -> None:
    register_schemas()  # conf/config.yaml and eval.yaml name the schemas: whoever composes needs both
    if not OmegaConf.has_resolver("sweep_name"):
        OmegaConf.register_new_resolver("sweep_name", sweep_name, use_cache=True)
    if not OmegaConf.has_resolver("job_dir"):
        OmegaConf.register_new_resolver("job_dir", job_dir_name)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name)
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)
    # hydra.run.dir: the `resume=` dir if given, else a fresh timestamped one.
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", lambda resume, default: resume or default)
    # `trainer.max_time='${until:<unix time>}'`: the whole seconds left until then, taken when each
    # job's config is resolved (as it starts), so every job of a sweep pauses by one deadline
    # (trainer.max_time itself counts from each run's start). 0 once it has passed, which
    # `train` refuses: a sweep process then starts no further job. (experiments/gpu/lease.sh)
    if not OmegaConf.has_resolver("until"):
        OmegaConf.register_new_resolver("until", until)
    # Hydra's .hydra/ record is skipped on `resume=`: config.yaml stays the run's record.
    if not OmegaConf.has_resolver("hydra_subdir"):
        OmegaConf.register_new_resolver("hydra_subdir", lambda resume: None if resume else ".hydra")


# --------------------------------------------------------------------------------------------
# What existed before Hydra made the run dir, and the end of a sweep
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Before:
    """A run dir as it was before this command: whether it existed, its entries, and the
    outermost of its parents that did not exist (Hydra creates them all)."""

    path: Path
    existed: bool
    entries: frozenset[str]
    created_top: Path | None  # the first missing dir on the way down (the run dir itself, or a parent)
    hydra_record: dict[str, bytes] | None = None  # its `.hydra/` files before Hydra rewrote them


def snapshot(path: Path) -> Before:
    from resnet_repro.runs.rundir import read_folder

    path = _key(path)
    if path.is_dir():
        return Before(path, True, frozenset(p.name for p in path.iterdir()), None, read_folder(path / HYDRA_RECORD))
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return Before(path, False, frozenset(), top)


HYDRA_RECORD = ".hydra"  # Hydra's record of a run's composition (conf/config.yaml hydra.output_subdir)
_BEFORE: dict[Path, Before] = {}  # recorded by RunDirGuard.on_run_start, read by the task
_SWEEP: dict[str, Any] = {}  # this process's multirun: its sweep dir


def _key(path: Path) -> Path:
    """One spelling of a run dir: Hydra's output_dir is os.path.abspath'd (no `..`)."""
    return Path(os.path.abspath(path))


def before(run_dir: Path) -> Before | None:
    return _BEFORE.get(_key(run_dir))


try:
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover - hydra-core < 1.1
    _Callback = object  # type: ignore[assignment,misc]


class RunDirGuard(_Callback):  # type: ignore[misc,valid-type]
    """Hydra callback (conf/config.yaml `hydra.callbacks`). Before a single run, records what
    its run dir held before Hydra creates it, so a refused command can leave the file system as
    it found it; before a sweep, notes the sweep dir for the end-of-sweep lines. (Hydra turns a
    callback's exceptions into warnings: refusals happen in the CLI and the task.)"""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(config.hydra.run.dir))
        _BEFORE[_key(path)] = snapshot(path)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _SWEEP["dir"] = Path(str(config.hydra.sweep.dir)).absolute()


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job dirs of the multirun that just ran in `sweep_dir`: those whose `.hydra/` record
    Hydra wrote after the sweep's `multirun.yaml` (Hydra writes both; same clock), by job number."""
    import yaml

    marker = sweep_dir / "multirun.yaml"
    start = marker.stat().st_mtime_ns if marker.is_file() else 0
    jobs = []
    for d in sweep_dir.iterdir():
        record = d / ".hydra" / "hydra.yaml"
        if d.is_dir() and record.is_file() and record.stat().st_mtime_ns >= start:
            try:
                num = int(yaml.safe_load(record.read_text())["hydra"]["job"]["num"])
            except Exception:  # an unreadable record: last, by name
                num = sys.maxsize
            jobs.append((num, d.name, d))
    return [d for _, _, d in sorted(jobs)]


def end_of_sweep(sweep_dir: Path) -> int:
    """One line per job of the sweep that just ran; 1 if any failed."""
    from resnet_repro.runs.state import run_state

    states = [run_state(d) for d in sweep_jobs(sweep_dir)]
    if not states:
        return 0
    print(f"sweep {sweep_dir}: {len(states)} job(s)")
    for st in states:
        print(f"  {st.path.name}: {st.short(complete='done')}")
    failed = [st for st in states if st.state == "failed"]
    if failed:
        print(f"{len(failed)} job(s) failed; fix the cause and re-run the same command: finished jobs are kept",
              file=sys.stderr)
    return 1 if failed else 0


def stop_sweep(reason: str) -> None:
    """End this sweep before the current job (its time budget is spent): no further job starts,
    the end-of-sweep lines still come, and the exit code is 0 unless a job failed."""
    print(reason, file=sys.stderr)
    _SWEEP["stopped"] = reason
    raise SystemExit(0)


def run(module: str, config_name: str) -> int:
    """Hydra's main for `module`'s `_task(cfg)`, imported lazily. The exit code: 0, or 1 when a
    sweep job failed (the sweep runs every job; each failed one is recorded in its dir)."""
    import hydra

    def task(cfg: Any) -> None:
        importlib.import_module(module)._task(cfg)

    task.__module__ = module  # Hydra names the job (and its .log file) after this module
    register_resolvers()
    _SWEEP.clear()
    try:
        hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)()
    except SystemExit:
        if "stopped" not in _SWEEP:
            raise
    if "dir" in _SWEEP and module == "resnet_repro.train" and Path(_SWEEP["dir"]).is_dir():
        return end_of_sweep(Path(_SWEEP["dir"]))
    return 0
