"""Preference pairs: one prompt, a chosen and a rejected response (for DPO / ORPO and `type: preference`).

Two record layouts are read, told apart by their fields:

| layout   | fields                      | becomes                                                   |
|----------|-----------------------------|-----------------------------------------------------------|
| prompted | prompt, chosen, rejected    | prompt: text (one user turn) or a message list; chosen / rejected: text (the assistant's answer) or a message list ending with the answer |
| dialogue | chosen, rejected            | two whole dialogues that differ only in the last assistant turn: message lists, or HH-RLHF text (`\\n\\nHuman: ...\\n\\nAssistant: ...`) |

A dialogue is split at its last assistant turn: the turns before it are the prompt, which both
sides must share exactly. Only the final assistant turn is ever scored. Bad records (a missing
side, a side that is not a dialogue, sides that do not share the prompt, identical or empty
answers) are errors naming the file and line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tunelab.data.formats import FORMATS_DOC, detect_format
from tunelab.data.readers import ReadReport, converted, iter_spec_rows, skip_hint
from tunelab.data.records import ROLES, Row
from tunelab.errors import TunelabError

PAIR_FIELDS = ("prompt", "chosen", "rejected")
# HH-RLHF's turn markers: every turn starts on a blank line with its speaker
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass
class Pair:
    """One preference pair: the shared prompt (chat messages) and the two final assistant answers."""

    id: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    source: str = ""


def is_pair_row(row: Row, fields: dict[str, str] | None = None) -> bool:
    fields = fields or {}
    return all(fields.get(f, f) in row.data for f in ("chosen", "rejected"))


def parse_hh(text: str, where: str, side: str) -> list[dict[str, str]]:
    """HH-RLHF dialogue text -> chat messages (Human -> user, Assistant -> assistant)."""
    parts = HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise TunelabError(f"{where}: '{side}' is text but not an HH-RLHF dialogue (turns starting with "
                           "'\\n\\nHuman:' and '\\n\\nAssistant:'); give message lists or a prompt field "
                           f"(the formats: {FORMATS_DOC})")
    return [{"role": HH_ROLES[who], "content": said.strip()} for who, said in zip(parts[1::2], parts[2::2])]


def _messages(value: Any, where: str, side: str) -> list[dict[str, str]]:
    """A side given as a message list, checked (role and content text on every turn)."""
    if not isinstance(value, list) or not value:
        raise TunelabError(f"{where}: '{side}' must be text or a non-empty list of messages, got {type(value).__name__}")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or turn.get("role") not in ROLES:
            raise TunelabError(f"{where}: {side}[{i}] must be {{role: system|user|assistant, content: text}}")
        out.append({"role": turn["role"], "content": turn["content"]})
    return out


def _split_last_answer(msgs: list[dict], where: str, side: str) -> tuple[list[dict], str]:
    if msgs[-1]["role"] != "assistant":
        raise TunelabError(f"{where}: '{side}' must end with an assistant turn (the answer that is scored); "
                           f"it ends with a '{msgs[-1]['role']}' turn")
    return msgs[:-1], msgs[-1]["content"]


def to_pair(row: Row, fields: dict[str, str] | None = None, system: str | None = None) -> Pair:
    """One record -> Pair; raises TunelabError naming the file, line and field."""
    fields = fields or {}
    where = row.source
    got = {f: row.data.get(fields.get(f, f)) for f in PAIR_FIELDS}
    for side in ("chosen", "rejected"):
        if got[side] is None:
            raise TunelabError(f"{where}: missing field '{fields.get(side, side)}' (fields present: "
                               f"{', '.join(sorted(row.data))}); a preference record needs chosen and rejected")
    sides: dict[str, tuple[list[dict], str]] = {}
    if got["prompt"] is not None:
        prompt = got["prompt"]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise TunelabError(f"{where}: field 'prompt' is empty; remove the record or fill it in")
            prompt_msgs = [{"role": "user", "content": prompt}]
        else:
            prompt_msgs = _messages(prompt, where, "prompt")
        for side in ("chosen", "rejected"):
            value = got[side]
            if isinstance(value, str):
                sides[side] = (prompt_msgs, value)
            else:
                before, answer = _split_last_answer(_messages(value, where, side), where, side)
                sides[side] = (prompt_msgs + before, answer)
    else:  # whole dialogues sharing everything but the last assistant turn
        for side in ("chosen", "rejected"):
            value = got[side]
            msgs = parse_hh(value, where, side) if isinstance(value, str) else _messages(value, where, side)
            sides[side] = _split_last_answer(msgs, where, side)
    (prompt_c, chosen), (prompt_r, rejected) = sides["chosen"], sides["rejected"]
    if prompt_c != prompt_r:
        turn = next((i for i, (a, b) in enumerate(zip(prompt_c, prompt_r)) if a != b), min(len(prompt_c), len(prompt_r)))
        raise TunelabError(f"{where}: chosen and rejected do not share the prompt (they differ at turn {turn}, before "
                           "the last assistant turn); a pair must differ only in its final answer")
    for side, answer in (("chosen", chosen), ("rejected", rejected)):
        if not answer.strip():
            raise TunelabError(f"{where}: the {side} answer is empty; remove the record or fill it in")
    if chosen == rejected:
        raise TunelabError(f"{where}: chosen and rejected answers are identical, so the pair prefers nothing; remove it")
    if not any(m["role"] == "user" for m in prompt_c):
        raise TunelabError(f"{where}: the prompt has no user turn; a pair answers a user")
    if system and prompt_c[0]["role"] != "system":
        prompt_c = [{"role": "system", "content": system}] + prompt_c
    rid = row.data.get(fields.get("id", "id"))
    return Pair(str(rid) if rid is not None else str(row.line), prompt_c, chosen, rejected, where)


def first_user_turn(pair: Pair) -> str:
    """The dialogue's opening question: what a safety probe asks the model (safety/probe.py)."""
    return next(m["content"] for m in pair.prompt if m["role"] == "user")


