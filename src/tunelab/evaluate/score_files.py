"""Score outputs that already exist: a file of hypotheses against one or more reference files.

    results = score_files("hyp.txt", ["ref1.txt", "ref2.txt"], ["bleu", "chrf"])
    print(results[0])         # bleu|tok:13a|smooth:exp|case:mixed|eff:no|ngram:4|sacrebleu:2.6.0 = 20.8

A file is read line by line as plain text (as the sacrebleu CLI reads it: one segment a line,
an empty line is an empty segment) unless it is a data file (.jsonl, .json, .csv, .parquet),
whose records give the text from `field`. A reference field may hold a list of strings: each
is one more reference for that item. Several reference files give several references per item.
Only metrics that score text against references can be used here; multiple-choice and
perplexity metrics need the model's log-likelihoods (`tunelab eval`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tunelab.data.readers import SUFFIXES, read_rows
from tunelab.errors import TunelabError
from tunelab.evaluate.metrics import get_metrics
from tunelab.evaluate.metrics.base import Metric, MetricResult

def _is_text_metric(metric: Metric) -> bool:
    return metric.text_only  # it reads only (prediction, references), as a metric declares


def read_segments(path: str | Path, field: str | None = None) -> list[Any]:
    """One entry per item: a string, or a list of strings when a data file's field holds a list."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TunelabError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise TunelabError(f"{path}: is a folder; give a text file (one segment a line) or a data file")
    if path.suffix.lower() not in SUFFIXES:
        if field is not None:
            raise TunelabError(f"{path}: field={field!r} applies to data files ({', '.join(SUFFIXES)}); "
                               "a plain text file is read one segment a line")
        try:
            # utf-8-sig: a byte-order mark (Notepad's "UTF-8 with BOM") is not part of the first segment
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise TunelabError(f"{path}:{line}: not valid UTF-8 ({e.reason}); save the file as UTF-8") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last line; it is not one more segment
        return [line.rstrip("\r") for line in lines]
    rows = read_rows(path)
    if field is None:
        raise TunelabError(f"{path}: a data file needs field= naming the text field "
                           f"(this file has: {', '.join(sorted(rows[0].data))})")
    out: list[Any] = []
    for row in rows:
        if field not in row.data:
            raise TunelabError(f"{row.source}: no field {field!r} (fields: {', '.join(sorted(row.data))})")
        value = row.data[field]
        if isinstance(value, list):
            out.append([str(v) for v in value])
        else:
            out.append("" if value is None else str(value))
    return out


def score_files(hyp: str | Path, refs: Sequence[str | Path], metrics: Sequence[str | dict],
                field: str | None = None, ref_field: str | None = None, *,
                n_resamples: int = 1000, seed: int = 1234) -> list[MetricResult]:
    """Each metric over the hypotheses in `hyp` against the references in `refs` (see module doc)."""
    if not refs:
        raise TunelabError("refs: give at least one reference file")
    if not metrics:
        raise TunelabError("metrics: name at least one metric, e.g. bleu")
    objects = get_metrics(list(metrics))
    for m in objects:
        if not _is_text_metric(m):
            raise TunelabError(f"metric '{m.name}' needs a model's scores, not text files; use tunelab eval "
                               "for it (text metrics: bleu, chrf, ter, rouge*, exact_match, f1, ...)")
    hyps = read_segments(hyp, field)
    if any(isinstance(h, list) for h in hyps):
        raise TunelabError(f"{hyp}: field {field!r} holds a list; a hypothesis is one string")
    references: list[list[str]] = [[] for _ in hyps]
    for ref in refs:
        segs = read_segments(ref, ref_field if ref_field is not None else field)
        if len(segs) != len(hyps):
            raise TunelabError(f"{ref}: {len(segs)} references but {hyp} has {len(hyps)} hypotheses; "
                               "the files must have one entry per item, in the same order")
        for i, s in enumerate(segs):
            references[i].extend(s if isinstance(s, list) else [s])
    if not hyps:
        raise TunelabError(f"{hyp}: no hypotheses found")
    return [m.compute(hyps, references, n_resamples=n_resamples, seed=seed) for m in objects]
