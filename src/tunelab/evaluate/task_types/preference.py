"""`type: preference`: does the model prefer the chosen answer of each pair (data: a preference file).

Each pair's two answers are scored after one copy of its prompt (the multiple-choice token tree);
with a reference model (reward_acc), scored again by it: the adapter switched off, or --reference.
"""
from __future__ import annotations

import logging

from tunelab.errors import TunelabError
from tunelab.evaluate.cache import RequestCache, cached_call
from tunelab.evaluate.task_types.base import Job, Ran, TaskType, task_source
from tunelab.evaluate.task_types.registry import register_task_type

log = logging.getLogger("tunelab.evaluate")


def _scorer(backend, job: Job):
    def compute(todo):
        scored = backend.score_choices([(c, k) for c, k in todo], batch_size=job.batch_size, on_batch=job.progress)
        return [[[ll, g] for ll, g in s] for s in scored]
    return compute


def _requests(job: Job) -> tuple[list, list[int]]:
    """[prompt, [chosen, rejected]] per good pair, and the positions of those pairs in job.rows."""
    from tunelab.data.preference import is_pair_row, not_pairs_error, to_pair
    from tunelab.templates.preference import answer_text
    from tunelab.templates.render import render_prompt

    task, tok = job.task, job.backend.tokenizer
    if job.rows and not is_pair_row(job.rows[0]):
        raise not_pairs_error(job.rows[0], None, f"task '{task.name}' (type: preference)")
    reqs, kept, bad = [], [], []
    for j, row in enumerate(job.rows):
        try:
            pair = to_pair(row, None, task.system)  # a bad pair names its file and line
        except TunelabError as e:
            if not task.skip_bad:
                raise TunelabError(f"{e}; fix it, or set skip_bad: true in {task_source(task)}") from None
            bad.append(str(e))
            continue
        prompt = render_prompt(tok, pair.prompt)
        reqs.append([prompt, [answer_text(tok, pair, a, prompt) for a in (pair.chosen, pair.rejected)]])
        kept.append(j)
    if bad:
        log.warning(f"task '{task.name}': skipped {len(bad)} bad pair(s) (skip_bad: true); first: {bad[0]}")
    if not reqs:
        raise TunelabError(f"task '{task.name}': no pair left to score; see the first bad pair: {bad[0]}")
    return reqs, kept


def _reference_scores(job: Job, reqs: list) -> list:
    with job.backend.reference() as ref:  # the reference's scores are cached under the base model's scope
        ref_cache = RequestCache(*ref.cache_scope, job.cache.path) if job.cache is not None else None
        try:
            return cached_call(ref_cache, "loglik", reqs, _scorer(ref, job))
        finally:
            if ref_cache is not None:
                ref_cache.close()


@register_task_type("preference")
class Preference(TaskType):
    description = ("does the model prefer the chosen answer of a pair (data: a preference file; metrics default "
                   "to pref_acc, pref_acc_norm)")
    default_batch = 16
    pairs = True
    default_metrics = ("pref_acc", "pref_acc_norm")
    why_no_demonstrations = ("it scores the model's preference between two given answers, which demonstrations "
                             "do not ask for")
    pool_format = "chosen"  # the compare's pool is pairs: the arms read them as they are
    prediction_keys = {
        "chosen": "the chosen answer as scored (after the prompt, with the template's end of turn)",
        "rejected": "the rejected answer, likewise",
        "pair_logliks": "[chosen, rejected]: summed log-probability of each answer after the prompt",
        "pair_tokens": "[chosen, rejected]: tokens scored for each",
        "ref_pair_logliks": "[chosen, rejected] under the reference model (base + adapter: the base; else the "
                            "--reference model); only when a metric needs it (reward_acc, reward_margin)",
    }

    def needs(self, task) -> frozenset[str]:
        # each pair is rendered with the model's chat template to score its answers
        return frozenset({"loglik", "chat_template"})

    def run(self, job: Job) -> Ran:
        reqs, kept = _requests(job)
        scores = cached_call(job.cache, "loglik", reqs, _scorer(job.backend, job))
        ref_scores = _reference_scores(job, reqs) if job.reference else None
        items, tokens, count = [], 0, job.backend.count_tokens
        for j, ((prompt, answers), s) in enumerate(zip(reqs, scores)):
            # scoring moves the prompt's trailing whitespace (the newline after the assistant header) into
            # each continuation (lm-eval's convention): one more token, the same term for both answers, so
            # chosen - rejected is the training's difference exactly; the counts include that token
            ws = prompt[len(prompt.rstrip()):]
            n = [count(ws + a) for a in answers]
            items.append({"prompt": prompt, "chosen": answers[0], "rejected": answers[1],
                          "pair_logliks": [s[0][0], s[1][0]], "pair_tokens": n})
            tokens += count(prompt) + sum(n)
            if ref_scores is not None:
                items[-1]["ref_pair_logliks"] = [ref_scores[j][0][0], ref_scores[j][1][0]]
        # the reference reads every token again
        return Ran(items, tokens * (2 if ref_scores is not None else 1), 0, kept=kept)

    def test_prompt(self, tokenizer, task, templates, row) -> str:
        from tunelab.data.preference import to_pair
        from tunelab.templates.render import render_prompt

        return render_prompt(tokenizer, to_pair(row, None, task.system).prompt)

    def estimate_tokens(self, task, count, row, templates, builder) -> tuple[int, int]:
        import json

        return count(json.dumps(row.data, ensure_ascii=False)), 0  # its prompt and both answers, nothing generated
