"""`python -m resnet_repro <command> ...`: the one entrypoint.

`train` and `eval` take Hydra overrides (`+exp=cifar_resnet110 seed=1`, `-m` for sweeps); the
other commands take ordinary flags. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from resnet_repro.errors import ReproError
from resnet_repro.config.paths import CONF_DIR


USAGE = """usage: python -m resnet_repro <command> [args]

commands:
  train    train a model: python -m resnet_repro train +exp=cifar_resnet110 [key=value ...]
           (-m for a Hydra multirun sweep: train -m +exp=cifar_resnet20 seed=0,1,2)
  eval     test error of a checkpoint: python -m resnet_repro eval ckpt=<run dir or .pt>
  models   every named model: parameters and multiply-adds beside the paper's Tables 1 and 6
  bench    training throughput and peak memory, configured run vs a naive baseline:
           python -m resnet_repro bench +exp=cifar_resnet110 [bench.iters=N] [bench.json=FILE]
  report   runs beside the paper's tables and figures: python -m resnet_repro report <run or sweep dir>...
  status   where each run stands (done, running, paused, killed, failed): python -m resnet_repro status <dir>...
  analyze  Figure 7 layer responses of CIFAR runs: python -m resnet_repro analyze <run dir>...

`python -m resnet_repro <command> --help` shows the command's options.
"""


def _cmd_models(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_repro models",
        description="Parameters and forward multiply-adds (from the layer shapes, at the "
        "family's input size) of every named model, beside the paper's Table 6 parameter "
        "counts (CIFAR) and Table 1 FLOPs (ImageNet).",
    )
    parser.add_argument("names", nargs="*", help="models to show (default: all)")
    args = parser.parse_args(argv)
    from resnet_repro.models.table import format_table, model_rows  # torch: not for --help

    if args.names:
        from resnet_repro.config.archs import get_arch

        for n in args.names:
            get_arch(n)  # unknown names: one clear line
    print(format_table(model_rows(args.names or None)))
    return 0


def _cmd_report(argv: list[str]) -> int:
    from resnet_repro.report import cli_main

    return cli_main(argv)


def _cmd_status(argv: list[str]) -> int:
    from resnet_repro.runs.state import cli_main

    return cli_main(argv)


def _cmd_analyze(argv: list[str]) -> int:
    from resnet_repro.analyze import cli_main

    return cli_main(argv)


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


_GROUP_OVERRIDE = re.compile(r"^[+~]*(?P<group>[a-z_]+)=(?P<value>[^=]*)$")


def check_group_overrides(argv: list[str]) -> None:
    """Unknown config-group choices (`+exp=nope`, `model=resnet21`) get one clear line
    before Hydra composes anything (Hydra's own message is several lines long)."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    for arg in argv:
        if arg.lstrip("+~").startswith("="):
            raise ReproError(f"override {arg!r} names no setting: write key=value (e.g. seed=5)")
        m = _GROUP_OVERRIDE.match(arg)
        if not m or m.group("group") not in groups:
            continue
        group = m.group("group")
        options = _group_options(group)
        for value in m.group("value").split(","):
            if value and value not in options:
                raise ReproError(f"unknown {group} {value!r}; choose from: {', '.join(options)}")


_LAUNCHER_PLUGINS = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
                     "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
                     "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")}


def check_launcher(argv: list[str]) -> None:
    """`hydra/launcher=joblib` without the plugin: one line saying what to install."""
    import importlib.util

    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "hydra/launcher" and value in _LAUNCHER_PLUGINS:
            module, package = _LAUNCHER_PLUGINS[value]
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                raise ReproError(f"hydra/launcher={value} needs Hydra's {value} launcher plugin: pip install {package}")


def check_dir_overrides(argv: list[str]) -> None:
    """An empty `hydra.run.dir=` would train into the current directory: refused."""
    for arg in argv:
        key, eq, value = arg.lstrip("+").partition("=")
        if eq and key in ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir") and not value.strip(" '\""):
            raise ReproError(f"{key} is empty; name a directory, or leave it out for the default")


