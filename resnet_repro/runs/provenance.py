"""Where and with what a number was measured: recorded beside every result (summary.json,
bench JSON), so speed, accuracy and memory always travel with their settings."""

from __future__ import annotations

import functools
import os
import platform
import resource
import subprocess
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The package's git commit, with `-dirty` when tracked files have changes: read once per
    process (the trainer asks at its start), so a record names the code that was loaded, not a
    checkout that moved on while the run trained."""
    here = Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, str]:
    """What every record names: the device, torch, python and the package's commit."""
    return {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": git_commit()}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what): the GPU allocator's peak since the last reset, else the process's peak
    RSS over its whole life (ru_maxrss, KiB on Linux; it cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short digest of a model's weights and BN statistics (names, dtypes, shapes, bytes):
    summary.json and eval_*.json both carry it, so an evaluation names the weights it measured."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
