"""Preference accuracy: the share of pairs whose chosen answer the model finds likelier than the rejected one.

The runner (task type `preference`) scores each pair's two answers after one copy of their prompt
(the multiple-choice token tree) and hands these metrics an item with:

    item["pair_logliks"]: [chosen, rejected]   summed log-probabilities of each answer's tokens
    item["pair_tokens"]:  [chosen, rejected]   how many tokens were scored for each

(The runner's scoring follows lm-eval and moves the prompt's trailing newline into each answer:
one token more on both sides, the same log-probability for both, so chosen − rejected is the
difference DPO training sees.)

- `pref_acc`:      chosen's summed log-probability > rejected's (DPO's implicit preference with a
                   reference that prefers neither; the `rewards/accuracies` of a DPO run, reference-free)
- `pref_acc_norm`: the same on per-token means, so a longer answer is not penalised for its length
A tie counts 0 (strictly better, as TRL's reward accuracy). `prediction` and `references` are ignored.
"""
from __future__ import annotations

from typing import Sequence

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics.base import Metric
from tunelab.evaluate.metrics.registry import register


def _pair(item: dict) -> tuple[list[float], list[int]]:
    for key in ("pair_logliks", "pair_tokens"):
        if key not in item or len(item[key]) != 2:
            raise TunelabError(f"item {item.get('id', '?')}: preference metrics need field '{key}' = [chosen, rejected] "
                               "(a task of type: preference)")
    return [float(x) for x in item["pair_logliks"]], [int(x) for x in item["pair_tokens"]]


@register("pref_acc")
class PrefAcc(Metric):
    description = "preference pairs: share where the chosen answer's summed log-probability beats the rejected one's"
    per_token = False

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        (c, r), (n_c, n_r) = _pair(item)
        if self.per_token:
            c, r = c / max(n_c, 1), r / max(n_r, 1)
        return float(c > r)


@register("pref_acc_norm")
class PrefAccNorm(PrefAcc):
    description = "preference pairs: the same on per-token mean log-probabilities (length-normalised)"
    per_token = True
