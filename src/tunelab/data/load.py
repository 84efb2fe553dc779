"""From a data spec (a file or builtin:<task>) to conversations: the entry point for training.

`iter_conversations` streams (one record in memory at a time, see readers.py); the encoded-data
cache (templates/cache.py) reads through it in chunks. `load_conversations` is its list form.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from tunelab.data.formats import detect_format, to_conversation
from tunelab.data.readers import SKIP_HINT, converted, iter_spec_rows, read_rows, resolve_spec, skip_hint
from tunelab.data.records import Conversation, Row
from tunelab.errors import TunelabError

log = logging.getLogger("tunelab.data")


def load_rows(spec: str | Path, *, skip_bad: bool = False, base_dir: str | Path | None = None,
              hint: str = SKIP_HINT, named_in: str | None = None) -> list[Row]:
    """Rows of a file, or of a built-in task when spec is builtin:<task>?n=..&seed=..&split=..

    `hint` ends the message of a bad record (see readers.read_rows); `named_in`, the file whose
    folder is base_dir, is named when the file is not found (readers.resolve_spec).
    """
    where = resolve_spec(spec, base_dir, named_in)
    if isinstance(where, str):
        from tunelab.data.builtin import load_builtin_rows

        return load_builtin_rows(where)
    return read_rows(where, skip_bad=skip_bad, hint=hint)


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
    def detected(rows: Iterator[Row]) -> Iterator[Row]:  # the format, told from the first record
        nonlocal format
        for row in rows:
            if format == "auto":
                format, why = detect_format(row, fields)
                note = f"{spec}: detected format '{format}' because {why}"
                log.info(note)
                if report is not None:
                    report.append(note)
            yield row

    def convert(row: Row) -> Conversation:
        if format == "chosen":
            return chosen_conversation(row, fields, system)
        return to_conversation(row, format, fields, system)

    rows = detected(iter_spec_rows(spec, skip_bad, base_dir, skip_hint(skip_setting), report))
    yield from converted(rows, convert, spec=spec, skip_bad=skip_bad, skip_setting=skip_setting, report=report)


def chosen_conversation(row: Row, fields: dict[str, str] | None, system: str | None) -> Conversation:
    """Format `chosen`: a preference pair's prompt and CHOSEN answer as a conversation (SFT on the
    preferred answers, the baseline next to DPO); the pair is checked as method: dpo checks it."""
    from tunelab.data.preference import to_pair

    pair = to_pair(row, fields, system)
    return Conversation(pair.id, pair.prompt + [{"role": "assistant", "content": pair.chosen}], pair.source)


def load_conversations(spec: str | Path, **kw) -> list[Conversation]:
    """Every conversation of `spec` as a list (arguments as iter_conversations)."""
    return list(iter_conversations(spec, **kw))
