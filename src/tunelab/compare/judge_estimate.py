"""`--dry-run` with a judge metric: the judge's calls, tokens and time, apart from each arm's own.

Calls, as compare/judge.py and the judge metrics make them:
- judge_score: one judgment per item per arm (in the arm's evaluation);
- judge_win_rate: two per item (both orders) for each arm but the baseline arm, whose win rate is
  0.5 by definition; against the task's answers (`judge.baseline: reference`) every arm is judged;
- judge.check: two per labelled pair (both orders), once for the compare.
A judgment's prompt tokens are its template rendered with the item's question (the task's prompt,
no demonstrations), its reference when shown, and empty answers, counted with the judge's
tokenizer, plus each answer at the length the arms' estimate gives it (the gold answer's length plus
one stop token, at most the task's max_new_tokens). Its generated tokens are counted at
judge.max_new_tokens: a judge reasons before its verdict, and how long it does is not known before
it runs, so tokens and time are upper bounds of its generation. The time uses the same measured
rates as the arms (compare/estimate.py), scaled by the judge's size; an endpoint judge's speed is
not known and gets the local rates unscaled, as an endpoint arm does. The judge's cache is not read:
only the judging a finished arm (or a measured check) already holds is counted as done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tunelab.compare import estimate as est
from tunelab.compare.checks import read_json
from tunelab.compare.judge import CHECK_JSON, SCORE, WIN_RATE, baseline_arm, check_stamp, judge_metrics
from tunelab.infer.endpoint import is_endpoint


@dataclass
class JudgeEstimate:
    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0  # judge.max_new_tokens a call: an upper bound
    seconds: float = 0.0
    done: bool = False  # already judged (a finished arm's results, judge_check.json): nothing to run

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens


@dataclass
class JudgeOverall:
    """What the dry run says of the judge beside the arms' rows."""

    model: str
    endpoint: bool
    exact_tokens: bool  # counted with the judge's tokenizer (else ~4 chars per token)
    max_new_tokens: int
    check: Optional[JudgeEstimate]  # judge.check's pairs, once for the compare
    check_name: Optional[str]
    load_s: float  # loading a local judge once


def _counter(plan) -> est.Counter:
    return est.counter(plan.task.judge.model)


def _scale(plan, count: est.Counter) -> float:
    return 1.0 if is_endpoint(plan.task.judge.model) else est.size_scale(count)


def _cost(plan, count: est.Counter, calls: int, prompt_tokens: int, done: bool = False) -> JudgeEstimate:
    gen = calls * plan.task.judge.max_new_tokens
    seconds = _scale(plan, count) * (prompt_tokens / est.PREFILL_TOKENS_PER_S + gen / est.DECODE_TOKENS_PER_S)
    return JudgeEstimate(calls, prompt_tokens, gen, round(seconds, 1), done)


def _item_tokens(plan, rows, templates, count: est.Counter) -> dict[str, int]:
    """Prompt tokens of one judgment of every item, summed over the items, per judge metric."""
    from tunelab.evaluate.judge.prompts import JudgeTemplate

    task, cfg = plan.task, plan.task.judge
    score = JudgeTemplate.load("score", cfg.template, task.base_dir)
    pair = JudgeTemplate.load("pairwise", cfg.template, task.base_dir)
    vs_reference = baseline_arm(task) is None
    out = {SCORE: 0, WIN_RATE: 0}
    for row in rows:
        r = templates.render(row)
        gold = r.gold[0] if isinstance(r.gold, list) and r.gold else r.gold
        gold = None if gold is None else str(gold)
        # an answer at the length the arms' estimate gives it (evaluate/task_types/generate.py)
        answer = min(task.generation.max_new_tokens, count(gold) + 1) if gold else task.generation.max_new_tokens
        shown = score.messages(question=r.prompt, answer="", reference=gold if cfg.reference else None,
                               rubric=cfg.rubric)[0]["content"]
        out[SCORE] += count(shown) + answer
        second = (gold or "") if vs_reference else ""
        shown = pair.messages(question=r.prompt, answer_a="", answer_b=second, rubric=cfg.rubric)[0]["content"]
        out[WIN_RATE] += count(shown) + answer + (0 if vs_reference else answer)
    return out


