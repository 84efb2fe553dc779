"""`type: multiple_choice`: the likeliest choice after the prompt (lm-evaluation-harness's scoring).

The continuation is `target_delimiter + choice` (no delimiter after a chat prompt, which already
ends with the assistant header); every choice is scored after one copy of the prompt.
"""
from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.evaluate.cache import cached_call
from tunelab.evaluate.task_types.base import Job, Ran, TaskType
from tunelab.evaluate.task_types.registry import register_task_type


@register_task_type("multiple_choice")
class MultipleChoice(TaskType):
    description = "the likeliest choice"
    default_batch = 16
    prediction_keys = {
        "choices": "the choices' texts",
        "choice_logliks": "summed log-likelihood of each choice after the prompt",
        "is_greedy": "per choice: would greedy decoding produce it",
        "pred": "index of the likeliest choice",
        "pred_norm": "index of the likeliest choice per character",
        "gold": "index of the right choice",
    }

    def check(self, task, source: str) -> None:
        if not task.choices or not task.answer:
            raise TunelabError(f"{source}: a multiple_choice task needs both 'choices' and 'answer' templates; add them "
                               "(docs/tasks.md has an example)")

    def needs(self, task) -> frozenset[str]:
        # with chat: true the choices follow the model's own assistant header, which only a local model shows
        return frozenset({"loglik", "chat_template"} if task.chat else {"loglik"})

    def templates(self, task, source: str):
        from tunelab.evaluate.prompts import TaskTemplates

        self.check(task, source)
        return TaskTemplates(task, source, with_choices=True)

    def run(self, job: Job) -> Ran:
        rendered = [job.templates.render(r) for r in job.rows]
        contexts = [job.builder.build(r, x.prompt) for r, x in zip(job.rows, rendered)]
        td = "" if job.task.chat else job.task.target_delimiter  # a chat prompt already ends its turn header
        reqs = [[ctx.text, [td + c for c in r.choices]] for ctx, r in zip(contexts, rendered)]

        def compute(todo):
            scored = job.backend.score_choices([(c, k) for c, k in todo], batch_size=job.batch_size,
                                               on_batch=job.progress)
            return [[[ll, g] for ll, g in s] for s in scored]

        scores = cached_call(job.cache, "loglik", reqs, compute)
        items, tokens = [], 0
        for ctx, r, s in zip(contexts, rendered, scores):
            items.append({"prompt": ctx.text, "choices": r.choices, "choice_logliks": [x[0] for x in s],
                          "is_greedy": [bool(x[1]) for x in s], "gold": r.gold})
            tokens += job.backend.count_tokens(ctx.text + td + max(r.choices, key=len))
        return Ran(items, tokens, 0, demos=[c.demos for c in contexts])  # every scored token is read, none generated

    def prediction_fields(self, item: dict) -> dict:
        from tunelab.evaluate.metrics.choice import choice_prediction

        return {"choices": item["choices"], "choice_logliks": item["choice_logliks"], "is_greedy": item["is_greedy"],
                "pred": choice_prediction(item, "none"), "pred_norm": choice_prediction(item, "chars"),
                "gold": item["gold"]}

    def estimate_tokens(self, task, count, row, templates, builder) -> tuple[int, int]:
        r = templates.render(row)
        return count(builder.build(row, r.prompt).text) + sum(count(c) for c in r.choices or ()), 0
