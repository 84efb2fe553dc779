"""GRPO's prompts and rewards from a task file, and its rollout function: the providers of method: grpo.

train/ imports neither the engine nor the metrics (docs/architecture.md), so the layer that starts
a run builds what GRPO needs here and passes it to `train(providers=...)`:

    prompts    the task's items, each rendered by its `prompt` template (chat template when the
               task says chat: true), with the item's references for the rewards
    rewards    grpo.rewards: registry metrics scored against the task's `answer`, or a Python
               `module:function` called as f(completion, item) -> float; weighted and summed
    rollout    infer.rollout.sample: the engine sampling on the live model

Where the task comes from: grpo.task (a task YAML or builtin:<name>); else data.train when it is a
task YAML; else data.train is a data file (or builtin:<name>?n=...) of records with a `prompt`,
whose `completion` or `answer` field (when present) is the reference.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from tunelab.config import TaskConfig, TrainConfig
from tunelab.errors import TunelabError

# metrics that score one generated answer on its own (judge_score comes with the judge)
REWARD_METRICS = ("exact_match", "numeric", "numeric_strict", "numeric_flexible", "contains", "regex", "valid_json",
                  "json_schema", "f1", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf")
NO_ANSWER = ("regex", "valid_json", "json_schema")  # judge the answer's form: no reference needed


@dataclass(frozen=True)
class TaskPrompt:
    """One training prompt (train/rollouts.py's Prompt has the same attributes)."""

    text: str
    item: dict  # {"gold": [references], "fields": the record}
    name: str  # the record, for errors


@dataclass(frozen=True)
class RewardFunction:
    """A reward (train/rollouts.py's Reward has the same attributes): fn(completion, item) -> float."""

    name: str
    weight: float
    fn: Callable[[str, Any], float]


def grpo_task(cfg: TrainConfig, base_dir) -> TaskConfig:
    """The task whose prompts GRPO trains on (see the module docstring)."""
    from tunelab.config import load_task
    from tunelab.evaluate.tasks import builtin_task

    spec = cfg.grpo.task or cfg.data.train
    key = "grpo.task" if cfg.grpo.task else "data.train"
    if spec.startswith("builtin:"):
        name = spec.split("?")[0]
        task = builtin_task(name)
        if not cfg.grpo.task:  # the training records, as the task's items
            task = task.model_copy(update={"data": spec, "split": None})
        return task
    path = _beside(spec, base_dir)
    if Path(path).suffix in (".yaml", ".yml"):
        if not Path(path).is_file():
            raise TunelabError(f"{key}: task file {spec} not found (looked beside the config, in {base_dir}, and in "
                               "the current folder); check the path")
        return load_task(path)
    if cfg.grpo.task:
        raise TunelabError(f"grpo.task: {spec} is not a task YAML (.yaml) or builtin:<name>; docs/training.md, GRPO")
    from tunelab.data.load import load_rows

    first = load_rows(path, base_dir=base_dir)[:1]
    fields = first[0].data if first else {}
    answer = next((f"{{{{ {f} }}}}" for f in ("completion", "answer") if f in fields), None)
    return TaskConfig(name=Path(path).stem, data=str(Path(path).resolve()), prompt="{{ prompt }}", answer=answer,
                      chat=True, metrics=["exact_match"])


def _beside(spec: str, base_dir) -> str:
    """A relative path beside the config when it is there, else as given (train's rule, inputs.data_path)."""
    p = Path(spec)
    if base_dir is not None and not p.is_absolute() and (Path(base_dir) / p).exists():
        return str(Path(base_dir) / p)
    return spec


def task_prompts(task: TaskConfig, tokenizer) -> list[TaskPrompt]:
    """Every item of the task, rendered as an evaluation renders it (zero-shot)."""
    from tunelab.evaluate.prompts import TaskTemplates
    from tunelab.evaluate.runner import load_task_rows
    from tunelab.fewshot import ContextBuilder

    where = task.source or f"task '{task.name}'"
    from tunelab.evaluate.task_types import task_type

    tt = task_type(task)
    if "generation" not in tt.needs(task) or tt.conversation:  # one completion sampled per rendered prompt
        raise TunelabError(f"{where}: method: grpo samples answers, and this task is type: {task.type}; "
                           "use a type: generate task")
    templates = TaskTemplates(task, where)
    builder = ContextBuilder(task, templates, [], k=0, sampler="first_n", seed=0, pool_is_eval=True,
                             tokenizer=tokenizer)
    out = []
    for row in load_task_rows(task):
        r = templates.render(row)
        refs = r.gold if isinstance(r.gold, list) else ([] if r.gold is None else [r.gold])
        out.append(TaskPrompt(builder.build(row, r.prompt).text, {"gold": refs, "fields": row.data}, str(row.source)))
    return out


def reward_functions(cfg: TrainConfig, task: TaskConfig, base_dir) -> list[RewardFunction]:
    """grpo.rewards as functions; none given: the task's first metric, weight 1."""
    specs = cfg.grpo.rewards or [{"metric": m if isinstance(m, str) else next(iter(m)),
                                  **({} if isinstance(m, str) else (next(iter(m.values())) or {}))}
                                 for m in task.metrics[:1]]
    out = []
    for i, spec in enumerate(specs):
        spec = spec if isinstance(spec, dict) else spec.model_dump(exclude_none=True)
        key = f"grpo.rewards[{i}]"
        if spec.get("function"):
            fn = _function(spec["function"], key, base_dir)
            out.append(RewardFunction(spec["function"], spec.get("weight", 1.0), fn))
        else:
            out.append(_metric_reward(spec, task, key))
    names = [r.name for r in out]
    if len(set(names)) < len(names):
        raise TunelabError(f"grpo.rewards: {names} name a reward twice; give each once")
    return out


def _metric_reward(spec: dict, task: TaskConfig, key: str) -> RewardFunction:
    from tunelab.evaluate.metrics.registry import get_metric

    name = spec["metric"]
    options = {k: v for k, v in spec.items() if k not in ("metric", "weight", "function")}
    if name not in REWARD_METRICS:
        raise TunelabError(f"{key}: metric {name} does not score one generated answer; a reward metric is one of "
                           f"{', '.join(REWARD_METRICS)} (or function: module:function)")
    needs_answer = name not in NO_ANSWER and not (name == "contains" and options.get("needle"))
    if needs_answer and not task.answer:
        raise TunelabError(f"{key}: metric {name} compares with the task's answer, and {task.source or task.name} has "
                           "no answer template; add answer: to the task, or use regex / valid_json / json_schema")
    metric = get_metric({name: options})

    def reward(completion: str, item) -> float:
        gold = item.get("gold", []) if isinstance(item, dict) else []
        return float(metric.aggregate([metric.item_score(completion, gold, item)]))

    return RewardFunction(name, spec.get("weight", 1.0), reward)


def _function(spec: str, key: str, base_dir) -> Callable:
    module, _, attr = spec.partition(":")
    added = base_dir is not None and str(base_dir) not in sys.path
    if added:
        sys.path.insert(0, str(base_dir))  # a module beside the config
    try:
        fn = getattr(importlib.import_module(module), attr, None)
    except ImportError as e:
        raise TunelabError(f"{key}: cannot import {module} ({e}); put {module}.py beside the config") from None
    finally:
        if added:
            sys.path.remove(str(base_dir))
    if not callable(fn):
        raise TunelabError(f"{key}: {module} has no function {attr}")
    return fn


def providers(cfg: TrainConfig, base_dir: Optional[str | Path]) -> dict:
    """{prompts, rollout, rewards} for train(providers=...) of a run whose objective needs them (grpo)."""
    from tunelab.infer.rollout import sample

    task = grpo_task(cfg, base_dir)
    return {"prompts": lambda source: task_prompts(task, source.tokenizer), "rollout": sample,
            "rewards": reward_functions(cfg, task, base_dir)}
