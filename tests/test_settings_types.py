"""Every setting of the wrong type ends in one clear line naming it, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from resnet_repro.bench import bench_settings
from resnet_repro.errors import ConfigError
from resnet_repro.schema import run_settings
from conftest import REPO, compose_config

CONFIGS = {"default": [], "imagenet": ["+exp=imagenet_resnet50", "data.root=/nonexistent"]}


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _with(config: dict, key: str, value) -> dict:
    c = OmegaConf.create(config)
    OmegaConf.update(c, key, value)
    return OmegaConf.to_container(c)  # type: ignore[return-value]


def _typed_leaves():
    """(config name, key) of every numeric or boolean leaf of the composed configs."""
    cases = []
    for name, overrides in CONFIGS.items():
        c = OmegaConf.to_container(compose_config(overrides), resolve=True)
        for key, value in _leaves(c):
            if isinstance(value, (bool, int, float)):
                cases.append((name, key))
    return cases


_CONFIG_CACHE: dict[str, dict] = {}


def _config(name: str) -> dict:
    if name not in _CONFIG_CACHE:
        _CONFIG_CACHE[name] = OmegaConf.to_container(compose_config(CONFIGS[name]), resolve=True)  # type: ignore[assignment]
    return _CONFIG_CACHE[name]


@pytest.mark.parametrize("name,key", _typed_leaves())
def test_every_numeric_or_boolean_setting_refuses_a_string(name: str, key: str) -> None:
    config = _with(_config(name), key, "fast")
    with pytest.raises(ConfigError) as e:
        if key.startswith("bench."):
            bench_settings(config["bench"])
        else:
            run_settings(config)
    msg = str(e.value)
    assert msg.startswith(f"{key} must be "), msg  # names exactly this key, first
    assert msg.endswith("got 'fast'") and "\n" not in msg


def test_the_walk_covers_every_group() -> None:
    # Guards the table above: a config change that hid a group from it would pass vacuously.
    groups = {key.split(".")[0] for _, key in _typed_leaves()}
    assert {"model", "data", "optim", "schedule", "trainer", "bench", "seed"} <= groups
    assert any(k.startswith("schedule.plateau.") for _, k in _typed_leaves())
    assert any(k.startswith("schedule.warmup.") for _, k in _typed_leaves())


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("schedule.milestones", [100, "fast"], "schedule.milestones must be a list of integers"),
        ("data.scale", [256], "data.scale must be a list of 2 integers"),  # not the pair §3.4 needs
        ("trainer.max_iters", True, "trainer.max_iters must be an integer"),  # a bool is not a count
        ("model.num_classes", "ten", "model.num_classes must be an integer or null"),
        ("logger.tags", "a", "logger.tags must be a list of strings"),
        ("model.depth", 20.5, "model.depth must be an integer"),
    ],
)
def test_wrong_shapes_are_named(key: str, value, expected: str) -> None:
    base = _config("imagenet") if key.startswith("data.scale") else _config("default")
    with pytest.raises(ConfigError, match=f"^{expected}"):
        run_settings(_with(base, key, value))


def test_ints_stand_for_floats_and_yaml_bools_for_modes() -> None:
    s = run_settings(_with(_with(_config("default"), "schedule.base_lr", 1), "trainer.compile", False))
    assert s.schedule.base_lr == 1 and s.trainer.compile == "false"


def test_range_checks_still_apply() -> None:
    with pytest.raises(ConfigError, match="trainer.max_iters must be a positive integer, got -1"):
        run_settings(_with(_config("default"), "trainer.max_iters", -1))
    with pytest.raises(ConfigError, match="bench.iters must be >= 1"):
        bench_settings({"iters": 0})
    # the schedule's own ranges, refused with the settings (before any data loads)
    with pytest.raises(ConfigError, match=r"warm-up error_threshold must be a fraction in \(0, 1\], got 80"):
        run_settings(compose_config(["+exp=cifar_resnet110", "schedule.warmup.error_threshold=80"]))
    with pytest.raises(ConfigError, match=r"plateau factor must be in \(0, 1\), got 10"):
        run_settings(compose_config(["+exp=imagenet_resnet18", "schedule.plateau.factor=10"]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "schedule.base_lr=fast", "logger=none"], "schedule.base_lr must be a number, got 'fast'"),
        (["eval", "ckpt=/nonexistent", "batch_size=fast"], "batch_size must be an integer, got 'fast'"),
    ],
)
def test_cli_prints_one_line_and_exits_2(tmp_path, argv: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "resnet_repro", *argv],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {message}"


# -- the settings dataclasses are the schema (issue 33, point 4) --------------------------------


def test_hydra_composes_into_the_settings_dataclasses_themselves() -> None:
    from resnet_repro.config.settings import ModelSettings, RunConfig, TrainerSettings, WarmupSettings

    cfg = compose_config(["+exp=cifar_resnet110", "model.depth=56", "trainer.max_iters=10"])
    assert OmegaConf.get_type(cfg.model) is ModelSettings and OmegaConf.get_type(cfg.trainer) is TrainerSettings
    config = OmegaConf.to_object(cfg)  # no parsing of ours in between
    assert isinstance(config, RunConfig)
    assert (config.model.depth, config.model.arch.depth, config.trainer.max_iters) == (56, 56, 10)
    assert config.schedule.warmup == WarmupSettings(enabled=True, lr=0.01, error_threshold=0.8, max_iters=4000)


def test_settings_check_their_own_ranges_whoever_makes_them() -> None:
    from resnet_repro.config.settings import LoggerSettings, OptimSettings, TrainerSettings

    with pytest.raises(ConfigError, match=r"^trainer.batch_size must be a positive integer, got 0$"):
        TrainerSettings(batch_size=0)
    with pytest.raises(ConfigError, match=r"^optim.momentum must be in \[0, 1\)"):
        OptimSettings(momentum=1.0)
    assert LoggerSettings(tags=["a"]).tags == ("a",)  # lists (OmegaConf's) become the declared tuples
    assert TrainerSettings(compile=False).compile == "false"  # a YAML bool means off


def test_the_settings_a_run_gets_are_frozen() -> None:
    import dataclasses

    s = run_settings(_config("default"))
    for section, key in ((s.trainer, "batch_size"), (s.model, "depth"), (s, "seed")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, key, 1)


def test_an_optimiser_we_do_not_build_is_refused() -> None:
    # Before the settings were the schema, optim.name was read by nothing: adam trained SGD.
    with pytest.raises(ConfigError, match=r"^optim.name must be sgd .*got 'adam'$"):
        run_settings(_with(_config("default"), "optim.name", "adam"))


@pytest.mark.parametrize("group", [0, 1, -64])
def test_a_bn_group_below_two_is_one_line_before_the_batch_is_divided_by_it(group: int) -> None:
    with pytest.raises(ConfigError, match=rf"^bn_group_size must be an integer >= 2 \(or null for ordinary BN\), got {group}$"):
        run_settings(_with(_config("default"), "model.bn_group_size", group))


def test_the_model_section_checks_the_architecture_itself_and_first() -> None:
    from resnet_repro.config.archs import Arch

    with pytest.raises(ConfigError, match=r"^CIFAR ResNet depth must be 6n\+2 .*got 21$"):
        Arch("cifar", 21)  # no torch, no model built
    with pytest.raises(ConfigError, match=r"^plain nets have no shortcuts"):
        Arch("imagenet", 34, residual=False, shortcut="B")
    # model is the config's first section: its faults are named before the others'
    bad = _with(_with(_config("default"), "model.depth", 21), "trainer.batch_size", 0)
    with pytest.raises(ConfigError, match=r"^CIFAR ResNet depth must be 6n\+2"):
        run_settings(bad)
