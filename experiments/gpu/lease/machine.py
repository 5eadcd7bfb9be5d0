"""The GPU machine itself: what the numbers were measured on (the environment record) and the
image-folder data decoded into its cache once, before the bench and the sweep."""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import shutil
import subprocess
import time
from typing import Any

from lease.settings import LeaseSettings


def warm_data(s: LeaseSettings) -> None:
    """Decode an image-folder data set into its cache once, before the bench (which would
    otherwise spend its first seconds on it) and the sweep processes (which would all decode it
    at once). Other data sources need nothing."""
    opts = dict(a.split("=", 1) for a in s.data if "=" in a)
    if opts.get("data") != "cifar10_folder" or not opts.get("data.root"):
        return
    from resnet_repro.data.sources import load_image_folder

    t0 = time.monotonic()
    load_image_folder(opts["data.root"], cache_dir=opts.get("data.cache_dir"))
    print(f"data ready in {time.monotonic() - t0:.0f} s", flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def environment(s: LeaseSettings) -> dict[str, Any]:
    """What the numbers were measured on: the GPU line, torch version, date."""
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"({shlex.join(cmd)}: {e})"

    return {
        "date": _now(),
        "nvidia_smi_L": out(["nvidia-smi", "-L"]) if shutil.which("nvidia-smi") else "(no nvidia-smi)",
        "torch": out([s.python, "-c", "import torch; print(torch.__version__, torch.version.cuda)"]),
        "python": out([s.python, "-c", "import platform; print(platform.python_version())"]),
        "git_commit": os.environ.get("LEASE_COMMIT") or out(["git", "rev-parse", "HEAD"]),
        "cpu_count": os.cpu_count(),
        "lease_settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("LEASE_")},
    }
