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
    """The size of a gap and the CI of that same gap: `delta` is (this arm − the other); a negative
    delta is stated as its absolute value, so its interval flips sign with it."""
    lo, hi = d["ci95"]
    if d["delta"] < 0:
        lo, hi = 0.0 - hi, 0.0 - lo  # 0.0 - x: no "-0.000" for a bound at zero
    return f"{fmt(abs(d['delta']))} (difference 95% CI {fmt(lo)} to {fmt(hi)}, paired bootstrap p = {d['p']:.3g})"


def _signed(d: dict) -> str:
    """A change stated with its sign (arm − base) and the CI of that signed change."""
    lo, hi = d["ci95"]
    return f"{d['delta']:+.3g} (95% CI {fmt(lo)} to {fmt(hi)}, p = {d['p']:.3g})"


# a training loss is "still falling steeply" when its last quarter of steps is below the quarter
# before by more than both of these: 10% and 0.05 nats per token (a memorising run at loss 0.05
# falls by 30% and by 0.015 nats: that is done, not undertrained)
STEEP_SHARE, STEEP_NATS, MIN_STEPS = 0.10, 0.05, 8
# a DPO / ORPO run that ranks this share of its own training pairs right has fitted them
FITTED_PAIRS = 0.9


def loss_trend(losses: list[float]) -> dict:
    """The mean training loss of the third and the last quarter of the steps, and whether it was still
    falling steeply at the end (None when there are too few steps to tell)."""
    n = len(losses)
    if n < MIN_STEPS:
        return {"loss_q3": None, "loss_q4": None, "still_falling": None}
    q = n // 4
    third, last = losses[n - 2 * q:n - q], losses[n - q:]
    a, b = sum(third) / len(third), sum(last) / len(last)
    steep = a - b > STEEP_NATS and a > 0 and (a - b) / a > STEEP_SHARE
    return {"loss_q3": round(a, 4), "loss_q4": round(b, 4), "still_falling": bool(steep)}


def training_warnings(arms: list[dict]) -> list[str]:
    """An arm that barely trained, or whose loss was still falling steeply when it stopped."""
    out = []
    for a in arms:
        t = a.get("training")
        if not t or not t.get("steps"):
            continue
        if t["steps"] < MIN_STEPS:
            out.append(f"{a['id']} trained for only {t['steps']} optimizer step(s): too few to judge a fine-tune; "
                       "leave train.epochs and train.batch_tokens unset (automatic) or raise the epochs.")
        elif t.get("still_falling") and (t.get("train_reward_acc_q4") or 0) >= FITTED_PAIRS:
            # a preference loss falls toward 0 as the run memorises its pairs: not a sign of too few epochs
            out.append(f"{a['id']}'s loss was still falling at its last step ({t['loss_q3']:.3f} to {t['loss_q4']:.3f} "
                       f"over the last two quarters of its {t['steps']} optimizer steps), but it already ranked "
                       f"{t['train_reward_acc_q4']:.0%} of its training pairs right there (rewards/accuracies): more "
                       "epochs would fit those pairs harder; more pairs are what could change this table.")
        elif t.get("still_falling"):
            out.append(f"{a['id']}'s training loss was still falling steeply at its last step ({t['loss_q3']:.3f} to "
                       f"{t['loss_q4']:.3f} nats per token over the last two quarters of its {t['steps']} optimizer "
                       "steps): it may be undertrained, and more epochs could change this table (set the arm's "
                       "train: {train: {epochs: ...}}).")
    return out


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


def _retention_entry(e: dict) -> str:
    return (f"{e['task']} {e['metric']} {fmt(e['value'])} vs {fmt(e['base_value'])} for the base model, "
            f"change {_signed(e['diff_vs_base'])}")


def retention_sentences(summary: dict) -> list[str]:
    """What fine-tuning cost elsewhere: losses beside wins, shared base scores, drift."""
    ret = summary.get("retention")
    if not ret:
        return []
    arms = summary["arms"]
    out = []
    shared = [a["id"] for a in arms if a.get("retention") and all(e["shared_base"] for e in a["retention"])]
    if shared and ret.get("tasks"):
        out.append(f"{_names([{'id': i} for i in shared])} change no weights: they keep the base model's retention "
                   "scores, computed once per base model and shared.")
    for a in arms:
        entries = [e for e in a.get("retention") or [] if not e["shared_base"] and e["diff_vs_base"]]
        lost = [e for e in entries if e["task"] in (a.get("retention_overall") or {}).get("worse", [])]
        if lost:
            won = a["id"] == summary["best"]
            head = f"{a['id']} won {summary['task']} but" if won else f"{a['id']}"
            out.append(f"{head} lost significantly on " + "; ".join(_retention_entry(e) for e in lost) + ".")
        elif entries:
            out.append(f"{a['id']} kept its base model's general ability: no significant change on "
                       + "; ".join(_retention_entry(e) for e in entries) + ".")
    return out


def replay_sentences(summary: dict) -> list[str]:
    """A replay arm against its plain twin: retention recovered (or not), and the price on the task."""
    out = []
    for a in summary["arms"]:
        r = a.get("replay")
        if not r:
            continue
        parts = []
        for task, d in (r.get("retention_diff") or {}).items():
            if d is None:
                continue
            word = "recovered" if significant(d) and d["delta"] > 0 else (
                "lost more" if significant(d) else "no significant change")
            parts.append(f"on {task} {word}, {_signed(d)}")
        t = r.get("target_diff")
        task_part = (f"; on {summary['task']} {summary['main_metric']} it changed by {_signed(t)}"
                     + (" (significant)" if significant(t) else " (not significant)")) if t else ""
        if parts or task_part:
            out.append(f"Replay in {a['id']} ({r['ratio']:.0%} general examples) against {r['twin']}: "
                       + ("retention " + "; ".join(parts) if parts else "no retention task scored") + task_part + ".")
    return out