def check_resume(argv: list[str]) -> None:
    """`resume=<dir>` continues one run in that dir: not with `-m` (a sweep continues when its
    own command is run again), nor with a `hydra.run.dir` naming another dir."""
    resume = next((a.split("=", 1)[1] for a in argv if a.startswith("resume=")), None)
    if not resume:
        return
    if any(a in ("-m", "--multirun") for a in argv):
        raise ReproError("resume= continues one run and -m runs a sweep: to continue a sweep, run its own "
                         "`train -m ...` command again (finished jobs are kept, paused ones resume)")
    run_dir = next((a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("hydra.run.dir=")), None)
    if run_dir and os.path.abspath(os.path.expanduser(run_dir)) != os.path.abspath(os.path.expanduser(resume)):
        raise ReproError(f"resume={resume} and hydra.run.dir={run_dir} name two run dirs: resume= is the run dir "
                         "it continues; leave hydra.run.dir out")


# `bench` times; it writes no run dir (nor Hydra's .hydra/ record): always last, so they win.
BENCH_OVERRIDES = ["hydra.run.dir=.", "hydra.output_subdir=null"]


def resume_overrides(argv: list[str]) -> list[str]:
    """`train resume=<dir> data.cache_dir=...`: the run continues with its saved config, which
    may hold keys the default composition lacks (a data source's own settings). Hydra would
    refuse such a key with a hint about `+`, which points at the wrong problem, so the keys are
    passed as `++key=value` (set or add); the train command then refuses any key that may not
    change on resume, with its own message."""
    if not any(a.startswith("resume=") for a in argv):
        return argv
    return [f"++{a}" if "=" in a and "." in a.split("=", 1)[0] and not a.startswith(("+", "~", "hydra."))
            else a for a in argv]


def one_line(e: BaseException) -> str:
    """Hydra/OmegaConf messages span several lines; keep the informative ones, joined."""
    skip = ("full_key:", "object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return " ".join(lines[:3]) or type(e).__name__


def _raised_by_hydra(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}hydra{os.sep}" in tb.tb_frame.f_code.co_filename


def _override_into_null(e: AssertionError) -> str | None:
    """The key of an override OmegaConf could not apply because a section above it is null
    (`schedule.plateau.factor=0.5` under the step schedule, whose `plateau` is null), or None."""
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "update" and code.co_filename.endswith(f"omegaconf{os.sep}omegaconf.py"):
            key = tb.tb_frame.f_locals.get("key")
            return key if isinstance(key, str) else None
        tb = tb.tb_next
    return None


def _hydra_command(module: str, config_name: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        if not CONF_DIR.is_dir():
            raise ReproError(f"config directory {CONF_DIR} not found (install with `pip install -e .`)")
        check_group_overrides(argv)
        check_launcher(argv)
        check_dir_overrides(argv)
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from resnet_repro import hydra_entry

        if module == "resnet_repro.train":
            check_resume(argv)
            argv = resume_overrides(argv)
        if module == "resnet_repro.bench":
            argv = argv + BENCH_OVERRIDES
        saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
        sys.argv = [f"{saved_argv[0]} {module.rsplit('.', 1)[-1]}"] + argv
        # Let composition errors reach us as exceptions, to print them as one line.
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return hydra_entry.run(module, config_name)  # imports `module` (torch) only to run its task
        except ValueError as e:  # Hydra's own argument checks (`-m` with `--cfg`, ...); ours are ReproErrors
            if not _raised_by_hydra(e):
                raise
            raise ReproError(one_line(e)) from None
        except AssertionError as e:  # OmegaConf asserts when an override's section is null
            if (key := _override_into_null(e)) is None:
                raise
            section = key.rsplit(".", 1)[0]
            raise ReproError(
                f"cannot set {key}: {section} is null in this config; pick a config group that has it "
                f"(schedule=imagenet has schedule.plateau) or give the whole section ('{section}={{...}}')"
            ) from None
        except (HydraException, OmegaConfBaseException) as e:
            from resnet_repro.schema import SCHEMAS, config_error

            schema = SCHEMAS["eval_schema" if config_name == "eval" else "run_schema"]
            raise (config_error(e, schema) or ReproError(one_line(e))) from None
        finally:
            sys.argv = saved_argv
            if saved_env is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = saved_env

    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _hydra_command("resnet_repro.train", "config"),
    "eval": _hydra_command("resnet_repro.evaluate", "eval"),
    "bench": _hydra_command("resnet_repro.bench", "config"),
    "models": _cmd_models,
    "report": _cmd_report,
    "status": _cmd_status,
    "analyze": _cmd_analyze,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[cmd](rest)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
