"""`compare(config)`: run every arm of a plan, one after another, and write compare.json.

    res = compare("compare.yaml", ["limit=50"])
    res.summary["best"], res.summary["sentences"], res.out

The flow, top to bottom: plan (every check, nothing run) -> under the folder's lock: refuse a
folder made by another config, write compare.yaml, plan.json and the nested training subsets ->
for each arm, under its own lock (skipped when another worker holds it): skip it when finished,
else (fine-tune: train, resuming a half-trained run from its checkpoint) -> evaluate on the shared
test items -> mark it finished -> once every arm is finished, compare.json (under the folder lock).
`--arm ID` runs one arm and gathers nothing, so the arms of one compare can run as separate jobs
on machines sharing the folder (docs/scale.md).

An arm is finished when `arms/<id>/arm.json` says so with the arm's signature and its eval results
exist; an interrupted compare run again does only what is missing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tunelab import logs, paths
from tunelab.compare import rl
from tunelab.compare.lock import ARM_LOCK, ArmBusy, arm_lock, folder_lock
from tunelab.compare.plan import (ARM_JSON, COMPARE_JSON, COMPARE_YAML, FIRST_EXAMPLE, LOCK_FILE, PLAN_JSON, Arm,
                                  Plan, make_plan, read_json, trains_adapter)
from tunelab.config import to_yaml
from tunelab.errors import Interrupted, TunelabError
from tunelab.evaluate.cache import CACHE_FILE
from tunelab.infer.endpoint import is_endpoint
from tunelab.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

log = logging.getLogger("tunelab.compare")


@dataclass
class CompareResult:
    out: Path
    summary: dict
    ran: list[str] = field(default_factory=list)  # arms run by this call
    reused: list[str] = field(default_factory=list)  # arms found finished
    pending: list[str] = field(default_factory=list)  # arms another worker was running (table not gathered)


def check_folder(plan: Plan) -> None:
    """Refuse to mix: a folder started by a config with other global settings is not resumed."""
    old = read_json(plan.out / PLAN_JSON) or None
    if old is None:
        if (plan.out / COMPARE_YAML).exists() or (plan.out / "arms").exists():
            raise TunelabError(f"{plan.out}: holds a compare without its {PLAN_JSON}, so it cannot be resumed safely; "
                               f"delete the folder to start fresh, or set out=<another folder>")
        return
    if old.get("signature") != plan.signature:
        changed = [k for k, v in plan_settings(plan).items() if (old.get("settings") or {}).get(k) != v]
        what = f" (changed: {', '.join(changed)})" if changed else ""
        raise TunelabError(f"{plan.out}: was made by a different compare config{what}; its arms would not be comparable "
                           f"with this one's. Delete {plan.out} to start fresh, or set out=<another folder>")


def check_items(plan: Plan) -> None:
    """Read what `--dry-run` reads (compare/estimate.py) before any arm starts: the test items and
    each retention task's items, rendered through their templates. make_plan checked everything
    else; without this a missing retention data file failed only once the first arm was scored."""
    from tunelab.evaluate.runner import load_task_rows
    from tunelab.evaluate.task_types import task_type

    tasks = [(plan.task, None, plan.config.limit)] + [(r.task, r.where, r.limit) for r in plan.retention]
    for task, where, limit in tasks:
        tt = task_type(task)
        if not tt.dry_run_counts:  # read by its own reader when scored, as the estimate leaves it
            continue
        try:
            rows = load_task_rows(task)
            templates = tt.templates(task, task.source or where or plan.source)  # as the evaluation renders
            if not tt.pairs:  # a pair is read as it is, nothing rendered
                for row in rows[:limit] if limit else rows:
                    templates.render(row)
        except TunelabError as e:
            if where is None:  # the compare's own task: its messages name the task file already
                raise
            raise TunelabError(f"{plan.source}: {where}: {e}") from None


def plan_settings(plan: Plan) -> dict:
    """The settings every arm shares (what plan.signature covers), as written to plan.json."""
    from tunelab.evaluate.results import task_sha256

    cfg = plan.config
    return {"model": cfg.model, "task": cfg.task, "task_sha256": task_sha256(plan.task), "train_data": cfg.train_data,
            "pool_size": len(plan.pool), "metric": plan.metric, "limit": cfg.limit, "seed": cfg.seed, "train": cfg.train}


def is_finished(plan: Plan, arm: Arm) -> bool:
    marker = read_json(plan.arm_dir(arm) / ARM_JSON) or None
    return (marker is not None and marker.get("state") == "finished"
            and marker.get("signature") == plan.arm_signature(arm)
            and (plan.arm_dir(arm) / "eval" / paths.RESULTS_FILE).is_file())


def _write_subsets(plan: Plan) -> None:
    """data/train-nN.jsonl: each subset's records as the fine-tunes train on them (compare/render.py)."""
    from tunelab.compare.render import subset_records

    for n in sorted({a.n for a in plan.arms if a.fine_tuned}):
        path = plan.subset_path(n)
        if not path.is_file():
            atomic_write_jsonl(path, subset_records(plan.task, plan.source, plan.subset(n), plan.rendering))
    rl.write_pools(plan)  # data/pool-nN.jsonl: a GRPO arm's records, whose prompts it samples from


