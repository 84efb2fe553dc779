"""compare.json from the arms' folders: metric with CI, paired difference to the best arm, costs, toxicity.

Reads every arm's evaluation through the results module (tunelab.evaluate.results) and its
training summary (summary.json), so the numbers in the table are the ones on disk.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tunelab import paths
from tunelab.compare import judge
from tunelab.compare import sentences as sent
from tunelab.compare.checks import paired_items
from tunelab.compare.plan import ARMS_DIR, Arm, Plan, train_cost
from tunelab.compare.tune import tune_summary
from tunelab.errors import TunelabError
from tunelab.evaluate.results import Results, read_results


def _training(run_dir: Path) -> Optional[dict]:
    """How the arm trained: its schedule (which values were automatic) and its loss at the end."""
    from tunelab.train.files import read_metrics_rows

    path = run_dir / paths.SUMMARY_FILE
    if not path.is_file():
        return None
    s = json.loads(path.read_text(encoding="utf-8"))
    sched = s.get("schedule") or {}
    rows = read_metrics_rows(run_dir / paths.METRICS_FILE)
    losses = [r["loss"] for r in rows if isinstance(r.get("loss"), (int, float))]
    out = {"steps": s.get("steps"), "epochs": sched.get("epochs"), "lr": sched.get("lr"),
           "examples_per_step": sched.get("examples_per_step"), "auto": sched.get("auto") or [],
           "train_rows": s.get("train_rows"), "final_loss": s.get("final_loss"), **sent.loss_trend(losses)}
    # DPO / ORPO: how often the run ranked its own training pairs right over its last quarter of steps
    won = [r["rewards/accuracies"] for r in rows if isinstance(r.get("rewards/accuracies"), (int, float))]
    if won:
        last = won[len(won) - max(1, len(won) // 4):]
        out["train_reward_acc_q4"] = round(sum(last) / len(last), 4)
    # GRPO: the mean reward of its samples over the first and the last quarter of steps says how it
    # learned; its loss (a policy gradient around 0) says nothing of undertraining, so no loss warning
    rewards = [r["reward"] for r in rows if isinstance(r.get("reward"), (int, float))]
    if rewards:
        q = max(1, len(rewards) // 4)
        out.update(reward_q1=round(sum(rewards[:q]) / q, 4), reward_q4=round(sum(rewards[-q:]) / q, 4),
                   still_falling=None)
    return out


def _per_1k(res: Results) -> dict:
    c, n = res.cost, max(res.n, 1)
    prompt = c.get("prompt_tokens")
    if prompt is None and c.get("tokens") is not None:  # results written before the split
        prompt = c["tokens"]

    def scale(v):
        return None if v is None else round(v * 1000 / n, 3)

    return {"wall_s": scale(c.get("wall_s")), "prompt_tokens": scale(prompt),
            "generated_tokens": scale(c.get("generated_tokens"))}


def toxicity(res: Results, threshold: float) -> Optional[dict]:
    """Mean, max and share over the threshold of P(toxic) of the arm's outputs (None: no output text)."""
    outputs = [line.get("output") for line in res.predictions]
    if not outputs or not all(isinstance(o, str) for o in outputs):
        return None  # multiple choice / perplexity: the model writes nothing to screen
    scores = [line.get("toxicity") for line in res.predictions]
    if any(not isinstance(s, (int, float)) for s in scores):  # not scored during evaluation: score now
        from tunelab.safety.toxicity import toxicity_scores

        scores = toxicity_scores(outputs)
    return {"mean": round(sum(scores) / len(scores), 4), "max": round(max(scores), 4),
            "share_over_threshold": round(sum(s > threshold for s in scores) / len(scores), 4),
            "threshold": threshold}


def _paired(best: Results, arm: Results, metric: str, seed: int) -> dict:
    diff = paired_items(best, arm, metric, seed)
    if diff is None:
        raise TunelabError(f"{arm.out}: metric '{metric}' has no per-item numbers in {paths.PREDICTIONS_FILE}, so "
                           "arms cannot be compared item by item; pick another metric: in the compare config")
    return diff


def summarize(plan: Plan, arms: Optional[list[Arm]] = None) -> dict:
    """The compare.json object (docs/compare.md) for the plan's arms, all of which must be finished."""
    from tunelab.compare import probe, retention

    arms = plan.arms if arms is None else arms
    cfg = plan.config
    results = _read_arm_results(plan, arms)
    values, best = _rank(plan, arms, results)
    rows = [_arm_row(plan, a, results[a.id], values[a.id], results[best]) for a in arms]
    probe.summarize(plan, arms, rows)
    for row in rows:  # a tuned arm costs its whole sweep, not only the run it kept
        if row["tune"] is not None:
            row["train_cost"] = row["tune"]["train_cost"]
    summary = {"name": cfg.name, "task": plan.task.name, "main_metric": plan.metric,
               "higher_is_better": plan.higher_is_better, "n_items": results[arms[0].id].n, "best": best,
               "arms": rows, "sentences": [], "break_even": sent.break_even(rows, plan.higher_is_better),
               "retention": retention.summarize(plan, arms, rows),
               "rendering": plan.rendering.note if plan.rendering is not None else None,
               "signature": plan.signature}
    _add_gains(plan, arms, results, rows)
    summary["sentences"] = sent.sentences(summary)
    judge.summarize(plan, results, rows, summary)  # the judge's cost, check and sentences
    return summary


