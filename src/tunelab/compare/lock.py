"""Locks of a compare folder: one per arm (one worker trains an arm), and the folder's own for setup and gathering.

The lock is an OS advisory lock (fcntl.flock) on `<dir>/.compare.lock`, not the file's mere
existence: the kernel drops it when the process dies, however it dies, so a lock file left by a
killed compare is detected as stale (nobody holds it) and simply taken over. The pid written into
the file is there for the message a second compare prints.

Workers of one compare (`tunelab compare CONFIG --arm ID` on several machines that share the
folder) take the folder lock only briefly, waiting for each other: to write the plan and the
training subsets, and to gather the table. Each arm has its own lock in `arms/<id>/.arm.lock`:
a worker that finds an arm's lock held skips that arm (plain compare) or stops (`--arm`).
flock works across machines on NFSv4 and Lustre, not on every shared file system (docs/scale.md).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from tunelab.errors import TunelabError


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


class ArmBusy(TunelabError):
    """Another worker holds this arm's lock (plain `tunelab compare` skips the arm; `--arm` stops)."""


@contextlib.contextmanager
def folder_lock(folder: Path, name: str = ".compare.lock", *, wait: bool = False,
                busy: Optional[Callable[[Path, str], TunelabError]] = None) -> Iterator[Path]:
    """Hold the folder's lock for the block.

    `wait`: block until the holder lets go (for the short setup and gathering steps that every
    worker of a compare goes through); otherwise a second holder gets `busy(folder, holder)`, by
    default a one-line TunelabError.
    """
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
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            if busy is not None:
                raise busy(folder, _holder(path)) from None
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


ARM_LOCK = ".arm.lock"


def arm_lock(arm_dir: Path, arm_id: str):
    """One worker per arm: a second one gets ArmBusy naming the holder (workers on other arms go on)."""
    def busy(folder: Path, holder: str) -> ArmBusy:
        return ArmBusy(f"arm {arm_id}: another worker ({holder}) is running it in {folder}; "
                       "run another arm, or wait and run `tunelab compare CONFIG` to gather the table")

    return folder_lock(arm_dir, ARM_LOCK, busy=busy)
