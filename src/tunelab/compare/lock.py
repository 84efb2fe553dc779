"""One writer per compare folder: a lock file that holds the writer's pid.

The lock is an OS advisory lock (fcntl.flock) on `<dir>/.compare.lock`, not the file's mere
existence: the kernel drops it when the process dies, however it dies, so a lock file left by a
killed compare is detected as stale (nobody holds it) and simply taken over. The pid written into
the file is there for the message a second compare prints.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from tunelab.errors import TunelabError


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def folder_lock(folder: Path, name: str = ".compare.lock") -> Iterator[Path]:
    """Hold the folder's lock for the block; a second holder gets a one-line TunelabError."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one writer is then the user's responsibility
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TunelabError(f"{folder}: another compare ({_holder(path)}) is writing this folder; wait for it to "
                               "finish, or set out=<another folder> to run this one beside it") from None
        # the lock is ours (a pid left in the file by a dead compare is stale and overwritten)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
