"""Screen training conversations with a scorer before anything is encoded (`data.max_toxicity`).

The scorer is passed in, `fn(texts) -> scores` in [0, 1] (the CLI passes
tunelab.safety.toxicity.toxicity_scores): the data stage sits below safety and never imports it,
and the trainer only ever sees the records that were kept.
"""
from __future__ import annotations

from typing import Callable, Sequence

from tunelab.data.records import Conversation

Scorer = Callable[[list[str]], Sequence[float]]
SHOWN_IDS = 20  # dropped ids named in the message; the count covers the rest


def conversation_text(conv: Conversation) -> str:
    """What a scorer reads: the raw text, or every message's content one per line."""
    return ((conv.prefix or "") + conv.text) if conv.is_text else "\n".join(m["content"] for m in conv.messages)


def drop_above(convs: list[Conversation], scorer: Scorer, max_score: float,
               what: str = "max_toxicity") -> tuple[list[Conversation], str]:
    """(kept conversations, a note naming the dropped ids) for records scoring above `max_score`."""
    scores = list(scorer([conversation_text(c) for c in convs])) if convs else []
    bad = [i for i, s in enumerate(scores) if s > max_score]
    if not bad:
        return convs, ""
    ids = [convs[i].id for i in bad]
    shown = ", ".join(ids[:SHOWN_IDS]) + (f" … (+{len(ids) - SHOWN_IDS})" if len(ids) > SHOWN_IDS else "")
    dropped = set(bad)
    note = f"data.{what}={max_score}: dropped {len(bad)} of {len(convs)} training records: {shown}"
    return [c for i, c in enumerate(convs) if i not in dropped], note


__all__ = ["drop_above", "conversation_text", "Scorer"]
