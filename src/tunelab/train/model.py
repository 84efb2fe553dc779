"""The model as a run trains it: the base loaded in the right dtype and attention kernel, and its
decoder layers compiled. The method itself (which parameters train) is methods.py.
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