def not_pairs_error(row: Row, fields: dict[str, str] | None, what: str) -> TunelabError:
    """`method: dpo` (or a preference task) on data that holds no pairs: say which format it found."""
    try:
        found, _ = detect_format(row, fields)
        found = f"format '{found}'"
    except TunelabError:
        found = "no known format"
    return TunelabError(
        f"{row.source}: {what} needs preference pairs ({{prompt, chosen, rejected}} or whole dialogues "
        f"{{chosen, rejected}}), but the first record has fields {sorted(row.data)} ({found}); "
        f"give a preference file (the formats: {FORMATS_DOC})")


def iter_pairs(spec: str | Path, *, fields: dict[str, str] | None = None, skip_bad: bool = False,
               system: str | None = None, base_dir: str | Path | None = None, what: str = "method: dpo",
               skip_setting: str = "--skip-bad", report: ReadReport | None = None) -> Iterator[Pair]:
    """Pairs of a file (.jsonl, .json, .csv, .parquet, any of them .gz), record by record.

    `what` names the caller in the error for a file without pairs (method: dpo, a preference task).
    `report.skipped` counts the records skip_bad left out, unreadable or not a good pair, with the
    first one's error (for the caller's output and result file: readers.Skipped); `report.notes`
    receives the line that counts them.
    """
    def checked(rows: Iterator[Row]) -> Iterator[Row]:  # a file without pairs stops at its first record
        for i, row in enumerate(rows):
            if i == 0 and not is_pair_row(row, fields):
                raise not_pairs_error(row, fields, what)
            yield row

    rows = checked(iter_spec_rows(spec, skip_bad, base_dir, skip_hint(skip_setting), report))
    # not logged here: each caller says it in its own words (a task's warning, the run's data notes)
    yield from converted(rows, lambda row: to_pair(row, fields, system), spec=spec, skip_bad=skip_bad,
                         skip_setting=skip_setting, noun="pair", report=report, warn=False)


def load_pairs(spec: str | Path, **kw) -> list[Pair]:
    return list(iter_pairs(spec, **kw))
