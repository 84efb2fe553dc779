"""The LLM judge in a compare (docs/judge.md): judge_win_rate against another arm, the judge's check, self-preference.

Three steps, each called with one line from the compare's flow:
- `check_plan(plan)` (make_plan, before any arm runs): judge_win_rate's baseline arm exists
  (`judge.baseline: <arm id>`, default zero_shot; `reference` is the task's own answers and needs no
  arm), else one line naming the arms present and the key to set; a judge that is the base model of
  an arm is warned about (self-preference). The task's `judge.baseline` becomes `arm:<id>`, which
  tells each arm's evaluation to leave judge_win_rate to the compare (its answers are not all made yet).
- `judge_arms(plan, say)` (after every arm finished, before the table): the judge's agreement on
  `judge.check` first, then each arm's answers paired with the baseline arm's by item id, judged in
  both orders through the metric's own cached judging, and written into that arm's results.json and
  predictions.jsonl as any metric is, so the table, the paired differences and the sentences read
  them unchanged. An arm whose entry already names this baseline (its answers' hash) and this judge
  is skipped: a re-run of a finished compare makes no judge call and opens no judge, and an added arm
  is the only one judged. The baseline arm's win rate is 0.5 by definition (not judged).
- `summarize(plan, results, rows, summary)` (inside table.summarize): the judge's cost per 1,000
  items beside each arm's own, a `judge` block, and the sentences on the baseline, the check
  threshold (`judge.min_agreement`) and self-preference.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Callable, Optional

from tunelab.compare.checks import N_RESAMPLES, read_json
from tunelab.errors import TunelabError
from tunelab.io import atomic_write_json

log = logging.getLogger("tunelab.compare")

WIN_RATE, SCORE = "judge_win_rate", "judge_score"
DEFAULT_BASELINE = "zero_shot"
CHECK_JSON = "judge_check.json"  # the judge's agreement on judge.check, kept in the compare folder
CHECK_MEASURE = "accuracy"       # what judge.min_agreement is compared with


def judge_metrics(task) -> list[str]:
    """The task's judge metrics, in its order."""
    names = [m if isinstance(m, str) else next(iter(m)) for m in task.metrics]  # a name, or {name: options}
    return [n for n in names if n in (WIN_RATE, SCORE)]


def baseline_arm(task) -> Optional[str]:
    """The arm judge_win_rate pairs against (after check_plan), or None (no such metric, or the task's answers)."""
    from tunelab.evaluate.metrics.judge import ARM_BASELINE

    b = task.judge.baseline if task.judge is not None else None
    if WIN_RATE not in judge_metrics(task) or not b or not b.startswith(ARM_BASELINE):
        return None
    return b[len(ARM_BASELINE):]


def self_preference(task, arms) -> list[str]:
    """The arms whose base model is the judge itself."""
    from tunelab.evaluate.rewards import same_weights

    if task.judge is None or not task.judge.model:
        return []
    return [a.id for a in arms if same_weights(a.model, task.judge.model)]


def check_plan(plan) -> None:
    """Plan-time checks of the judge metrics (module docstring); one line each, nothing run."""
    from tunelab.evaluate.metrics.judge import ARM_BASELINE, NO_JUDGE

    task, names = plan.task, judge_metrics(plan.task)
    if not names:
        return
    where = task.source or f"task '{task.name}'"
    if task.judge is None or not task.judge.model:
        raise TunelabError(f"{plan.source}: metric '{names[0]}' in {where}: {NO_JUDGE}")
    cfg = task.judge
    if WIN_RATE in names and cfg.baseline != "reference":
        base = (cfg.baseline or DEFAULT_BASELINE).removeprefix(ARM_BASELINE)
        ids = [a.id for a in plan.arms]
        if base not in ids:
            raise TunelabError(f"{plan.source}: metric judge_win_rate judges each arm against the answers of arm "
                               f"'{base}', and this compare has no such arm (its arms: {', '.join(ids)}); add a "
                               f"{base} arm, or set judge: {{baseline: <one of those arm ids>}} (or baseline: "
                               f"reference, the task's answers) in {where} (docs/judge.md)")
        _no_tuned_arm(plan, base)
        cfg.baseline = ARM_BASELINE + base
    same = self_preference(task, plan.arms)
    if same:
        log.warning(_self_preference_line(cfg.model, same))


