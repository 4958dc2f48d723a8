"""Advisory file locks, so that runs sharing a state root or an output folder never corrupt each other."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from nnstudy.errors import NnstudyError


class LockTimeout(NnstudyError):
    """Another nnstudy run held a lock for longer than this run was willing to wait."""


def try_lock(path: Path) -> IO[str] | None:
    """Take an exclusive lock on `path` (created if needed) without waiting; None if another process holds it.

    The lock lasts until the returned handle is closed or the process ends, however it ends.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (the caller owns the handle)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _holder(path: Path) -> str:
    """The process id the lock file names, for messages."""
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def hold(path: Path, *, what: str, timeout: float = 600.0, poll: float = 0.2) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block, waiting at most `timeout` seconds for it."""
    deadline = time.monotonic() + timeout
    while (handle := try_lock(path)) is None:
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"Another nnstudy run (process {_holder(path)}) has been writing {what} for more than "
                f"{timeout:.0f} s (lock file {path}). Wait for it to finish, or give this run another "
                "--out folder; if no nnstudy process is running, the lock is free and a rerun proceeds."
            )
        time.sleep(poll)
    try:
        yield
    finally:
        handle.close()
