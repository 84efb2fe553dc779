"""Registries find their members by importing every module of their package.

    import_package_modules("tunelab.evaluate.metrics")   # -> the module names it imported

A metric, a task type or a training objective is one module in its package: importing the module
runs its `@register(...)` decorators, so adding a file is enough; no list of module names is kept
anywhere. Modules whose name starts with "_" (helpers, `__init__`) and sub-packages are skipped,
and `skip` names modules the registry itself lives in (importing them again is pointless).

pkgutil does the walking; written here only so every registry imports in the same order
(sorted by name, so a name clash is reported the same way on every machine).
"""
from __future__ import annotations

import importlib
import pkgutil


def import_package_modules(package: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Import every public, non-package module of `package`; return their short names, sorted."""
    pkg = importlib.import_module(package)
    names = sorted(info.name for info in pkgutil.iter_modules(pkg.__path__)
                   if not info.ispkg and not info.name.startswith("_") and info.name not in skip)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
