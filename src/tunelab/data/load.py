"""From a data spec (a file or builtin:<task>) to conversations: the entry point for training."""
from __future__ import annotations

import logging
from pathlib import Path

from tunelab.data.formats import detect_format, to_conversation
from tunelab.data.readers import SKIP_HINT, read_rows, skip_hint
from tunelab.data.records import Conversation, Row
from tunelab.errors import TunelabError

log = logging.getLogger("tunelab.data")


def load_rows(spec: str | Path, *, skip_bad: bool = False, base_dir: str | Path | None = None,
              hint: str = SKIP_HINT) -> list[Row]:
    """Rows of a file, or of a built-in task when spec is builtin:<task>?n=..&seed=..&split=..

    `hint` ends the message of a bad record (see readers.read_rows).
    """
    spec = str(spec)
    if spec.startswith("builtin:"):
        from tunelab.data.builtin import load_builtin_rows

        return load_builtin_rows(spec)
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return read_rows(path, skip_bad=skip_bad, hint=hint)


def load_conversations(
    spec: str | Path,
    *,
    format: str = "auto",
    fields: dict[str, str] | None = None,
    skip_bad: bool = False,
    system: str | None = None,
    base_dir: str | Path | None = None,
    report: list[str] | None = None,
    skip_setting: str = "--skip-bad",
) -> list[Conversation]:
    """Read and convert every record; bad records stop the load unless skip_bad.

    `report`, when given, receives human-readable notes (detected format, skipped records).
    `skip_setting` is how the caller's user turns skip_bad on (a flag, or data.skip_bad=true).
    """
    rows = load_rows(spec, skip_bad=skip_bad, base_dir=base_dir, hint=skip_hint(skip_setting))
    if format == "auto":
        format, why = detect_format(rows[0], fields)
        note = f"{spec}: detected format '{format}' because {why}"
        log.info(note)
        if report is not None:
            report.append(note)
    convs, skipped = [], []
    for row in rows:
        try:
            convs.append(to_conversation(row, format, fields, system))
        except TunelabError as e:
            if not skip_bad:
                raise TunelabError(f"{e}; {skip_hint(skip_setting)}") from None
            skipped.append(str(e))
    if skipped:
        note = f"{spec}: skipped {len(skipped)} bad record(s); first: {skipped[0]}"
        log.warning(note)
        if report is not None:
            report.append(note)
    if not convs:
        raise TunelabError(f"{spec}: every record was bad; see the first error above and fix the data")
    return convs
