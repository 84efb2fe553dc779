"""A fine-tuned arm's optional sweep: `tune: {lr: [...], epochs: [...], val: 50}` (docs/compare.md, "Tuning").

    weights = run(plan, arm, say)     # trains every setting, keeps the best one as the arm's run
    tune_summary(plan, arm)           # the choice, each candidate's validation value, the sweep's cost

Every (lr, epochs) setting trains on the arm's own subset into arms/<id>/tune/<setting>/train and is
scored on the validation split: the last `val` records of the pool's seeded permutation, which no
tuned arm trains on and which are never test items. The score is the compare's own metric when the
pool renders through the task's templates (a validation item is then a test item in every way but
its origin); a pool in a training format of its own (compare/render.py, OWN) cannot be prompted
like the test items, so its candidates are ranked by validation loss instead, and tune.json says
so. The best candidate's run folder becomes arms/<id>/train, so the test items are scored exactly
once, with the chosen model; the sweep's whole training cost is the arm's cost in the table.

tune.json is written after every candidate: an interrupted sweep resumes at the next setting
(a half-trained candidate resumes from its checkpoint).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from tunelab import paths
from tunelab.compare import rl
from tunelab.compare.checks import settings
from tunelab.compare.plan import Arm, Plan, read_json, train_cost, trains_adapter
from tunelab.io import atomic_write_json, atomic_write_jsonl

TUNE_JSON = "tune.json"
TUNE_DIR = "tune"
VAL_LOSS = "eval_loss"  # what OWN-format pools are ranked by


def label(setting: dict) -> str:
    """A folder name for one setting: lr2e-04-ep3."""
    parts = []
    if "lr" in setting:
        parts.append(f"lr{setting['lr']:.0e}")
    if "epochs" in setting:
        parts.append(f"ep{setting['epochs']:g}")
    return "-".join(parts)


def ranked_by(plan: Plan) -> tuple[str, bool]:
    """(what candidates are ranked by, higher is better)."""
    from tunelab.compare.render import TASK

    if plan.rendering is not None and plan.rendering.mode == TASK:
        return plan.metric, plan.higher_is_better
    return VAL_LOSS, False


def _weights(plan: Plan, run_dir: Path, arm: Arm) -> Path:
    return run_dir / (paths.ADAPTER_DIR if trains_adapter(plan, arm) else paths.MODEL_DIR)


def _write_validation(plan: Plan, arm: Arm) -> Path:
    path = plan.validation_path(arm.tune.val)
    if not path.is_file():
        atomic_write_jsonl(path, [row.data for row in plan.validation(arm.tune.val)])
    return path


def _score(plan: Plan, arm: Arm, run_dir: Path, val_path: Path, on: str) -> Optional[float]:
    """The candidate's validation value: the metric on the validation items, or its final validation loss."""
    if on == VAL_LOSS:
        s = read_json(run_dir / paths.SUMMARY_FILE)
        return s.get("final_eval_loss")
    from tunelab.evaluate.results import read_results
    from tunelab.evaluate.runner import evaluate
    from tunelab.models.loading import load_model

    out = run_dir.parent / "val"
    if not (out / paths.RESULTS_FILE).is_file():
        weights = _weights(plan, run_dir, arm)
        model = load_model(arm.model, adapter=weights) if trains_adapter(plan, arm) else load_model(weights)
        task = plan.task.model_copy(update={"data": str(val_path.resolve()), "split": None})
        evaluate(model, task, shots=0, batch_size=plan.config.batch_size, out=out, response_metrics=False)
        del model
    return read_results(out).value(on)


