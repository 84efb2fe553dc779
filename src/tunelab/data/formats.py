"""Data formats -> Conversation, with a field rename map and `auto` detection.

| format            | fields                                   | becomes                          |
|-------------------|------------------------------------------|----------------------------------|
| text              | text                                     | raw text, every token trained    |
| prompt_completion | prompt, completion (+ optional system)   | user turn, assistant turn        |
| alpaca            | instruction, input (optional), output    | user: instruction[\n\ninput]; assistant: output |
| messages          | messages: [{role, content}] (OpenAI)     | as is (roles system/user/assistant) |
| sharegpt          | conversations: [{from, value}]           | human->user, gpt->assistant, system |
| plain             | prompt, completion                       | raw text, no chat template: the prompt is read, the completion (+ eos) trained |

`chosen` (load.py) takes a preference file ({prompt, chosen, rejected} or HH-RLHF dialogues,
data/preference.py) and trains on the prompt and the chosen answer: the SFT baseline next to DPO.
Like `plain` it is never detected.

`plain` is never detected (its fields are prompt_completion's): it is what a plain-prompt task
renders its records to (compare's fine-tuned arms), so training sees exactly the evaluation's text.

`fields` maps a canonical name to the record's own name: {prompt: question, completion: answer}.
"""
from __future__ import annotations

from typing import Any, Optional

from tunelab.data.records import ROLES, Conversation, Row
from tunelab.errors import TunelabError

FORMATS_DOC = "docs/train-config.md#data-formats"

FORMATS = ("text", "prompt_completion", "alpaca", "messages", "sharegpt", "plain")
# Canonical fields of each format; the first list is required, the second optional.
FIELDS = {
    "messages": (["messages"], ["id"]),
    "sharegpt": (["conversations"], ["id"]),
    "alpaca": (["instruction", "output"], ["input", "system", "id"]),
    "prompt_completion": (["prompt", "completion"], ["system", "id"]),
    "text": (["text"], ["id"]),
    "plain": (["prompt", "completion"], ["id"]),
}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system"}


def _get(row: Row, fields: dict[str, str], name: str) -> Any:
    return row.data.get(fields.get(name, name))


def detect_format(row: Row, fields: dict[str, str] | None = None) -> tuple[str, str]:
    """(format, reason) from the first record's fields, in order of specificity."""
    fields = fields or {}
    present = set(row.data)
    for fmt in ("messages", "sharegpt", "alpaca", "prompt_completion", "text"):
        required = [fields.get(f, f) for f in FIELDS[fmt][0]]
        if all(r in present for r in required):
            return fmt, f"the first record has field(s) {', '.join(required)}"
    if {fields.get("chosen", "chosen"), fields.get("rejected", "rejected")} <= present:
        raise TunelabError(f"{row.source}: this is a preference file (fields chosen, rejected): train it with "
                           "method: dpo or orpo, or set data.format: chosen to fine-tune on the chosen answers")
    expected = "; ".join(f"{fmt}: {', '.join(FIELDS[fmt][0])}" for fmt in FORMATS if fmt != "plain")
    raise TunelabError(
        f"{row.source}: cannot tell the data format from fields {sorted(present)}{_misspelt(present, fields)}; "
        f"expected one of ({expected}); set data.format (--format) and map names with data.fields, e.g. fields: {{prompt: question}} "
        f"(the formats: {FORMATS_DOC})"
    )


def _misspelt(present: set, fields: dict) -> str:
    """' (did you mean 'completion' for 'completoin'?)' when a field looks like a typo."""
    import difflib

    wanted = {fields.get(f, f) for req, _ in FIELDS.values() for f in req}
    for have in sorted(present - wanted):
        close = difflib.get_close_matches(have, sorted(wanted), n=1, cutoff=0.75)
        if close:
            return f" (did you mean '{close[0]}' for '{have}'?)"
    return ""


