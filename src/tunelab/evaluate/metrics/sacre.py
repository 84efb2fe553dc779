"""BLEU, chrF and TER through sacrebleu, on sacrebleu's 0-100 scale.

These are corpus-level metrics: the headline value is sacrebleu's `corpus_score` over all items
(n-gram / edit statistics summed over the corpus, then one score), never a mean of sentence
scores. Each item's score is a dict `{"sentence": s, "s0": ..., "sK": ...}`: its sentence-level
score (BLEU with effective order, as `sacrebleu.sentence_bleu` does) plus sacrebleu's sufficient
statistics for that segment (`_extract_corpus_statistics`). Summing the statistics of a
resample and scoring the sum (`_compute_score_from_stats`) gives the corpus score of that
resample, as `sacrebleu --paired-bs` does; that is the CI, and the paired difference of
`tunelab diff` and compare (tunelab.evaluate.paired). `item_value` (predictions.jsonl) is the
sentence score, for reading item by item; no number over several items is a mean of it. The
statistics are not written: they are recomputed from predictions.jsonl's output and gold, with the
settings read back from the signature (`from_signature`).

Options map one to one onto sacrebleu's constructor arguments:
  bleu: tokenize (13a, intl, zh, char, none, ...), lowercase, smooth_method, smooth_value,
        max_ngram_order, effective_order
  chrf: char_order (6), word_order (0; 2 = chrF++), beta (2), lowercase, whitespace, eps_smoothing
  ter:  normalized, no_punct, asian_support, case_sensitive
Several references per item are allowed; a varying number is padded as sacrebleu expects.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF, TER

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics.base import ItemScore, Metric
from tunelab.evaluate.metrics.registry import register


class _Sacre(Metric):
    backend = ("sacrebleu", sacrebleu.__version__)
    sacre_cls: Any = None
    corpus = True

    def _check_options(self) -> None:
        try:
            self._corpus = self.sacre_cls(**self._sacre_kwargs())
            self._sentence = self.sacre_cls(**self._sacre_kwargs(sentence=True))
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            raise TunelabError(f"metric '{self.name}': bad option value ({e}); options: {self.options}") from None

    def _sacre_kwargs(self, sentence: bool = False) -> dict[str, Any]:
        return dict(self.options)

    def _stats(self, prediction: str, references: Sequence[str]) -> list[float]:
        if not references:
            raise TunelabError(f"metric '{self.name}' needs at least one reference per item; "
                               f"set the task's `answer:` field")
        # One segment, k references -> k reference streams of length 1.
        return list(self._corpus._extract_corpus_statistics([prediction], [[r] for r in references])[0])

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> dict[str, float]:
        stats = self._stats(prediction, references)
        sentence = float(self._sentence._compute_score_from_stats(stats).score)
        return {"sentence": sentence, **{f"s{i}": float(v) for i, v in enumerate(stats)}}

    def item_value(self, score: ItemScore) -> float:
        return float(score["sentence"])  # type: ignore[index]

    def item_stats(self, score: ItemScore) -> list[float]:
        k = len(score) - 1  # type: ignore[arg-type]
        return [score[f"s{i}"] for i in range(k)]  # type: ignore[index]

    def _score_from_stats(self, summed: np.ndarray) -> float:
        # sacrebleu's hooks index and int() the stats; hand it plain Python numbers.
        vec = [int(v) if float(v).is_integer() else float(v) for v in summed]
        return float(self._corpus._compute_score_from_stats(vec).score)

    def values_from_stats(self, totals: np.ndarray) -> np.ndarray:
        return np.array([self._score_from_stats(row) for row in np.atleast_2d(totals)])

    def line_score(self, line: dict) -> ItemScore:
        missing = [key for key in ("output", "gold") if key not in line]
        if missing:
            raise TunelabError(f"item {line.get('id', '?')}: no '{missing[0]}' in its line, so its {self.name} "
                               "statistics cannot be recomputed")
        return super().line_score(line)

    def corpus_score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        """sacrebleu's corpus score; references[i] is the list of references of item i."""
        return self.aggregate([self.item_score(p, r, {}) for p, r in zip(predictions, references)])


@register("bleu")
class Bleu(_Sacre):
    description = "corpus BLEU (sacrebleu), 0-100"
    sacre_cls = BLEU
    options_spec = {"tokenize": "13a", "lowercase": False, "smooth_method": "exp",
                    "smooth_value": None, "max_ngram_order": 4, "effective_order": False}
    options_help = {"tokenize": "13a | intl | zh | ja-mecab | ko-mecab | char | flores101 | none",
                    "lowercase": "case-insensitive", "smooth_method": "exp | floor | add-k | none",
                    "effective_order": "corpus score: skip n-gram orders with no matches"}

    def _sacre_kwargs(self, sentence: bool = False) -> dict[str, Any]:
        kw = dict(self.options)
        if sentence:
            kw["effective_order"] = True  # sentence BLEU without it is 0 for most short outputs
        return kw

    def signature_options(self) -> dict[str, Any]:
        o = self.options
        smooth = o["smooth_method"] + (f"[{o['smooth_value']}]" if o["smooth_value"] is not None else "")
        return {"tok": o["tokenize"], "smooth": smooth, "case": "lc" if o["lowercase"] else "mixed",
                "eff": o["effective_order"], "ngram": o["max_ngram_order"]}

    @classmethod
    def options_from_fields(cls, fields: dict[str, str]) -> dict[str, Any]:
        method, _, value = fields["smooth"].partition("[")
        return {"tokenize": fields["tok"], "smooth_method": method,
                "smooth_value": float(value.rstrip("]")) if value else None,
                "lowercase": fields["case"] == "lc", "effective_order": fields["eff"] == "yes",
                "max_ngram_order": int(fields["ngram"])}


@register("chrf")
class Chrf(_Sacre):
    description = "corpus chrF (sacrebleu), 0-100; word_order 2 = chrF++"
    sacre_cls = CHRF
    options_spec = {"char_order": 6, "word_order": 0, "beta": 2, "lowercase": False,
                    "whitespace": False, "eps_smoothing": False}

    def signature_options(self) -> dict[str, Any]:
        o = self.options
        return {"nc": o["char_order"], "nw": o["word_order"], "beta": o["beta"],
                "case": "lc" if o["lowercase"] else "mixed", "space": o["whitespace"],
                "eps": o["eps_smoothing"]}

    @classmethod
    def options_from_fields(cls, fields: dict[str, str]) -> dict[str, Any]:
        return {"char_order": int(fields["nc"]), "word_order": int(fields["nw"]), "beta": int(fields["beta"]),
                "lowercase": fields["case"] == "lc", "whitespace": fields["space"] == "yes",
                "eps_smoothing": fields["eps"] == "yes"}


@register("ter")
class Ter(_Sacre):
    description = "corpus TER (sacrebleu), 0-100, lower is better"
    higher_is_better = False
    sacre_cls = TER
    options_spec = {"normalized": False, "no_punct": False, "asian_support": False,
                    "case_sensitive": False}

    def signature_options(self) -> dict[str, Any]:
        o = self.options
        return {"case": "mixed" if o["case_sensitive"] else "lc", "norm": o["normalized"],
                "punct": not o["no_punct"], "asian": o["asian_support"]}

    @classmethod
    def options_from_fields(cls, fields: dict[str, str]) -> dict[str, Any]:
        return {"case_sensitive": fields["case"] == "mixed", "normalized": fields["norm"] == "yes",
                "no_punct": fields["punct"] == "no", "asian_support": fields["asian"] == "yes"}
