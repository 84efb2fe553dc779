"""Task-type names -> TaskType objects. Every module of this package is one task type.

    @register_task_type("generate")
    class Generate(TaskType): ...

    task_type(task)            # the object for task.type; an unknown type is a one-line error
    known_task_types()         # {name: object}, sorted by name

The package's modules are imported on the first lookup (tunelab.discover), so a new file is
enough: no list of modules is kept anywhere.
"""
from __future__ import annotations

from typing import Callable

from tunelab.discover import import_package_modules
from tunelab.errors import TunelabError
from tunelab.evaluate.task_types.base import TaskType, task_source

PACKAGE = "tunelab.evaluate.task_types"
_REGISTRY: dict[str, TaskType] = {}
_loaded: set[str] = set()


def register_task_type(name: str) -> Callable[[type[TaskType]], type[TaskType]]:
    """Class decorator: make `type: name` in a task file run this class (its `name` is set to it)."""

    def deco(cls: type[TaskType]) -> type[TaskType]:
        if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
            raise ValueError(f"task type '{name}' registered twice")
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return deco


def load(package: str = PACKAGE) -> None:
    """Import every module of `package` once (their decorators register them); tests pass their own."""
    if package not in _loaded:
        import_package_modules(package, skip=("base", "registry"))
        _loaded.add(package)


def known_task_types() -> dict[str, TaskType]:
    load()
    return dict(sorted(_REGISTRY.items()))


def get_task_type(name: str, where: str = "the task") -> TaskType:
    """The object of task type `name`; an unknown one is a TunelabError naming `where` and the known types."""
    load()
    tt = _REGISTRY.get(name)
    if tt is None:
        raise TunelabError(f"{where}: type: {name!r} is not a task type; use one of "
                           f"{', '.join(sorted(_REGISTRY))} (docs/tasks.md)")
    return tt


def task_type(task) -> TaskType:
    """The object of a TaskConfig's `type`."""
    return get_task_type(task.type, task_source(task))


def prediction_keys() -> dict[str, dict[str, str]]:
    """Every key of predictions.jsonl: the keys of every line, each task type's, then the safety benchmarks'."""
    from tunelab.evaluate.results import PREDICTION_KEYS

    first, rest = next(iter(PREDICTION_KEYS.items())), list(PREDICTION_KEYS.items())[1:]
    return dict([first, *((n, dict(t.prediction_keys)) for n, t in known_task_types().items()), *rest])
