"""The perplexity family, aggregated as lm-evaluation-harness does.

The runner computes, per document, the summed natural-log log-likelihood over rolling windows
and the unit counts, and hands each metric an item with:

    item["loglik"]:   float  sum of log p(token) over the document (<= 0, natural log)
    item["n_tokens"]: int    tokens scored
    item["n_words"]:  int    len(re.split(r"\\s+", text))   (lm-eval's word count)
    item["n_bytes"]:  int    len(text.encode("utf-8"))

`count_units(text)` gives n_words and n_bytes with lm-eval's exact rules.

Aggregation is over the whole corpus, NOT a mean of per-document perplexities:
    token_perplexity = exp(-sum(loglik) / sum(n_tokens))
    word_perplexity  = exp(-sum(loglik) / sum(n_words))
    byte_perplexity  = exp(-sum(loglik) / sum(n_bytes))
    bits_per_byte    = -sum(loglik) / sum(n_bytes) / ln(2)
so long documents weigh more, as lm-eval's weighted_perplexity and bits_per_byte do. They are
corpus metrics (base.Metric.corpus): an item's sufficient statistics are (loglik, units), and
the CI and the paired difference of `tunelab diff` and compare resample documents and recompute
the ratio, read back from predictions.jsonl's loglik and n_* fields. `item_value`
(predictions.jsonl) is the document's own value under the same formula, for reading item by item.
Lower is better for all four.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics.base import ItemScore, Metric
from tunelab.evaluate.metrics.registry import register


def count_units(text: str) -> dict[str, int]:
    """lm-eval's word and byte counts for one document."""
    return {"n_words": len(re.split(r"\s+", text)), "n_bytes": len(text.encode("utf-8"))}


class _Perplexity(Metric):
    higher_is_better = False
    corpus = True
    unit_field = "n_tokens"

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> dict[str, float]:
        for key in ("loglik", self.unit_field):
            if key not in item:
                raise TunelabError(f"item {item.get('id', '?')}: metric '{self.name}' needs field '{key}' "
                                   f"(has: {', '.join(sorted(item)) or 'none'})")
        units = float(item[self.unit_field])
        if units <= 0:
            raise TunelabError(f"item {item.get('id', '?')}: field '{self.unit_field}' must be > 0, got {units:g} "
                               f"(empty document?)")
        return {"loglik": float(item["loglik"]), "units": units}

    def _from_totals(self, loglik: np.ndarray | float, units: np.ndarray | float):
        return np.exp(-np.asarray(loglik) / np.asarray(units))

    def item_value(self, score: ItemScore) -> float:
        return float(self._from_totals(score["loglik"], score["units"]))  # type: ignore[index]

    def item_stats(self, score: ItemScore) -> list[float]:
        return [score["loglik"], score["units"]]  # type: ignore[index]

    def values_from_stats(self, totals: np.ndarray) -> np.ndarray:
        totals = np.atleast_2d(totals)
        return np.asarray(self._from_totals(totals[:, 0], totals[:, 1]), dtype=np.float64)


@register("token_perplexity")
class TokenPerplexity(_Perplexity):
    description = "exp(total NLL / total tokens)"
    unit_field = "n_tokens"


@register("word_perplexity")
class WordPerplexity(_Perplexity):
    description = "exp(total NLL / total words) (lm-eval word_perplexity)"
    unit_field = "n_words"


@register("byte_perplexity")
class BytePerplexity(_Perplexity):
    description = "exp(total NLL / total UTF-8 bytes) (lm-eval byte_perplexity)"
    unit_field = "n_bytes"


@register("bits_per_byte")
class BitsPerByte(_Perplexity):
    description = "total NLL / total bytes / ln 2 (lm-eval bits_per_byte)"
    unit_field = "n_bytes"

    def _from_totals(self, loglik, units):
        return -np.asarray(loglik) / np.asarray(units) / math.log(2)