def _turn_tokens(plan, rows, templates, count: est.Counter) -> tuple[int, int]:
    """(judgments, their prompt tokens) of a conversation task (type: multi_turn): one judge_score
    judgment per turn, each showing the turns before it with the earlier answers at their estimated
    length (a judge_win_rate is refused for conversations)."""
    from tunelab.evaluate.judge.prompts import JudgeTemplate

    task, cfg = plan.task, plan.task.judge
    score = JudgeTemplate.load("score_multi", cfg.template, task.base_dir)
    calls = tokens = 0
    for row in rows:
        turns, refs = templates.turns(row), templates.references(row)
        # an answer as long as its reference plus a stop token, else max_new_tokens (as the arms' estimate)
        lengths = [min(task.generation.max_new_tokens, count(r) + 1) if r else task.generation.max_new_tokens
                   for r in refs]
        for t, question in enumerate(turns):
            reference = refs[t] if cfg.reference else None
            history = [{"user": u, "assistant": "", "reference": r if cfg.reference else None}
                       for u, r in zip(turns[:t], refs[:t])]
            shown = score.messages(question=question, answer="", reference=reference, rubric=cfg.rubric,
                                   history=history)[0]["content"]
            calls, tokens = calls + 1, tokens + count(shown) + sum(lengths[:t + 1])
    return calls, tokens


def _win_rate_done(plan, arm) -> bool:
    """The compare judged this arm against its baseline arm already (its results.json says by which judge)."""
    from tunelab import paths

    entry = (read_json(plan.arm_dir(arm) / "eval" / paths.RESULTS_FILE).get("metrics") or {}).get(WIN_RATE) or {}
    stamp = entry.get("baseline") if isinstance(entry, dict) else None
    return isinstance(stamp, dict) and stamp.get("arm") == baseline_arm(plan.task) and \
        stamp.get("judge") == plan.task.judge.model


def add_judge(plan, estimates: list) -> None:
    """Set each arm estimate's `judge` (compare/estimate.py's ArmEstimate): the judging of its answers, apart
    from its own cost; nothing without a judge metric. The test items as compare/estimate.py reads them."""
    from tunelab.evaluate.runner import load_task_rows
    from tunelab.evaluate.task_types import task_type

    names = judge_metrics(plan.task)
    if not names or plan.task.judge is None or not plan.task.judge.model:
        return
    rows = load_task_rows(plan.task)
    rows = rows[:plan.config.limit] if plan.config.limit is not None else rows
    count = _counter(plan)
    tt = task_type(plan.task)
    templates = tt.templates(plan.task, plan.source)
    if tt.conversation:  # every turn is judged, with the conversation before it
        turns = _turn_tokens(plan, rows, templates, count)
        per_item = {SCORE: turns[1], WIN_RATE: 0}
    else:
        per_item = _item_tokens(plan, rows, templates, count)
    base, n = baseline_arm(plan.task), len(rows)
    for arm, e in zip(plan.arms, estimates):
        calls = prompt = 0
        done = e.finished
        if SCORE in names:
            calls, prompt = (turns[0] if tt.conversation else n), per_item[SCORE]
        if WIN_RATE in names and arm.id != base:
            calls, prompt = calls + 2 * n, prompt + 2 * per_item[WIN_RATE]
            done = done and (base is None or _win_rate_done(plan, arm))
        e.judge = _cost(plan, count, calls, prompt, done)


def overall(plan) -> Optional[JudgeOverall]:
    """The judge's model, its check set's cost and the dry run's caveats; None without a judge metric."""
    cfg = plan.task.judge
    if not judge_metrics(plan.task) or cfg is None or not cfg.model:
        return None
    count = _counter(plan)
    check = None
    if cfg.check:
        check = _check(plan, count)
    local = not is_endpoint(cfg.model)
    return JudgeOverall(cfg.model, not local, count.tokenizer is not None, cfg.max_new_tokens, check, cfg.check,
                        est.LOAD_S if local else 0.0)


def _check(plan, count: est.Counter) -> JudgeEstimate:
    """judge.check: every labelled pair in both orders with tunelab's pairwise template, as judge.check measures it."""
    from tunelab.evaluate.judge.labels import load_pairs
    from tunelab.evaluate.judge.prompts import JudgeTemplate
    from tunelab.evaluate.metrics.judge import beside_task

    cfg = plan.task.judge
    pairs = load_pairs(beside_task(cfg.check, plan.task.base_dir))
    template = JudgeTemplate.load("pairwise", None)
    prompt = sum(count(template.messages(question=p.question, answer_a=p.answers[0], answer_b=p.answers[1],
                                         rubric=cfg.rubric)[0]["content"]) for p in pairs)
    done = read_json(plan.out / CHECK_JSON).get("stamp") == check_stamp(cfg) or any(map(_checked, _results(plan)))
    return _cost(plan, count, 2 * len(pairs), 2 * prompt, done)


def _results(plan) -> list[dict]:
    from tunelab import paths

    return [read_json(plan.arm_dir(a) / "eval" / paths.RESULTS_FILE) for a in plan.arms]


def _checked(results: dict) -> bool:
    """An arm's evaluation measured the judge on judge.check already (judge_score does, in each arm)."""
    return any(isinstance(m, dict) and m.get("judge_check") for m in (results.get("metrics") or {}).values())
