"""`type: perplexity`: the likelihood of each document (`text`, else `prompt`), in rolling windows of
the model's context; metrics give token, word and byte perplexity and bits per byte."""
from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.evaluate.cache import cached_call
from tunelab.evaluate.task_types.base import Job, Ran, TaskType
from tunelab.evaluate.task_types.registry import register_task_type


@register_task_type("perplexity")
class Perplexity(TaskType):
    description = "the likelihood of a text"
    default_batch = 4
    why_no_demonstrations = "demonstrations do not change its score"
    dry_run_counts = False  # --dry-run leaves its documents uncounted (a rough estimate either way)
    prediction_keys = {
        "loglik": "log-likelihood of the whole text (rolling windows)",
        "n_tokens": "its tokens",
        "n_words": "its words (whitespace-separated)",
        "n_bytes": "its UTF-8 bytes",
    }

    def needs(self, task) -> frozenset[str]:
        return frozenset({"rolling_loglik"})

    def templates(self, task, source: str):
        # the document is `text` (or `prompt`), never a question and answer
        from tunelab.evaluate.prompts import TaskTemplates

        return TaskTemplates(task.model_copy(update={"prompt": task.text or task.prompt, "answer": None}), source)

    def run(self, job: Job) -> Ran:
        from tunelab.evaluate.metrics.perplexity import count_units

        texts = [job.templates.prompt(r) for r in job.rows]
        max_len = job.backend.max_length()

        def compute(todo):
            return [list(x) for x in job.backend.rolling_loglik([t[0] for t in todo], batch_size=job.batch_size,
                                                                on_batch=job.progress)]

        scored = cached_call(job.cache, "rolling", [[t, max_len] for t in texts], compute)
        items = []
        for text, (ll, n_tok) in zip(texts, scored):
            if n_tok == 0:
                raise TunelabError(f"task '{job.task.name}': a document renders to empty text; perplexity needs text")
            items.append({"prompt": text[:200], "loglik": ll, "n_tokens": n_tok, **count_units(text)})
        return Ran(items, sum(i["n_tokens"] for i in items), 0)

    def record_format(self, task) -> str:
        return "text"

    def training_record(self, task, templates, row) -> dict:
        return {"id": str(row.data.get("id", row.line)), "text": templates.prompt(row)}

    def test_prompt(self, tokenizer, task, templates, row) -> str:
        return templates.prompt(row)
