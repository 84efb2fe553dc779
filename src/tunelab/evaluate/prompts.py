"""Render a task's prompt, choices and answer templates (docs/tasks.md) over one record.

Templates are Jinja2 with StrictUndefined, so a field the record lacks is an error that names the
field, the record (file:line) and the fields it does have, instead of an empty string that would
quietly change every score. `choices` and `answer` keep their Python type when the template is a
single expression (`{{ choices }}`, `{{ [ans0, ans1] }}`, `{{ label }}`): a list stays a list and
an index stays an int, without guessing types back from rendered text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import jinja2

from tunelab.errors import TunelabError

_SINGLE_EXPR = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)
_MISSING_NAME = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'|no element '?([^']+?)'?$")

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@dataclass
class Rendered:
    """One record, ready for the model: prompt text, choices (multiple choice) and gold."""

    prompt: str
    choices: Optional[list[str]]
    gold: Any  # int index (multiple choice), str or list[str] references (generate), None


def _missing(err: jinja2.UndefinedError) -> str:
    m = _MISSING_NAME.search(str(err))
    return next((g for g in m.groups() if g), str(err)) if m else str(err)


class TaskTemplates:
    """The compiled templates of one task; `render(row)` turns a data Row into a Rendered."""

    def __init__(self, task, source: str = "task", *, with_choices: bool = False):
        """`with_choices`: render the `choices` template too (the multiple_choice task type asks for it)."""
        self.task = task
        self.source = source  # the task file, named in errors so the user knows what to edit
        self._prompt = self._compile(task.prompt, "prompt")
        self._choices = self._compile(task.choices, "choices", native=True) if task.choices and with_choices else None
        self._answer = self._compile(task.answer, "answer", native=True) if task.answer else None

    def _compile(self, text: str, key: str, native: bool = False):
        try:
            m = _SINGLE_EXPR.match(text) if native else None
            if m and "{{" not in m.group(1) and "{%" not in text:
                # A lone expression is evaluated, not printed: lists and ints keep their type.
                expr = _env.compile_expression(m.group(1), undefined_to_none=False)
                return ("expr", expr)
            return ("text", _env.from_string(text))
        except jinja2.TemplateSyntaxError as e:
            raise TunelabError(f"{self.source}: the '{key}' template is not valid Jinja2 ({e.message}); fix it") from None

    def _run(self, compiled, key: str, row) -> Any:
        kind, tmpl = compiled
        try:
            value = tmpl(**row.data) if kind == "expr" else tmpl.render(**row.data)
            if isinstance(value, jinja2.Undefined):
                str(value)  # StrictUndefined raises here, with the missing name
            return value
        except jinja2.UndefinedError as e:
            fields = ", ".join(sorted(map(str, row.data))) or "(none)"
            raise TunelabError(
                f"{row.source}: the '{key}' template in {self.source} uses field '{_missing(e)}', "
                f"which this record lacks; its fields are: {fields}"
            ) from None
        except TunelabError:
            raise
        except Exception as e:  # e.g. a filter applied to the wrong type
            raise TunelabError(f"{row.source}: rendering the '{key}' template failed ({type(e).__name__}: {e}); fix the template in {self.source}") from None

    def prompt(self, row) -> str:
        return str(self._run(self._prompt, "prompt", row))

    def choices(self, row) -> list[str]:
        value = self._run(self._choices, "choices", row)
        if not isinstance(value, (list, tuple)):
            raise TunelabError(
                f"{row.source}: 'choices' must give a list, got {type(value).__name__} {str(value)[:60]!r}; "
                f"point it at a list field or write a list, e.g. choices: \"{{{{ [ans0, ans1, ans2] }}}}\""
            )
        if len(value) < 1:
            raise TunelabError(f"{row.source}: 'choices' gave an empty list; every item needs at least one choice")
        return [str(c) for c in value]

    def gold(self, row, choices: Optional[list[str]] = None) -> Any:
        if self._answer is None:
            return None
        value = self._run(self._answer, "answer", row)
        if choices is None:  # generate / perplexity: reference text(s)
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            return str(value)
        return gold_index(value, choices, row.source)

    def render(self, row) -> Rendered:
        choices = self.choices(row) if self._choices is not None else None
        return Rendered(self.prompt(row), choices, self.gold(row, choices))

    def answer_text(self, row) -> str:
        """The target a demonstration shows: the gold choice's text, or the first reference."""
        r = self.render(row)
        if r.choices is not None:
            return r.choices[r.gold]
        return r.gold[0] if isinstance(r.gold, list) else ("" if r.gold is None else r.gold)


def gold_index(value: Any, choices: list[str], source: str) -> int:
    """The gold as an index into `choices`: an int, a digit string, or the text of a choice."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip() not in choices:
        value = int(value.strip())
    if isinstance(value, int):
        if not 0 <= value < len(choices):
            raise TunelabError(
                f"{source}: gold index {value} is out of range for {len(choices)} choices (valid: 0..{len(choices) - 1}); "
                f"check the 'answer' template and the data"
            )
        return value
    if isinstance(value, str) and value in choices:
        return choices.index(value)
    raise TunelabError(
        f"{source}: the answer {str(value)[:60]!r} is neither a choice index nor one of the choices {choices[:5]}; "
        f"fix the 'answer' template"
    )
