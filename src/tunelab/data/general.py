"""General prompts: what drift is measured on when the user has no general benchmark at hand.

    load_prompts("default")          # the 252 Self-Instruct user-oriented instructions (Apache-2.0, NOTICE)
    load_prompts("my_prompts.jsonl") # {prompt} | {instruction, input} | {messages} | {conversations} records

The packaged set is general on purpose (e-mails, recipes, code, trivia, rewriting): a fine-tune
that moved the model's answers to these moved it away from what it knew in general.
"""
from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError

DEFAULT = "default"
DEFAULT_FILE = Path(__file__).parent / "general" / "self_instruct_prompts.jsonl"


def resolve(spec: str, base_dir=None) -> Path:
    """The prompts file of a spec ('default' is the packaged set; a relative path is taken from base_dir)."""
    if spec == DEFAULT:
        return DEFAULT_FILE
    p = Path(spec).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def _prompt_of(row) -> str:
    data = row.data
    if isinstance(data.get("prompt"), str):
        return data["prompt"]
    if isinstance(data.get("instruction"), str):
        extra = data.get("input")
        if extra is None and isinstance(data.get("instances"), list) and data["instances"]:
            extra = (data["instances"][0] or {}).get("input")  # Self-Instruct's own layout
        return data["instruction"] + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
    for key, role_key, content_key, user in (("messages", "role", "content", ("user",)),
                                             ("conversations", "from", "value", ("human", "user"))):
        turns = data.get(key)
        if isinstance(turns, list):
            for t in turns:  # the first user turn: the question the conversation starts from
                if isinstance(t, dict) and t.get(role_key) in user and isinstance(t.get(content_key), str):
                    return t[content_key]
    raise TunelabError(f"{row.source}: no prompt in this record (fields: {', '.join(sorted(map(str, data)))}); "
                       "give records with a 'prompt' field, or instruction/input, or messages")


def load_prompts(spec: str, base_dir=None, *, limit: int | None = None) -> list[tuple[str, str]]:
    """(id, prompt) pairs of a prompts file, the first `limit` of them; empty prompts are errors."""
    from tunelab.data.load import load_rows

    path = resolve(spec, base_dir)
    if not path.is_file():
        raise TunelabError(f"retention_prompts: {spec} not found (looked at {path}); give a .jsonl of prompts, "
                           "'default' for the packaged general set, or null to skip the drift measure")
    rows = load_rows(path)
    if limit is not None:
        rows = rows[:limit]
    out = []
    for row in rows:
        text = _prompt_of(row)
        if not text.strip():
            raise TunelabError(f"{row.source}: the prompt is empty; remove the record or fill it in")
        out.append((str(row.data.get("id", row.line)), text))
    if not out:
        raise TunelabError(f"retention_prompts: {path} has no records")
    return out


__all__ = ["load_prompts", "resolve", "DEFAULT", "DEFAULT_FILE"]
