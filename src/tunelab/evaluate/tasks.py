"""Which task to evaluate: a TaskConfig from a YAML path, a TaskConfig, or a built-in task.

    resolve_task("examples/tasks/bbq.yaml", ["generation.max_new_tokens=128"]) -> TaskConfig
    builtin_task("dates", n_test=20) -> TaskConfig

Built-in tasks (tunelab.data.builtin) describe their data: how items are made, which metrics
check the answers, how long an answer is. The evaluation task is built here from that
description, so the data stage never depends on the evaluation's configuration.
"""
from __future__ import annotations

from typing import Optional

from tunelab.config import TaskConfig, load_task


def builtin_task(name: str, *, n_test: int = 200, n_pool: int = 512, seed: int = 1) -> TaskConfig:
    """The evaluation task of a built-in task (`dates` or `builtin:dates`): a chat prompt, greedy
    answers up to the first newline, demonstrations from the disjoint train pool."""
    from tunelab.data.builtin import TASKS, builtin_name

    name = builtin_name(name)
    t = TASKS[name]
    return TaskConfig(
        name=name,
        data=f"builtin:{name}?split=test&n={n_test}&seed={seed}",
        type="generate",
        prompt="{{ prompt }}",
        answer="{{ completion }}",
        chat=True,
        fewshot={"k": 0, "sampler": "random", "seed": 1234, "pool": f"builtin:{name}?split=train&n={n_pool}&seed={seed}"},
        generation={"max_new_tokens": t.max_new_tokens, "stop": ["\n"], "temperature": 0.0},
        metrics=list(t.metrics),
    )


def resolve_task(task, overrides: Optional[list[str]] = None) -> TaskConfig:
    """A TaskConfig from a TaskConfig, a YAML path or `builtin:<name>`, with `key=value` overrides.

    Its task type checks its own keys (an unknown type is a one-line error listing the known ones),
    and a task that names no metrics gets its type's default metrics when it has them (a `type:
    preference` task: pref_acc and pref_acc_norm, so `type` and `data` are a whole task file)."""
    from tunelab.evaluate.task_types import task_source, task_type

    task = _resolve(task, overrides)
    tt = task_type(task)
    tt.check(task, task_source(task))
    if tt.default_metrics and "metrics" not in task.model_fields_set:
        task.metrics = list(tt.default_metrics)
    return task


def _resolve(task, overrides: Optional[list[str]] = None) -> TaskConfig:
    text = str(task)
    if isinstance(task, TaskConfig) or text.startswith("builtin:"):
        if not isinstance(task, TaskConfig):
            task = builtin_task(text)
        if not overrides:
            return task.model_copy(deep=True)
        merged = load_task(task.model_dump(mode="json"), overrides, base_dir=task.base_dir)
        merged.source = task.source  # errors keep naming the file the user edits
        return merged
    return load_task(text, overrides)


__all__ = ["resolve_task", "builtin_task"]
