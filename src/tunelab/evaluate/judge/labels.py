"""Human-labelled answer pairs and a judge's recorded verdicts, read into one shape.

Three published shapes are known (their fields, from ../shared/data/README.md):
- LLMBar `dataset.json`: [{input, output_1, output_2, label: 1|2}]; its `result.json` adds each
  judge's `results`, whose last element holds `winner` ('1', '2' or null) under `swap = False` and
  `swap = True`, already mapped back to the original order.
- PandaLM test set: [{idx, instruction, input, response1, response2, annotator1..3: 0|1|2}]
  (0 = tie; the label is the majority of the three, which always exists in that file); its judge
  files [{idx, pandalm_result: 0|1|2}] or [{idx, gpt_result: '1'|'2'|'Tie'|'garbage'}].
- Auto-J pairwise: jsonl {prompt, "response 1", "response 2", label: 0|1|2} (0 = response 1
  better, 2 = tie); its verdict files jsonl {output: 0|1|2}, one per presentation order, the
  swapped one NOT mapped back (`swapped=True` here maps it).
- A preference file (HH-RLHF's {chosen, rejected} dialogues, or {prompt, chosen, rejected}; any of
  tunelab's data formats, .gz too): the chosen answer is the better one.

Everything becomes a `LabelledPair` (gold: 1 = first answer better, 2 = second, 0 = tie) and a
`Verdicts` (one list per order, in the original order's terms; None = unparsed).
"""
from __future__ import annotations

import gzip
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from tunelab.errors import TunelabError

BUILTIN = {"llmbar-natural": "llmbar_natural.json"}
SHAPES = {  # shape -> the fields its records must hold (the error for an unknown shape lists these)
    "llmbar": ("input", "output_1", "output_2", "label"),
    "pandalm": ("instruction", "response1", "response2", "annotator1", "annotator2", "annotator3"),
    "autoj": ("prompt", "response 1", "response 2", "label"),
    "preference": ("chosen", "rejected"),
}


@dataclass
class LabelledPair:
    """One question, two answers and the human (or gold) label: 1, 2 or 0 (tie)."""

    id: str
    question: str
    answers: tuple[str, str]
    gold: int
    votes: tuple[int, ...] = ()  # the annotators' own labels, when there were several


@dataclass
class Verdicts:
    """A judge's verdicts on the pairs, per presentation order, in the original order's terms."""

    first: list[Optional[int]]                    # the pair as given
    second: Optional[list[Optional[int]]] = None  # answers swapped (mapped back); None: not judged so
    source: str = ""
    texts: list[Any] = field(default_factory=list, repr=False)


def read_records(path: str | Path, what: str = "a human-labelled pairs file") -> list[dict]:
    """A .json array or .jsonl file's records (`builtin:NAME` reads a set shipped with tunelab)."""
    spec = str(path)
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN:
            raise TunelabError(f"unknown built-in check set '{name}'; built in: {', '.join(BUILTIN)}")
        text = resources.files("tunelab.evaluate.judge").joinpath("data", BUILTIN[name]).read_text("utf-8")
        return json.loads(text)
    p = Path(path)
    if not p.is_file():
        raise TunelabError(f"{p}: no such file; give {what} (.json or .jsonl; see docs/judge.md)")
    with (gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")) as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise TunelabError(f"{p}:{e.lineno}: not valid JSON ({e.msg}); fix the file") from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TunelabError(f"{p}:{n}: not a JSON record ({e.msg}); each line must be one JSON object") from None
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise TunelabError(f"{p}: expected a JSON array or JSON lines of records (objects), found none")
    return rows


def shape_of(rows: list[dict], where: str) -> str:
    """Which known shape the records have; an unknown one is one line naming the expected fields."""
    keys = set(rows[0])
    for shape, needed in SHAPES.items():
        if set(needed) <= keys:
            return shape
    expected = "; ".join(f"{s}: {', '.join(f)}" for s, f in SHAPES.items())
    raise TunelabError(f"{where}: unknown human-label shape (fields {', '.join(sorted(keys)[:8])}); "
                       f"expected one of: {expected} (docs/judge.md)")


def _majority(votes: tuple[int, ...], where: str) -> int:
    label, count = Counter(votes).most_common(1)[0]
    if count * 2 <= len(votes):
        raise TunelabError(f"{where}: the annotators {list(votes)} have no majority; remove the record or add a label")
    return label


def load_pairs(path: str | Path) -> list[LabelledPair]:
    """The labelled pairs of a file in one of the known shapes."""
    rows = read_records(path)
    shape = shape_of(rows, str(path))
    if shape == "preference":
        return _preference_pairs(path)
    pairs = []
    for n, r in enumerate(rows):
        where = f"{path} record {n + 1}"
        if shape == "llmbar":
            pair = LabelledPair(str(n), r["input"], (r["output_1"], r["output_2"]), _label(r["label"], (1, 2), where))
        elif shape == "pandalm":
            votes = tuple(_label(r[f"annotator{i}"], (0, 1, 2), where) for i in (1, 2, 3))
            question = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
            pair = LabelledPair(str(r.get("idx", n)), question, (_text(r["response1"]), _text(r["response2"])),
                                _majority(votes, where), votes)
        else:  # autoj: 0 = response 1 better, 1 = response 2, 2 = tie
            gold = {0: 1, 1: 2, 2: 0}[_label(r["label"], (0, 1, 2), where)]
            pair = LabelledPair(str(n), r["prompt"], (r["response 1"], r["response 2"]), gold)
        pairs.append(pair)
    return pairs


def _preference_pairs(path: str | Path) -> list[LabelledPair]:
    """A preference file (HH-RLHF's {chosen, rejected} dialogues, or {prompt, chosen, rejected}) as labelled
    pairs: the dialogue before the last answer is the question; the chosen answer is shown first in
    even records and second in odd ones, so a judge that always picks one position scores 50%."""
    from tunelab.data.preference import load_pairs as load_preference

    skipped: list[str] = []
    out = []
    for n, p in enumerate(load_preference(path, skip_bad=True, what="tunelab judge agreement", report=skipped)):
        question = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in p.prompt)
        first = n % 2 == 0
        out.append(LabelledPair(p.id, question, (p.chosen, p.rejected) if first else (p.rejected, p.chosen), 1 if first else 2))
    if not out:
        raise TunelabError(f"{path}: no usable preference pair; the first problem: {skipped[0] if skipped else 'none found'}")
    if skipped:
        warnings.warn("; ".join(skipped))  # the data layer's own count and first reason
    return out


def _text(value: Any) -> str:
    """An answer as text (the PandaLM test set holds a few answers that are JSON true/false or numbers)."""
    return value if isinstance(value, str) else json.dumps(value)


def _label(value: Any, allowed: tuple[int, ...], where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or value not in allowed:
        raise TunelabError(f"{where}: label {value!r} is not one of {', '.join(map(str, allowed))}")
    return value
