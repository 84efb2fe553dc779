"""The model as a run trains it: the attention kernel and compilation chosen for the device, the
base loaded in the right dtype and kernel, its decoder layers compiled, and what it costs (the
figures ModelFacts keeps). The method itself (which parameters train) is methods.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from tunelab.config import TrainConfig
from tunelab.train.loss import base_causal_lm


@dataclass
class Base:
    model: torch.nn.Module
    tokenizer: object
    name: str
    path: str
    sha256: Optional[str]  # of the weights; None for a quantised (qlora) load


@dataclass
class Kernels:
    attn: str  # the attention implementation training runs
    load_attn: str  # the one the model loads (and saves) with
    compiled: bool  # decoder layers compiled one by one


def choose_kernels(compile_setting, device) -> Kernels:
    """Attention and compilation for `device` (train.compile: auto | true | false; TUNELAB_ATTN overrides)."""
    from tunelab.train.attention import DOC_ATTN
    from tunelab.train.attention import register as register_doc_attention

    # compile: auto = on CUDA only (on CPU the compile time rarely pays back in a short run)
    compiled = device.type == "cuda" if compile_setting == "auto" else bool(compile_setting)
    # flex_attention computes only the diagonal blocks of packed documents on CUDA; it has
    # no CPU backward (DESIGN §7). On CPU each packed document gets its own causal sdpa call
    # (attention.py), which skips the O(T²) block-diagonal mask; under torch.compile the
    # per-row document lengths would force a recompile every step, so compile keeps the mask.
    default_attn = "flex_attention" if device.type == "cuda" else ("sdpa" if compiled else DOC_ATTN)
    attn = os.environ.get("TUNELAB_ATTN", default_attn)
    if attn == DOC_ATTN:
        # the model loads with plain sdpa (what its saved config will say) and switches to the
        # registered per-document function for training only
        register_doc_attention()
    return Kernels(attn, "sdpa" if attn == DOC_ATTN else attn, compiled)


def measure(facts, model, device, *, adapter: bool, precision: str) -> None:
    """Fill ModelFacts' sizes and cost-model figures from the model with its method applied."""
    from tunelab.train import cost
    from tunelab.train.methods import count_parameters

    facts.n_params, facts.n_trainable = count_parameters(model)
    emb = cost.embedding_params(base_causal_lm(model))
    facts.flops_per_token = cost.flops_per_token(facts.n_params, facts.n_trainable, emb, adapter=adapter)
    facts.attn_dims = cost.attention_dims(base_causal_lm(model).config)  # (layers, heads × head_dim)
    facts.peak_flops = cost.device_peak_flops(device, precision)


def memory_budget(model, device, facts, *, weight_bytes: int, grad_checkpointing: bool, longest: int):
    """(micro-batch tokens that fill free GPU memory, free bytes): train.batch_tokens left unset on CUDA."""
    from tunelab.train import cost

    return cost.fill_free_memory(base_causal_lm(model).config, device, n_params=facts.n_params,
                                 n_trainable=facts.n_trainable, weight_bytes=weight_bytes,
                                 grad_checkpointing=grad_checkpointing, longest=longest)


def load_base(cfg: TrainConfig, device, *, weights, precision: str, attn: str) -> Base:
    """The base model and tokenizer, on `device`, loaded with attention kernel `attn`, as the
    method's `weights` (objectives.Weights) need it."""
    from tunelab.models.loading import load_model, load_tokenizer, resolve

    adapter = weights.adapter
    if weights.quantized:
        from transformers import AutoModelForCausalLM

        from tunelab.train.methods import quantization_config

        name, folder = resolve(cfg.model)
        model = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quantization_config(), dtype=torch.bfloat16,
            device_map={"": device}, attn_implementation=attn)
        return Base(model, load_tokenizer(folder), name, folder, None)
    # adapters on CUDA: the frozen base can sit in bf16 (half the memory, nothing to update);
    # full fine-tuning keeps fp32 master weights and trains under autocast
    dtype = torch.bfloat16 if (adapter and precision == "bf16") else torch.float32
    loaded = load_model(cfg.model, device=str(device), dtype=dtype, attn_implementation=attn,
                        trust_remote_code=cfg.trust_remote_code, threads=False)  # the recipe chose them
    return Base(loaded.model, loaded.tokenizer, loaded.name, loaded.path, loaded.sha256)


def compile_layers(model: torch.nn.Module) -> int:
    """torch.compile each decoder layer in place (as torchtune does); returns how many.

    Per layer rather than the whole model: every layer has the same code, so dynamo traces one
    graph and reuses it for all of them (short compile), while the loss (chunked, data-dependent
    sizes), PEFT's wrappers and the optimizer stay eager. TUNELAB_COMPILE_BACKEND picks the
    backend (default inductor; tests use aot_eager, which needs no C++ compiler).
    """
    backend = os.environ.get("TUNELAB_COMPILE_BACKEND", "inductor")
    layers = base_causal_lm(model).get_decoder().layers
    for layer in layers:
        layer.compile(backend=backend)
    return len(layers)
