"""Multiple-choice accuracy from per-choice log-likelihoods, exactly as lm-evaluation-harness.

The runner scores each choice as the summed log-likelihood of `target_delimiter + choice` after
the context (docs/tasks.md) and hands these metrics an item with:

    item["choice_logliks"]: list[float]   one summed log-likelihood per choice
    item["choices"]:        list[str]     the choice texts themselves, WITHOUT the delimiter
    item["gold"]:           int | list[int]  index (or indices) of the correct choice(s)

- `acc`:       argmax of the log-likelihoods is a gold index.
- `acc_norm`:  argmax of loglik / len(choice text in characters) (lm-eval's acc_norm: the
               length is of the choice without the delimiter).
- `acc_bytes`: argmax of loglik / len(choice.encode("utf-8")) (lm-eval's acc_bytes).
Ties go to the lowest index (numpy.argmax), as in lm-eval. An empty choice text gives
loglik / 0 = -inf under numpy, so it is never picked unless every choice is -inf.
`prediction` and `references` are ignored. `choice_prediction(item, norm)` returns the picked
index for predictions.jsonl.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics.base import Metric
from tunelab.evaluate.metrics.registry import register

NORMS = ("none", "chars", "bytes")


def _fields(item: dict) -> tuple[np.ndarray, list[str], list[int]]:
    where = f"item {item.get('id', '?')}"
    for key in ("choice_logliks", "choices", "gold"):
        if key not in item:
            raise TunelabError(f"{where}: multiple-choice metrics need field '{key}' "
                               f"(has: {', '.join(sorted(item)) or 'none'})")
    lls = np.asarray(item["choice_logliks"], dtype=np.float64)
    choices = item["choices"]
    if not isinstance(choices, (list, tuple)) or len(choices) != lls.size or lls.size == 0:
        raise TunelabError(f"{where}: need one log-likelihood per choice; got {lls.size} for "
                           f"{len(choices) if isinstance(choices, (list, tuple)) else 'non-list'} choices")
    gold = item["gold"]
    golds = list(gold) if isinstance(gold, (list, tuple)) else [gold]
    for g in golds:
        if not isinstance(g, (int, np.integer)) or not 0 <= g < lls.size:
            raise TunelabError(f"{where}: gold index {g!r} out of range for {lls.size} choices (0..{lls.size - 1})")
    return lls, [str(c) for c in choices], [int(g) for g in golds]


def choice_prediction(item: dict, norm: str = "none") -> int:
    """Index of the choice picked under a length normalisation: none | chars | bytes."""
    lls, choices, _ = _fields(item)
    if norm == "chars":
        lengths = np.array([float(len(c)) for c in choices])
    elif norm == "bytes":
        lengths = np.array([float(len(c.encode("utf-8"))) for c in choices])
    elif norm == "none":
        lengths = np.ones_like(lls)
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return int(np.argmax(lls / lengths))


class _ChoiceAcc(Metric):
    norm = "none"

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        _, _, golds = _fields(item)
        return float(choice_prediction(item, self.norm) in golds)


@register("acc")
class Acc(_ChoiceAcc):
    description = "multiple choice: highest summed log-likelihood is gold (lm-eval acc)"
    norm = "none"


@register("acc_norm")
class AccNorm(_ChoiceAcc):
    description = "multiple choice: log-likelihood / choice length in characters (lm-eval acc_norm)"
    norm = "chars"


@register("acc_bytes")
class AccBytes(_ChoiceAcc):
    description = "multiple choice: log-likelihood / choice length in UTF-8 bytes (lm-eval acc_bytes)"
    norm = "bytes"