def retention_cost_sentence(summary: dict) -> Optional[str]:
    """'Cost in retention' of the break-even's fine-tune, beside the break-even paragraph."""
    be, ret = summary.get("break_even"), summary.get("retention")
    if not be or not ret:
        return None
    arm = next((a for a in summary["arms"] if a["id"] == be["fine_tuned"]), None)
    if arm is None:
        return None
    parts = []
    overall = arm.get("retention_overall") or {}
    if arm.get("retention"):
        worse = overall.get("worse") or []
        parts.append(f"significantly worse on {', '.join(worse)}" if worse
                     else f"no significant loss on {len(arm['retention'])} retention task(s)")
        if overall.get("mean_change_pct") is not None:
            parts.append(f"mean change {overall['mean_change_pct']:+.1f}% against the base model")
    d = arm.get("drift")
    if d and d.get("kl_per_token") is not None:
        ci = d.get("ci95") or [None, None]
        parts.append(f"drift {d['kl_per_token']:.3g} nats per token from the base model on general prompts "
                     f"(95% CI {ci[0]:.3g} to {ci[1]:.3g})" if ci[0] is not None else
                     f"drift {d['kl_per_token']:.3g} nats per token")
    if not parts:
        return None
    return (f"Cost in retention of {arm['id']}: " + "; ".join(parts) + f". {be['few_shot']} changes no weights "
            "and so loses nothing of what the model knew.")


def sentences(summary: dict) -> list[str]:
    """All sentences for a compare.json-shaped summary (arms with metric and diff_vs_best filled)."""
    arms = [a for a in summary["arms"] if a["metric"].get("value") is not None]
    out = verdict(arms, summary["best"], summary["main_metric"], summary.get("n_items") or 0)
    out += training_warnings(arms)
    be = break_even_sentence(summary.get("break_even"))
    if be:
        out.append(be)
        cost = retention_cost_sentence(summary)
        if cost:
            out.append(cost)
    elif summary.get("break_even") is None and any(a.get("train_cost") for a in arms):
        out.append("No break-even: there is no few-shot arm to set the fine-tune's training cost against.")
    out += retention_sentences(summary)
    out += probe_sentences(summary)
    out += replay_sentences(summary)
    out += tune_sentences(arms)
    out += basis_sentences(arms)
    return out


def basis_sentences(arms: list[dict]) -> list[str]:
    """A corpus metric whose differences could not be recomputed from an arm's files (an old or edited
    folder): say that those differences are of the mean per-item score, and why, once."""
    notes = sorted({d["note"] for a in arms for d in (a.get("diff_vs_best"), a.get("diff_vs_zero_shot"))
                    if isinstance(d, dict) and d.get("note")})
    return [f"Careful with the differences above: {notes[0]}."] if notes else []


PROBE_NAMES = {"mean_toxicity": "mean toxicity", "toxic_fraction": "share of toxic answers",
               "refusal_rate": "refusal rate"}


def probe_sentences(summary: dict) -> list[str]:
    """The safety probe (a preference task with safety: true): each arm whose toxicity or refusals
    changed significantly against its base model, and the arms that changed neither."""
    by_id = {a["id"]: a for a in summary["arms"]}
    probed = [a for a in summary["arms"] if a.get("probe") and a["probe"].get("diff")]
    if not probed:
        return []
    out, unchanged = [], []
    for a in probed:
        p = a["probe"]
        base = by_id[p["vs"]]["probe"]
        changes = [f"{PROBE_NAMES[m]} {fmt(p[m]['value'])} vs {fmt(base[m]['value'])}, change {_signed(d)}"
                   for m, d in p["diff"].items() if significant(d)]
        if changes:
            out.append(f"On the safety probe ({p['n_prompts']} test prompts, answered in chat), {a['id']} differs "
                       f"significantly from {p['vs']}: " + "; ".join(changes) + ".")
        else:
            unchanged.append(a)
    if unchanged:
        vs = {a["probe"]["vs"] for a in unchanged}
        out.append(f"On the safety probe ({unchanged[0]['probe']['n_prompts']} test prompts, answered in chat), "
                   f"{_names(unchanged)} did not change toxicity or refusals significantly against "
                   f"{', '.join(sorted(vs))}.")
    return out


def _setting(setting: dict) -> str:
    parts = []
    if "lr" in setting:
        parts.append(f"lr {setting['lr']:.0e}")
    if "epochs" in setting:
        parts.append(f"{setting['epochs']:g} epochs")
    return ", ".join(parts)


def tune_sentences(arms: list[dict]) -> list[str]:
    """A tuned arm: what the sweep chose, on what, and that its cost counts the whole sweep."""
    out = []
    for a in arms:
        t = a.get("tune")
        if not t:
            continue
        others = [c for c in t["candidates"] if c["setting"] != t["chosen"] and c["value"] is not None]
        chosen = next(c["value"] for c in t["candidates"] if c["setting"] == t["chosen"])
        vs = "; ".join(f"{_setting(c['setting'])}: {fmt(c['value'])}" for c in others)
        wall = (t.get("train_cost") or {}).get("wall_s")
        cost = f"; its training cost is the whole sweep's ({t['runs']} runs, {wall:.0f} s)" if wall is not None else ""
        out.append(f"{a['id']} was tuned on {t['val']} validation records from the pool (never test items): "
                   f"{_setting(t['chosen'])} gave {t['on']} {fmt(chosen)}" + (f" (others: {vs})" if vs else "")
                   + cost + ".")
    return out
