"""Running a judge on human-labelled pairs (`tunelab judge agreement --judge MODEL`).

Each pair is judged in both orders with the pairwise template (judge_win_rate's own), through the
same cached Judge, so measuring a judge and then using it re-judges nothing twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from tunelab.evaluate.judge.labels import LabelledPair, Verdicts
from tunelab.evaluate.judge.pairwise import Pair, judge_both_orders
from tunelab.evaluate.judge.prompts import JudgeTemplate
from tunelab.evaluate.judge.run import Judge, JudgeSettings
from tunelab.io import atomic_write_jsonl


def judge_pairs(model: str, pairs: list[LabelledPair], *, out: Optional[Path] = None, template: Optional[str] = None,
                rubric: Optional[str] = None, concurrency: int = 8, judge: Optional[Judge] = None) -> Verdicts:
    """The judge's verdicts on the pairs, both orders, in the pairs' own order; `out` keeps them (jsonl)."""
    tmpl = JudgeTemplate.load("pairwise", template)
    tmpl.check()
    judge = judge or Judge(JudgeSettings(model, concurrency=concurrency))  # the CLI passes its own, to show the cost
    judged = judge_both_orders(judge, tmpl, [Pair(p.question, *p.answers) for p in pairs], rubric)
    verdicts = Verdicts([j.verdicts[0] for j in judged], [j.verdicts[1] for j in judged],
                        source=model, texts=[list(j.texts) for j in judged])
    if out is not None:
        atomic_write_jsonl(out, [{"id": p.id, "verdict": j.verdicts[0], "verdict_swapped": j.verdicts[1],
                                  "texts": list(j.texts)} for p, j in zip(pairs, judged)])
    return verdicts
