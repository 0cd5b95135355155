"""One advisory file lock for read-modify-write of small shared files (the review list, a scene's verdicts).

The lock is an exclusive ``fcntl.flock`` on a separate lock file, held for the ``with`` block. Locks are per open
file, so two threads of one process exclude each other as two processes do; the kernel drops the lock of a killed
process, so a crash never leaves a stale lock. The lock file itself is left in place (deleting it could let two
holders lock two different files).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created, with its folder, when missing) for the ``with`` block."""
    p = Path(lock_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
