"""Atomic file and folder writes: a reader never sees a half-written artifact.

Every artifact tunelab writes goes through here, so a crash, Ctrl-C or a full disk leaves the
previous version in place.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

# mkstemp/mkdtemp create 0600/0700 entries; artifacts should get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
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
def atomic_dir(final: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to `final` only if the block succeeds.

    With replace=True an existing `final` is swapped out only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
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
