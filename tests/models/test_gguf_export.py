"""`tunelab export --gguf`: the file transformers' GGUF reader loads back equals the merged model.

Reference reader: transformers' GGUF loader (`from_pretrained(dir, gguf_file=...)`, which undoes
llama.cpp's q/k permutation). f32 must give the merged model's logits; f16 and bf16 must give
the logits of the merged model with its weights rounded to that type (the only change the file
makes), and so stay within what that rounding allows of the fp32 logits. llama.cpp itself is
checked in tests/models/test_gguf_llama_cpp.py when llama_cpp is installed.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.models.export import export_gguf

TEXT = "The quick brown fox jumps over 42 lazy dogs.<|im_end|>\n<|im_start|>assistant\nHello, world!"


def _lively(folder: Path, seed: int = 3, **kwargs) -> Path:
    """A tiny model with larger weights, so logits spread out and rounding shows in them."""
    from tunelab.models.tiny import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(seed=seed, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    # untied: the output layer is written as its own tensor (SmolLM2 ties, covered below)
    return _lively(tmp_path_factory.mktemp("gguf") / "base", tie_word_embeddings=False)


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> Path:
    """A LoRA adapter with random B on every projection (q/k are the permuted ones)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    out = tmp_path_factory.mktemp("gguf") / "run" / "adapter"
    get_peft_model(model, cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def merged(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload().eval()


@pytest.fixture(scope="module")
def ids(base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)(TEXT, return_tensors="pt").input_ids


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def _read_back(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _rounded(model, dtype):
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:  # 1-D tensors (norms) stay f32 in the file
                p.copy_(p.to(dtype).to(torch.float32))
    return m


@pytest.fixture(scope="module")
def exported(base, adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf-out")
    return {q: export_gguf(str(base), adapter, out / f"m-{q}.gguf", quant=q) for q in ("f32", "f16", "bf16", "q8_0")}


def test_f32_file_gives_the_merged_models_logits(exported, merged, ids, base):
    want = _logits(merged, ids)
    base_logits = _logits(__import__("transformers").AutoModelForCausalLM.from_pretrained(base), ids)
    assert (want - base_logits).abs().max() > 0.1  # the adapter changed the model
    model, _ = _read_back(exported["f32"].path)
    got = _logits(model, ids)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


@pytest.mark.parametrize("quant,dtype", [("f16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_files_give_the_merged_model_with_half_weights(exported, merged, ids, quant, dtype):
    model, _ = _read_back(exported[quant].path)
    got = _logits(model, ids)
    # the file changes nothing but the rounding of each 2-D weight to `dtype`
    assert torch.allclose(got, _logits(_rounded(merged, dtype), ids), atol=1e-5, rtol=0)
    # what that rounding allows: f16 keeps 11 significant bits (relative error <= 2^-11 per
    # weight), bf16 8 bits (<= 2^-8); through two layers the logits move by well under 1% of
    # their range for f16 and a few % for bf16
    want = _logits(merged, ids)
    spread = (want.max() - want.min()).item()
    bound = {"f16": 0.002, "bf16": 0.02}[quant] * spread
    assert (got - want).abs().max().item() <= bound


def test_q8_0_file_is_the_merged_model_with_q8_0_weights(exported, merged, ids):
    import numpy as np
    from gguf import GGMLQuantizationType as T, quants

    model, _ = _read_back(exported["q8_0"].path)
    got, want = _logits(model, ids), _logits(merged, ids)
    # the file holds each 2-D weight as blocks of 32 int8 values with an f16 scale: the merged
    # model with exactly that rounding applied gives the same logits
    q8 = __import__("copy").deepcopy(merged)
    with torch.no_grad():
        for p in q8.parameters():
            if p.dim() == 2:
                w = p.numpy().astype(np.float32)
                p.copy_(torch.from_numpy(quants.dequantize(quants.quantize(w, T.Q8_0), T.Q8_0).reshape(w.shape)))
    assert torch.allclose(got, _logits(q8, ids), atol=1e-4, rtol=0)
    # and close to the fp32 logits: this random model with weights x4 amplifies rounding more
    # than a trained one does, yet the mean error stays under 1% of the logits' range
    spread = (want.max() - want.min()).item()
    assert (got - want).abs().mean().item() <= 0.01 * spread
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9
    sizes = {q: e.bytes for q, e in exported.items()}
    assert sizes["f32"] > sizes["f16"] == sizes["bf16"] > sizes["q8_0"]


def test_tokenizer_and_chat_template_survive(exported, base, ids):
    from transformers import AutoTokenizer

    _, tok = _read_back(exported["f32"].path)
    ref = AutoTokenizer.from_pretrained(base)
    assert tok(TEXT).input_ids == ref(TEXT).input_ids == ids[0].tolist()
    assert tok.chat_template == ref.chat_template
    assert (tok.bos_token, tok.eos_token) == (ref.bos_token, ref.eos_token)


def test_metadata_llama_cpp_needs(exported, base):
    from gguf import GGUFReader

    cfg = json.loads((base / "config.json").read_text())
    r = GGUFReader(exported["q8_0"].path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "llama"
    assert f["llama.context_length"] == cfg["max_position_embeddings"]
    assert f["llama.block_count"] == cfg["num_hidden_layers"]
    assert f["llama.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert f["llama.rope.dimension_count"] == cfg["hidden_size"] // cfg["num_attention_heads"]
    assert f["llama.rope.freq_base"] == pytest.approx(cfg["rope_parameters"]["rope_theta"])
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
    assert f["tokenizer.ggml.add_bos_token"] is False
    tokens = f["tokenizer.ggml.tokens"]
    assert len(tokens) == cfg["vocab_size"] == len(f["tokenizer.ggml.token_type"])
    assert tokens[f["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert f["tokenizer.ggml.token_type"][:3] == [3, 3, 3]  # the specials are CONTROL
    assert tokens[-1].startswith("[PAD") and f["tokenizer.ggml.token_type"][-1] == 5  # vocab 500 < embedding 512
    assert "<|im_start|>" in f["tokenizer.chat_template"]
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" in types  # untied base


def test_tied_model_without_adapter(tmp_path, ids):
    """A model exported as it is (no --adapter); tied embeddings write no output.weight."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    folder = _lively(tmp_path / "tied", seed=5)
    done = export_gguf(str(folder), None, tmp_path / "tied.gguf", quant="f32")
    assert "output.weight" not in {t.name for t in GGUFReader(done.path).tensors}
    model, _ = _read_back(done.path)
    want = _logits(AutoModelForCausalLM.from_pretrained(folder), ids)
    assert torch.allclose(_logits(model, ids), want, atol=1e-5, rtol=0)


def test_qwen2_with_biases_and_its_split_regex(tmp_path):
    """Qwen2: its own arch, biases on q/k/v, no rope permutation, the Qwen2 pre-tokenizer."""
    from gguf import GGUFReader
    from tokenizers import Regex, pre_tokenizers
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from tunelab.models.tiny import tiny_tokenizer

    cfg = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
                      use_sliding_window=False, sliding_window=4096)  # a window named but not used, as Qwen2 ships
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(4.0) if p.dim() == 2 else p.normal_() if name.endswith("bias") else None
    tok = tiny_tokenizer()
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    folder = tmp_path / "qwen2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    done = export_gguf(str(folder), None, tmp_path / "q.gguf", quant="f32")
    fields = GGUFReader(done.path).fields
    assert fields["general.architecture"].contents() == "qwen2" and fields["tokenizer.ggml.pre"].contents() == "qwen2"
    back, back_tok = _read_back(done.path)
    text = "Hello world 12345, don't  stop\n\nnow"
    ids = tok(text, return_tensors="pt").input_ids
    assert back_tok(text).input_ids == ids[0].tolist()
    assert torch.allclose(_logits(back, ids), _logits(model, ids), atol=1e-5, rtol=0)
    assert AutoTokenizer.from_pretrained(folder)(text).input_ids == ids[0].tolist()


# ------------------------------------------------------------------------------ Modelfile
def test_modelfile_beside_the_file(exported):
    e = exported["f16"]
    assert e.modelfile == e.path.with_name("m-f16.Modelfile")
    text = e.modelfile.read_text()
    assert "FROM ./m-f16.gguf\n" in text
    assert 'TEMPLATE """' in text and "{{ .Content }}<|im_end|>" in text and "<|im_start|>assistant\n\"\"\"" in text
    assert re.findall(r'PARAMETER stop "(.*)"', text) == ["<|im_start|>", "<|im_end|>"]
    assert "SYSTEM" not in text  # this template adds no default system prompt


def test_default_system_prompt_becomes_system(tiny):
    """A ChatML template that inserts a system turn when there is none (as SmolLM2's does)."""
    from tunelab.models.ollama import modelfile
    from tunelab.models.tiny import CHATML_TEMPLATE, tiny_tokenizer

    tok = tiny_tokenizer(chat_template=(
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
        + CHATML_TEMPLATE))
    text, warning = modelfile("x.gguf", tok)
    assert warning is None and 'SYSTEM """Be brief."""' in text and "TEMPLATE" in text


def test_other_templates_get_no_template_and_a_warning():
    from tunelab.models.ollama import modelfile
    from tunelab.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer(chat_template="{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    text, warning = modelfile("x.gguf", tok)
    assert "TEMPLATE" not in text and "FROM ./x.gguf" in text and "not ChatML" in warning
    assert 'PARAMETER stop "<|im_end|>"' in text  # the eos token still stops generation


# ------------------------------------------------------------------------------ bad input
@pytest.fixture
def cli(capsys):
    from tunelab.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out = capsys.readouterr()
        lines = [x for x in out.err.splitlines() if x.strip()]
        return e.value.code, lines

    return run


def test_unknown_architecture_names_it_and_lists_known(tmp_path, adapter, cli):
    folder = tmp_path / "gpt2-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    code, lines = cli("export", folder, "--gguf", tmp_path / "x.gguf")
    assert code == 2 and len(lines) == 1
    assert "architecture 'gpt2'" in lines[0] and "known: llama, mistral, qwen2" in lines[0]
    assert not (tmp_path / "x.gguf").exists()


def test_quant_the_installed_gguf_cannot_write(base, tmp_path, cli):
    code, lines = cli("export", base, "--gguf", tmp_path / "x.gguf", "--quant", "q4_k_m")
    assert code == 2 and len(lines) == 1
    assert "--quant q4_k_m" in lines[0] and "cannot write it" in lines[0] and "q8_0" in lines[0]
    assert "llama-quantize" in lines[0]


def test_existing_output_needs_force(base, tmp_path, cli):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"old")
    code, lines = cli("export", base, "--gguf", out, "--quant", "f16")
    assert code == 2 and len(lines) == 1 and "already exists" in lines[0] and "--force" in lines[0]
    assert out.read_bytes() == b"old"
    code, _ = cli("export", base, "--gguf", out, "--quant", "f16", "--force")
    assert code == 0 and out.stat().st_size > 1000 and (tmp_path / "x.Modelfile").is_file()


def test_adapter_from_another_base(base, adapter, tmp_path, cli):
    """Same shapes, other weights: only the base hash tunelab records tells them apart."""
    from tunelab.models.loading import weights_sha256

    other = _lively(tmp_path / "other", seed=11, tie_word_embeddings=False)
    mine = tmp_path / "adapter"
    shutil.copytree(adapter, mine)
    (mine / "tunelab_adapter.json").write_text(json.dumps(
        {"base_model": "base", "base_path": str(base), "base_sha256": weights_sha256(base), "method": "lora"}))
    code, lines = cli("export", other, "--adapter", mine, "--gguf", tmp_path / "x.gguf")
    assert code == 2 and len(lines) == 1
    assert "trained on base 'base'" in lines[0] and f"not on '{other}'" in lines[0]
    assert not (tmp_path / "x.gguf").exists()
    # and the right base exports
    code, _ = cli("export", base, "--adapter", mine, "--gguf", tmp_path / "x.gguf", "--quant", "q8_0")
    assert code == 0


def test_not_a_gguf_name_and_no_output(base, tmp_path, cli):
    code, lines = cli("export", base, "--gguf", tmp_path / "x.bin")
    assert code == 2 and "must name a .gguf file" in lines[0]
    code, lines = cli("export", base)
    assert code == 2 and "--gguf" in lines[0] and "--out" in lines[0]
    code, lines = cli("export", base, "--out", tmp_path / "merged")
    assert code == 2 and len(lines) == 1 and "--out needs --adapter" in lines[0]
