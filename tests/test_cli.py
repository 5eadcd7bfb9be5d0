"""The entrypoint: subcommands, the models table, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from resnet_repro.cli import main
from resnet_repro.models import NAMED_MODELS


def test_python_m_help_lists_the_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resnet_repro", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("train", "eval", "models"):
        assert f"\n  {cmd} " in out


def test_models_table_lists_every_named_model_with_paper_figures(capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in NAMED_MODELS:
        assert f"\n{name} " in out
    row = next(line for line in out.splitlines() if line.startswith("cifar_resnet110 "))
    assert "1,727,962" in row and "params (Table 6)" in row and "+1.6%" in row
    row = next(line for line in out.splitlines() if line.startswith("imagenet_resnet152 "))
    assert "mult-adds (Table 1)" in row and "11.30G" in row


def test_unknown_command_and_unknown_model_are_one_line_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["fly"]) == 2
    assert main(["models", "cifar_resnet21"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith("error: unknown command 'fly'")
    assert err[1].startswith("error: unknown model 'cifar_resnet21'")


_IMPORTS_AFTER = """
import runpy, sys
sys.argv = ["resnet_repro", *sys.argv[1:]]
try:
    runpy.run_module("resnet_repro", run_name="__main__")
except SystemExit:
    pass
print("torch" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("command", ["", "train", "eval", "bench", "models", "report", "analyze", "status"])
def test_help_does_not_import_torch(command: str) -> None:
    # torch's import is most of a command's start-up: --help has no use for it.
    argv = [command, "--help"] if command else ["--help"]
    r = subprocess.run([sys.executable, "-c", _IMPORTS_AFTER, *argv], capture_output=True, text=True)
    assert "usage" in r.stdout.lower() or "powered by hydra" in r.stdout.lower(), r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == "False", r.stderr
