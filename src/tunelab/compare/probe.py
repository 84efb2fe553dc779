"""The safety probe inside a compare (`safety: true` on a preference task; docs/compare.md).

A preference task scores which of two given answers the model prefers: its arms write nothing,
so there is no output to screen for toxicity. What a user of preference tuning asks instead is
whether the tuned model's own answers got less toxic or refused more. With `safety: true`, every
arm (the base model once for `zero_shot`) answers the first user turn of the first `probe_limit`
test pairs with seeded samples, through the chat template, exactly as `tunelab safety probe
--chat` does (safety/probe.py: toxicity from the packaged classifier, refusals from the pattern
list); compare.json gives each arm's toxicity and refusal rate with CIs and the paired change
against its base model, prompt by prompt.

    data/probe-prompts.jsonl        the prompts, as read ({id, prompt})
    arms/<id>/probe/                the arm's probe results (results.json, predictions.jsonl, done.json)
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from tunelab.compare.checks import paired_items, read_json
from tunelab.compare.retention import DONE_JSON  # the same marker: {key, wall_s} of what made the folder
from tunelab.io import atomic_write_json, atomic_write_jsonl

PROBE_DIR = "probe"
PROMPTS_FILE = "probe-prompts.jsonl"
SHOWN = ("mean_toxicity", "toxic_fraction", "refusal_rate")  # the table's columns, of safety/probe.py's five


def planned(plan) -> bool:
    return bool(plan.config.safety) and plan.task.type == "preference"


def _prompts_path(plan) -> Path:
    from tunelab.compare.plan import DATA_DIR

    return plan.out / DATA_DIR / PROMPTS_FILE


def _prompts(plan) -> Path:
    """The test pairs' first user turns ({id, prompt}), written once: every arm reads the same file."""
    path = _prompts_path(plan)
    if not path.is_file():
        from tunelab.data.preference import first_user_turn, to_pair
        from tunelab.errors import TunelabError
        from tunelab.evaluate.runner import load_task_rows

        out = []
        for row in load_task_rows(plan.task):
            try:
                pair = to_pair(row, None, plan.task.system)
            except TunelabError:
                continue  # a broken test pair: the evaluation skips it too (the task's skip_bad)
            out.append({"id": pair.id, "prompt": first_user_turn(pair)})
            if len(out) == plan.config.probe_limit:
                break
        atomic_write_jsonl(path, out)
    return path


def _key(plan) -> str:
    """What makes an arm's probe results: the prompts and the probe's settings (its defaults)."""
    from tunelab.safety.probe import DEFAULTS

    settings = {"task": plan.task.name, "limit": plan.config.probe_limit, "chat": True, **DEFAULTS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _folder(plan, arm) -> Path:
    return plan.arm_dir(arm) / PROBE_DIR


def missing(plan, arm) -> bool:
    """True when the compare asks for the probe and this arm has no current results."""
    return planned(plan) and read_json(_folder(plan, arm) / DONE_JSON).get("key") != _key(plan)


def run(plan, arm, model, say: Callable[[str], None]) -> None:
    """Probe the arm with `model` (its own weights, or the base model) unless it is done already."""
    from tunelab.progress import Progress
    from tunelab.safety.probe import probe

    if not missing(plan, arm):
        return
    prompts = _prompts(plan)
    say(f"  safety probe for {arm.id}: {plan.config.probe_limit} test prompts, chat")
    t0 = time.perf_counter()
    with Progress(f"probe {arm.id}") as progress:
        probe(model, prompts, fmt="jsonl", chat=True, out=_folder(plan, arm), progress=progress)
    atomic_write_json(_folder(plan, arm) / DONE_JSON, {"key": _key(plan), "wall_s": round(time.perf_counter() - t0, 3)})


def summarize(plan, arms: list, rows: list[dict]) -> None:
    """Fill each row's `probe`: the shown metrics with CIs, and each one's paired change against the
    zero_shot arm of the same model (prompt by prompt); None when the compare ran no probe."""
    from tunelab.evaluate.results import read_results

    by_id = {r["id"]: r for r in rows}
    if not planned(plan):
        for r in rows:
            r["probe"] = None
        return
    results = {a.id: read_results(_folder(plan, a)) for a in arms}
    for a in arms:
        res = results[a.id]
        base = next((b for b in arms if b.method == "zero_shot" and b.model == a.model and b is not a), None)
        entry: dict = {"n_prompts": res.n, "dir": str(_folder(plan, a).relative_to(plan.out)),
                       "wall_s": read_json(_folder(plan, a) / DONE_JSON).get("wall_s"), "vs": None}
        for m in SHOWN:
            entry[m] = {"value": res.value(m), "ci95": res.metrics[m].get("ci95")}
        if base is not None:
            entry["vs"] = base.id
            entry["diff"] = {m: paired_items(results[base.id], res, m, plan.config.seed) for m in SHOWN}
        by_id[a.id]["probe"] = entry

