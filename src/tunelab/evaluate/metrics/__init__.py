"""Metrics registry: every metric a small object with options and a signature.

How the runner uses it (stable interface):

    from tunelab.evaluate.metrics import get_metrics
    metrics = get_metrics(task.metrics)            # task YAML list: names or {name: {options}}
    for m in metrics:
        result = m.compute(predictions, references, items, n_resamples=1000, seed=1234)
        results_json["metrics"][m.name] = result.to_json()   # value, stderr, ci95, signature, n
        for row, v in zip(pred_rows, result.item_values):
            row["metrics"][m.name] = v                        # predictions.jsonl (read by diff)

- predictions: list[str] (model outputs; "" for multiple_choice / perplexity)
- references:  list[list[str]] (gold texts per item; a single string is accepted too)
- items:       list[dict] with the fields the metric needs:
    acc, acc_norm, acc_bytes: choice_logliks (list[float]), choices (list[str], no delimiter),
                              gold (int | list[int])                      -> metrics.choice
    perplexity family:        loglik, n_tokens, n_words, n_bytes          -> metrics.perplexity
Items may also be scored one at a time with `m.item_score(prediction, refs, item)` and
aggregated with `m.result_from_scores(scores)`.

Per-response assistant metrics (length, latency, tokens/s, refusal, relevance, toxicity):
`tunelab.evaluate.metrics.assistant.response_metrics(...)`.
"""
from tunelab.evaluate.metrics.base import Metric, MetricResult
from tunelab.evaluate.metrics.registry import get_metric, get_metrics, known_metrics

__all__ = ["Metric", "MetricResult", "get_metric", "get_metrics", "known_metrics"]
