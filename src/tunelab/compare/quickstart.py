"""`tunelab quickstart`: the whole question as one compare, on the default model and a built-in task.

zero-shot vs 3-shot vs LoRA fine-tunes on two nested training-set sizes, all scored on the same
held-out items, with costs, the toxicity screen, the table, the sentences and report.html. It is
an ordinary compare (quickstart_config() is its config), so it resumes like one; `fast=True` is the
CI-sized version.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

# full: <= 10 minutes on a 2-core CPU (measured in docs/compare.md); fast: CI-sized
SIZES = {"full": {"limit": 40, "n": [64, 256], "pool": 512},
         "fast": {"limit": 6, "n": [8, 16], "pool": 64}}


def quickstart_config(*, task: str = "dates", model: str = "default", fast: bool = False,
                      limit: Optional[int] = None) -> dict:
    """The compare config of the quickstart (a dict, as a compare YAML would hold it)."""
    size = SIZES["fast" if fast else "full"]
    return {
        "name": "quickstart-fast" if fast else "quickstart",
        "model": model,
        "task": f"builtin:{task}",
        "train_data": f"builtin:{task}?n={size['pool']}&seed=1",
        "limit": limit or size["limit"],
        "arms": ["zero_shot", {"few_shot": {"k": [3]}}, {"lora": {"n": size["n"]}}],
        # no training keys: the fine-tunes get the defaults every compare gets (epochs, batch and
        # learning rate from the subset's size, train/schedule.py)
        "safety": True,
    }


def run_quickstart(*, task: str = "dates", model: str = "default", fast: bool = False, limit: Optional[int] = None,
                   out: Union[str, Path, None] = None, say: Callable[[str], None] = print):
    """Pull the default model if needed, then run the quickstart compare; returns the CompareResult."""
    from tunelab.compare.run import compare

    if model == "default":
        from tunelab.models.loading import pull

        say(f"default model: {pull(model)}")
    cfg = quickstart_config(task=task, model=model, fast=fast, limit=limit)
    return compare(cfg, out=out or f"runs/{cfg['name']}", say=say)
