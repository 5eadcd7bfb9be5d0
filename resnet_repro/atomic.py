"""The one way files are written here: to a temp file beside the target, flushed and fsynced,
then renamed over it (atomic on POSIX), and the rename made durable with an fsync of the
folder. A reader sees the old file or the new one, never half of one; a crash or a full disk
mid-write leaves the old file intact and removes the temp file.

Temp files are named `<name>.tmp-<pid>` (what `rundir.remove_stale_temp_files` clears).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def fsync_dir(directory: Path) -> None:
    """Makes a rename in `directory` durable; not every filesystem allows opening a folder."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, keep_previous: str | Path | None = None) -> Iterator[IO[Any]]:
    """`with atomic_write(p, "w") as f: f.write(...)` replaces `p` only once the block ends
    without an exception. With `keep_previous`, the file being replaced is first moved there
    (one fallback generation; a crash between the two renames leaves only that one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)
