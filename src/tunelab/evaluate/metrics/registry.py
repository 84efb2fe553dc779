"""Metric names -> classes, and the task-YAML metric spec -> metric objects.

A task's `metrics:` list holds names or one-key dicts with options (docs/tasks.md):

    metrics: [exact_match, {bleu: {tokenize: 13a}}, {rouge1: {use_stemmer: true}}]

`get_metric("exact_match")` / `get_metric({"bleu": {"tokenize": "13a"}})` returns one metric
object; `get_metrics(spec_list)` the list. An unknown name is a TunelabError listing the known
names; an unknown option names the option and the allowed ones.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics.base import Metric

_REGISTRY: dict[str, type[Metric]] = {}
# Modules whose import registers metrics; loaded on first lookup so `import tunelab` stays cheap.
_MODULES = ("text", "sacre", "rouge", "choice", "perplexity", "assistant", "preference", "judge")
_loaded = False


def register(name: str) -> Callable[[type[Metric]], type[Metric]]:
    """Class decorator: make `name` resolve to this class (the class's `name` is set to it)."""

    def deco(cls: type[Metric]) -> type[Metric]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"metric name '{name}' registered twice")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in _MODULES:
            importlib.import_module(f"tunelab.evaluate.metrics.{mod}")
        _loaded = True


def known_metrics() -> dict[str, type[Metric]]:
    """All registered metric names (sorted) -> class."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def get_metric(spec: str | dict[str, Any]) -> Metric:
    """One metric from a name or a one-key {name: {option: value}} dict."""
    _load()
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, options = next(iter(spec.items()))
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise TunelabError(f"metric '{name}': options must be a mapping like {{{name}: {{option: value}}}}, "
                               f"got {type(options).__name__}")
    else:
        raise TunelabError(f"a metric entry must be a name or a one-key mapping {{name: {{options}}}}, got {spec!r}")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise TunelabError(f"unknown metric '{name}'; known metrics: {', '.join(sorted(_REGISTRY))}")
    metric = cls(**options)
    metric.name = name  # aliases (numeric_strict) keep the name the user wrote
    return metric


def get_metrics(specs: list[str | dict[str, Any]]) -> list[Metric]:
    """The task YAML's `metrics:` list -> metric objects (names must be unique)."""
    if isinstance(specs, (str, dict)):
        specs = [specs]
    metrics = [get_metric(s) for s in specs]
    names = [m.name for m in metrics]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TunelabError(f"metric '{dupes[0]}' listed twice in metrics; give it once")
    return metrics
