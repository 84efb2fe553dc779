"""Retention: what each arm cost in what the model already knew (docs/compare.md, "Retention").

Two measures, both next to the target task's gain:

- **Retention tasks** (`retention:`): general-ability task files (multiple choice, generation,
  perplexity) scored for every arm. Prompted arms change no weights, so all prompted arms of one
  base model share that model's score, computed once; a fine-tuned arm is scored with its adapter
  or weights. Each arm gets, per task, its value with a 95% CI and the paired bootstrap difference
  against its base model on the same items.
- **Drift** (`retention_prompts:`): the mean per-token KL divergence of the fine-tune's next-token
  distributions from the base model's, on the base model's own greedy answers to general prompts
  (the Backend's `answer_kl`, infer/divergence.py; the summary in evaluate/drift.py). It needs no
  labels, so it shows forgetting where no benchmark is at hand.

The folder (inside the compare folder):

    retention/prompts.jsonl             the drift prompts, as read ({id, prompt})
    retention/<model>/<task>/           the base model's results (shared by its prompted arms)
    retention/<model>/answers/          the base model's greedy answers to the prompts
    arms/<id>/retention/<task>/         a fine-tuned arm's results
    arms/<id>/drift.json                its drift

Every results folder holds done.json with the key of what made it (task file, limit, prompts) and
the seconds it took: a folder with the current key is reused, so adding retention to a finished
compare scores retention only, and the table can say what retention added to the compare's time.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tunelab.compare.checks import paired_items, read_json
from tunelab.errors import TunelabError
from tunelab.io import atomic_write_json, atomic_write_jsonl

RETENTION_DIR = "retention"
DONE_JSON = "done.json"
DRIFT_JSON = "drift.json"
PROMPTS_FILE = "prompts.jsonl"
ANSWERS_DIR = "answers"


@dataclass
class RetentionTask:
    name: str
    task: object  # TaskConfig
    limit: Optional[int]
    metric: str
    higher_is_better: bool
    key: str  # what made its results: the task's hash and the limit
    where: str  # "retention[1]", for messages


@dataclass
class Drift:
    spec: str  # 'default' or the file as given
    file: Path
    prompts: list  # (id, prompt)
    max_new_tokens: int
    key: str


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- planning: every check before any arm runs
def plan_tasks(cfg, source: str, base_dir: Path, target) -> list[RetentionTask]:
    """The retention tasks of a compare config, checked: found, not retrieval, not the target task itself."""
    from tunelab.compare.checks import check_metric, resolve_path
    from tunelab.config import RetentionSpec
    from tunelab.data.readers import base_why
    from tunelab.evaluate.results import task_sha256
    from tunelab.evaluate.tasks import resolve_task

    out: list[RetentionTask] = []
    target_hash = task_sha256(target)
    for i, spec in enumerate(cfg.retention):
        where = f"retention[{i}]"
        spec = spec if isinstance(spec, RetentionSpec) else RetentionSpec(task=spec)
        path = resolve_path(spec.task, base_dir)
        if not path.startswith("builtin:") and not Path(path).is_file():
            why = base_why(base_dir, None if source == "config" else source)
            raise TunelabError(f"{source}: {where}: {spec.task} not found (looked at {path}: {why}); give a task YAML "
                               "(docs/tasks.md) or builtin:<name>")
        task = resolve_task(path)
        if task.type == "retrieval":
            raise TunelabError(f"{source}: {where}: task '{task.name}' is a retrieval task: it scores a retriever, "
                               "not the model, so fine-tuning cannot change it; give a multiple_choice, generate or "
                               "perplexity task")
        if _same_items(task, target) or task_sha256(task) == target_hash:
            raise TunelabError(f"{source}: {where}: {spec.task} is the compare's own task; retention measures "
                               "what the arms keep of OTHER abilities: give a general task such as PIQA")
        if any(t.name == task.name for t in out):
            raise TunelabError(f"{source}: {where}: a second retention task named '{task.name}'; list each task once "
                               "(or give the two files different name: keys)")
        metric, higher = check_metric(task, None, f"{source}: {where}")
        out.append(RetentionTask(task.name, task, spec.limit, metric, higher,
                                 _sha({"task": task_sha256(task), "limit": spec.limit}), where))
    return out


def _same_items(a, b) -> bool:
    """Two tasks over the same data file (or built-in spec): a retention task that is the target task."""
    if not a.data or not b.data:
        return False
    where = [str(t.resolve(t.data)) if not t.data.startswith("builtin:") else t.data for t in (a, b)]
    if where[0].startswith("builtin:"):
        return where[0] == where[1]
    return Path(where[0]).resolve() == Path(where[1]).resolve()


def plan_drift(cfg, source: str, base_dir: Path) -> Optional[Drift]:
    """The drift prompts (read now: a bad file fails before any arm runs), or None when turned off."""
    from tunelab.config import RetentionPromptsSpec
    from tunelab.data import general

    spec = cfg.retention_prompts
    if spec is None:
        return None
    spec = spec if isinstance(spec, RetentionPromptsSpec) else RetentionPromptsSpec(data=spec)
    try:
        prompts = general.load_prompts(spec.data, base_dir, limit=spec.limit)
    except TunelabError as e:
        raise TunelabError(f"{source}: {e}") from None
    file = general.resolve(spec.data, base_dir)
    return Drift(spec.data, file, prompts, spec.max_new_tokens,
                 _sha({"prompts": prompts, "max_new_tokens": spec.max_new_tokens}))


# ---------------------------------------------------------------- where things live
def base_folder(plan, model: str) -> Path:
    from tunelab.compare.checks import slug

    return plan.out / RETENTION_DIR / slug(model)


def arm_folder(plan, arm) -> Path:
    """Where the arm's own retention results live: its own folder (fine-tuned) or its base model's."""
    return plan.arm_dir(arm) / RETENTION_DIR if arm.fine_tuned else base_folder(plan, arm.model)


def scored(arm) -> bool:
    """Endpoints are not scored for retention: a served model is not the compare's base model."""
    return arm.method != "endpoint"


