"""From a data spec (a file or builtin:<task>) to conversations: the entry point for training.

`iter_conversations` streams (one record in memory at a time, see readers.py); the encoded-data
cache (templates/cache.py) reads through it in chunks. `load_conversations` is its list form.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from tunelab.data.formats import detect_format, to_conversation
from tunelab.data.readers import SKIP_HINT, finish, iter_rows, read_rows, skip_hint
from tunelab.data.records import Conversation, Row
from tunelab.errors import TunelabError

log = logging.getLogger("tunelab.data")


def resolve_spec(spec: str | Path, base_dir: str | Path | None = None) -> str | Path:
    """A builtin:<task> spec as is; a file path made absolute against base_dir when relative."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def load_rows(spec: str | Path, *, skip_bad: bool = False, base_dir: str | Path | None = None,
              hint: str = SKIP_HINT) -> list[Row]:
    """Rows of a file, or of a built-in task when spec is builtin:<task>?n=..&seed=..&split=..

    `hint` ends the message of a bad record (see readers.read_rows).
    """
    where = resolve_spec(spec, base_dir)
    if isinstance(where, str):
        from tunelab.data.builtin import load_builtin_rows

        return load_builtin_rows(where)
    return read_rows(where, skip_bad=skip_bad, hint=hint)


def iter_spec_rows(spec: str | Path, skip_bad: bool, base_dir, hint: str, report: list[str] | None = None) -> Iterator[Row]:
    where = resolve_spec(spec, base_dir)
    if isinstance(where, str):
        from tunelab.data.builtin import load_builtin_rows

        yield from load_builtin_rows(where)  # generated in memory (at most 100k rows)
        return
    bad: list[str] = []
    n = 0
    for row in iter_rows(where, skip_bad=skip_bad, hint=hint, bad=bad):
        n += 1
        yield row
    finish(where, n, bad)
    if bad and report is not None:  # also in the caller's notes (e.g. the cache entry's, shown by data prepare)
        report.append(f"{where}: skipped {len(bad)} unreadable record(s); first: {bad[0]}")


def iter_conversations(
    spec: str | Path,
    *,
    format: str = "auto",
    fields: dict[str, str] | None = None,
    skip_bad: bool = False,
    system: str | None = None,
    base_dir: str | Path | None = None,
    report: list[str] | None = None,
    skip_setting: str = "--skip-bad",
) -> Iterator[Conversation]:
    """Read and convert record by record; bad records stop the load unless skip_bad.

    `report`, when given, receives human-readable notes (detected format, skipped records);
    the note on skipped records arrives after the last conversation.
    `skip_setting` is how the caller's user turns skip_bad on (a flag, or data.skip_bad=true).
    """
    skipped, n_ok = [], 0
    for row in iter_spec_rows(spec, skip_bad, base_dir, skip_hint(skip_setting), report):
        if format == "auto":
            format, why = detect_format(row, fields)
            note = f"{spec}: detected format '{format}' because {why}"
            log.info(note)
            if report is not None:
                report.append(note)
        try:
            conv = to_conversation(row, format, fields, system)
        except TunelabError as e:
            if not skip_bad:
                raise TunelabError(f"{e}; {skip_hint(skip_setting)}") from None
            skipped.append(str(e))
            continue
        n_ok += 1
        yield conv
    if skipped:
        note = f"{spec}: skipped {len(skipped)} bad record(s); first: {skipped[0]}"
        log.warning(note)
        if report is not None:
            report.append(note)
    if not n_ok:
        raise TunelabError(f"{spec}: every record was bad; see the first error above and fix the data")


def load_conversations(spec: str | Path, **kw) -> list[Conversation]:
    """Every conversation of `spec` as a list (arguments as iter_conversations)."""
    return list(iter_conversations(spec, **kw))
