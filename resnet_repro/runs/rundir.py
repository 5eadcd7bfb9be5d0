"""A run directory's safety: one process at a time, and which checkpoint to resume from.

- `RunLock`: an exclusive `flock` on `<run>/.lock`. The kernel drops it when the holder exits,
  however it exits (kill -9 included), so a dead run never blocks its directory.
- `set_aside_unreadable_last`: after a resume from `checkpoints/prev.pt` (checkpoint.py's
  `resume_checkpoint` falls back to it when last.pt is torn or corrupt), moves the broken
  last.pt aside (kept), so that the next checkpoint's rotation cannot move it onto prev.pt.
- `results_signature` / `undo_refused`: a refused command (one that changed no result) leaves
  the file system as it found it: it removes only what it created, never a dir that existed.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import time
from pathlib import Path

from resnet_repro import atomic
from resnet_repro.errors import CheckpointError, ReproError

# A run's checkpoints, inside its directory (here, not in checkpoint.py, so that torch-free
# readers such as `report` can look for them).
LAST = Path("checkpoints") / "last.pt"
PREV = Path("checkpoints") / "prev.pt"  # the one before, kept as a fallback
CONFIG_FILE = "config.yaml"  # the run's resolved config (its recipe), beside summary.json


class RunDirInUse(ReproError):
    """Another process holds the run dir's lock."""


class RunLock:
    """Hold `<run_dir>/.lock` for the life of a run; a second holder is refused."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirInUse(
                f"run dir {self.path.parent} is in use by process {holder}; wait for it to finish, "
                "or choose another hydra.run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of checkpoint writes that a killed process never finished."""
    for tmp in glob.glob(str(run_dir / "checkpoints" / "*.tmp-*")):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def set_aside_unreadable_last(run_dir: Path) -> Path | None:
    """After a resume from prev.pt: move the unreadable last.pt out of the rotation (kept, never
    deleted), so that the next checkpoint does not rotate it onto prev.pt, the one good copy."""
    last = run_dir / LAST
    if not last.exists():
        return None
    aside = last.with_name(f"{last.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(last, aside)
    except OSError as e:
        raise CheckpointError(f"could not set the unreadable {last} aside: {e.strerror or e}; move it away "
                              f"yourself (its fall-back {run_dir / PREV} is readable)") from None
    atomic.fsync_dir(last.parent)
    return aside


def write_text_atomic(path: Path, text: str) -> None:
    """`atomic.write_text`, its failures one `ReproError` line (the old file stays intact)."""
    try:
        atomic.write_text(path, text)
    except OSError as e:
        blocker = next((p for p in path.parents if os.path.lexists(p)), None)  # never raises
        why = f"{blocker} is a file, not a folder" if blocker is not None and not os.path.isdir(blocker) else e.strerror or e
        raise ReproError(f"could not write {path}: {why}") from None


RESULT_FILES = ("metrics.jsonl", "summary.json", str(LAST), str(PREV))


def results_signature(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of a run's results: a command that changed none of them trained nothing."""
    sig = {}
    for rel in RESULT_FILES:
        try:
            st = (run_dir / rel).stat()
        except OSError:
            continue
        sig[rel] = (st.st_size, st.st_mtime_ns)
    return sig


def read_folder(path: Path) -> dict[str, bytes | None] | None:
    """The entries directly in `path` (Hydra's `.hydra/` record: three small YAML files): a
    plain file's bytes, None for anything else there (a link, a folder, an unreadable file),
    so that `restore_folder` keeps it; None when `path` is not a folder."""
    if not path.is_dir():
        return None
    out: dict[str, bytes | None] = {}
    for p in path.iterdir():
        out[p.name] = None
        if p.is_file() and not p.is_symlink():
            try:
                out[p.name] = p.read_bytes()
            except OSError:
                pass
    return out


def restore_folder(path: Path, saved: dict[str, bytes | None] | None) -> None:
    """Put `path` back as `read_folder` found it: its files' bytes, files it did not have
    removed, the folder itself removed when it did not exist (only if then empty)."""
    if saved is None:
        if path.is_dir():
            for p in path.iterdir():
                if p.is_file() or p.is_symlink():
                    p.unlink(missing_ok=True)
            try:
                path.rmdir()
            except OSError:
                pass
        return
    if not path.is_dir():
        return
    for p in path.iterdir():
        if p.name not in saved and (p.is_file() or p.is_symlink()):
            p.unlink(missing_ok=True)
    for name, data in saved.items():
        if data is None:  # not a file we read: left as it is
            continue
        try:
            if (path / name).read_bytes() == data:
                continue
        except OSError:
            pass
        with atomic.atomic_write(path / name, "wb") as f:
            f.write(data)


def undo_refused(run_dir: Path, existed: bool, entries: frozenset[str], created_top: Path | None) -> None:
    """Remove what a refused command created in and above `run_dir`: the entries it added (its
    `.hydra/` record, config.yaml, `.lock`, an empty `checkpoints/`), then the dir and the parents
    it created, each only if empty. A dir that existed before keeps its entries."""
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            if p.name in entries:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    if existed or created_top is None:
        return
    d = run_dir
    while True:
        try:
            d.rmdir()  # only if empty: another process's files stay
        except OSError:
            return
        if d == created_top or d.parent == d:
            return
        d = d.parent
