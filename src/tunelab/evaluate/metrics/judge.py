"""LLM-judge metrics: `judge_score` (one answer rated 1-10) and `judge_win_rate` (pairs, both orders).

Both read the task's `judge:` block (config.JudgeConfig; docs/judge.md) through `for_task`, judge
every item in one batched, cached run (evaluate/judge/run.py) and return, beside the value:
per item the judge's text and parsed verdict (both orders for pairs), written to predictions.jsonl
under the metric's name; `unparsed`, the judgments whose text held no readable answer (left out
of the value, never scored 0); and the judge's own cost (`cost.judge` in results.json).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate import stats
from tunelab.evaluate.judge.agreement import agreement
from tunelab.evaluate.judge.check import judge_pairs
from tunelab.evaluate.judge.labels import load_pairs
from tunelab.evaluate.judge.pairwise import Pair, judge_both_orders, lc_win_rate
from tunelab.evaluate.judge.parse import parse_rating
from tunelab.evaluate.judge.prompts import JudgeTemplate
from tunelab.evaluate.judge.run import Judge, JudgeCost, JudgeRequest, JudgeSettings
from tunelab.evaluate.metrics.base import Metric, MetricResult
from tunelab.evaluate.metrics.registry import register
from tunelab.infer.endpoint import PREFIX

log = logging.getLogger("tunelab.evaluate")
CHECK_MEASURES = ("accuracy", "right in both orders", "order consistency", "agreement with ties", "Cohen's kappa",
                  "prefers longer", "unparsed")
ARM_BASELINE = "arm:"  # judge.baseline as a compare's plan sets it: "arm:<id>", that arm's answers
NO_JUDGE = ("there is no default judge: which model judges, and how far it agrees with people on your kind of data, "
            "is a choice to make and measure (docs/judge.md); name one in the task file, e.g. "
            "judge: {model: \"openai:http://127.0.0.1:8000/v1#NAME\"} or judge: {model: MODEL_NAME_OR_FOLDER}")


class _JudgeMetric(Metric):
    kind: ClassVar[str] = ""

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.cfg = None
        self.template: Optional[JudgeTemplate] = None
        self.judge: Optional[Judge] = None  # built on first use; tests set one with a fake backend
        self.where = "the task"
        self.check_pairs: Optional[list] = None  # judge.check's labelled pairs
        self.deferred = False  # judge_win_rate in a compare's arm: judged after every arm ran (compare/judge.py)
        self.conversation = False  # items are turns of conversations (their `history`, a reference where one exists)

    def for_task(self, task) -> None:
        self.where = task.source or f"task '{task.name}'"
        from tunelab.evaluate.task_types import task_type

        if "generation" not in task_type(task).needs(task):
            raise TunelabError(f"metric '{self.name}' in {self.where} judges generated answers, and this task is "
                               f"type: {task.type}; use it in a type: generate task")
        if task.judge is None or not task.judge.model:
            raise TunelabError(f"metric '{self.name}' in {self.where}: {NO_JUDGE}")
        self.cfg = task.judge
        self.conversation = task_type(task).conversation
        if self.conversation and self.kind == "pairwise":
            raise TunelabError(f"metric '{self.name}' in {self.where}: in a type: {task.type} task each model answers "
                               "later turns in a conversation of its own earlier answers, so two models' answers to "
                               "one turn answer different conversations; rate them one at a time with judge_score")
        if self.conversation and self.cfg.reference and task.references is None:
            raise TunelabError(f"metric '{self.name}' in {self.where}: judge.reference: true shows the judge each "
                               "turn's reference answer, and this task names none; add references: (docs/tasks.md) "
                               "or set judge.reference: false")
        kind = "score_multi" if self.conversation else self.kind  # the judge sees the conversation so far
        self.template = JudgeTemplate.load(kind, self.cfg.template, task.base_dir)
        self.template.check(needs_reference=self.kind == "score" and self.cfg.reference)
        self._check(task)
        if self.cfg.check:  # a missing or unknown-shape check file fails now, not after the answers are made
            self.check_pairs = load_pairs(beside_task(self.cfg.check, task.base_dir))
        if self.cfg.model.startswith(PREFIX):
            self._judge()._open()  # an endpoint judge that is down fails before the model under test runs

    def _check(self, task) -> None:
        """Settings only this metric needs."""

    def _judge(self) -> Judge:
        if self.cfg is None:
            raise TunelabError(f"metric '{self.name}' runs inside a task with a judge: block (docs/judge.md)")
        if self.judge is None:
            c = self.cfg
            self.judge = Judge(JudgeSettings(c.model, c.concurrency, c.max_new_tokens, c.temperature, c.cache))
        return self.judge

    def new_cost(self) -> dict:
        """Start counting the judge's cost afresh (a compare costs each arm's judgments apart); the old count."""
        judge = self._judge()
        old, judge.cost = judge.cost.to_json(), JudgeCost()
        return old

    def signature_options(self) -> dict[str, Any]:
        if self.cfg is None:
            return {}
        out = {"judge": self.cfg.model, "template": self.template.sha256[:12] if self.template else "-"}
        if self.cfg.rubric:
            out["rubric"] = "own"
        return out

    def _result(self, values: list[Optional[float]], details: list[dict], extra: dict, *, n_resamples: int,
                seed: int) -> MetricResult:
        parsed = [v for v in values if v is not None]
        extra = {**extra, "unparsed": len(values) - len(parsed)}
        if extra["unparsed"]:
            what = "judgments held no readable rating" if self.kind == "score" else \
                "pairs had no readable verdict in one order or both"
            log.warning(f"{self.name}: {extra['unparsed']} of {len(values)} {what}; they are left out of the value "
                        "(not scored 0): read them in predictions.jsonl")
        if self.check_pairs:
            extra["judge_check"] = self.check_agreement(self.check_pairs, n_resamples, seed)
        cost = {"judge": self._judge().cost.to_json()}
        if not parsed:
            return MetricResult(self.name, None, None, None, self.signature(), 0, values, extra=extra, item_details=details,
                                cost=cost, note=f"not computed: none of the {len(values)} items has a readable judgment; "
                                            "read them in predictions.jsonl, and try a stronger judge (docs/judge.md)")
        ci = stats.bootstrap_ci(parsed, n_resamples=n_resamples, seed=seed)
        return MetricResult(self.name, float(np.mean(parsed)), stats.stderr(parsed), ci, self.signature(), len(parsed),
                            values, extra=extra, item_details=details, cost=cost)


    def check_agreement(self, pairs: list, n_resamples: int, seed: int) -> dict:
        """judge.check: the judge's agreement with the human labels, measured with the same judge and cache."""
        v = judge_pairs(self.cfg.model, pairs, rubric=self.cfg.rubric, judge=self._judge())
        measures = agreement(pairs, v, n_resamples=n_resamples, seed=seed)
        return {"data": self.cfg.check, **{m.name: m.to_json() for m in measures if m.name in CHECK_MEASURES}}