def _write_first_example(plan: Plan, arm: Arm) -> None:
    """arms/<id>/first_example.txt: the first training example next to the first test prompt."""
    from tunelab.compare.render import first_example
    from tunelab.evaluate.runner import load_task_rows
    from tunelab.models.loading import load_tokenizer, resolve

    path = plan.arm_dir(arm) / FIRST_EXAMPLE
    if path.is_file() or not plan.task.data:  # a task without a data file (perplexity) has no test row to show
        return
    tokenizer = load_tokenizer(resolve(arm.model)[1])
    test_row = load_task_rows(plan.task)[0]
    if rl.is_rl(arm):  # it trains on no example: its first prompt instead
        atomic_write_text(path, rl.first_example(plan, arm, tokenizer, test_row))
        return
    atomic_write_text(path, first_example(tokenizer, plan.task, plan.source, plan.subset_path(arm.n),
                                          plan.rendering.format, test_row))


def _full_weights(plan: Plan, arm: Arm) -> bool:
    """The arm trains every weight (a model/ folder), not an adapter."""
    return not trains_adapter(plan, arm)


def _train(plan: Plan, arm: Arm, say: Callable[[str], None]) -> Path:
    """Train the arm (resuming from its last checkpoint) and return its adapter/ or model/ folder."""
    from tunelab.train import checkpoint as ckpt
    from tunelab.train.loop import train

    run_dir = plan.arm_dir(arm) / "train"
    weights = run_dir / (paths.MODEL_DIR if _full_weights(plan, arm) else paths.ADAPTER_DIR)
    if (run_dir / paths.SUMMARY_FILE).is_file() and weights.is_dir():
        say(f"  {arm.id}: already trained ({run_dir})")
        return weights
    _write_first_example(plan, arm)
    if arm.tune is not None:  # a sweep on the validation split; the chosen run becomes run_dir
        from tunelab.compare import tune

        return tune.run(plan, arm, say)
    resume = ckpt.latest(run_dir) is not None
    say(f"  {arm.id}: {'resuming' if resume else 'training'} {arm.method} on {arm.n} examples -> {run_dir}")
    # a GRPO arm's prompts, rollout and rewards come from here (train/ imports neither infer/ nor evaluate/)
    result = train(plan.train_config(arm), resume=resume, overwrite=not resume, providers=rl.providers(plan, arm))
    return result.weights_dir


class _Models:
    """Models are loaded before `evaluate` is called, so an arm's inference cost is inference only.

    The base model is loaded once and shared by the prompted arms; a fine-tuned arm loads its own
    (base + adapter, or the full model's folder) and drops it after its evaluation.
    """

    def __init__(self):
        self.base: dict[str, object] = {}

    def get(self, arm: Arm, weights: Optional[Path]):
        from tunelab.models.loading import load_model

        if is_endpoint(arm.model):  # an endpoint: evaluate takes the string
            return arm.model
        if arm.fine_tuned:
            return load_model(weights) if weights.name == paths.MODEL_DIR else load_model(arm.model, adapter=weights)
        return self.base_of(arm.model)

    def base_of(self, model: str):
        from tunelab.models.loading import load_model

        if model not in self.base:
            self.base = {model: load_model(model)}  # keep one: the next arms usually share it
        return self.base[model]


