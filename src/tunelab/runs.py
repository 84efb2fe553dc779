"""The run registry: every train / eval / compare / safety run, one row each, in $TUNELAB_HOME/runs.sqlite.

    rid = runs.start("train", name="dates-lora", path="runs/dates", task="builtin:dates", model="default")
    runs.finish(rid, "completed", metric="eval_loss", value=1.23, signature=None)
    runs.record("eval", name="e", path="runs/e", task="dates", model="smollm2", metric="exact_match",
                value=0.41, signature="tunelab 0.1.0|...", started=t0)          # start + finish at once
    runs.list_runs(kind="eval", task="dates", limit=20)   # newest first
    runs.get_run(7)

A base-layer module (it imports only paths and errors), so training, evaluation, safety and compare
all record without importing each other. Recording must never fail a run: every registry write
catches the database's errors and turns them into one warning, and returns None.

Several tunelab processes may write at once (a compare in one terminal, an eval in another): the
database is in WAL mode (readers never block the writer) with a busy timeout, every write is one
short autocommit statement, and a write that still finds the database locked is retried with
backoff before it gives up with a warning.
"""
from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from tunelab import paths
from tunelab.errors import TunelabError

DB_FILE = "runs.sqlite"
KINDS = ("train", "eval", "compare", "safety")
STATUSES = ("running", "completed", "failed", "interrupted", "stopped")
BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another process's write to finish
RETRIES = 5  # then backs off and tries again; a locked database after that is a warning, not a failure

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    name      TEXT,
    task      TEXT,
    model     TEXT,
    path      TEXT,
    status    TEXT NOT NULL,
    started   TEXT NOT NULL,
    finished  TEXT,
    metric    TEXT,
    value     REAL,
    signature TEXT
);
CREATE INDEX IF NOT EXISTS runs_kind ON runs(kind);
"""
COLUMNS = ("id", "kind", "name", "task", "model", "path", "status", "started", "finished", "metric", "value",
           "signature")

__all__ = ["Run", "start", "finish", "record", "list_runs", "get_run", "db_path", "KINDS"]


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    name: Optional[str]
    task: Optional[str]
    model: Optional[str]
    path: Optional[str]
    status: str
    started: str  # ISO 8601, UTC
    finished: Optional[str]
    metric: Optional[str]  # the run's main metric and its value
    value: Optional[float]
    signature: Optional[str]


def db_path() -> Path:
    return paths.home() / DB_FILE


def _now(ts: Optional[float] = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    path = db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: autocommit, so each statement is its own short transaction
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")  # persistent: set once per database file
        con.executescript(_SCHEMA)
        yield con
    finally:
        con.close()


def _write(what: str, sql: str, args: tuple) -> Optional[int]:
    """Run one write with retries; a registry problem is a warning, never an exception."""
    for attempt in range(RETRIES):
        try:
            with _connect() as con:
                return con.execute(sql, args).lastrowid
        except sqlite3.OperationalError as e:
            # WAL set-up and schema creation can meet SQLITE_BUSY without the busy handler
            # (two processes creating the database at once): back off and try again
            if "locked" in str(e) or "busy" in str(e):
                if attempt < RETRIES - 1:
                    time.sleep(0.05 * (2 ** attempt) * (1 + random.random()))
                    continue
            _warn(what, e)
            return None
        except (sqlite3.Error, OSError) as e:
            _warn(what, e)
            return None
    return None


def _warn(what: str, e: Exception) -> None:
    warnings.warn(f"run registry {db_path()}: could not {what} ({e}); the run itself is unaffected",
                  RuntimeWarning, stacklevel=3)


def _text(v) -> Optional[str]:
    return None if v is None else str(v)


def _abspath(path) -> Optional[str]:
    return None if path is None else os.path.abspath(os.fspath(path))


def start(kind: str, *, name=None, path=None, task=None, model=None, signature=None,
          started: Optional[float] = None) -> Optional[int]:
    """Record a run as `running`; returns its id (None if the registry could not be written)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")  # a bug in the caller
    return _write("record the run", "INSERT INTO runs (kind, name, task, model, path, status, started, signature) "
                  "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                  (kind, _text(name), _text(task), _text(model), _abspath(path), _now(started), _text(signature)))


def finish(run_id: Optional[int], status: str = "completed", *, metric=None, value=None, signature=None,
           path=None) -> None:
    """Close a run started with `start` (a None id, from a failed start, is ignored)."""
    if run_id is None:
        return
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    _write("record the run's end",
           "UPDATE runs SET status = ?, finished = ?, metric = COALESCE(?, metric), value = COALESCE(?, value), "
           "signature = COALESCE(?, signature), path = COALESCE(?, path) WHERE id = ?",
           (status, _now(), _text(metric), value, _text(signature), _abspath(path), int(run_id)))


def record(kind: str, *, metric=None, value=None, status: str = "completed", started: Optional[float] = None,
           **about) -> Optional[int]:
    """Record a finished run in one call (`started`: its start as a time.time() value).

    `about`: what `start` takes to describe the run (name, path, task, model, signature)."""
    rid = start(kind, **about, started=started)
    finish(rid, status, metric=metric, value=value)
    return rid


# ---------------------------------------------------------------- reading
def _read(sql: str, args: tuple) -> list[Run]:
    if not db_path().is_file():
        return []
    try:
        with _connect() as con:
            return [Run(*row) for row in con.execute(sql, args).fetchall()]
    except sqlite3.Error as e:
        raise TunelabError(f"{db_path()}: cannot read the run registry ({e}); move the file away to start a new one") from None


def list_runs(*, kind: Optional[str] = None, task: Optional[str] = None, model: Optional[str] = None,
              limit: Optional[int] = 20) -> list[Run]:
    """Runs, newest first; `task` and `model` match any part of the stored text (case-insensitive)."""
    if kind is not None and kind not in KINDS:
        raise TunelabError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if limit is not None and limit < 1:
        raise TunelabError(f"-n must be at least 1, got {limit}")
    where, args = [], []
    if kind:
        where.append("kind = ?")
        args.append(kind)
    for col, v in (("task", task), ("model", model)):
        if v:
            where.append(f"{col} LIKE ? ESCAPE '\\'")
            args.append("%" + v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    sql = f"SELECT {', '.join(COLUMNS)} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"  # ids grow with time: newest first without trusting clocks
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return _read(sql, tuple(args))


def get_run(run_id: int) -> Run:
    found = _read(f"SELECT {', '.join(COLUMNS)} FROM runs WHERE id = ?", (int(run_id),))
    if not found:
        raise TunelabError(f"no run with id {run_id} in {db_path()}; `tunelab runs list` shows the ids")
    return found[0]
