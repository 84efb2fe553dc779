"""Atomic file and folder writes: a reader never sees a half-written artifact.

Every artifact tunelab writes goes through here, so a crash, Ctrl-C or a full disk leaves the
previous version in place.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from tunelab.errors import TunelabError


# ---------------------------------------------------------------- permissions
# mkstemp/mkdtemp (and libraries that write through them: safetensors, gguf) create 0600/0700
# entries; an artifact must get the mode a plain open() would give it, so that another user (an
# Ollama server, a colleague reading a run folder) can read it when the umask allows.
def umask() -> int:
    """The process's umask, read when called (a caller may set it after tunelab is imported)."""
    try:  # Linux: readable without changing it (os.umask(0) would briefly affect other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def set_usual_mode(path: str | os.PathLike, mask: int | None = None) -> None:
    """Give `path` the mode open()/mkdir() would have given it under the umask (`mask`)."""
    mask = umask() if mask is None else mask
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    # folders and executables keep their x bits; other files get rw for whoever the umask allows
    full = 0o777 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o666
    os.chmod(path, full & ~mask)


def set_usual_modes(root: str | os.PathLike) -> None:
    """set_usual_mode on `root` and everything under it (a folder written by libraries)."""
    mask = umask()
    set_usual_mode(root, mask)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            set_usual_mode(os.path.join(dirpath, name), mask)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks (model weights are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_writable(path: str | os.PathLike, *, setting: str, folder: bool = True) -> Path:
    """Fail early, before any model loads, when `path` cannot be written; return it.

    Walks up to the first existing ancestor: a file there means the folder cannot be made, and a
    probe file created and removed in it proves the permission (os.access says yes to root even
    on a read-only mount). `setting` names the parameter or key to change, e.g. "out"; the CLI shows its flag instead.
    """
    from tunelab.errors import ParameterError

    path = Path(path).expanduser()
    name = "{" + setting + "}"  # a ParameterError placeholder: the CLI shows its flag there
    fix = f"choose another {name}"
    if path.exists():
        if folder and not path.is_dir():
            raise ParameterError(f"{path}: is a file, but {name} needs a folder; {fix}", setting)
        if not folder and path.is_dir():
            raise ParameterError(f"{path}: is a folder, but {name} needs a file path; {fix}", setting)
    target = path if folder and path.is_dir() else path.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise ParameterError(f"{path}: cannot be created because {target} is a file, not a folder; {fix}", setting)
    try:
        fd, probe = tempfile.mkstemp(prefix=".tunelab-write-test.", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ParameterError(f"{path}: cannot write in {target} ({e.strerror or e}); {fix} "
                             "or make that folder writable", setting) from None
    return path


# ---------------------------------------------------------------- failed writes (a full disk)
# errno values of "no room": the disk, the user's quota, the largest file the system allows
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# how other writers say it: torch.save (a RuntimeError from its zip writer, e.g. "[enforce fail at
# inline_container.cc:672] . unexpected pos 1234 vs 1170"), safetensors (Rust's io::Error), SQLite
_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed", "file write failed", "No space left on device",
                 "StorageFull", "database or disk is full", "Disk quota exceeded")


class WriteFailed(TunelabError):
    """Writing `path` failed (usually a full disk); the earlier version of it is intact."""

    def __init__(self, path: Path, need: int | None, cause: BaseException):
        self.path, self.need = Path(path), need
        free = _free_bytes(self.path)
        room = free is not None and need is not None and free < need
        why = "the disk is full" if room or _no_room(cause) else f"{_first_line(cause)}"
        space = f" (it needs at least {_size(need)}; {_size(free)} free there)" if need and free is not None else ""
        super().__init__(f"{self.path}: could not be written: {why}{space}; free some space or write it elsewhere "
                         "(a run folder can be moved and resumed); the earlier files there are intact")


def _no_room(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _NO_ROOM or any(m in str(e) for m in _WRITE_FAILED[3:])


def is_write_failure(e: BaseException) -> bool:
    """True when `e` (or an exception it came from) says a write failed for want of room."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, WriteFailed) or _no_room(e) or any(m in str(e) for m in _WRITE_FAILED):
            return True
        e = e.__cause__ or e.__context__
    return False


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the disk that holds `path` (its first existing ancestor)."""
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        return shutil.disk_usage(target).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def tree_bytes(path: Path) -> int:
    """Bytes in the files under `path` (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


@contextlib.contextmanager
def write_errors(path: str | os.PathLike, need: int | None = None) -> Iterator[None]:
    """Turn a failed write inside the block (OSError ENOSPC, torch's RuntimeError, SQLite's "disk is
    full") into one WriteFailed line naming `path` and the space it needs; other errors pass."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as e:
        if not is_write_failure(e):
            raise
        raise WriteFailed(Path(path), need, e) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    with write_errors(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            set_usual_mode(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(path, text)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, replace: bool = True, expect: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to `final` only if the block succeeds.

    With replace=True an existing `final` is swapped out only after the new one is complete.
    A write that fails for want of room raises WriteFailed naming `final` and the space it needs
    (`expect`: the expected size in bytes, e.g. the previous checkpoint's, when known).
    """
    final = Path(final)
    with write_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        try:
            yield tmp
        except Exception as e:
            if not is_write_failure(e):
                raise
            # the space it needs: what was written before the disk filled, or the size of the
            # version it replaces, whichever is larger (a checkpoint: the size of the last one)
            written = tree_bytes(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise WriteFailed(final, max(written, tree_bytes(final), expect or 0), e) from None
        set_usual_modes(tmp)  # what libraries wrote inside (safetensors: 0600) and the folder itself
        if final.exists():
            if not replace:
                raise FileExistsError(final)
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
