"""TREC qrels and run files: read, validate (errors name file and line), write.

qrels: `qid iter docid rel` per line; `iter` is ignored (usually 0); rel an integer. Relevance
       > 0 counts as relevant for binary measures (trec_eval's default -l1). Negative values are
       kept as given: trec_eval treats them as "in the pool but unjudged".
run:   `qid Q0 docid rank score tag` per line. trec_eval IGNORES the rank column and orders by
       score descending, ties broken by docid in descending string order (strcmp(b, a) in
       trec_eval's form_res_rels.c comp_sim_docno); tunelab keeps the same rule because it
       hands the scores, not the ranks, to trec_eval's own code (pytrec_eval).
Blank lines are skipped; CRLF endings are fine; a docid twice for one query is an error, as in
trec_eval.

    Qrels = dict[qid, dict[docid, int]];  Run = dict[qid, dict[docid, float]]
"""
from __future__ import annotations

import math
from pathlib import Path

from tunelab.errors import TunelabError, where
from tunelab.io import atomic_write_text

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


def _lines(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TunelabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield lineno, fields


def read_qrels(path: str | Path) -> Qrels:
    """Parse a TREC qrels file into {qid: {docid: rel}}."""
    qrels: Qrels = {}
    for lineno, f in _lines(path):
        if len(f) != 4:
            raise TunelabError(f"{where(path, lineno)}: a qrels line has 4 fields 'qid 0 docid rel', "
                               f"found {len(f)}: {' '.join(f)!r}")
        qid, _, docid, rel = f
        try:
            value = int(rel)
        except ValueError:
            raise TunelabError(f"{where(path, lineno, 'rel')}: relevance must be an integer, got {rel!r}") from None
        docs = qrels.setdefault(qid, {})
        if docid in docs:
            raise TunelabError(f"{where(path, lineno)}: document {docid!r} judged twice for query {qid!r}")
        docs[docid] = value
    if not qrels:
        raise TunelabError(f"{path}: no judgements found (expected lines 'qid 0 docid rel')")
    return qrels


def read_run(path: str | Path) -> Run:
    """Parse a TREC run file into {qid: {docid: score}} (the rank column is checked, then ignored)."""
    run: Run = {}
    for lineno, f in _lines(path):
        if len(f) != 6:
            raise TunelabError(f"{where(path, lineno)}: a run line has 6 fields 'qid Q0 docid rank score tag', "
                               f"found {len(f)}: {' '.join(f)!r}")
        qid, _, docid, rank, score, _tag = f
        try:
            int(rank)
        except ValueError:
            raise TunelabError(f"{where(path, lineno, 'rank')}: rank must be an integer, got {rank!r}") from None
        try:
            value = float(score)
        except ValueError:
            raise TunelabError(f"{where(path, lineno, 'score')}: score must be a number, got {score!r}") from None
        if not math.isfinite(value):
            raise TunelabError(f"{where(path, lineno, 'score')}: score must be finite, got {score!r}")
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise TunelabError(f"{where(path, lineno)}: document {docid!r} retrieved twice for query {qid!r}")
        docs[docid] = value
    if not run:
        raise TunelabError(f"{path}: no results found (expected lines 'qid Q0 docid rank score tag')")
    return run


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's order: score descending, ties by docid descending (string order)."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def format_run(run: Run, tag: str = "tunelab") -> str:
    lines = []
    for qid in sorted(run):
        for rank, (docid, score) in enumerate(ranked(run[qid]), start=1):
            lines.append(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}")  # repr: exact, no new ties
    return "\n".join(lines) + "\n"


def write_run(run: Run, path: str | Path, tag: str = "tunelab") -> Path:
    """Write a run in TREC format (atomically), ranks in trec_eval's order."""
    return atomic_write_text(path, format_run(run, tag))


def write_qrels(qrels: Qrels, path: str | Path) -> Path:
    lines = [f"{qid} 0 {docid} {rel}" for qid in sorted(qrels) for docid, rel in sorted(qrels[qid].items())]
    return atomic_write_text(path, "\n".join(lines) + "\n")