def _fresh(folder: Path, key: str) -> bool:
    """A results folder made with these settings (done.json holds their key)."""
    return read_json(folder / DONE_JSON).get("key") == key


def _done(folder: Path, key: str, seconds: float) -> None:
    atomic_write_json(folder / DONE_JSON, {"key": key, "wall_s": round(seconds, 3)})


def _drift_fresh(plan, arm) -> bool:
    return read_json(plan.arm_dir(arm) / DRIFT_JSON).get("key") == plan.drift.key


def missing(plan, arm) -> bool:
    """True when the arm (or, for a prompted arm, its base model) still has retention work to do."""
    if not scored(arm):
        return False
    folder = arm_folder(plan, arm)
    if any(not _fresh(folder / t.name, t.key) for t in plan.retention):
        return True
    return arm.fine_tuned and plan.drift is not None and not _drift_fresh(plan, arm)


# ---------------------------------------------------------------- running
def _evaluate(model, rt: RetentionTask, folder: Path, batch_size) -> None:
    from tunelab.evaluate.runner import evaluate
    from tunelab.progress import Progress

    t0 = time.perf_counter()
    with Progress(f"retention {rt.name}") as progress:
        evaluate(model, rt.task, limit=rt.limit, batch_size=batch_size, out=folder, response_metrics=False,
                 progress=progress)
    _done(folder, rt.key, time.perf_counter() - t0)


def run_tasks(plan, arm, model, say: Callable[[str], None]) -> None:
    """Score the arm's retention tasks with `model` (its own weights, or the shared base model)."""
    folder = arm_folder(plan, arm)
    for rt in plan.retention:
        if _fresh(folder / rt.name, rt.key):
            continue
        whose = arm.id if arm.fine_tuned else f"base model {arm.model} (shared by its prompted arms)"
        say(f"  retention {rt.name} for {whose}")
        _evaluate(model, rt, folder / rt.name, plan.config.batch_size)