def _evaluate(plan: Plan, arm: Arm, model) -> None:
    from tunelab.evaluate.metrics import get_metrics
    from tunelab.evaluate.runner import evaluate
    from tunelab.progress import Progress

    cfg = plan.config
    # response metrics off: the toxicity screen scores the outputs afterwards (table.toxicity), so
    # the evaluation's wall time, the inference cost in the table, is generation and scoring only
    # a full-weights fine-tune's implicit reward (reward_acc) is measured against the model it
    # started from; an adapter's reference is its base, switched off inside the same weights
    reference = arm.model if arm.fine_tuned and _full_weights(plan, arm) and any(
        m.needs_reference for m in get_metrics(plan.task.metrics)) else None
    # an endpoint's answers go to a request cache in the arm's folder as they come, so an arm
    # stopped part-way (a silent server) goes on from them when the compare runs again
    cache = plan.arm_dir(arm) / CACHE_FILE if is_endpoint(arm.model) else False
    with Progress(f"eval {arm.id}") as progress:
        evaluate(model, plan.task, shots=arm.k or 0, sampler=arm.sampler, limit=cfg.limit,
                 batch_size=cfg.batch_size, out=plan.arm_dir(arm) / "eval", response_metrics=False,
                 progress=progress, reference=reference, cache=cache)


def _record(plan: Plan, summary: dict, started: float) -> None:
    """One row in the run registry (tunelab runs list); optional until the registry exists."""
    try:
        from tunelab import runs
    except ImportError:
        return
    best = next(a for a in summary["arms"] if a["id"] == summary["best"])
    runs.record("compare", name=plan.config.name, path=plan.out, task=summary["task"], model=plan.config.model,
                metric=plan.metric, value=best["metric"]["value"], signature=plan.signature, started=started)


def compare(config, overrides: Optional[list[str]] = None, *, out=None,
            say: Callable[[str], None] = print, arm: Optional[str] = None) -> CompareResult:
    """Run a compare (a YAML path, a dict or a CompareConfig); finished arms of an earlier run are kept.

    `say` gets one line per step (training and evaluation show their own progress).
    `arm`: run that arm alone (a worker; `tunelab compare CONFIG --plan` lists one per arm) and
    gather nothing. Without it every arm not finished and not held by another worker runs, and
    the table is gathered once every arm is finished (`result.pending` names the arms still
    running elsewhere; then no compare.json is written).
    """
    started = time.time()
    plan = make_plan(config, overrides, out=out)
    if arm is not None and arm not in {a.id for a in plan.arms}:
        raise TunelabError(f"--arm {arm}: no such arm in this compare; its arms: {', '.join(a.id for a in plan.arms)} "
                           "(tunelab compare CONFIG --plan lists them)")
    check_items(plan)
    # the folder lock is held only while writing what every arm reads: workers wait for each other here
    with folder_lock(plan.out, LOCK_FILE, wait=True):
        check_folder(plan)
        atomic_write_text(plan.out / COMPARE_YAML, to_yaml(plan.config))
        atomic_write_json(plan.out / PLAN_JSON, {"signature": plan.signature, "settings": plan_settings(plan),
                                                 "arms": [a.describe() | {"signature": plan.arm_signature(a)}
                                                          for a in plan.arms]})
        _write_subsets(plan)
    result = CompareResult(plan.out, {})
    if plan.pool_skipped is not None and plan.pool_skipped.count:  # also in compare.json (skipped_records)
        say(plan.pool_skipped.note(f"train_data {plan.config.train_data} (train.data.skip_bad)"))
    with logs.run_log(plan.out):
        try:
            _run_arms(plan, result, say, only=arm)
        except KeyboardInterrupt:  # one line from the CLI (exit 130, 143 on SIGTERM), instead of the inner command's
            done = [a.id for a in plan.arms if is_finished(plan, a)]
            raise Interrupted(f"finished arms are kept in {plan.out} ({len(done)} of {len(plan.arms)}"
                              f"{': ' + ', '.join(done) if done else ''}; a half-trained arm keeps its last "
                              "checkpoint); run the same command again to resume") from None
        if arm is not None or result.pending:
            return result
        from tunelab.compare import judge
        from tunelab.compare.table import summarize

        with folder_lock(plan.out, LOCK_FILE, wait=True):
            judge.judge_arms(plan, say)  # judge_win_rate against another arm, once every arm has its answers
            result.summary = summarize(plan)
            result.summary["skipped"] = skipped_records(plan)
            atomic_write_json(plan.out / COMPARE_JSON, result.summary)
    _record(plan, result.summary, started)
    return result


