"""Judge prompts: Jinja2 templates shipped in templates/ (or the user's own), checked before use.

    t = JudgeTemplate.load("pairwise", None)            # tunelab's own
    t = JudgeTemplate.load("score", "my_judge.j2", base_dir="tasks/")
    t.check(needs_reference=False)                       # a missing placeholder: one line naming it
    messages = t.messages(question=..., answer_a=..., answer_b=..., rubric=None)

A template renders the whole user message; the judge sees no system prompt, so any chat model
(and any endpoint) can take it.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Optional

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from tunelab.errors import TunelabError

NEEDS = {"score": ("question", "answer"), "pairwise": ("question", "answer_a", "answer_b"),
         "score_multi": ("question", "answer", "history")}  # score_multi: a turn of a conversation (multi_turn)
_ENV = SandboxedEnvironment(keep_trailing_newline=True)  # a user's template renders text, never runs code


class JudgeTemplate:
    def __init__(self, kind: str, source: str, name: str):
        self.kind, self.source, self.name = kind, source, name
        try:
            self._ast = _ENV.parse(source)
        except TemplateSyntaxError as e:
            raise TunelabError(f"judge template {name}:{e.lineno}: {e.message}; fix the Jinja2 syntax") from None
        self._template = _ENV.from_string(source)
        self.sha256 = hashlib.sha256(source.encode("utf-8")).hexdigest()

    @classmethod
    def load(cls, kind: str, path: Optional[str], base_dir: Optional[str] = None) -> "JudgeTemplate":
        """tunelab's template for `kind` (score | pairwise | score_multi), or the file `path` (relative to base_dir)."""
        if path is None:
            text = resources.files("tunelab.evaluate.judge").joinpath("templates", f"{kind}.j2").read_text("utf-8")
            return cls(kind, text, f"{kind}.j2 (tunelab's)")
        p = Path(path).expanduser()
        if not p.is_absolute() and base_dir:
            p = Path(base_dir) / p
        if not p.is_file():
            raise TunelabError(f"judge.template: no file {p}; copy one of tunelab's templates (docs/judge.md) and edit it")
        return cls(kind, p.read_text("utf-8"), str(p))

    def placeholders(self) -> set[str]:
        return set(meta.find_undeclared_variables(self._ast))

    def check(self, needs_reference: bool = False) -> None:
        needed = list(NEEDS[self.kind]) + (["reference"] if needs_reference else [])
        missing = [n for n in needed if n not in self.placeholders()]
        if missing:
            raise TunelabError(f"judge template {self.name} lacks the placeholder {{{{ {missing[0]} }}}}, which "
                               f"a {self.kind} judgment needs (it needs {', '.join(needed)}); add it to the template")

    def messages(self, **fields) -> list[dict]:
        return [{"role": "user", "content": self._template.render(**fields).strip()}]
