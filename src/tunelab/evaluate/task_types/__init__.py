"""Task types: one module each (generate, multi_turn, multiple_choice, perplexity, preference,
retrieval).

    from tunelab.evaluate.task_types import task_type
    task_type(task).run(job)        # the task's type decides; nobody else compares its name

base.py holds the TaskType base class (what a type declares and does), registry.py the names.
A new task type is one module here with one `@register_task_type("name")` class, and its test
(docs/architecture.md, "Where to add things").
"""
from tunelab.evaluate.task_types.base import Job, Ran, TaskType, task_source
from tunelab.evaluate.task_types.registry import (get_task_type, known_task_types, prediction_keys,
                                                  register_task_type, task_type)

__all__ = ["Job", "Ran", "TaskType", "task_source", "get_task_type", "known_task_types", "prediction_keys",
           "register_task_type", "task_type"]