def skipped_records(plan: Plan) -> dict:
    """compare.json's `skipped`: {"pool", "task"}, each {"count", "first"} or None. The pool's come
    from the plan (train.data.skip_bad); the task's from the arms' evaluations (the task's skip_bad),
    which read the same test file, so the first arm's results say it for all."""
    task = (read_json(plan.arm_dir(plan.arms[0]) / "eval" / paths.RESULTS_FILE) or {}).get("skipped")
    pool = plan.pool_skipped.to_json() if plan.pool_skipped is not None else None
    return {"pool": pool, "task": task}


def _run_arms(plan: Plan, result: CompareResult, say, only: Optional[str] = None) -> None:
    models = _Models()
    for i, arm in enumerate(plan.arms, 1):
        if only is not None and arm.id != only:
            continue
        try:
            with arm_lock(plan.arm_dir(arm), arm.id):  # one worker per arm; other arms go on
                _run_arm(plan, arm, f"arm {i}/{len(plan.arms)} {arm.id}", models, result, say)
        except ArmBusy as e:
            if only is not None:
                raise
            say(f"arm {i}/{len(plan.arms)} {arm.id}: another worker is running it, skipped")
            log.info(str(e))
            result.pending.append(arm.id)


def _run_arm(plan: Plan, arm: Arm, label: str, models: "_Models", result: CompareResult, say) -> None:
    from tunelab.compare import probe, retention

    marker = plan.arm_dir(arm) / ARM_JSON
    finished = is_finished(plan, arm)
    lacks = [what for what, missing in (("scoring its retention", retention.missing(plan, arm)),
                                        ("running its safety probe", probe.missing(plan, arm))) if missing]
    if finished and not lacks:
        say(f"{label}: finished earlier, kept")
        result.reused.append(arm.id)
        return
    say(label + (": finished earlier, " + " and ".join(lacks) if finished else ""))
    if not finished:
        old = read_json(marker) or None
        if old is not None and old.get("signature") != plan.arm_signature(arm):
            # the same id made with other arm settings (its own train: keys): start that arm over
            import shutil

            for child in plan.arm_dir(arm).iterdir():  # everything but the lock this worker holds
                if child.is_dir():
                    shutil.rmtree(child)
                elif child.name != ARM_LOCK:
                    child.unlink()
        atomic_write_json(marker, {"id": arm.id, "signature": plan.arm_signature(arm), "state": "started"})
    weights = _train(plan, arm, say) if arm.fine_tuned else None
    model = models.get(arm, weights)  # loaded before evaluate: an arm's inference cost is inference only
    if not finished:
        _evaluate(plan, arm, model)
        atomic_write_json(marker, {"id": arm.id, "signature": plan.arm_signature(arm), "state": "finished"})
        result.ran.append(arm.id)
    if retention.scored(arm):
        # prompted arms share the base model's scores (one folder per model): one worker at a time
        # writes them; fine-tunes score their own weights in their own folder
        with folder_lock(plan.out, ".retention.lock", wait=True):
            retention.run_tasks(plan, arm, model, say)
            retention.run_drift(plan, arm, model, lambda: models.base_of(arm.model), say)
    probe.run(plan, arm, model, say)


__all__ = ["compare", "CompareResult", "make_plan"]
