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
