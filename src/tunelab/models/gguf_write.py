"""A Hugging Face model + tokenizer -> one GGUF file that llama.cpp, Ollama and LM Studio read.

The inverse of models/gguf.py, written with `gguf.GGUFWriter` (the writer maintained with
llama.cpp). Three things must match what llama.cpp's own converter (convert_hf_to_gguf.py) writes:

1. Tensor names: `gguf.get_tensor_name_map` maps HF names (model.layers.0.self_attn.q_proj) to
   GGUF ones (blk.0.attn_q); it is the table llama.cpp's converter uses.
2. The rope layout: HF Llama rotates the two halves of each head (rotate_half); llama.cpp rotates
   interleaved pairs. Its converter therefore permutes the rows of q and k per head, and
   transformers' GGUF reader undoes exactly that permutation (LlamaTensorProcessor), so a
   write-then-read round trip returns the same weights bit for bit.
3. The tokenizer: a byte-level BPE is stored as `gpt2` (tokens, merges, token types, special
   ids, add_bos) plus `tokenizer.ggml.pre`, the name under which llama.cpp keeps the
   pre-tokenizer regex; we name the one the HF tokenizer really uses (see `_pre_tokenizer`).

Quantisation types are those `gguf.quants` can write for a plain model (QUANTS); 1-D tensors
(norms, biases) always stay f32, as llama.cpp keeps them.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io import set_usual_mode


@dataclass(frozen=True)
class Arch:
    gguf_arch: str  # general.architecture, e.g. "llama"
    permute_qk: bool  # HF half-split rope -> llama.cpp interleaved rope (Llama family)


# HF config.model_type -> how llama.cpp knows it. Mistral's HF checkpoints are Llama in GGUF
# (llama.cpp's converter writes them as arch "llama"); sliding-window variants are refused below.
# Qwen2 keeps its own arch and biases on q/k/v.
ARCHITECTURES = {
    "llama": Arch("llama", permute_qk=True),
    "mistral": Arch("llama", permute_qk=True),
    "qwen2": Arch("qwen2", permute_qk=False),  # llama.cpp's qwen2 graph uses HF's rotate-half rope (NEOX)
}

# --quant NAME -> (GGML type of 2-D weights, llama.cpp file type). f32/f16/bf16 are exact or plain
# casts; q8_0 is the one block quantisation llama.cpp's own converter offers (near-lossless,
# about half of f16). q4_0/q4_1/q5_0/q5_1 are the legacy block types gguf.quants also writes
# with llama.cpp's reference rounding; K-quants (q4_k_m, ...) it can only read, so those come
# from `llama-quantize`.
QUANTS = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
# for the 4/5-bit types the token embedding (which is also the output layer when tied) and the
# output layer stay q8_0, as llama-quantize keeps them at higher precision
_KEEP_Q8 = ("token_embd.weight", "output.weight")

# when several llama.cpp names share one split regex, the one llama.cpp's converter writes
_PREFERRED_PRE = ("llama-bpe", "qwen2", "gpt-4o", "tekken", "qwen35")


def writable_quants() -> list[str]:
    """The --quant names the installed gguf can write: each is tried on one block of zeros
    (gguf.quants raises NotImplementedError for the types it can only read)."""
    import gguf
    import numpy as np
    from gguf import quants

    names = []
    for name, (qtype, ftype) in QUANTS.items():
        q = getattr(gguf.GGMLQuantizationType, qtype, None)
        if q is None or not hasattr(gguf.LlamaFileType, ftype):
            continue
        try:
            quants.quantize(np.zeros((1, gguf.GGML_QUANT_SIZES[q][0]), dtype=np.float32), q)
        except NotImplementedError:
            continue
        names.append(name)
    return names


def check_quant(quant: str) -> str:
    from importlib.metadata import version

    from tunelab.errors import ParameterError

    known = writable_quants()
    q = quant.strip().lower()
    if q not in known:
        hint = f"; for {quant} quantise an f16 export with llama.cpp's llama-quantize" if q.startswith(("q", "iq")) else ""
        raise ParameterError(f"{{quant}} {quant}: the installed gguf {version('gguf')} cannot write it; "
                             f"choose one of {', '.join(known)}{hint}", "quant")
    return q


def check_architecture(config: dict, where: str) -> Arch:
    """The writer for this HF config, or a one-line error naming it and listing those known."""
    model_type = config.get("model_type")
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise TunelabError(f"{where}: architecture '{model_type}' cannot be written as GGUF by tunelab; "
                           f"known: {', '.join(ARCHITECTURES)}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear"):
        raise TunelabError(f"{where}: rope_type '{rope_type}' is not written yet (known: default, linear); "
                           "convert this model with llama.cpp's convert_hf_to_gguf.py")
    # Qwen2 configs name a window they do not use (use_sliding_window: false); Mistral's is used
    if config.get("sliding_window") and config.get("use_sliding_window", True):
        raise TunelabError(f"{where}: sliding-window attention (sliding_window={config['sliding_window']}) "
                           "is not written yet; convert this model with llama.cpp's convert_hf_to_gguf.py")
    return arch


def write_gguf(model, tokenizer, out: str | os.PathLike, *, quant: str = "f16", name: str = "model") -> Path:
    """Write `model` (a plain HF causal LM, no adapter) and `tokenizer` to `out` atomically."""
    import gguf

    cfg = model.config.to_dict()
    arch = check_architecture(cfg, name)
    quant = check_quant(quant)
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch.gguf_arch)
        _write_config(writer, cfg, quant, name)
        _write_tokenizer(writer, tokenizer, cfg["vocab_size"])
        for gguf_name, data, qtype in _tensors(model, cfg, arch, quant):
            if qtype is None:
                writer.add_tensor(gguf_name, data)
            else:
                writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        set_usual_mode(tmp)  # mkstemp made it 0600: an Ollama server running as its own user must read it
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _write_config(w, cfg: dict, quant: str, name: str) -> None:
    import gguf

    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    w.add_type("model")
    w.add_name(name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg.get("num_key_value_heads") or heads)
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // heads:  # llama.cpp assumes hidden/heads unless told
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(float(rope.get("rope_theta") or cfg.get("rope_theta") or 10000.0))
    if (rope.get("rope_type") or rope.get("type")) == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(getattr(gguf.LlamaFileType, QUANTS[quant][1]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


# ------------------------------------------------------------------------------ tokenizer
def _write_tokenizer(w, tokenizer, vocab_size: int) -> None:
    """tokens, token types, merges, special ids, add_bos/add_eos and the chat template."""
    from gguf import TokenType

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level(state):
        raise TunelabError(f"tokenizer model {model.get('type')} (pre-tokenizer "
                           f"{(state.get('pre_tokenizer') or {}).get('type')}) is not written yet; "
                           "only byte-level BPE tokenizers (GPT-2 style, as SmolLM2, Llama 3, Qwen) are")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if vocab_size < len(by_id):
        raise TunelabError(f"tokenizer has {len(by_id)} tokens but the model's vocab_size is {vocab_size}; "
                           "resize the embeddings before exporting")
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # the embedding is larger than the vocabulary: llama.cpp's padding
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(state))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for setter, token_id in ((w.add_bos_token_id, tokenizer.bos_token_id), (w.add_eos_token_id, tokenizer.eos_token_id),
                             (w.add_unk_token_id, tokenizer.unk_token_id), (w.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    # llama.cpp adds BOS to a BPE vocabulary unless told otherwise: say what the HF tokenizer does
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    full = tokenizer("a b", add_special_tokens=True)["input_ids"]
    w.add_add_bos_token(len(full) > len(plain) and full[0] == tokenizer.bos_token_id)
    w.add_add_eos_token(len(full) > len(plain) and full[-1] == tokenizer.eos_token_id)
    if tokenizer.chat_template:
        w.add_chat_template(tokenizer.chat_template)


def _is_byte_level(state: dict) -> bool:
    text = json.dumps(state.get("pre_tokenizer")) + json.dumps(state.get("decoder"))
    return '"ByteLevel"' in text


def _pre_tokenizer(state: dict) -> str:
    """llama.cpp's name for the pre-tokenizer this HF tokenizer runs, or a one-line error.

    llama.cpp picks the split regex by this name alone, so it must describe the tokenizer the
    model was fine-tuned with: a wrong name changes how text (digits, spaces) is cut into tokens.
    """
    pre = state.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's regex, inside ByteLevel
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # GPT-2's regex after splitting every digit (llama.cpp: SMOLLM)
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex", "")
        names = [name for name, split in _split_regexes().items() if split == regex]
        if names:
            return next((n for n in _PREFERRED_PRE if n in names), names[0])
    raise TunelabError(f"tokenizer pre-tokenizer {json.dumps(pre)[:200]} is not one tunelab can name for llama.cpp "
                       "(known: GPT-2 ByteLevel, SmolLM digits + ByteLevel, a split regex transformers' GGUF reader "
                       "knows, such as Llama 3's or Qwen2's); "
                       "convert this model with llama.cpp's convert_hf_to_gguf.py")


def _split_regexes() -> dict[str, str]:
    """llama.cpp pre-tokenizer name -> split regex, from the table transformers' GGUF reader keeps
    to read these names back (so a name we write is one that reader turns into the same split)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # older transformers: only the ByteLevel-regex tokenizers above
        return {}
    return dict(GGUF_PRE_TOKENIZER_SPLITS)


