"""What `tunelab data inspect` reports: how records render and which tokens are trained."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tunelab.data.load import load_conversations
from tunelab.errors import ParameterError
from tunelab.templates.render import IGNORE, Encoded, encode


@dataclass
class InspectReport:
    records: int
    format_notes: list[str]
    lengths: list[int]
    trained: int
    total: int
    over_max: int
    max_length: int
    examples: list[Encoded] = field(default_factory=list)

    def length_stats(self) -> dict[str, float]:
        a = np.asarray(self.lengths)
        return {"min": int(a.min()), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": int(a.max())}

    @property
    def trained_share(self) -> float:
        return self.trained / self.total if self.total else 0.0


def inspect_data(spec: str, tokenizer, *, format: str = "auto", fields: dict | None = None, n: int = 3,
                 max_length: int = 1024, train_on: str = "completion", skip_bad: bool = False,
                 system: str | None = None) -> InspectReport:
    if train_on not in ("completion", "all"):
        raise ParameterError(f"{{train_on}} must be completion or all, got '{train_on}'", "train_on")
    notes: list[str] = []
    convs = load_conversations(spec, format=format, fields=fields, skip_bad=skip_bad, system=system, report=notes)
    lengths, trained, total, over, examples = [], 0, 0, 0, []
    for i, conv in enumerate(convs):
        enc = encode(tokenizer, conv, train_on=train_on)  # untruncated: count what max_length would cut
        lengths.append(len(enc.input_ids))
        trained += sum(1 for x in enc.labels if x != IGNORE)
        total += len(enc.input_ids)
        over += len(enc.input_ids) > max_length
        if i < n:
            examples.append(enc)
    return InspectReport(len(convs), notes, lengths, trained, total, over, max_length, examples)


def segments(tokenizer, enc: Encoded) -> list[tuple[str, bool]]:
    """Consecutive runs of (text, trained?) for display."""
    out: list[tuple[str, bool]] = []
    run: list[int] = []
    state = None
    for tok, lab in zip(enc.input_ids, enc.labels):
        is_trained = lab != IGNORE
        if state is not None and is_trained != state:
            out.append((tokenizer.decode(run), state))
            run = []
        run.append(tok)
        state = is_trained
    if run:
        out.append((tokenizer.decode(run), bool(state)))
    return out
