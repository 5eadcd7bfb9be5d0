"""Hydra's side of `train`, `eval` and `bench`, without torch: the resolvers the configs use,
and `run`, which imports a command's module only once Hydra hands it a composed config (so
`train --help`, `--cfg job` and composition errors never pay for torch's import)."""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

from omegaconf import OmegaConf

from resnet_repro.paths import CONF_DIR


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
    from resnet_repro.archs import Arch, names_after_network

    try:
        return names_after_network(model_name, exp_name, Arch(family, int(depth), bool(residual), shortcut,
                                                              bottleneck_stride))[1]
    except (TypeError, ValueError):  # a malformed setting: run_settings names it properly
        return exp_name


def until(deadline: float | int | str) -> int:
    return max(0, int(float(deadline) - time.time()))


def register_resolvers() -> None:
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


def run(module: str, config_name: str) -> None:
    """Hydra's main for `module`'s `_task(cfg)`, imported lazily."""
    import hydra

    def task(cfg: Any) -> None:
        importlib.import_module(module)._task(cfg)

    task.__module__ = module  # Hydra names the job (and its .log file) after this module
    register_resolvers()
    hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)()