def beside_task(path: str, base_dir: Optional[str]) -> str:
    """A check file named relative to the task file (builtin: names pass through)."""
    if path.startswith("builtin:") or not base_dir or Path(path).expanduser().is_absolute():
        return path
    return str(Path(base_dir) / path)


def _question(item: dict) -> str:
    return item.get("question") or item.get("prompt") or ""


def _first(refs: Any, what: str, item: dict, where: str) -> str:
    refs = [refs] if isinstance(refs, str) else list(refs or [])
    if not refs or not str(refs[0]).strip():
        raise TunelabError(f"item {item.get('id', '?')} of {where} has no answer, which {what} needs; "
                           "give the task an `answer:` (docs/tasks.md) or drop that setting")
    return str(refs[0])


@register("judge_score")
class JudgeScore(_JudgeMetric):
    """An LLM judge rates each answer 1-10 (reference-guided with judge.reference: true)."""

    kind = "score"
    description = "LLM judge's rating of each answer, 1-10 (task judge: block; reference-guided with judge.reference)"

    def requests(self, predictions: Sequence[str], references=None, items=None) -> list[JudgeRequest]:
        """One judge request per answer (GRPO's judge_score reward sends the same: evaluate/rewards.py)."""
        c, n = self.cfg, len(predictions)
        refs, its = references or [[] for _ in range(n)], items or [{} for _ in range(n)]
        requests, guided_n = [], 0
        for answer, r, it in zip(predictions, refs, its):
            # a conversation's turn without a reference is graded without one; elsewhere every item needs one
            guided = c.reference and not (self.conversation and not r)
            reference = _first(r, "judge.reference: true", it, self.where) if guided else None
            guided_n += reference is not None
            key = {"template": self.template.sha256, "kind": "score", "question": _question(it), "answers": [answer],
                   "reference": reference, "rubric": c.rubric}
            history = None
            if self.conversation:  # the earlier turns, their references shown only to a reference-guided judge
                history = [{**h, "reference": h.get("reference") if c.reference else None} for h in it.get("history", [])]
                key["history"] = history
            messages = self.template.messages(question=_question(it), answer=answer, reference=reference,
                                              rubric=c.rubric, history=history)
            requests.append(JudgeRequest(messages, key))
        self.reference_guided = guided_n  # compute's results say how many were
        return requests

    def compute(self, predictions: Sequence[str], references=None, items=None, *, n_resamples: int = 1000,
                seed: int = 1234) -> MetricResult:
        texts = self._judge().run(self.requests(predictions, references, items))
        ratings = [parse_rating(t) for t in texts]
        details = [{"judge_text": t, "rating": r} for t, r in zip(texts, ratings)]
        values = [None if r is None else float(r) for r in ratings]
        # a conversation's turns are reference-guided only where they have a reference: how many were, in view
        extra = {"reference_guided": self.reference_guided} if self.conversation and self.cfg.reference else {}
        return self._result(values, details, extra, n_resamples=n_resamples, seed=seed)


