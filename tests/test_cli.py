"""The entrypoint: subcommands, the models table, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from resnet_repro.cli import main
from resnet_repro.config.archs import NAMED_MODELS


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
    # The committed record the docs quote (e.g. fidelity.md's 4.09G against 3.86G) is this table.
    record = (REPO / "experiments" / "results" / "models.md").read_text()
    assert record.split("```\n")[1] == out


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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "+exp=cifar_resnet20", "=5"], "override '=5' names no setting"),  # was Hydra's ValueError
        (["train", "-m", "+exp=cifar_resnet20", "seed=0,1", "--cfg", "job"], "Only one of --run, --multirun, --cfg"),
        (["eval"], "ckpt is required"),  # was preceded by "Error executing job with overrides: []"
        (["eval", "ckpt=/x", "bogus=1"], "unknown setting(s) ['bogus']"),
    ],
)
def test_hydra_argument_errors_are_one_line(argv: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "resnet_repro", *argv], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr


def test_eval_help_names_eval_and_only_its_own_settings() -> None:
    out = subprocess.run([sys.executable, "-m", "resnet_repro", "eval", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("eval is powered by Hydra")
    assert "ckpt: ???" in out and "precise_bn_batches" in out
    assert "\nexp:" not in out and "\nmodel:" not in out and "Configuration groups" not in out


def test_eval_device_error_names_evals_own_key(tmp_path) -> None:
    import torch

    from conftest import train_tiny
    from resnet_repro.errors import ConfigError
    from resnet_repro.evaluate import evaluate_checkpoint

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    train_tiny(tmp_path, ["trainer.max_iters=2", "trainer.eval_every=2"])
    with pytest.raises(ConfigError, match=r"^device=cuda but no CUDA device is available \(use device=cpu or auto\)$"):
        evaluate_checkpoint(tmp_path, device="cuda")


@pytest.mark.parametrize("overrides, key", [
    (["schedule.plateau.factor=0.5"], "schedule.plateau.factor"),  # the step schedule has no plateau rule
    (["schedule.warmup=null", "+schedule.warmup.lr=0.1"], "schedule.warmup.lr"),
])
def test_an_override_under_a_null_section_is_one_line_and_writes_nothing(tmp_path, overrides, key) -> None:
    # OmegaConf asserts here (a raw AssertionError traceback before).
    r = subprocess.run([sys.executable, "-m", "resnet_repro", "train", *overrides, "logger=none"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: cannot set {key}: ") and r.stderr.count("\n") == 1, r.stderr
    assert list(tmp_path.iterdir()) == []