def _no_tuned_arm(plan, base: str) -> None:
    """A sweep that picks its run by judge_win_rate would need the baseline arm's answers on its validation items."""
    from tunelab.compare.render import TASK

    tuned = [a for a in plan.arms if a.tune is not None]
    # a sweep ranks by the compare's metric when the pool is rendered through the task (compare/tune.ranked_by)
    if tuned and plan.metric == WIN_RATE and plan.rendering is not None and plan.rendering.mode == TASK:
        raise TunelabError(f"{plan.source}: {tuned[0].where}.tune picks its run by the compare's metric on its "
                           f"validation items, and judge_win_rate there would need arm {base}'s answers to those "
                           "items, which no arm makes; rank the compare by another metric, or drop tune:")


def _self_preference_line(model: str, arms: list[str]) -> str:
    return (f"Self-preference: the judge {model} is the base model of {_join(arms)}; a judge tends to prefer answers "
            "in its own style, so the judged numbers of those arms may be inflated: judge with another model "
            "(docs/judge.md).")


def _join(ids: list[str]) -> str:
    return ids[0] if len(ids) == 1 else ", ".join(ids[:-1]) + " and " + ids[-1]


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _metric(task):
    """judge_win_rate set up from the task's judge: block, to judge pairs the compare makes."""
    from tunelab.evaluate.metrics import get_metric

    m = get_metric(WIN_RATE)
    m.for_task(task)
    m.deferred = False  # the compare holds every arm's answers now
    return m


def _questions(task, limit: Optional[int]) -> dict[str, str]:
    """Item id -> the question the judge reads: the task's own prompt, without any arm's demonstrations."""
    from tunelab.evaluate.prompts import TaskTemplates
    from tunelab.evaluate.runner import load_task_rows

    rows = load_task_rows(task)
    rows = rows[:limit] if limit is not None else rows
    templates = TaskTemplates(task, task.source or task.name)
    return {str(r.data.get("id", r.line)): templates.render(r).prompt for r in rows}


def judge_arms(plan, say: Callable[[str], None]) -> None:
    """Judge every arm not yet judged against the baseline arm (module docstring)."""
    from tunelab.evaluate.results import read_results

    base_id = baseline_arm(plan.task)
    if base_id is None:
        return
    results = {a.id: read_results(plan.arm_dir(a) / "eval") for a in plan.arms}
    base_out = {str(line["id"]): line.get("output") or "" for line in results[base_id].predictions}
    cfg = plan.task.judge
    stamp = {"arm": base_id, "answers_sha256": _sha(base_out), "judge": cfg.model, "template": cfg.template,
             "rubric": cfg.rubric, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}
    todo = [a for a in plan.arms if (results[a.id].metrics.get(WIN_RATE) or {}).get("baseline") != stamp]
    check_stale = bool(cfg.check) and (read_json(plan.out / CHECK_JSON).get("stamp") != check_stamp(cfg))
    if not todo and not check_stale:
        return  # nothing to judge: the judge is not even opened
    m = _metric(plan.task)
    pairs_to_check, m.check_pairs = m.check_pairs, None  # measured once for the compare, not once per arm
    if check_stale:
        say(f"judge: measuring {cfg.model} on {cfg.check} first")
        m.new_cost()
        check = m.check_agreement(pairs_to_check, N_RESAMPLES, plan.config.seed)
        atomic_write_json(plan.out / CHECK_JSON, {"stamp": check_stamp(cfg), "check": check, "cost": m.new_cost()})
    questions = _questions(plan.task, plan.config.limit) if todo else {}
    for a in todo:
        res = results[a.id]
        if a.id == base_id:
            r = _baseline_result(m, len(res.predictions), base_id)
        else:
            say(f"judge: {a.id} against {base_id}, {len(res.predictions)} pairs in both orders")
            from tunelab.evaluate.judge.pairwise import Pair

            pairs = [Pair(questions.get(str(line["id"]), line.get("prompt") or ""), line.get("output") or "",
                          base_out.get(str(line["id"]), "")) for line in res.predictions]
            m.new_cost()
            r = m.score_pairs(pairs, n_resamples=N_RESAMPLES, seed=plan.config.seed)
        _write(res, r, stamp)


