"""Verdicts a judge already gave, read from the files the published evaluations ship.

`load_verdicts(path, pairs, swapped=None)` aligns them with the pairs of labels.load_pairs:
- an LLMBar `result.json` (both orders inside; its rows must be the data's rows, in order);
- a PandaLM judge file ({idx, pandalm_result} or {idx, gpt_result}), matched by idx;
- Auto-J output jsonl ({output}, one per pair in order); `swapped` is the file of the same judge
  on the pairs with the answers exchanged, not mapped back (its 0 means the original second);
- tunelab's own verdict file (`tunelab judge agreement --out`): {id, verdict, verdict_swapped}.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from tunelab.errors import TunelabError
from tunelab.evaluate.judge.labels import LabelledPair, Verdicts, read_records

VERDICT_SHAPES = ("results (LLMBar result.json)", "idx + pandalm_result or gpt_result (PandaLM)",
                  "output (Auto-J)", "id + verdict (+ verdict_swapped) (tunelab)")
_GPT = {"1": 1, "2": 2, "Tie": 0, "garbage": None}


def load_verdicts(path: str | Path, pairs: list[LabelledPair], swapped: Optional[str | Path] = None) -> Verdicts:
    rows = read_records(path, "a verdicts file")
    keys = set(rows[0])
    if "results" in keys:
        v = _llmbar(rows, pairs, path)
    elif "idx" in keys and ({"pandalm_result", "gpt_result"} & keys):
        v = _pandalm(rows, pairs, path)
    elif "output" in keys:
        v = Verdicts(_autoj(rows, pairs, path, swap=False), source=str(path))
    elif {"id", "verdict"} <= keys:
        v = _own(rows, pairs, path)
    else:
        raise TunelabError(f"{path}: unknown verdict shape (fields {', '.join(sorted(keys)[:8])}); expected "
                           f"one of: {'; '.join(VERDICT_SHAPES)} (docs/judge.md)")
    if swapped is not None:
        if v.second is not None:
            raise TunelabError(f"{path} already holds both orders; leave out the swapped-order file {swapped}")
        srows = read_records(swapped, "a swapped-order verdicts file")
        if "output" not in srows[0]:
            raise TunelabError(f"{swapped}: a swapped-order file holds Auto-J's {{output: 0|1|2}} per pair")
        v.second = _autoj(srows, pairs, swapped, swap=True)
    return v


def _same_count(rows: list, pairs: list, path: Any) -> None:
    if len(rows) != len(pairs):
        raise TunelabError(f"{path}: {len(rows)} verdicts for {len(pairs)} pairs; give the verdicts of this data file")


def _winner(value: Any, where: str) -> Optional[int]:
    if value is None:
        return None
    if str(value) in ("1", "2"):
        return int(value)
    raise TunelabError(f"{where}: winner {value!r} is not '1', '2' or null")


def _llmbar(rows, pairs, path) -> Verdicts:
    _same_count(rows, pairs, path)
    first, second = [], []
    for n, (r, p) in enumerate(zip(rows, pairs)):
        where = f"{path} record {n + 1}"
        if r.get("input") != p.question:
            raise TunelabError(f"{where}: its input differs from pair {n + 1} of the data; give the data's own result.json")
        last = r["results"][-1]
        first.append(_winner(last["swap = False"]["winner"], where))
        second.append(_winner(last["swap = True"]["winner"], where))
    return Verdicts(first, second, str(path))


def _pandalm(rows, pairs, path) -> Verdicts:
    _same_count(rows, pairs, path)
    by_idx = {str(r["idx"]): r for r in rows}
    first = []
    for p in pairs:
        r = by_idx.get(p.id)
        if r is None:
            raise TunelabError(f"{path}: no verdict for idx {p.id}; give the judge file of this test set")
        if "pandalm_result" in r:
            value = r["pandalm_result"]
            if value not in (0, 1, 2):
                raise TunelabError(f"{path} idx {p.id}: pandalm_result {value!r} is not 0, 1 or 2")
            first.append(value)
        else:
            if r["gpt_result"] not in _GPT:
                raise TunelabError(f"{path} idx {p.id}: gpt_result {r['gpt_result']!r} is not one of {', '.join(_GPT)}")
            first.append(_GPT[r["gpt_result"]])
    return Verdicts(first, None, str(path))


def _autoj(rows, pairs, path, swap: bool) -> list[Optional[int]]:
    _same_count(rows, pairs, path)
    # as given: 0 = the first response, 1 = the second, 2 = tie; swapped, 0 names the original second
    table = {0: 2, 1: 1, 2: 0} if swap else {0: 1, 1: 2, 2: 0}
    out = []
    for n, r in enumerate(rows):
        if r["output"] not in table:
            raise TunelabError(f"{path} record {n + 1}: output {r['output']!r} is not 0, 1 or 2")
        out.append(table[r["output"]])
    return out


def _own(rows, pairs, path) -> Verdicts:
    _same_count(rows, pairs, path)
    first = [r["verdict"] for r in rows]
    second = [r.get("verdict_swapped") for r in rows] if "verdict_swapped" in rows[0] else None
    for n, v in enumerate(first + (second or [])):
        if v not in (0, 1, 2, None):
            raise TunelabError(f"{path} record {n % len(rows) + 1}: verdict {v!r} is not 0, 1, 2 or null")
    return Verdicts(first, second, str(path))