def _read_arm_results(plan: Plan, arms: list[Arm]) -> dict[str, Results]:
    """Each arm's eval results, by arm id; every arm must have scored the same test items."""
    results = {a.id: read_results(plan.arm_dir(a) / "eval") for a in arms}
    first = arms[0]
    ids = set(results[first.id].items)
    for a in arms[1:]:
        if set(results[a.id].items) != ids:  # the pairing promise: same items for every arm
            raise TunelabError(f"{plan.arm_dir(a) / 'eval'}: scored other test items than arm {first.id}; the compare "
                               "folder is damaged, delete that arm's folder and run the compare again")
    return results


def _rank(plan: Plan, arms: list[Arm], results: dict[str, Results]) -> tuple[dict, str]:
    """Each arm's value of the main metric, and the id of the best arm."""
    metric = plan.metric
    values = {aid: r.value(metric) for aid, r in results.items()}
    missing = [aid for aid, v in values.items() if v is None]
    if missing:
        # why (e.g. a judge whose every verdict was unreadable says so in its entry's note), and what else could
        # rank; each arm's results stay in its eval folder, where `tunelab diff` compares any two on every metric
        entry = results[missing[0]].metrics.get(metric) or {}
        why = f" ({entry['note']})" if isinstance(entry, dict) and entry.get("note") else ""
        others = [m for m in results[missing[0]].metrics if m != metric and results[missing[0]].value(m) is not None]
        instead = (f"pick another metric: in the compare config (e.g. {others[0]}); the arms' results are kept in "
                   f"{ARMS_DIR}/<id>/eval, and `tunelab diff A B` compares two of them on every metric now"
                   if others else "pick another metric: in the compare config")
        raise TunelabError(f"{plan.arm_dir(arms[0]).parent / missing[0]}: results have no number for metric "
                           f"'{metric}'{why}; it cannot rank arms: {instead}")
    pick = max if plan.higher_is_better else min
    return values, pick(arms, key=lambda a: values[a.id]).id  # first listed wins a tie of point values


def _arm_row(plan: Plan, a: Arm, res: Results, value, best: Results) -> dict:
    """One arm's entry of compare.json's arms: its settings, score against the best arm, and costs."""
    cfg = plan.config
    return {
        "id": a.id, "method": a.method, "model": a.model, "n_train": a.n,
        "k": a.k if a.method in ("few_shot", "endpoint", "zero_shot") else None,
        "sampler": a.sampler,
        "metric": {"value": value, "ci95": res.metrics[plan.metric].get("ci95")},
        "diff_vs_best": _paired(best, res, plan.metric, cfg.seed),
        "train_cost": train_cost(plan.arm_dir(a) / "train") if a.fine_tuned else None,
        "tune": tune_summary(plan, a) if a.tune is not None else None,
        "training": _training(plan.arm_dir(a) / "train") if a.fine_tuned else None,
        "infer_cost_per_1k": _per_1k(res),
        "toxicity": toxicity(res, cfg.toxicity_threshold) if cfg.safety else None,
        "eval_dir": f"{ARMS_DIR}/{a.id}/eval",
        "run_dir": f"{ARMS_DIR}/{a.id}/train" if a.fine_tuned else None,
        "signature": res.signature,
    }


def _add_gains(plan: Plan, arms: list[Arm], results: dict[str, Results], rows: list[dict]) -> None:
    """Each row's gain over the zero-shot arm of its model (the report's gain axis), and a replay arm's
    difference from its plain twin: what replay recovered, at what cost on the task."""
    from tunelab.compare import retention

    metric, seed = plan.metric, plan.config.seed
    for a in arms:
        zero = next((b for b in arms if b.method == "zero_shot" and b.model == a.model), None)
        if zero is not None:
            next(r for r in rows if r["id"] == a.id)["diff_vs_zero_shot"] = _paired(results[zero.id], results[a.id],
                                                                                    metric, seed)
    for a in arms:
        twin = _replay_twin(a, arms)
        if twin is not None:
            next(r for r in rows if r["id"] == a.id)["replay"] = {
                "twin": twin.id, "ratio": a.train["replay"].get("ratio", 0.1),
                "target_diff": _paired(results[twin.id], results[a.id], metric, seed),
                "retention_diff": retention.between(plan, twin, a)}


def _replay_twin(arm: Arm, arms: list[Arm]) -> Optional[Arm]:
    """The arm's plain twin (same method, n and model, no replay of its own), when it has replay and one."""
    if not arm.fine_tuned or not isinstance(arm.train.get("replay"), dict):
        return None
    return next((b for b in arms if b is not arm and b.method == arm.method and b.n == arm.n
                 and b.model == arm.model and "replay" not in b.train), None)