def check_stamp(cfg) -> dict:
    return {"judge": cfg.model, "check": cfg.check, "template": cfg.template, "rubric": cfg.rubric,
            "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}


def _baseline_result(m, n: int, base_id: str):
    from tunelab.evaluate.judge.run import JudgeCost
    from tunelab.evaluate.metrics.base import MetricResult

    return MetricResult(WIN_RATE, 0.5, 0.0, (0.5, 0.5), m.signature(), n, [0.5] * n,
                        note=f"{base_id} is the baseline: its answers against themselves win 0.5 by definition "
                             "(not judged)",
                        extra={"wins": 0, "ties": n, "losses": 0, "unparsed": 0},
                        item_details=[{"verdict": "baseline"}] * n, cost={"judge": JudgeCost().to_json()})


def _write(res, r, stamp: dict) -> None:
    """The arm's judge_win_rate entry, per-item values and judge texts; its judge cost replaces the last one's."""
    from tunelab.evaluate.results import write_results

    old = (res.metrics.get(WIN_RATE) or {}).get("judge_cost") or {}
    new = r.cost["judge"]
    res.metrics[WIN_RATE] = {**r.to_json(), "baseline": stamp, "judge_cost": new}
    total = dict(res.cost.get("judge") or {})
    for key, value in new.items():
        if isinstance(value, (int, float)):
            total[key] = round(total.get(key, 0) - old.get(key, 0) + value, 3)
    res.cost["judge"] = total
    for j, line in enumerate(res.predictions):
        line["metrics"][WIN_RATE] = r.item_values[j]
        line[WIN_RATE] = r.item_details[j]
    write_results(res, res.out)


def _per_1k(res) -> Optional[dict]:
    c, n = res.cost.get("judge"), max(res.n, 1)
    if not c:
        return None
    return {k: round(c.get(k, 0) * 1000 / n, 3) for k in ("calls", "tokens", "wall_s")}


def summarize(plan, results: dict, rows: list[dict], summary: dict) -> None:
    """compare.json's judge block, each row's judge cost per 1,000 items, and the judge's sentences."""
    names = judge_metrics(plan.task)
    if not names:
        return
    for row in rows:
        row["judge_cost_per_1k"] = _per_1k(results[row["id"]])
    cfg = plan.task.judge
    block = {"model": cfg.model, "metrics": names, "min_agreement": cfg.min_agreement,
             "baseline": baseline_arm(plan.task) or ("reference" if WIN_RATE in names else None),
             "check": _check(plan, results, names), "self_preference": self_preference(plan.task, plan.arms)}
    summary["judge"] = block
    summary["sentences"] += sentences(block, summary["main_metric"])


def _check(plan, results: dict, names: list[str]) -> Optional[dict]:
    """The judge's agreement on judge.check: the compare's own measurement, or the one an arm's evaluation wrote."""
    kept = read_json(plan.out / CHECK_JSON).get("check")
    if kept:
        return kept
    for res in results.values():
        for name in names:
            found = (res.metrics.get(name) or {}).get("judge_check")
            if found:
                return found
    return None


def sentences(block: dict, main_metric: str) -> list[str]:
    """Words on the judge that follow from compare.json's judge block only."""
    out, model = [], block["model"]
    if block.get("baseline") and block["baseline"] != "reference":
        out.append(f"judge_win_rate is each arm's win rate against {block['baseline']}'s answers on the same items, "
                   f"judged by {model} in both orders (a verdict that flips with the order is a tie, 0.5); "
                   f"{block['baseline']} is the baseline, 0.5 by definition.")
    check, ranked = block.get("check"), main_metric in block["metrics"]
    measure = (check or {}).get(CHECK_MEASURE) or {}
    if check and measure.get("value") is not None:
        v, ci = measure["value"], measure.get("ci95")
        how = f"{v:.0%}" + (f" (95% CI {ci[0]:.0%} to {ci[1]:.0%})" if ci else "")
        if v < block["min_agreement"]:
            rests = "The ranking rests on" if ranked else "The judged metrics rest on"
            out.append(f"{rests} a judge below the agreement threshold: {model} agreed with the human labels of "
                       f"{check.get('data')} on {how} of their pairs, under judge.min_agreement "
                       f"{block['min_agreement']:.0%}; treat its verdicts as unconfirmed (docs/judge.md).")
        else:
            out.append(f"The judge {model} agreed with the human labels of {check.get('data')} on {how} of their "
                       f"pairs (judge.min_agreement {block['min_agreement']:.0%}).")
    elif ranked:
        out.append(f"The judge {model} was not measured against human labels: set judge.check (e.g. "
                   "builtin:llmbar-natural) to know how far its ranking can be trusted (docs/judge.md).")
    if block.get("self_preference"):
        out.append(_self_preference_line(model, block["self_preference"]))
    return out
