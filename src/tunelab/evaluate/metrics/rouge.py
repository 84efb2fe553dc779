"""ROUGE-1/2/L/Lsum through Google's rouge-score, as F-measure fractions in [0, 1].

Per item: `RougeScorer([type], use_stemmer=...).score_multi(references, prediction).fmeasure`,
i.e. the best reference by F-measure (rouge-score's own multi-reference rule). Aggregate: the
mean over items (what rouge-score's BootstrapAggregator reports as `mid`, without its own
resampling; tunelab's seeded bootstrap gives the CI).

rougeLsum treats "\\n" as the sentence separator, as rouge-score does; `split_summaries: true`
asks rouge-score to split sentences with nltk instead (nltk must then be installed).
"""
from __future__ import annotations

from typing import Sequence

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics.base import Metric
from tunelab.evaluate.metrics.registry import register

try:
    from importlib.metadata import version as _dist_version

    _VERSION = _dist_version("rouge-score")
except Exception:  # pragma: no cover - metadata missing in odd installs
    _VERSION = "unknown"


class _Rouge(Metric):
    backend = ("rouge_score", _VERSION)
    text_only = True  # scores (prediction, references) alone
    rouge_type = "rouge1"
    options_spec = {"use_stemmer": False, "split_summaries": False}
    options_help = {"use_stemmer": "Porter-stem tokens (rouge-score's option)",
                    "split_summaries": "rougeLsum: split sentences with nltk instead of newlines"}

    def _check_options(self) -> None:
        if self.options["split_summaries"]:
            try:
                import nltk  # noqa: F401
            except ImportError:
                raise TunelabError(f"metric '{self.name}': split_summaries needs nltk; pip install nltk "
                                   f"or separate sentences with newlines") from None
        # imported here: rouge_score pulls in nltk (seconds), which only ROUGE tasks should pay for
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer([self.rouge_type], use_stemmer=self.options["use_stemmer"],
                                                split_summaries=self.options["split_summaries"])

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        if not references:
            raise TunelabError(f"metric '{self.name}' needs a reference per item; set the task's `answer:` field")
        return float(self._scorer.score_multi(list(references), prediction)[self.rouge_type].fmeasure)


@register("rouge1")
class Rouge1(_Rouge):
    description = "ROUGE-1 F-measure (rouge-score)"
    rouge_type = "rouge1"


@register("rouge2")
class Rouge2(_Rouge):
    description = "ROUGE-2 F-measure (rouge-score)"
    rouge_type = "rouge2"


@register("rougeL")
class RougeL(_Rouge):
    description = "ROUGE-L (sentence-level LCS) F-measure (rouge-score)"
    rouge_type = "rougeL"


@register("rougeLsum")
class RougeLsum(_Rouge):
    description = "ROUGE-Lsum (summary-level LCS, newline-split) F-measure (rouge-score)"
    rouge_type = "rougeLsum"
