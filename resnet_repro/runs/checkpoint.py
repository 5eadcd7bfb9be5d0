"""One checkpoint format: atomic writes, loads that never run code from the file.

A checkpoint is a dict saved with `torch.save`: `format` ("resnet_repro/1"), `meta` (model
name, arch dict, num_classes, iteration) and whatever resume needs (model, optimizer and
schedule state, RNG states, W&B run id). Everything in it must be a tensor or a plain python
value, because it is read back with `torch.load(weights_only=True)`: a checkpoint from
someone else can then be inspected without trusting it.

A `digest` of every tensor's bytes and every value is stored with it and checked on load:
torch's zip format does not notice a flipped byte inside tensor data, this does.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from resnet_repro.atomic import atomic_write
from resnet_repro.errors import CheckpointError
from resnet_repro.runs.rundir import LAST, PREV

FORMAT = "resnet_repro/1"


def checkpoint_meta(
    *, model_name: str, arch: Mapping[str, Any], num_classes: int, iteration: int, data_fingerprint: str = ""
) -> dict[str, Any]:
    """The `meta` entry: what the weights are, how far training got, and on which data (its
    fingerprint: a resumed run may find its data at another path, never other data)."""
    return {
        "model": model_name,
        "arch": dict(arch),
        "num_classes": int(num_classes),
        "iteration": int(iteration),
        "data_fingerprint": data_fingerprint,
    }


def check_same_data(ckpt: Mapping[str, Any], fingerprint: str, where: str) -> None:
    """Refuse to continue a run on data other than its own (checkpoints from before the
    fingerprint existed are not checked)."""
    saved = (ckpt.get("meta") or {}).get("data_fingerprint")
    if saved and fingerprint and saved != fingerprint:
        raise CheckpointError(
            f"the data at {where} is not the data this run trained on (fingerprint {fingerprint}, "
            f"the run's {saved}): point data.root at the same data set"
        )


# --- writing -------------------------------------------------------------------------------


_TORCH_LEAVES = (torch.Tensor, torch.Size, torch.dtype, torch.device)
# Exact types: a numpy float64 is a float subclass but does not load with weights_only.
_PLAIN_LEAVES = (str, bytes, int, float, bool, type(None))


def _check_loadable(v: Any, where: str) -> None:
    # Fail at save time, not weeks later at resume: weights_only loads only these types.
    if isinstance(v, _TORCH_LEAVES) or type(v) in _PLAIN_LEAVES:
        return
    if type(v) in (dict, OrderedDict):
        for k, x in v.items():
            _check_loadable(x, f"{where}[{k!r}]")
    elif type(v) in (list, tuple):
        for i, x in enumerate(v):
            _check_loadable(x, f"{where}[{i}]")
    else:
        raise TypeError(
            f"checkpoint entry {where} is a {type(v).__name__}; only tensors and plain "
            "python values can be loaded with weights_only=True"
        )


def _digest(v: Any, h: Any = None) -> str:
    """blake2b over the checkpoint's content in order: tensor bytes, shapes, dtypes, values."""
    top = h is None
    h = hashlib.blake2b(digest_size=16) if top else h
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(v, Mapping):
        h.update(b"{")
        for k, x in v.items():
            if not (top and k == "digest"):
                h.update(repr(k).encode())
                _digest(x, h)
        h.update(b"}")
    elif isinstance(v, (list, tuple)):
        h.update(b"[")
        for x in v:
            _digest(x, h)
        h.update(b"]")
    else:
        h.update(repr(v).encode())
    return h.hexdigest() if top else ""


def save_checkpoint(path: str | Path, state: Mapping[str, Any], keep_previous: str | Path | None = None) -> None:
    """Write `state` to `path` atomically: a crash or a full disk leaves the old file intact.

    The `format` key is stamped on if missing, and a content `digest` added. With
    `keep_previous`, the file being replaced is first moved there (one fallback generation).
    """
    path = Path(path)
    state = dict(state)
    if state.setdefault("format", FORMAT) != FORMAT:
        raise ValueError(f"checkpoint format must be {FORMAT!r}, got {state['format']!r}")
    _check_loadable(state, "state")
    state.pop("digest", None)
    state["digest"] = _digest(state)
    try:
        with atomic_write(path, "wb", keep_previous=keep_previous) as f:
            torch.save(state, f)
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from e


# --- reading -------------------------------------------------------------------------------

