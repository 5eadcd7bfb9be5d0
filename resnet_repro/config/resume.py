"""Which config a resumed run continues with: its saved config, and only the settings that may
change on resume (where the data lies, how long, how often, how it is logged). Works on plain
dicts; `train` calls it before anything is built."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from resnet_repro.errors import ConfigError

# Settings a resumed run may change: where the data lies, how long, how often, where, in which
# precision, and how it is logged.
# Everything else (model, data, recipe, seed, batch) must match the run being continued.
RESUMABLE_KEYS = (
    "data.root",  # the data may move (another node, another mount): its fingerprint must match
    "data.cache_dir",
    "data.decode",  # ImageNet: both input paths make the same per-image draws
    "data.workers",
    "trainer.max_iters",
    "trainer.eval_every",
    "trainer.log_every",
    "trainer.ckpt_every",
    "trainer.eval_batch_size",
    "trainer.device",
    "trainer.progress",
    "trainer.compile",
    # Precision is not recipe (judge.py): a run may go on in another one, as `auto` does on
    # another machine; summary.json's precision_history says which iterations trained in which.
    "trainer.amp",
    "trainer.channels_last",
    "trainer.max_skipped_steps",
    "trainer.max_time",  # when this process pauses: the recipe keeps its max_iters
    "trainer.pause_at",
    "logger",
    "bench",
    "resume",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def is_resumable(key: str) -> bool:
    """May this setting (a dotted key) change when a run resumes?"""
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def reconcile_resume(composed: dict[str, Any], saved: dict[str, Any], overrides: list[str], explicit_resume: bool) -> dict[str, Any]:
    """The config a resumed run continues with.

    `resume=<dir>`: the saved config, plus command-line overrides of RESUMABLE_KEYS only.
    Re-running into an existing run dir: the composed config must equal the saved one outside
    RESUMABLE_KEYS. Anything else is refused, so a run dir never mixes two recipes. A setting the
    saved config lacks and the command does not name is one a newer version added (e.g.
    `trainer.tf32`): its default applies, so runs started before it still resume.
    """
    if explicit_resume:
        merged = OmegaConf.create(saved)
        for item in overrides:
            key = item.split("=", 1)[0].lstrip("+~")
            if key.startswith("hydra.") or key == "resume":
                continue
            if not is_resumable(key):
                raise ConfigError(
                    f"{item.lstrip('+~')!r} cannot change when resuming (the run continues with its saved settings); "
                    f"only {', '.join(k for k in RESUMABLE_KEYS if k != 'resume')} may"
                )
            OmegaConf.update(merged, key, OmegaConf.select(OmegaConf.create(composed), key), force_add=True)
        return OmegaConf.to_container(merged)  # type: ignore[return-value]
    new, old = _flatten(composed), _flatten(saved)
    named = {item.split("=", 1)[0].lstrip("+~") for item in overrides}
    # The data set or model that differs is named before any of its settings that follow.
    for key in sorted(set(new) | set(old), key=lambda k: (not (k.endswith(".name") or k == "exp_name"), k)):
        if key not in old and key not in named:
            continue  # added by a newer version: its default applies
        if not is_resumable(key) and new.get(key, "<unset>") != old.get(key, "<unset>"):
            raise ConfigError(
                f"this run dir was started with {key}={old.get(key, '<unset>')!r} but this command sets "
                f"{new.get(key, '<unset>')!r}; use the same settings, `train resume=<dir>` to continue with "
                "the saved ones, or a new run dir"
            )
    return composed
