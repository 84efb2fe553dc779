"""Preference accuracy: the share of pairs whose chosen answer the model finds likelier than the rejected one
(and, against a reference model, whose chosen answer has the higher implicit reward).

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

With a reference model (base + adapter: the base, the adapter switched off; a full fine-tune: the
`--reference` model it started from) the runner scores both answers a second time and adds

    item["ref_pair_logliks"]: [chosen, rejected]   the same sums under the reference

- `reward_acc`:    DPO's implicit reward, r(y) = log π(y) − log π_ref(y): the share of pairs where
                   r(chosen) > r(rejected), the `rewards/accuracies` of a DPO run (a tie counts 0, so
                   an adapter that has not moved yet, all rewards 0, scores 0, as in TRL)
- `reward_margin`: the mean of β·(r(chosen) − r(rejected)), the `rewards/margins` of a DPO run (β:
                   the option `beta`, default 0.1 as training's)
Without a reference (no adapter, no --reference) the runner does not compute them and says why in
the entry's `note`.
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


def _rewards(item: dict) -> tuple[float, float]:
    """(r(chosen), r(rejected)): each answer's log-probability under the model minus the reference's."""
    (c, r), _ = _pair(item)
    ref = item.get("ref_pair_logliks")
    if ref is None or len(ref) != 2:
        raise TunelabError(f"item {item.get('id', '?')}: reward metrics need field 'ref_pair_logliks' = [chosen, rejected] "
                           "(a task of type: preference, on base + adapter or with --reference)")
    return c - float(ref[0]), r - float(ref[1])


@register("pref_acc_norm")
class PrefAccNorm(PrefAcc):
    description = "preference pairs: the same on per-token mean log-probabilities (length-normalised)"
    per_token = True


@register("reward_acc")
class RewardAcc(Metric):
    description = ("preference pairs, base + adapter (or a full fine-tune with --reference): share where the chosen "
                   "answer's implicit reward (log-probability minus the reference's) beats the rejected one's")
    needs_reference = True  # the runner scores the pairs a second time: adapter off, or the --reference model

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        rc, rr = _rewards(item)
        return float(rc > rr)


@register("reward_margin")
class RewardMargin(Metric):
    description = "preference pairs, base + adapter (or --reference): mean of beta × (chosen's implicit reward − rejected's)"
    options_spec = {"beta": 0.1}
    options_help = {"beta": "the DPO beta that scales the implicit reward (training's default 0.1)"}
    needs_reference = True

    def _check_options(self) -> None:
        b = self.options["beta"]
        if isinstance(b, bool) or not isinstance(b, (int, float)) or b <= 0:
            raise TunelabError(f"metric 'reward_margin': option beta must be a number > 0, got {b!r}")

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        rc, rr = _rewards(item)
        return float(self.options["beta"]) * (rc - rr)
