"""What `tunelab data inspect` reports: how records render and which tokens are trained."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tunelab.data.load import load_conversations
from tunelab.data.readers import ReadReport, Skipped
from tunelab.errors import ParameterError
from tunelab.templates.cache import EncodingSettings
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
    skipped: Skipped = field(default_factory=Skipped)  # records --skip-bad left out, with the first one's error

    def length_stats(self) -> dict[str, float]:
        a = np.asarray(self.lengths)
        return {"min": int(a.min()), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": int(a.max())}

    @property
    def trained_share(self) -> float:
        return self.trained / self.total if self.total else 0.0


INSPECT_MAX_LENGTH = 1024  # records longer than this are counted as over the limit unless told otherwise


def inspect_data(spec: str, tokenizer, settings: EncodingSettings | None = None, *, n: int = 3,
                 **keywords) -> InspectReport:
    """How the records of `spec` encode: their lengths, the trained share, and the first `n`.

    Settings as `prepare`'s (an EncodingSettings and/or its fields' keywords); `max_length`
    (default INSPECT_MAX_LENGTH) only counts the records over it, nothing is cut."""
    s = replace(settings or EncodingSettings(max_length=INSPECT_MAX_LENGTH), **keywords)
    if s.train_on not in ("completion", "all"):
        raise ParameterError(f"{{train_on}} must be completion or all, got '{s.train_on}'", "train_on")
    notes: list[str] = []
    skipped = Skipped()
    convs = load_conversations(spec, format=s.format, fields=s.fields, skip_bad=s.skip_bad, system=s.system,
                               report=ReadReport(notes, skipped))
    lengths, trained, total, over, examples = [], 0, 0, 0, []
    for i, conv in enumerate(convs):
        enc = encode(tokenizer, conv, train_on=s.train_on)  # untruncated: count what max_length would cut
        lengths.append(len(enc.input_ids))
        trained += sum(1 for x in enc.labels if x != IGNORE)
        total += len(enc.input_ids)
        over += len(enc.input_ids) > s.max_length
        if i < n:
            examples.append(enc)
    return InspectReport(len(convs), notes, lengths, trained, total, over, s.max_length, examples, skipped)


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


@dataclass
class PairReport:
    """`data inspect` of a preference file: the pairs as encoded, and what the shared prompt saves."""

    pairs: int
    notes: list[str]
    prompt_lengths: list[int]
    packed: int  # tokens fed with the prompt once per pair (train/preference.py)
    standard: int  # tokens fed by the usual two sequences per pair, [prompt | chosen] and [prompt | rejected]
    over_max: int
    max_length: int
    examples: list = field(default_factory=list)  # EncodedPair
    skipped: Skipped = field(default_factory=Skipped)  # records --skip-bad left out, with the first one's error

    @property
    def saved_share(self) -> float:
        return 1 - self.packed / self.standard if self.standard else 0.0


def is_pair_file(spec: str, fields: dict | None = None) -> bool:
    """Whether the file's first record is a preference pair (has chosen and rejected)."""
    from tunelab.data.readers import iter_spec_rows
    from tunelab.data.preference import is_pair_row
    from tunelab.data.readers import SKIP_HINT

    first = next(iter(iter_spec_rows(spec, True, None, SKIP_HINT)), None)
    return first is not None and is_pair_row(first, fields)


def inspect_pairs(spec: str, tokenizer, *, fields: dict | None = None, n: int = 3, max_length: int = 1024,
                  skip_bad: bool = False, system: str | None = None) -> PairReport:
    from tunelab.data.preference import iter_pairs
    from tunelab.templates.preference import encode_pair

    notes: list[str] = []
    skipped = Skipped()
    prompt_lengths, packed, standard, over, examples = [], 0, 0, 0, []
    for i, pair in enumerate(iter_pairs(spec, fields=fields, skip_bad=skip_bad, system=system,
                                        report=ReadReport(notes, skipped), what="a preference inspect")):
        enc = encode_pair(tokenizer, pair)  # untruncated: count what max_length would cut
        prompt_lengths.append(len(enc.prompt))
        packed += enc.length
        standard += 2 * len(enc.prompt) + len(enc.chosen) + len(enc.rejected)
        over += len(enc.prompt) + max(len(enc.chosen), len(enc.rejected)) > max_length
        if i < n:
            examples.append(enc)
    return PairReport(len(prompt_lengths), notes, prompt_lengths, packed, standard, over, max_length, examples, skipped)