def run(plan: Plan, arm: Arm, say: Callable[[str], None]) -> Path:
    """Train and score every setting not yet done, keep the best as arms/<id>/train; its weights folder."""
    from tunelab.train import checkpoint as ckpt
    from tunelab.train.loop import train

    arm_dir = plan.arm_dir(arm)
    final = arm_dir / "train"
    record_path = arm_dir / TUNE_JSON
    record = read_json(record_path)
    if record.get("chosen") is not None and (final / paths.SUMMARY_FILE).is_file():
        return _weights(plan, final, arm)
    on, higher = ranked_by(plan)
    val_path = _write_validation(plan, arm)
    grid = settings(arm.tune)
    done = {c["label"]: c for c in record.get("candidates", [])}
    candidates = []
    for i, setting in enumerate(grid, 1):
        name = label(setting)
        run_dir = arm_dir / TUNE_DIR / name / "train"
        if name in done and done[name].get("value") is not None:
            candidates.append(done[name])
            continue
        resume = ckpt.latest(run_dir) is not None
        say(f"  {arm.id}: tune {i}/{len(grid)} {name} ({'resuming' if resume else 'training'})")
        cfg = plan.train_config(arm, setting, out=run_dir)
        if on == VAL_LOSS:  # the validation records are in the pool's own training format
            cfg["data"] = {**cfg["data"], "eval": str(val_path.resolve())}
        train(cfg, resume=resume, overwrite=not resume, providers=rl.providers(plan, arm))
        value = _score(plan, arm, run_dir, val_path, on)
        candidates.append({"label": name, "setting": setting, "value": value,
                           "train_dir": str(run_dir.relative_to(arm_dir))})
        atomic_write_json(record_path, {"val": arm.tune.val, "on": on, "higher_is_better": higher,
                                        "candidates": candidates, "chosen": None})
    scored = [c for c in candidates if isinstance(c.get("value"), (int, float))]
    if not scored:
        from tunelab.errors import TunelabError

        raise TunelabError(f"{record_path}: no candidate of {arm.where}.tune has a validation value ({on}); "
                           "check the validation split and the task's metric")
    pick = max if higher else min
    best = pick(scored, key=lambda c: c["value"])  # the first listed setting wins a tie
    chosen_dir = arm_dir / best["train_dir"]
    if final.exists():  # a leftover of an arm trained before its tune: key was added
        import shutil

        shutil.rmtree(final)
    os.replace(chosen_dir, final)  # the chosen run becomes the arm's own: the test items are scored once
    atomic_write_json(record_path, {"val": arm.tune.val, "on": on, "higher_is_better": higher,
                                    "candidates": candidates, "chosen": best["label"]})
    say(f"  {arm.id}: tune chose {best['label']} ({on} {best['value']:.4g} on {arm.tune.val} validation records)")
    return _weights(plan, final, arm)


def tune_summary(plan: Plan, arm: Arm) -> Optional[dict]:
    """What compare.json says of a tuned arm: the choice, each candidate and the sweep's summed cost."""
    record = read_json(plan.arm_dir(arm) / TUNE_JSON)
    if not record or record.get("chosen") is None:
        return None
    arm_dir = plan.arm_dir(arm)
    costs = []
    for c in record["candidates"]:
        run_dir = arm_dir / "train" if c["label"] == record["chosen"] else arm_dir / c["train_dir"]
        costs.append(train_cost(run_dir))
    total: dict = {}
    for key in ("wall_s", "tokens", "flops", "energy_wh"):
        vals = [c[key] for c in costs if c and isinstance(c.get(key), (int, float))]
        total[key] = round(sum(vals), 3) if len(vals) == len(costs) else None
    peaks = [c["peak_mem_mib"] for c in costs if c and isinstance(c.get("peak_mem_mib"), (int, float))]
    total["peak_mem_mib"] = max(peaks) if peaks else None
    chosen = next(c for c in record["candidates"] if c["label"] == record["chosen"])
    return {"on": record["on"], "val": record["val"], "chosen": chosen["setting"], "chosen_label": chosen["label"],
            "candidates": [{"setting": c["setting"], "value": c["value"]} for c in record["candidates"]],
            "runs": len(record["candidates"]), "train_cost": total}