_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(e: BaseException) -> str:
    """One line saying why torch could not read the file, without torch's advice to
    re-run with weights_only=False (which would execute code from the file)."""
    lines = [_ANSI.sub("", ln).strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln]
    useful = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    line = (useful or lines or [""])[0].split(". ")[0]  # first sentence: torch's are long
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def load_checkpoint(path: str | Path, map_location: Any = "cpu", *, any_state_dict: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; never executes code from the file.
    `any_state_dict=True` also accepts a plain dict such as a torchvision weights file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"could not read checkpoint {path}: {e.strerror or e}") from e
    try:
        with f, warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files; the error says enough.
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(f, map_location=map_location, weights_only=True)
    # UnpicklingError, RuntimeError (zip), EOFError, OSError(EINVAL) on a truncated zip, ...
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable resnet_repro checkpoint "
            f"(corrupt, truncated, or not a checkpoint): {_reason(e)}"
        ) from e
    if any_state_dict and isinstance(ckpt, dict) and "format" not in ckpt:
        return ckpt
    _check_format(ckpt, path)
    if "digest" in ckpt and ckpt["digest"] != _digest(ckpt):
        raise CheckpointError(f"{path} is corrupt: its content does not match its digest")
    return ckpt


def _check_format(ckpt: Any, path: str | Path | None) -> None:
    where = f"checkpoint {path}" if path is not None else "checkpoint"
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(
            f"{where} is not a resnet_repro checkpoint (no 'format' key; a bare state_dict?)"
        )
    if ckpt["format"] != FORMAT:
        raise CheckpointError(
            f"{where} has format {ckpt['format']!r}; this version reads {FORMAT!r}"
        )


def resolve_checkpoint_path(p: str | Path) -> Path:
    """A checkpoint file, or a run directory meaning its `checkpoints/last.pt`."""
    p = Path(p)
    if p.is_dir():
        last = p / LAST
        if not last.is_file():
            raise CheckpointError(f"no checkpoint in run directory {p} (expected {last})")
        return last
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


# --- compatibility -------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    # Tuples come back as tuples, config lists as lists: compare them as equal.
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _first_difference(saved: Any, now: Any, prefix: str = "") -> str | None:
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        for key in sorted(set(saved) | set(now), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in now:
                return name
            diff = _first_difference(saved[key], now[key], name)
            if diff is not None:
                return diff
        return None
    return None if _plain(saved) == _plain(now) else (prefix or "<arch>")


def _lookup(d: Mapping[str, Any], dotted: str) -> Any:
    v: Any = d
    for part in dotted.split("."):
        if not isinstance(v, Mapping) or part not in v:
            return "<missing>"
        v = v[part]
    return v


def check_compatible(
    ckpt: Mapping[str, Any],
    *,
    model_name: str,
    arch: Mapping[str, Any],
    path: str | Path | None = None,
) -> None:
    """Refuse a checkpoint whose model differs from the one this run builds."""
    _check_format(ckpt, path)
    where = f"checkpoint {path}" if path is not None else "checkpoint"
    meta = ckpt.get("meta")
    if not isinstance(meta, Mapping) or "model" not in meta or "arch" not in meta:
        raise CheckpointError(f"{where} has no model description ('meta' with model and arch)")
    saved_name, saved_arch = meta["model"], meta["arch"]
    # The architecture decides; a name is a label (older runs kept an exp's model name after
    # an override such as model.depth=8; today a run is named after its network).
    key = _first_difference(saved_arch, arch)
    if key is not None:
        raise CheckpointError(
            f"{where} is for model {saved_name} with {key}={_lookup(saved_arch, key)!r} "
            f"but this run builds {model_name} with {key}={_lookup(arch, key)!r}"
        )


# --- RNG state -----------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """python `random`, numpy's global RNG, torch CPU and CUDA, as tensors and plain values."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "torch": torch.get_rng_state(),
    }
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),  # uint32 words, widened
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured (after a load with any map_location)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"]))
    torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        keys = n["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(
            (n["kind"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
        )
    if "cuda" in state and torch.cuda.is_available():
        # Resuming on fewer GPUs restores the ones that exist.
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


def resume_checkpoint(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest readable checkpoint of a run, or (None, None) for a fresh run."""
    last, prev = run_dir / LAST, run_dir / PREV
    problems = []
    for path in (last, prev):
        if not path.exists():
            continue
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            print(f"note: {problems[0]}; resuming from {path} instead", file=sys.stderr)
        return ckpt, path
    if problems:
        raise CheckpointError(
            f"no readable checkpoint in {run_dir / 'checkpoints'} ({problems[0]}); not training from a broken "
            "state: move the checkpoints away to start over"
        )
    return None, None
