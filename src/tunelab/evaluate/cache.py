"""An optional SQLite request cache: a rerun with the same model and task is near-instant.

A request's key is the SHA-256 of the model's weight hash, the adapter's hash, the request kind
and the request itself (the exact prompt text plus generation settings, or the context plus
continuations), so any change to the model, the template, the demonstrations or the settings is
a miss rather than a stale hit. Values are JSON (never pickle). Each `put_many` is one SQLite
transaction: a crash leaves either all of a batch's entries or none. A backend that stops part-way
(an endpoint that went silent: infer.protocol.Unfinished) hands over the answers it has; they are
stored before the error goes on, so the same command resumes from them.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Optional

from tunelab import paths
from tunelab.errors import TunelabError
from tunelab.infer.protocol import Unfinished
from tunelab.io import write_errors

CACHE_FILE = "cache.sqlite"


def default_path() -> Path:
    return paths.home() / CACHE_FILE


class RequestCache:
    """get/put JSON values by request, scoped to one model (+ adapter)."""

    def __init__(self, model_sha256: str, adapter_sha256: Optional[str] = None, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = f"{model_sha256}|{adapter_sha256 or '-'}"
        # timeout: several processes (sharded eval) may write at once; SQLite serialises them.
        with write_errors(self.path):
            self._db = sqlite3.connect(str(self.path), timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        self.hits = 0
        self.misses = 0

    def key(self, kind: str, request: Any) -> str:
        blob = json.dumps([self.scope, kind, request], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for s in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[s : s + 500]
            marks = ",".join("?" * len(chunk))
            for k, v in self._db.execute(f"SELECT key, value FROM requests WHERE key IN ({marks})", chunk):
                found[k] = json.loads(v)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items]
        # a full disk: one line naming the cache file; the transaction is rolled back, earlier rows stay
        with write_errors(self.path, sum(len(k) + len(v) for k, v in rows)), self._db:  # one transaction
            self._db.executemany("INSERT OR REPLACE INTO requests (key, value) VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


def cached_call(cache: Optional[RequestCache], kind: str, requests: list[Any], compute) -> list[Any]:
    """`compute(missing_requests) -> values` runs only on the requests the cache does not hold.

    When compute raises Unfinished, the answers it carries are stored (they are the backend's
    values, which compute passes on as they are, JSON-equal) and the error says so in its line.
    """
    if cache is None:
        try:
            return compute(requests)
        except Unfinished as e:
            if not e.done:
                raise
            raise TunelabError(f"{e}; the {len(e.done)} of {e.total} answers that came are not kept: with --cache "
                               "they are, and the same command goes on from them", exit_code=e.exit_code) from None
    keys = [cache.key(kind, r) for r in requests]
    found = cache.get_many(keys)
    todo = [i for i, k in enumerate(keys) if k not in found]
    if todo:
        try:
            fresh = compute([requests[i] for i in todo])
        except Unfinished as e:
            cache.put_many((keys[todo[j]], v) for j, v in e.done.items())
            raise TunelabError(f"{e}; {len(found) + len(e.done)} of {len(keys)} answers are kept in the request "
                               f"cache ({cache.path}): the same command goes on from them", exit_code=e.exit_code) from None
        cache.put_many((keys[i], v) for i, v in zip(todo, fresh))
        for i, v in zip(todo, fresh):
            found[keys[i]] = v
    return [found[k] for k in keys]
