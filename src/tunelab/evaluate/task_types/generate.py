"""`type: generate`: the model writes an answer to each prompt; metrics compare it with the references."""
from __future__ import annotations

import hashlib

from tunelab.evaluate.cache import cached_call
from tunelab.evaluate.task_types.base import Job, Ran, TaskType
from tunelab.evaluate.task_types.registry import register_task_type


def item_seed(seed: int, line: int) -> int:
    """The sampling seed of one item: the same item gets the same seed on every run and every shard."""
    return int(hashlib.sha256(f"{seed}:{line}".encode("utf-8")).hexdigest()[:8], 16)


@register_task_type("generate")
class Generate(TaskType):
    description = "the model writes an answer"
    default_batch = 8
    response_metrics = True
    prediction_keys = {
        "output": "the generated text, stop string cut off",
        "gold": "the reference text(s), a list",
        "finish": "why generation ended: stop (a stop string), eos (end of turn) or length (max_new_tokens)",
        "length_chars": "characters of the output",
        "length_tokens": "tokens of the output",
        "latency_s": "seconds from the start of its batch (or request) until this output finished",
        "tokens_per_s": "length_tokens / latency_s",
        "refusal": "1.0 if the output reads as a refusal, else 0.0",
        "answer_relevance": "cosine similarity of the output to the item's own prompt (MiniLM)",
        "toxicity": "toxicity score of the output (0..1; null unless a scorer is given)",
    }

    def needs(self, task) -> frozenset[str]:
        return frozenset({"generation"})

    def run(self, job: Job) -> Ran:
        g = job.task.generation
        rendered = [job.templates.render(r) for r in job.rows]
        contexts = [job.builder.build(r, x.prompt) for r, x in zip(job.rows, rendered)]
        settings = {"max_new_tokens": g.max_new_tokens, "stop": list(g.stop), "temperature": g.temperature,
                    "top_p": g.top_p}
        seeds = [item_seed(g.seed, row.line) if g.temperature > 0 else None for row in job.rows]
        reqs = [[ctx.text, settings, s] for ctx, s in zip(contexts, seeds)]
        by_text = {ctx.text: ctx for ctx in contexts}  # the cache keys on the text; an endpoint wants the messages

        def compute(todo):
            return job.backend.generate([by_text[t[0]] for t in todo], [t[2] for t in todo], batch_size=job.batch_size,
                                        on_batch=job.progress, **settings)

        outs = cached_call(job.cache, "generate", reqs, compute)
        items = []
        for ctx, r, o in zip(contexts, rendered, outs):
            refs = r.gold if isinstance(r.gold, list) else ([] if r.gold is None else [r.gold])
            items.append({"prompt": ctx.text, "output": o["text"], "gold": refs, "finish": o["finish"],
                          "new_tokens": o["new_tokens"], "latency_s": o["latency_s"],
                          "question": r.prompt})  # the item's own prompt, for answer relevance
        return Ran(items, sum(o["prompt_tokens"] for o in outs), sum(o["new_tokens"] for o in outs),
                   demos=[c.demos for c in contexts])

    def references(self, items: list[dict]) -> list:
        return [it.get("gold", []) for it in items]

    def prediction_fields(self, item: dict) -> dict:
        return {"output": item["output"], "gold": item["gold"], "finish": item["finish"]}

    def estimate_tokens(self, task, count, row, templates, builder) -> tuple[int, int]:
        # generated: the gold answer's length plus a stop token, at most max_new_tokens
        r = templates.render(row)
        max_new = task.generation.max_new_tokens
        gold = r.gold[0] if isinstance(r.gold, list) and r.gold else r.gold
        generated = min(max_new, count(str(gold)) + 1) if gold is not None else max_new
        return count(builder.build(row, r.prompt).text), generated