@register("judge_win_rate")
class JudgeWinRate(_JudgeMetric):
    """Pairwise against a baseline, both orders, a flip is a tie; win 1, tie 0.5, loss 0."""

    kind = "pairwise"
    description = ("LLM judge's win rate against a baseline (judge.baseline: reference), judged in both orders; "
                   "also wins/ties/losses, order consistency and the length-controlled win rate")

    def _check(self, task) -> None:
        b = self.cfg.baseline
        self.deferred = b is not None and b.startswith(ARM_BASELINE)  # set by a compare's plan: compare/judge.py
        if b != "reference" and not self.deferred:
            got = "none" if b is None else repr(b)
            raise TunelabError(f"metric 'judge_win_rate' in {self.where}: judge.baseline is {got}; in an evaluation "
                               "the baseline is the task's own answers: set judge: {baseline: reference}; another "
                               "model's answers are a baseline in a compare (judge.baseline: <arm id>, docs/judge.md)")

    def compute(self, predictions: Sequence[str], references=None, items=None, *, n_resamples: int = 1000,
                seed: int = 1234) -> MetricResult:
        n = len(predictions)
        if self.deferred:  # the baseline arm's answers exist only once every arm has run
            arm = self.cfg.baseline[len(ARM_BASELINE):]
            return self.not_computed(n, f"judged by the compare against arm {arm}'s answers once every arm has run")
        refs, its = references or [[] for _ in range(n)], items or [{} for _ in range(n)]
        pairs = [Pair(_question(it), p, _first(r, "judge.baseline: reference", it, self.where))
                 for p, r, it in zip(predictions, refs, its)]
        return self.score_pairs(pairs, n_resamples=n_resamples, seed=seed)

    def score_pairs(self, pairs: list[Pair], *, n_resamples: int = 1000, seed: int = 1234) -> MetricResult:
        """The win rate of each pair's first answer over its second (the baseline's), both orders judged."""
        judged = judge_both_orders(self._judge(), self.template, pairs, self.cfg.rubric)
        score = {1: 1.0, 0: 0.5, 2: 0.0}
        values = [None if j.verdict is None else score[j.verdict] for j in judged]
        names = {1: "win", 0: "tie", 2: "loss", None: "unparsed"}
        details = [{"verdict": names[j.verdict],
                    "orders": [{"shown": "answer first (A)", "judge_text": j.texts[0], "parsed": j.letters[0]},
                               {"shown": "answer second (B)", "judge_text": j.texts[1], "parsed": j.letters[1]}]}
                   for j in judged]
        extra = self._beside(judged, pairs, values, n_resamples, seed)
        return self._result(values, details, extra, n_resamples=n_resamples, seed=seed)

    @staticmethod
    def _beside(judged, pairs, values, n_resamples: int, seed: int) -> dict:
        """Wins / ties / losses, order consistency, and the length-controlled win rate with its CI."""
        both = [j for j in judged if None not in j.verdicts]
        out = {"wins": sum(j.verdict == 1 for j in judged), "ties": sum(j.verdict == 0 for j in judged),
               "losses": sum(j.verdict == 2 for j in judged),
               "order_consistency": (sum(j.verdicts[0] == j.verdicts[1] for j in both) / len(both)) if both else None}
        keep = [i for i, v in enumerate(values) if v is not None]
        if len(keep) < 2:
            return {**out, "lc_win_rate": None, "lc_ci95": None}
        y = np.array([values[i] for i in keep])
        la = np.array([len(pairs[i].first) for i in keep])
        lb = np.array([len(pairs[i].second) for i in keep])
        reps = stats.bootstrap_replicates(None, n_resamples, seed, lambda idx: lc_win_rate(y, la, lb, idx), n=len(keep))
        lo, hi = np.quantile(reps, [0.025, 0.975])
        return {**out, "lc_win_rate": lc_win_rate(y, la, lb), "lc_ci95": [float(lo), float(hi)]}
