"""Drop toxic records from a training-data file before fine-tuning, and say which.

A record's text is every string value in the raw JSON record, found recursively (so a
conversation's message contents, a prompt/completion pair or alpaca's instruction/input/output
all count) except the values of METADATA_KEYS; each string is scored separately and the record
takes the highest score, so one toxic turn in a long conversation is not averaged away.
A record is dropped when that score is strictly above `max_toxicity`. (Training's own
`data.max_toxicity` screens loaded conversations in the data stage: tunelab.data.screen.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Sequence

from tunelab.errors import TunelabError
from tunelab.safety.scan import read_records, write_records

# Keys whose values are labels, not text a model learns to produce: ids and chat roles.
METADATA_KEYS = frozenset({"id", "role", "from"})


@dataclass
class FilterResult:
    n_in: int
    n_kept: int
    max_toxicity: float
    dropped: list[dict] = dc_field(default_factory=list)  # {"id", "line", "toxicity"} per dropped record
    out: str | None = None
    dropped_out: str | None = None

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)


def _check_threshold(max_toxicity: float) -> None:
    if not 0.0 <= max_toxicity <= 1.0:
        raise TunelabError(f"max_toxicity {max_toxicity} is outside [0, 1]; e.g. 0.5 drops records "
                           "the classifier finds more likely toxic than not")


def string_values(value: Any) -> list[str]:
    """Every non-empty string inside a JSON value, depth first, skipping METADATA_KEYS."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in METADATA_KEYS for s in string_values(v)]
    if isinstance(value, list):
        return [s for v in value for s in string_values(v)]
    return []


def _max_scores(pieces: list[list[str]], classifier) -> list[float]:
    """Highest toxicity among each record's strings, scoring all strings in one batch."""
    flat = [s for p in pieces for s in p]
    scores = classifier.score(flat) if flat else []
    out, i = [], 0
    for p in pieces:
        out.append(max(scores[i:i + len(p)], default=0.0))
        i += len(p)
    return out


def filter_records(path: str | os.PathLike, max_toxicity: float, out: str | os.PathLike,
                   field: str | None = None, classifier=None, write_dropped: bool = True) -> FilterResult:
    """Write the records of `path` scoring <= max_toxicity to `out` (format from its suffix).

    field: score only this field (a string, or a list/dict whose strings are all scored);
    default: all string values. With write_dropped, the dropped records with their scores go to
    `<out stem>.dropped.jsonl` next to `out`, for auditing.
    """
    _check_threshold(max_toxicity)
    rows = read_records(path)
    pieces = []
    for line, rec in rows:
        if field is not None and field not in rec:
            raise TunelabError(f"{path}:{line} has no field '{field}' (fields present: "
                               f"{', '.join(rec) or 'none'}); name the text field with --field")
        pieces.append(string_values(rec[field] if field is not None else rec))
    if classifier is None:
        from tunelab.safety.toxicity import default_classifier

        classifier = default_classifier()
    scores = _max_scores(pieces, classifier)

    kept, dropped, dropped_rows = [], [], []
    for (line, rec), s in zip(rows, scores):
        if s > max_toxicity:
            rid = rec.get("id", line)  # the record's own id if it has one, else its line number
            dropped.append({"id": rid, "line": line, "toxicity": s})
            dropped_rows.append({**rec, "toxicity": s, "line": line})
        else:
            kept.append(rec)
    out = Path(out)
    write_records(out, kept)
    result = FilterResult(len(rows), len(kept), max_toxicity, dropped, out=str(out))
    if write_dropped:
        audit = out.with_name(f"{out.stem}.dropped.jsonl")
        write_records(audit, dropped_rows)
        result.dropped_out = str(audit)
    return result