# ------------------------------------------------------------------------------ tensors
def _tensors(model, cfg: dict, arch: Arch, quant: str):
    """(GGUF name, numpy data, raw GGML type or None when numpy's dtype says it) per tensor."""
    import gguf
    import torch
    from gguf import quants

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.gguf_arch.upper()), cfg["num_hidden_layers"])
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    tied = bool(cfg.get("tie_word_embeddings"))
    qtype = getattr(gguf.GGMLQuantizationType, QUANTS[quant][0])
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent (so does transformers)
        suffix = next((s for s in (".weight", ".bias") if hf_name.endswith(s)), "")
        base = names.get_name(hf_name[: len(hf_name) - len(suffix)] if suffix else hf_name)
        if base is None:
            raise TunelabError(f"tensor {hf_name} has no GGUF name for architecture {arch.gguf_arch}; "
                               "convert this model with llama.cpp's convert_hf_to_gguf.py")
        name = base + suffix
        data = tensor.detach().to(torch.float32)
        if arch.permute_qk and base.endswith(".attn_q"):
            data = _permute(data, heads, heads)
        elif arch.permute_qk and base.endswith(".attn_k"):
            data = _permute(data, heads, kv_heads)
        data = data.contiguous().numpy()
        yield (name, *_encode(data, name, qtype, quants, gguf))


def _permute(w, n_head: int, n_head_kv: int):
    """HF rotate-half rows -> llama.cpp interleaved rows, per head (as convert_hf_to_gguf.py does).

    transformers' GGUF reader applies the inverse (reshape (n_head, dim, 2) and swap back).
    """
    n = n_head_kv if n_head != n_head_kv else n_head
    shape = w.shape
    # (n, 2, head_dim/2, in) -> (n, head_dim/2, 2, in): the two halves become interleaved pairs
    return w.reshape(n, 2, shape[0] // n // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _encode(data, name: str, qtype, quants, gguf):
    """(data, raw type) for one tensor: 1-D stays f32; rows not a multiple of the block fall back to f16."""
    import numpy as np

    T = gguf.GGMLQuantizationType
    if data.ndim <= 1 or qtype == T.F32:
        return data.astype(np.float32), None
    if qtype == T.F16:
        return data.astype(np.float16), None
    if qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1) and name in _KEEP_Q8:
        qtype = T.Q8_0
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        return data.astype(np.float16), None  # as llama.cpp's converter does for odd row sizes
    return quants.quantize(data, qtype), qtype
