"""The sentences under the table, and the break-even: words that follow from the numbers only.

Both take compare.json's `arms` list (docs/compare.md) and nothing else, so they are tested with
hand-made numbers. The rule for "better": an arm is better than another only when the paired
bootstrap says so on both counts, p < 0.05 AND a 95% CI of the difference that excludes 0; otherwise
the two are called tied on these test items, whatever their point values.
"""
from __future__ import annotations

import math
from typing import Optional

ALPHA = 0.05
PROMPTED = ("few_shot", "endpoint")


def significant(diff: Optional[dict]) -> bool:
    """True when a paired difference is real at the 5% level (p and CI agree)."""
    if not diff or diff.get("p") is None or not diff.get("ci95"):
        return False
    lo, hi = diff["ci95"]
    return diff["p"] < ALPHA and (lo > 0 or hi < 0)


def fmt(v: Optional[float]) -> str:
    """Metric values: 3 decimals for fractions, 1 for sacrebleu's 0-100 scales."""
    if v is None:
        return "-"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _count(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.2g}"


def _score(arm: dict) -> str:
    m = arm["metric"]
    ci = m.get("ci95")
    return f"{fmt(m['value'])}" + (f" (95% CI {fmt(ci[0])} to {fmt(ci[1])})" if ci else "")


def _diff(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{fmt(abs(d['delta']))} (difference 95% CI {fmt(lo)} to {fmt(hi)}, paired bootstrap p = {d['p']:.3g})"


def _names(arms: list[dict]) -> str:
    ids = [a["id"] for a in arms]
    return ids[0] if len(ids) == 1 else ", ".join(ids[:-1]) + " and " + ids[-1]


def verdict(arms: list[dict], best: str, metric: str, n_items: int) -> list[str]:
    """Which arm wins, by how much, and whether that is significant."""
    by_id = {a["id"]: a for a in arms}
    top = by_id[best]
    if len(arms) == 1:
        return [f"Only one arm ran ({best}: {metric} {_score(top)}); there is nothing to compare it with."]
    others = [a for a in arms if a["id"] != best]
    if all(a["metric"]["value"] == top["metric"]["value"] for a in others):
        return [f"All {len(arms)} arms score {metric} {fmt(top['metric']['value'])} on these {n_items} test items: "
                "no arm is better than another."]
    tied = [a for a in others if not significant(a.get("diff_vs_best"))]
    beaten = [a for a in others if significant(a.get("diff_vs_best"))]
    out = []
    if not tied:
        runner = min(others, key=lambda a: abs(a["diff_vs_best"]["delta"]))
        rest = "" if len(others) == 1 else f"; it is also significantly better than {_names([a for a in others if a is not runner])}"
        out.append(f"{best} wins with {metric} {_score(top)}: ahead of the runner-up {runner['id']} by "
                   f"{_diff(runner['diff_vs_best'])}, a significant difference{rest}.")
    else:
        out.append(f"{best} has the highest {metric}, {_score(top)}, but it is not significantly better than "
                   f"{_names(tied)} on these {n_items} test items (p >= {ALPHA} or a difference CI that includes 0): "
                   f"no winner among them; more test items would narrow the intervals.")
        closest = min(tied, key=lambda a: abs(a["diff_vs_best"]["delta"]))
        out.append(f"The gap to {closest['id']} is {_diff(closest['diff_vs_best'])}.")
        if beaten:
            out.append(f"{best} is significantly better than {_names(beaten)}.")
    return out


def _per_query(arm: dict, key: str) -> Optional[float]:
    c = arm.get("infer_cost_per_1k") or {}
    if key == "tokens":
        p, g = c.get("prompt_tokens"), c.get("generated_tokens")
        return None if p is None else (p + (g or 0)) / 1000
    v = c.get(key)
    return None if v is None else v / 1000


def _best_of(arms: list[dict], higher: bool) -> dict:
    return (max if higher else min)(arms, key=lambda a: a["metric"]["value"])


def break_even(arms: list[dict], higher_is_better: bool = True) -> Optional[dict]:
    """After how many queries the best fine-tune's training is repaid by its shorter prompts.

    Against the best few-shot arm: tokens saved per query (prompt + generated) and seconds saved per
    query (inference wall time on this machine) pay back the training tokens and training seconds.
    None (not just "never") when there is no fine-tuned arm or no few-shot arm to set against it.
    """
    tuned = [a for a in arms if a.get("train_cost") and a["metric"].get("value") is not None]
    shots = [a for a in arms if a["method"] in PROMPTED and (a.get("k") or 0) > 0 and a["metric"].get("value") is not None]
    if not tuned or not shots:
        return None
    ft, fs = _best_of(tuned, higher_is_better), _best_of(shots, higher_is_better)
    out = {"fine_tuned": ft["id"], "few_shot": fs["id"],
           "train_tokens": ft["train_cost"].get("tokens"), "train_s": ft["train_cost"].get("wall_s")}
    for unit, key, cost in (("tokens", "tokens", out["train_tokens"]), ("seconds", "wall_s", out["train_s"])):
        a, b = _per_query(fs, key), _per_query(ft, key)
        saved = None if a is None or b is None else a - b
        out[f"saved_{unit}_per_query"] = saved
        # repaid once queries * saved >= one-off cost; "never" (None) when a query saves nothing
        out[f"queries_{unit}"] = (math.ceil(cost / saved) if cost is not None and saved is not None and saved > 0
                                  else None)
    return out


def break_even_sentence(be: Optional[dict]) -> Optional[str]:
    if be is None:
        return None
    head = (f"Break-even of {be['fine_tuned']} against {be['few_shot']}: its one-off training "
            f"({_count(be['train_tokens'] or 0)} tokens, {_count(be['train_s'] or 0)} s)")
    parts = []
    for unit, word in (("tokens", "tokens"), ("seconds", "s")):
        saved, q = be[f"saved_{unit}_per_query"], be[f"queries_{unit}"]
        if saved is None:
            parts.append(f"cannot be costed in {unit} (not measured)")
        elif q is None:
            more = "no fewer" if saved == 0 else f"{_count(abs(saved)) if unit == 'tokens' else f'{abs(saved):.3g}'} more"
            parts.append(f"is never repaid in {unit} (its queries take {more} {word} than {be['few_shot']}'s)")
        else:
            amount = _count(saved) if unit == "tokens" else f"{saved:.3g}"
            where = " on this machine" if unit == "seconds" else ""
            parts.append(f"is repaid after {q:,} queries in {unit}{where} ({amount} {word} saved per query)")
    return head + " " + parts[0] + ", and " + parts[1] + "."


def sentences(summary: dict) -> list[str]:
    """All sentences for a compare.json-shaped summary (arms with metric and diff_vs_best filled)."""
    arms = [a for a in summary["arms"] if a["metric"].get("value") is not None]
    out = verdict(arms, summary["best"], summary["main_metric"], summary.get("n_items") or 0)
    be = break_even_sentence(summary.get("break_even"))
    if be:
        out.append(be)
    elif summary.get("break_even") is None and any(a.get("train_cost") for a in arms):
        out.append("No break-even: there is no few-shot arm to set the fine-tune's training cost against.")
    return out
