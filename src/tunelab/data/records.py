"""The one internal record every data format becomes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

ROLES = ("system", "user", "assistant")


@dataclass
class Row:
    """One raw record as read from a file: `line` is the file line (jsonl), row (csv) or index."""

    line: int
    data: dict[str, Any]
    source: str  # "file:line", for error messages


@dataclass
class Conversation:
    """A training or inference example.

    `messages` are OpenAI-style {"role", "content"} dicts (roles: system, user, assistant).
    Raw-text records (format `text`) keep `messages` empty and set `text`: they are trained on
    every token. Format `plain` adds `prefix`, raw text before `text` that is read but not trained
    (a plain prompt; no chat template on either).
    """

    id: str
    messages: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    text: Optional[str] = None
    meta: dict[str, Any] = field(default_factory=dict)
    prefix: Optional[str] = None

    @property
    def is_text(self) -> bool:
        return self.text is not None
