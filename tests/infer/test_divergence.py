"""answer_kl (infer/divergence.py) through the Backend: the drift measure's numbers, and where it cannot run.

The hand computation of the KL itself is tests/compare/test_retention.py's; here the Backend must
give exactly what the function gives, and an endpoint must refuse in one line.
"""
from __future__ import annotations

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.infer.divergence import answer_kl
from tunelab.infer.load import open_backend
from tunelab.models.loading import load_model

PROMPTS = ["Name a colour.", "What is two plus two?", "Say hi.", "Count to three."]
ANSWERS = ["Blue is a colour.", "Four.", "", "One, two, three."]  # an empty answer has no tokens to score


def _nudged(tiny_dir):
    lm = load_model(tiny_dir, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return lm


def test_the_backend_gives_the_functions_numbers_exactly(tiny_dir):
    base, tuned = load_model(tiny_dir, device="cpu"), _nudged(tiny_dir)
    want = answer_kl(tuned, PROMPTS, ANSWERS, base=base, batch_size=3)
    got = open_backend(tuned).answer_kl(PROMPTS, ANSWERS, base=open_backend(base), batch_size=3)
    assert got == want  # the same floats, not approximately
    assert got[2] == (0.0, 0) and all(s > 0 and n > 0 for i, (s, n) in enumerate(got) if i != 2)
    plain = open_backend(tuned).answer_kl(PROMPTS, ANSWERS, base=open_backend(base), chat=False)
    assert plain == answer_kl(tuned, PROMPTS, ANSWERS, base=base, chat=False) and plain != got


def test_an_adapters_base_is_the_same_weights_with_the_adapter_off(tiny_dir):
    from peft import LoraConfig, get_peft_model

    lm = load_model(tiny_dir, device="cpu")
    torch.manual_seed(1)
    lm.model = get_peft_model(lm.model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lm.adapter = "random"
    got = open_backend(lm).answer_kl(PROMPTS, ANSWERS)
    assert got == answer_kl(lm, PROMPTS, ANSWERS)
    assert all(s > 0 for s, n in got if n)  # a random (non-zero) adapter moved the distributions


def test_an_endpoint_refuses_in_one_line(monkeypatch):
    from tunelab.infer.endpoint import EndpointBackend

    monkeypatch.setattr(EndpointBackend, "_check_model", lambda self: None)  # no server: the refusal needs none
    backend = open_backend("openai:http://127.0.0.1:9/v1#m")
    with pytest.raises(TunelabError) as e:
        backend.answer_kl(PROMPTS, ANSWERS)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("openai:http://127.0.0.1:9/v1#m: drift") and "needs a local model" in msg
    assert "top 20 log-probabilities" in msg
