"""Assemble each item's model input from its demonstrations, in plain or multi-turn chat form.

Plain form follows lm-evaluation-harness: `prompt + target_delimiter + answer` per demonstration,
joined by the few-shot delimiter ("\\n\\n" by default) and followed by it, then the item's prompt.
Chat form (task `chat: true`) makes each demonstration a user turn and an assistant turn, then the
item as the last user turn, rendered with the model's own chat template and its generation prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tunelab.errors import ParameterError, TunelabError
from tunelab.fewshot.samplers import make_sampler


@dataclass
class Context:
    text: str  # exactly what the model is conditioned on
    demos: list[int]  # pool indices of the demonstrations, in order
    messages: Optional[list[dict]] = None  # chat form only


def transcript(messages: list[dict]) -> str:
    """A readable stand-in for a chat prompt whose template is not known here (predictions, cache keys)."""
    return "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages) + "<assistant>\n"


def render_chat(tokenizer, messages: list[dict]) -> str:
    """The chat prompt exactly as training renders it (plain format when the model has no template)."""
    from tunelab.templates import render_prompt

    return render_prompt(tokenizer, messages)


class ContextBuilder:
    """Builds contexts for one task: the pool is rendered once; demos are picked per item."""

    def __init__(self, task, templates, pool_rows, *, k: int, sampler: str, seed: int,
                 pool_is_eval: bool, tokenizer=None):
        self.task, self.k, self.tokenizer = task, k, tokenizer
        self.delimiter = task.fewshot.delimiter
        self.pool_is_eval = pool_is_eval
        self.pool_prompts: list[str] = []
        self.pool_answers: list[str] = []
        self._index_of: dict[str, int] = {}
        if k > 0:
            if not pool_rows:
                raise TunelabError(f"{task.name}: {k}-shot needs a demonstration pool, but it is empty")
            for i, row in enumerate(pool_rows):
                self.pool_prompts.append(templates.prompt(row))
                self.pool_answers.append(templates.answer_text(row))
                self._index_of[row.source] = i
            room = len(pool_rows) - (1 if pool_is_eval else 0)
            if room < k:
                raise ParameterError(f"{task.name}: {k}-shot needs {k} demonstrations but the pool has {room}; lower {{shots}} or give fewshot.pool", "shots")
            self.sampler = make_sampler(sampler, self.pool_prompts, self.pool_answers, seed)

    def build(self, row, prompt: str) -> Context:
        demos: list[int] = []
        if self.k > 0:
            exclude = self._index_of.get(row.source) if self.pool_is_eval else None
            demos = self.sampler.pick(self.k, row.line, exclude, query=prompt)
        if self.task.chat:
            messages = [{"role": "system", "content": self.task.system}] if self.task.system else []
            for d in demos:
                messages += [{"role": "user", "content": self.pool_prompts[d]},
                             {"role": "assistant", "content": self.pool_answers[d]}]
            messages.append({"role": "user", "content": prompt})
            if self.tokenizer is None:  # an endpoint applies its own template to the messages
                return Context(transcript(messages), demos, messages)
            return Context(render_chat(self.tokenizer, messages), demos, messages)
        parts = [self.task.system + self.delimiter] if self.task.system else []
        td = self.task.target_delimiter
        parts += [self.pool_prompts[d] + td + self.pool_answers[d] + self.delimiter for d in demos]
        return Context("".join(parts) + prompt, demos)
