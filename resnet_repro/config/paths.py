"""Where the Hydra configs live: `conf/` at the top of the repository (an editable install)."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # resnet_repro/config/paths.py -> the repo root
