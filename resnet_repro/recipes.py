"""The paper rows' recipes: each row's exp composed with no overrides (`+exp=cifar_resnet20`)
and turned into typed settings. Part of the entry layer (it reads the Hydra config, as train.py
and the report's command do); `judge` compares the typed results.
"""

from __future__ import annotations

import functools

from resnet_repro.paper import judge
from resnet_repro.config.paths import CONF_DIR


def _compose(exp: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from resnet_repro.hydra_entry import register_resolvers

    register_resolvers()
    overrides = [f"+exp={exp}"]
    if GlobalHydra.instance().is_initialized():  # inside `train`/`eval`'s Hydra app: its search path is conf/
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@functools.cache
def reference(row: str) -> judge.Recipe | None:
    """The recipe of paper row `row` (an exp name, e.g. "cifar_resnet20"), or None when no exp
    of that name exists or it does not compose on its own (the fine-tuning exp needs weights)."""
    from resnet_repro.errors import ReproError
    from resnet_repro.schema import run_settings

    if row not in judge.NAMED_MODELS or not (CONF_DIR / "exp" / f"{row}.yaml").is_file():
        return None
    try:
        return judge.recipe(run_settings(_compose(row)))
    except ReproError:
        return None