def base_answers(plan, model: str, load_base: Callable[[], object], say) -> list[str]:
    """The base model's greedy answers to the drift prompts, generated once per base model and kept."""
    from tunelab.config import TaskConfig
    from tunelab.evaluate.results import read_predictions
    from tunelab.evaluate.runner import evaluate

    folder = base_folder(plan, model) / ANSWERS_DIR
    if not _fresh(folder, plan.drift.key):
        prompts_file = plan.out / RETENTION_DIR / PROMPTS_FILE
        atomic_write_jsonl(prompts_file, [{"id": i, "prompt": p} for i, p in plan.drift.prompts])
        task = TaskConfig(name="retention_prompts", data=str(prompts_file.resolve()), type="generate", chat=True,
                          prompt="{{ prompt }}", metrics=[],
                          generation={"max_new_tokens": plan.drift.max_new_tokens, "stop": [], "temperature": 0.0})
        say(f"  drift: the base model's answers to {len(plan.drift.prompts)} general prompts ({model})")
        t0 = time.perf_counter()
        evaluate(load_base(), task, batch_size=plan.config.batch_size, out=folder, response_metrics=False)
        _done(folder, plan.drift.key, time.perf_counter() - t0)
    return [line.get("output") or "" for line in read_predictions(folder)]


def run_drift(plan, arm, model, load_base: Callable[[], object], say) -> None:
    """drift.json of a fine-tuned arm: KL from its base model on the base model's own answers."""
    from tunelab.evaluate.drift import drift_summary
    from tunelab.infer.load import open_backend

    if plan.drift is None or not arm.fine_tuned or _drift_fresh(plan, arm):
        return
    answers = base_answers(plan, arm.model, load_base, say)
    say(f"  drift of {arm.id} from its base model on {len(answers)} general prompts")
    t0 = time.perf_counter()
    # an adapter's base is the same weights with the adapter off; full weights need the base loaded beside
    base = None if getattr(model, "adapter", None) else open_backend(load_base())
    per = open_backend(model).answer_kl([p for _, p in plan.drift.prompts], answers, base=base)
    summary = drift_summary(per, seed=plan.config.seed) or {}
    atomic_write_json(plan.arm_dir(arm) / DRIFT_JSON, {**summary, "prompts": plan.drift.spec,
                                                       "per_prompt": [[s, n] for s, n in per],
                                                       "key": plan.drift.key,
                                                       "wall_s": round(time.perf_counter() - t0, 3)})


# ---------------------------------------------------------------- the table
def _wall(path: Path) -> float:
    """Seconds recorded in a results folder's done.json (or in a drift.json file)."""
    return float(read_json(path if path.suffix == ".json" else path / DONE_JSON).get("wall_s") or 0.0)


