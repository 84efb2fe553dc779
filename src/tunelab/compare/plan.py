"""The plan of a compare: the compare YAML (docs/compare.md) expanded into arms, checked before any work.

    plan = make_plan("compare.yaml", ["limit=50"])
    plan.arms            # [Arm(id="zero_shot", ...), Arm(id="few_shot-k3-random", ...), Arm(id="lora-n32", ...)]
    plan.subset(32)      # the 32 pool records a fine-tune on n=32 trains on (nested: inside the 128)
    plan.signature       # what every finished arm must have been made with

Everything a user can get wrong is checked here, so a typo in the fifth arm fails in a second
instead of after four arms have run: unknown keys, an n larger than the pool, a metric that cannot
rank arms, qlora without CUDA, fine-tuning an endpoint, training overrides (validated as a
TrainConfig), a GRPO arm without a reward (compare/rl.py).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from tunelab.compare import judge, rl
from tunelab.compare.checks import check_metric, read_json, resolve_path, settings, slug
from tunelab.config import (CompareConfig, EndpointArmSpec, FewShotArmSpec, FineTuneArmSpec, PromptArmSpec,
                            TrainConfig, build, deep_merge, load_config)
from tunelab.errors import TunelabError
from tunelab.infer.endpoint import is_endpoint

PROMPTED_KINDS = ("zero_shot", "few_shot", "endpoint")  # arms that prompt a model; the others fine-tune one


def fine_tune_methods() -> dict:
    """The fine-tuned arm kinds: every training method (train/objectives/), name -> objectives.Method."""
    from tunelab.train.objectives import methods

    return methods()


def arm_kinds() -> tuple[str, ...]:
    return (*PROMPTED_KINDS[:2], *fine_tune_methods(), PROMPTED_KINDS[2])


def trains_adapter(plan: "Plan", arm: "Arm") -> bool:
    """The arm trains an adapter (an adapter/ folder), not every weight (model/)."""
    from tunelab.train.objectives import resolve

    return resolve(build(TrainConfig, plan.train_config(arm), f"{plan.source}: {arm.where}")).adapter

# Folder layout (the contract in docs/compare.md)
COMPARE_YAML = "compare.yaml"
COMPARE_JSON = "compare.json"
PLAN_JSON = "plan.json"
ARMS_DIR = "arms"
DATA_DIR = "data"
ARM_JSON = "arm.json"
FIRST_EXAMPLE = "first_example.txt"  # the first training example beside the first test prompt
LOCK_FILE = ".compare.lock"


@dataclass
class Arm:
    """One variant: a way of getting answers from a model, scored on the shared test items."""

    id: str
    method: str  # zero_shot | few_shot | endpoint, or a training method (train/objectives/)
    model: str
    k: Optional[int] = None  # demonstrations per prompt (prompted arms)
    sampler: Optional[str] = None
    n: Optional[int] = None  # training examples (fine-tuned arms)
    train: dict = field(default_factory=dict)  # this arm's own training-config keys
    tune: Any = None  # config.TuneSpec: a sweep chosen on the validation split (compare/tune.py)
    where: str = ""  # "arms[2].lora" for error messages

    @property
    def fine_tuned(self) -> bool:
        return self.method in fine_tune_methods()

    def describe(self) -> dict:
        d = {"id": self.id, "method": self.method, "model": self.model, "k": self.k, "sampler": self.sampler,
             "n": self.n, "train": self.train}
        if self.tune is not None:  # only when set: arms of older compares keep their signatures
            d["tune"] = self.tune.model_dump()
        return d


@dataclass
class Plan:
    config: CompareConfig
    source: str  # the YAML path (or "config"), for error messages
    base_dir: Path  # relative paths in the YAML resolve against its folder
    out: Path
    task: Any  # TaskConfig, with the pool as its few-shot pool
    metric: str
    higher_is_better: bool
    pool: list  # data.records.Row
    arms: list[Arm]
    signature: str = ""
    rendering: Any = None  # compare.render.Rendering: how the fine-tunes' training records are made
    retention: list = field(default_factory=list)  # compare.retention.RetentionTask
    drift: Any = None  # compare.retention.Drift, or None
    pool_skipped: Any = None  # data.readers.Skipped: pool records train.data.skip_bad left out

    def arm_dir(self, arm: Arm) -> Path:
        return self.out / ARMS_DIR / arm.id

    def _order(self) -> list[int]:
        order = list(range(len(self.pool)))
        random.Random(self.config.seed).shuffle(order)
        return order

    def subset(self, n: int) -> list:
        """The first n records of one seeded permutation of the pool: every smaller set is inside every larger one."""
        return [self.pool[i] for i in self._order()[:n]]

    def validation(self, val: int) -> list:
        """The last `val` records of the same permutation: a tuned arm's validation split, in no training subset
        of a tuned arm (make_plan checks n + val <= pool)."""
        return [self.pool[i] for i in self._order()[len(self.pool) - val:]]

    def validation_path(self, val: int) -> Path:
        return self.out / DATA_DIR / f"val-{val}.jsonl"

    def subset_path(self, n: int) -> Path:
        return self.out / DATA_DIR / f"train-n{n}.jsonl"

    def train_config(self, arm: Arm, setting: Optional[dict] = None, out: Optional[Path] = None) -> dict:
        """The arm's training config (docs/train-config.md): compare-wide `train:` keys, then the arm's own,
        then (a tuned arm's candidate) the swept `setting` {lr, epochs}, trained into `out`."""
        cfg: dict = {"train": {"seed": self.config.seed}}
        cfg = deep_merge(cfg, self.config.train)
        cfg = deep_merge(cfg, arm.train)
        if setting:
            cfg = deep_merge(cfg, {"train": setting})
        data = dict(cfg.get("data") or {})
        data["train"] = str(self.subset_path(arm.n).resolve())
        data.setdefault("eval", None)  # every one of the n examples trains; set data.eval to hold some out
        if self.rendering is not None:
            data.setdefault("format", self.rendering.format)  # the subset files' records (compare/render.py)
        if isinstance(cfg.get("replay"), dict) and isinstance(cfg["replay"].get("data"), str):
            cfg["replay"] = {**cfg["replay"], "data": resolve_path(cfg["replay"]["data"], self.base_dir)}
        cfg.update(name=arm.id, model=arm.model, method=arm.method, data=data,
                   out=str((out or self.arm_dir(arm) / "train").resolve()))
        return rl.complete(self, arm, cfg) if rl.is_rl(arm) else cfg  # a GRPO arm: prompts and rewards of the task

    def arm_signature(self, arm: Arm) -> str:
        return _sha(self.signature + json.dumps(arm.describe(), sort_keys=True))


def train_cost(run_dir: Path) -> Optional[dict]:
    """One training run's cost, from its summary.json (docs/compare.md, compare.json's train_cost)."""
    from tunelab import paths

    s = read_json(run_dir / paths.SUMMARY_FILE)
    if not s:
        return None
    return {"wall_s": s.get("wall_s"), "tokens": s.get("tokens_seen"), "flops": s.get("flops"),
            "peak_mem_mib": s.get("peak_mem_mib"), "energy_wh": s.get("energy_wh")}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _spec_of(item: Union[str, dict], i: int, source: str) -> tuple[str, dict]:
    if isinstance(item, str):
        kind, body = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, body = next(iter(item.items()))
        body = {} if body is None else body
    else:
        raise TunelabError(f"{source}: arms[{i}] must be an arm name (zero_shot) or a one-key mapping such as "
                           f"{{lora: {{n: [32, 128]}}}}; got {item!r}")
    if kind not in arm_kinds():
        raise TunelabError(f"{source}: arms[{i}]: unknown arm '{kind}'; use one of {', '.join(arm_kinds())}")
    if not isinstance(body, dict):
        raise TunelabError(f"{source}: arms[{i}].{kind} must be a mapping of settings, e.g. {{n: [32]}}; got {body!r}")
    return kind, body


def expand_arms(cfg: CompareConfig, source: str, pool_size: int, pool_name: str) -> list[Arm]:
    """Each arms entry -> one Arm per (k, sampler) or per n; ids are unique and name the setting."""
    from tunelab.fewshot.samplers import SAMPLERS

    arms: list[Arm] = []
    for i, item in enumerate(cfg.arms):
        kind, body = _spec_of(item, i, source)
        where = f"arms[{i}].{kind}"
        spec_cls = {"zero_shot": PromptArmSpec, "few_shot": FewShotArmSpec, "endpoint": EndpointArmSpec}.get(kind, FineTuneArmSpec)
        spec = build(spec_cls, body, f"{source}: {where}")
        model = spec.model or cfg.model
        suffix = "" if model == cfg.model else f"@{slug(model)}"
        if kind == "zero_shot":
            arms.append(Arm("zero_shot" + suffix, "zero_shot", model, k=0, where=where))
        elif kind in ("few_shot", "endpoint"):
            for s in _as_list(spec.sampler):
                if s not in SAMPLERS:
                    raise TunelabError(f"{source}: {where}.sampler: unknown sampler '{s}'; use one of {', '.join(SAMPLERS)}")
                for k in _as_list(spec.k):
                    low = 1 if kind == "few_shot" else 0
                    if not isinstance(k, int) or isinstance(k, bool) or not low <= k <= 128:
                        hint = " (k: 0 is the zero_shot arm)" if kind == "few_shot" and k == 0 else ""
                        raise TunelabError(f"{source}: {where}.k: {k!r} must be an integer from {low} to 128{hint}")
                    aid = f"endpoint-{slug(model)}-k{k}-{s}" if kind == "endpoint" else f"few_shot-k{k}-{s}{suffix}"
                    arms.append(Arm(aid, kind, model, k=k, sampler=s, where=where))
        else:
            if is_endpoint(model):
                raise TunelabError(f"{source}: {where}.model: '{model}' is an endpoint; tunelab cannot fine-tune a served "
                                   "model; fine-tune a local model folder instead")
            tag = spec.tag if spec.tag is not None else ("replay" if spec.train.get("replay") else None)
            if tag is not None and not re.fullmatch(r"[A-Za-z0-9._]+", tag):
                raise TunelabError(f"{source}: {where}.tag: {tag!r} must be letters, digits, '.' or '_' (it becomes "
                                   "part of the arm's folder name)")
            for n in _as_list(spec.n):
                if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                    raise TunelabError(f"{source}: {where}.n: {n!r} must be a positive integer (training examples)")
                if n > pool_size:
                    raise TunelabError(f"{source}: {where}.n: {n} exceeds the train pool ({pool_size} records in "
                                       f"{pool_name}); use n <= {pool_size} or a larger train_data")
                if spec.tune is not None and n + spec.tune.val > pool_size:
                    raise TunelabError(f"{source}: {where}.tune.val: n={n} training plus {spec.tune.val} validation "
                                       f"records exceed the train pool ({pool_size} records in {pool_name}); lower "
                                       f"n or val, or use a larger train_data")
                aid = f"{kind}-n{n}" + (f"-{tag}" if tag else "") + suffix
                arms.append(Arm(aid, kind, model, n=n, train=dict(spec.train), tune=spec.tune, where=where))
    seen: dict[str, str] = {}
    for a in arms:
        if a.id in seen:
            raise TunelabError(f"{source}: {a.where} repeats arm '{a.id}' (already made by {seen[a.id]}); list each "
                               "setting once, or give one of them a tag: to tell them apart")
        seen[a.id] = a.where
    return arms


def load_compare_config(config, overrides: Optional[list[str]] = None) -> tuple[CompareConfig, str, Path]:
    """(config, source, base_dir) from a YAML path or a dict, with overrides applied."""
    if isinstance(config, CompareConfig):
        return config.model_copy(deep=True), "config", Path.cwd()
    cfg = load_config(CompareConfig, config, overrides)
    if isinstance(config, dict):
        source, base_dir = "config", Path.cwd()
    else:
        source, base_dir = str(config), Path(config).resolve().parent
    if cfg.name is None:
        cfg.name = "compare" if isinstance(config, dict) else Path(config).stem
    return cfg, source, base_dir


def _good_pairs(pool: list, cfg: CompareConfig, tally) -> tuple[list, list[str]]:
    """A preference pool without its broken pairs, and the note that counts them (empty: none).

    Checked here, not when an arm reads its subset: the subsets are drawn from the good pairs, so
    SFT, DPO and ORPO arms each train on exactly n pairs (the same n), and a broken pair stops the
    plan before anything runs unless the compare's train.data.skip_bad is set.
    """
    from tunelab.data.preference import to_pair
    from tunelab.data.readers import ReadReport, converted

    data = cfg.train.get("data") or {}

    def good(row):
        to_pair(row, data.get("fields") or None, data.get("system"))
        return row

    notes: list[str] = []
    rows = list(converted(iter(pool), good, spec=cfg.train_data, skip_bad=bool(data.get("skip_bad")),
                          skip_setting="train: {data: {skip_bad: true}}", noun="pair", warn=False,
                          report=ReadReport(notes, tally)))
    return rows, notes


def _read_pool(cfg: CompareConfig, pool_spec: str, source: str) -> tuple[list, Any]:
    """The pool's records (its train_split), and the tally of those train.data.skip_bad left out
    (data.readers.Skipped: unreadable records here, bad pairs later in _good_pairs; compare.json)."""
    from tunelab.data.load import load_rows
    from tunelab.data.readers import Skipped, skip_hint

    tally = Skipped()
    pool = load_rows(pool_spec, skip_bad=bool((cfg.train.get("data") or {}).get("skip_bad")), skipped=tally,
                     hint=skip_hint("train: {data: {skip_bad: true}}"))
    if cfg.train_split:  # e.g. "0:1700" of a file whose last records are the test items
        a, b = (int(x) if x.strip() else None for x in cfg.train_split.split(":"))
        pool = pool[a:b]
    if not pool:
        raise TunelabError(f"{source}: train_data: {cfg.train_data} has no records"
                           + (f" in train_split {cfg.train_split!r}" if cfg.train_split else ""))
    return pool, tally


def make_plan(config, overrides: Optional[list[str]] = None, *, out: Optional[Union[str, Path]] = None) -> Plan:
    """Read, resolve and check a compare config; nothing is trained or evaluated."""
    from tunelab.evaluate.task_types import task_type

    cfg, source, base_dir = load_compare_config(config, overrides)
    task, pool_spec = _find_inputs(cfg, source, base_dir)
    pool, pool_skipped = _read_pool(cfg, pool_spec, source)
    skipped: list[str] = []
    if task_type(task).pairs:
        pool, skipped = _good_pairs(pool, cfg, pool_skipped)
    # demonstrations come from the same pool the fine-tunes train on
    task.fewshot.pool = pool_spec
    metric, higher = check_metric(task, cfg.metric, source)
    arms = expand_arms(cfg, source, len(pool), cfg.train_data)
    _check_arms(cfg, source, task, arms)
    out_dir = Path(out) if out is not None else Path(cfg.out.format(name=cfg.name))
    plan = Plan(cfg, source, base_dir, out_dir, task, metric, higher, pool, arms, pool_skipped=pool_skipped)
    _choose_rendering(plan, skipped)
    judge.check_plan(plan)  # judge_win_rate's baseline arm; self-preference (compare/judge.py)
    from tunelab.compare import retention

    plan.retention = retention.plan_tasks(cfg, source, base_dir, task)
    plan.drift = retention.plan_drift(cfg, source, base_dir) if any(a.fine_tuned for a in arms) else None
    _check_training(plan)
    rl.check(plan)  # GRPO arms: a generate task, a pool its prompt renders, a reward (compare/rl.py)
    plan.signature = _plan_signature(plan)
    return plan


def _find_inputs(cfg: CompareConfig, source: str, base_dir: Path) -> tuple[Any, str]:
    """The task (read) and the train pool's resolved path, each checked to exist (one line naming the key)."""
    from tunelab.data.readers import base_why, not_found
    from tunelab.evaluate.tasks import resolve_task

    why = base_why(base_dir, None if source == "config" else source)  # where a relative path is looked for
    task_spec = resolve_path(cfg.task, base_dir)
    if not task_spec.startswith("builtin:") and not Path(task_spec).is_file():
        raise TunelabError(f"{source}: task: {cfg.task} not found (looked at {task_spec}: {why}); "
                           "give a task YAML or builtin:<name>")
    task = resolve_task(task_spec)
    pool_spec = resolve_path(cfg.train_data, base_dir)
    if not pool_spec.startswith("builtin:") and not Path(pool_spec).exists():
        raise not_found(cfg.train_data, [Path(pool_spec)], why, f"{source}: train_data")
    return task, pool_spec


def _check_arms(cfg: CompareConfig, source: str, task, arms: list[Arm]) -> None:
    """The arms fit the task, the pool and this machine (one line naming the arm or key to change)."""
    from tunelab.evaluate.task_types import task_type

    tt = task_type(task)
    prompted_with_demos = any(a.method in ("few_shot", "endpoint") and a.k for a in arms)
    if cfg.train_split and prompted_with_demos:
        raise TunelabError(f"{source}: train_split applies to the fine-tuned arms' pool; demonstrations would still "
                           "come from the whole file: drop train_split or the few_shot arms")
    preference = [a.id for a in arms if a.fine_tuned and fine_tune_methods()[a.method].pairs]
    if preference and not tt.pairs:
        raise TunelabError(f"{source}: arms {', '.join(preference)} train on preference pairs: give a task of type: "
                           "preference and a train_data file of pairs (docs/compare.md)")
    if tt.why_no_demonstrations and prompted_with_demos:
        raise TunelabError(f"{source}: task '{task.name}' is a {task.type} task: {tt.why_no_demonstrations}; "
                           "drop the few_shot arms")
    quantized = [a for a in arms if a.fine_tuned and fine_tune_methods()[a.method].quantized]
    if quantized:
        import torch

        from tunelab.train.methods import check_method_available

        try:
            check_method_available(fine_tune_methods()[quantized[0].method].weights,
                                   "cuda" if torch.cuda.is_available() else "cpu")
        except TunelabError as e:
            raise TunelabError(f"{source}: {quantized[0].where}: {e}") from None


def _choose_rendering(plan: Plan, skipped: list[str]) -> None:
    """How the pool becomes demonstrations and training records: rendering every record now means a
    record the arms cannot read fails here (and in --dry-run), not after the arms before it ran."""
    from tunelab.compare import render

    cfg, arms = plan.config, plan.arms
    plan.rendering = render.choose(plan.task, plan.pool, plan.source, cfg.train_data,
                                   few_shot=any(a.k for a in arms if not a.fine_tuned),
                                   fine_tune=any(a.fine_tuned for a in arms),
                                   forced_format=(cfg.train.get("data") or {}).get("format"))
    if skipped:  # every arm trains on n good pairs
        plan.rendering.note += f"; {skipped[0]}"


def _check_training(plan: Plan) -> None:
    """Every fine-tuned arm's training config (and each tuned candidate's) validates: a bad training key
    fails now, not after the arms before it have run."""
    replay_read: set[tuple[str, str]] = set()
    for arm in plan.arms:
        if arm.fine_tuned:
            _check_train(plan, arm, plan.source, replay_read)
            if arm.tune is not None:
                for setting in settings(arm.tune):
                    build(TrainConfig, plan.train_config(arm, setting),
                          f"{plan.source}: {arm.where}.tune (training config)")


def _plan_signature(plan: Plan) -> str:
    """What every finished arm must have been made with: model, task, pool, metric and the shared settings."""
    from tunelab.evaluate.results import task_sha256

    cfg = plan.config
    pool_hash = _sha(json.dumps([r.data for r in plan.pool], sort_keys=True, default=str))
    return _sha(json.dumps({
        "model": cfg.model, "task": task_sha256(plan.task), "pool": pool_hash, "metric": plan.metric,
        "limit": cfg.limit, "seed": cfg.seed, "train": cfg.train,
        "render": [plan.rendering.mode, plan.rendering.format],
    }, sort_keys=True, default=str))


def _check_train(plan: Plan, arm: Arm, source: str, replay_read: set[tuple[str, str]]) -> None:
    """The arm's training config validates, and its replay data can be read (one line naming the key)."""
    cfg = build(TrainConfig, plan.train_config(arm), f"{source}: {arm.where} (training config)")
    if cfg.replay is None or (cfg.replay.data, cfg.replay.format) in replay_read:
        return
    replay_read.add((cfg.replay.data, cfg.replay.format))
    from tunelab.data.formats import detect_format, to_conversation
    from tunelab.data.load import load_rows

    where = f"{source}: {arm.where}: train.replay.data"
    if not cfg.replay.data.startswith("builtin:") and not Path(cfg.replay.data).is_file():
        raise TunelabError(f"{where}: {cfg.replay.data} not found; give a file of general instruction data "
                           "(alpaca, messages, prompt_completion, ...)")
    try:
        rows = load_rows(cfg.replay.data)
        if not rows:
            raise TunelabError(f"{cfg.replay.data} has no records")
        fmt = cfg.replay.format if cfg.replay.format != "auto" else detect_format(rows[0])[0]
        for row in rows:
            to_conversation(row, fmt)
    except TunelabError as e:
        raise TunelabError(f"{where}: cannot be read as training data ({e})") from None