def _text(row: Row, fields: dict, name: str, *, required: bool = True) -> Optional[str]:
    value = _get(row, fields, name)
    src = fields.get(name, name)
    if value is None:
        if not required:
            return None
        if src in row.data:  # there but empty (JSON null): "missing ... (fields present: it)" would contradict itself
            raise TunelabError(f"{row.source}: field '{src}' has no value (null); give it one or remove the record")
        raise TunelabError(
            f"{row.source}: missing field '{src}' (fields present: {', '.join(sorted(row.data))}); "
            f"rename with data.fields, e.g. fields: {{{name}: <your field>}} (the formats: {FORMATS_DOC})"
        )
    if not isinstance(value, str):
        if isinstance(value, (int, float)):
            return str(value)
        raise TunelabError(f"{row.source}: field '{src}' must be text, got {type(value).__name__}")
    return value


def _check_nonempty(row: Row, name: str, value: str) -> str:
    if not value.strip():
        raise TunelabError(f"{row.source}: field '{name}' is empty; remove the record or fill it in")
    return value


def _turns(row: Row, items: Any, src: str, role_key: str, content_key: str, role_map: dict | None) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise TunelabError(f"{row.source}: field '{src}' must be a non-empty list of turns")
    out = []
    for i, turn in enumerate(items):
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            have = sorted(turn) if isinstance(turn, dict) else type(turn).__name__
            raise TunelabError(f"{row.source}: {src}[{i}] needs '{role_key}' and '{content_key}' (has {have})")
        role = turn[role_key]
        role = role_map.get(role, role) if role_map else role
        if role not in ROLES:
            raise TunelabError(f"{row.source}: {src}[{i}] has role '{turn[role_key]}'; supported roles: {', '.join(role_map or ROLES)}")
        content = turn[content_key]
        if not isinstance(content, str):
            raise TunelabError(f"{row.source}: {src}[{i}].{content_key} must be text, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    if not any(t["role"] == "assistant" for t in out):
        raise TunelabError(f"{row.source}: field '{src}' has no assistant turn, so nothing would be trained")
    return out


def to_conversation(row: Row, fmt: str, fields: dict[str, str] | None = None, system: str | None = None) -> Conversation:
    """One Row in the given format -> Conversation. Raises TunelabError naming file, line, field."""
    fields = fields or {}
    rid = _get(row, fields, "id")
    conv_id = str(rid) if rid is not None else str(row.line)
    if fmt == "text":
        return Conversation(conv_id, [], row.source, text=_check_nonempty(row, "text", _text(row, fields, "text")))
    if fmt == "plain":  # the prompt may be empty (a document continued from nothing), the completion not
        return Conversation(conv_id, [], row.source, prefix=_text(row, fields, "prompt"),
                            text=_check_nonempty(row, "completion", _text(row, fields, "completion")))
    if fmt == "messages":
        msgs = _turns(row, _get(row, fields, "messages"), fields.get("messages", "messages"), "role", "content", None)
    elif fmt == "sharegpt":
        msgs = _turns(row, _get(row, fields, "conversations"), fields.get("conversations", "conversations"), "from", "value", SHAREGPT_ROLES)
    elif fmt == "alpaca":
        instruction = _check_nonempty(row, "instruction", _text(row, fields, "instruction"))
        extra = _text(row, fields, "input", required=False)
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        msgs = [{"role": "user", "content": user},
                {"role": "assistant", "content": _check_nonempty(row, "output", _text(row, fields, "output"))}]
    elif fmt == "prompt_completion":
        msgs = [{"role": "user", "content": _check_nonempty(row, "prompt", _text(row, fields, "prompt"))},
                {"role": "assistant", "content": _check_nonempty(row, "completion", _text(row, fields, "completion"))}]
    else:
        raise TunelabError(f"unknown data format '{fmt}'; use one of auto, {', '.join(FORMATS)}")
    own_system = _text(row, fields, "system", required=False) if fmt in ("alpaca", "prompt_completion") else None
    system = own_system or system
    if system and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and not m["content"].strip():
            raise TunelabError(f"{row.source}: assistant turn {i} is empty; remove the record or fill it in")
    return Conversation(conv_id, msgs, row.source)
