"""An exported GGUF read by llama.cpp itself (llama-cpp-python): same tokens, logits, greedy text.

Skipped unless llama_cpp is importable: llama-cpp-python has no wheel for this platform on the
package index and builds llama.cpp from source (docs/export.md gives the command and how long it
takes), so it is not part of the test extra. Checked against llama-cpp-python 0.3.36.
"""
from __future__ import annotations

import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

from tunelab.models.export import export_gguf  # noqa: E402

from .test_gguf_export import TEXT, _lively  # noqa: E402

PROMPTS = ["The quick brown fox", "Question: what is 2021-03-05? Answer:", "Hello, world! Reverse the words."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama-cpp")
    folder = _lively(root / "tied", seed=3)  # tied embeddings, as SmolLM2
    return folder, {q: export_gguf(str(folder), None, root / f"m-{q}.gguf", quant=q).path for q in ("f32", "f16")}


def _llama(path):
    # an f32 KV cache (llama.cpp's default is f16), so the f32 file is compared in f32 throughout
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False, seed=0,
                           type_k=0, type_v=0)  # 0 = GGML_TYPE_F32


@pytest.mark.parametrize("quant,atol", [("f32", 1e-3), ("f16", 1e-2)])
def test_llama_cpp_tokens_and_logits_match_transformers(exported, quant, atol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, files = exported
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    llm = _llama(files[quant])
    ids = tok(TEXT, add_special_tokens=False).input_ids
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    theirs = torch.tensor(llm.scores[: len(ids)])
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([ids])).logits[0]
    # f32: summation order only; f16: llama.cpp also computes in f16 where it chooses
    assert torch.allclose(theirs, ours, atol=atol, rtol=0), (theirs - ours).abs().max()


def test_llama_cpp_greedy_continuation_equals_tunelab(exported):
    from tunelab.infer.generate import generate
    from tunelab.models.loading import load_model

    folder, files = exported
    lm = load_model(str(folder), device="cpu", dtype="fp32")
    ours = generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=16, batch_size=1, share_prefix=False)
    llm = _llama(files["f32"])
    for prompt, mine in zip(PROMPTS, ours):
        toks = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        new = []
        for t in llm.generate(toks, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            new.append(t)
            if len(new) == 16 or t == lm.tokenizer.eos_token_id:
                break
        assert lm.tokenizer.decode(new, skip_special_tokens=True) == mine.text, prompt