def summarize(plan, arms: list, rows: list[dict]) -> Optional[dict]:
    """Fill each row's `retention` and `drift`; return compare.json's `retention` block (None: not asked for)."""
    from tunelab.compare.sentences import significant
    from tunelab.evaluate.results import read_results

    if not plan.retention and plan.drift is None:
        return None
    base_results: dict[tuple[str, str], object] = {}
    for a in arms:
        if scored(a):
            for rt in plan.retention:
                key = (a.model, rt.name)
                if key not in base_results:
                    base_results[key] = read_results(base_folder(plan, a.model) / rt.name)
    by_id = {r["id"]: r for r in rows}
    for a in arms:
        row = by_id[a.id]
        if not scored(a):
            row["retention"], row["drift"] = None, None
            continue
        entries = []
        for rt in plan.retention:
            base = base_results.get((a.model, rt.name))
            own = read_results(arm_folder(plan, a) / rt.name) if a.fine_tuned else base
            m = own.metrics.get(rt.metric) or {}
            diff = (paired_items(base, own, rt.metric, plan.config.seed) if a.fine_tuned
                    else {"delta": 0.0, "ci95": [0.0, 0.0], "p": 1.0, "n": base.n})
            entries.append({"task": rt.name, "metric": rt.metric, "higher_is_better": rt.higher_is_better,
                            "value": own.value(rt.metric), "ci95": m.get("ci95"), "base_value": base.value(rt.metric),
                            "diff_vs_base": diff, "shared_base": not a.fine_tuned,
                            "dir": str(arm_folder(plan, a).relative_to(plan.out) / rt.name)})
        row["retention"] = entries
        row["retention_overall"] = _overall(entries, significant)
        row["drift"] = _drift_of(plan, a)
    return {"tasks": [{"name": rt.name, "metric": rt.metric, "higher_is_better": rt.higher_is_better,
                       "limit": rt.limit, "n_items": base_results[next(k for k in base_results if k[1] == rt.name)].n}
                      for rt in plan.retention if any(k[1] == rt.name for k in base_results)],
            "drift_prompts": None if plan.drift is None else {"data": plan.drift.spec, "n": len(plan.drift.prompts),
                                                                  "max_new_tokens": plan.drift.max_new_tokens},
            "wall_s": _retention_seconds(plan, arms)}


def between(plan, a, b) -> dict:
    """Per retention task: the paired difference b − a of two fine-tuned arms (a replay arm against its twin)."""
    from tunelab.evaluate.results import read_results

    out = {}
    for rt in plan.retention:
        ra, rb = (read_results(arm_folder(plan, x) / rt.name) for x in (a, b))
        out[rt.name] = paired_items(ra, rb, rt.metric, plan.config.seed)
    return out


def _overall(entries: list[dict], significant) -> dict:
    """The arm's line over all retention tasks: which it lost or gained significantly, mean change in %."""
    worse, better, changes = [], [], []
    for e in entries:
        d = e["diff_vs_base"]
        if d is None:
            continue
        sign = 1 if e["higher_is_better"] else -1
        if significant(d):
            (better if sign * d["delta"] > 0 else worse).append(e["task"])
        if e["base_value"]:
            changes.append(100.0 * sign * d["delta"] / abs(e["base_value"]))
    return {"worse": worse, "better": better,
            "mean_change_pct": round(sum(changes) / len(changes), 3) if changes else None}


def _drift_of(plan, arm) -> Optional[dict]:
    if plan.drift is None:
        return None
    if not arm.fine_tuned:
        return {"kl_per_token": 0.0, "ci95": [0.0, 0.0], "shared_base": True}  # no weights changed: no drift
    d = read_json(plan.arm_dir(arm) / DRIFT_JSON)
    if not d:
        return None
    return {k: d.get(k) for k in ("kl_per_token", "ci95", "n_prompts", "n_tokens")} | {"shared_base": False}


def _retention_seconds(plan, arms: list) -> dict:
    """What retention added to the compare's time: the shared base scores once per model, each fine-tune's own."""
    bases = {}
    for model in sorted({a.model for a in arms if scored(a)}):
        folder = base_folder(plan, model)
        bases[model] = round(sum(_wall(folder / rt.name) for rt in plan.retention) + _wall(folder / ANSWERS_DIR), 3)
    own = {a.id: round(sum(_wall(plan.arm_dir(a) / RETENTION_DIR / rt.name) for rt in plan.retention)
                       + (_wall(plan.arm_dir(a) / DRIFT_JSON) if plan.drift is not None else 0.0), 3)
           for a in arms if a.fine_tuned}
    return {"base": bases, "arms": own, "total": round(sum(bases.values()) + sum(own.values()), 3)}


__all__ = ["plan_tasks", "plan_drift", "run_tasks", "run_drift", "summarize", "between", "missing", "RetentionTask",
           "Drift", "RETENTION_DIR"]
