"""Which parameters train, via PEFT for the adapter methods: a method's `Weights` (objectives/).

full   every parameter trains (fp32 master weights; bf16 autocast on CUDA)
lora   low-rank adapters on every linear layer except the LM head (PEFT "all-linear")
dora   LoRA with a learned magnitude per output (PEFT use_dora)
qlora  LoRA over a 4-bit NF4 base (bitsandbytes; CUDA only)
dpo / orpo train the weights `preference.weights` names (lora, dora or full).

The frozen base of the adapter methods has requires_grad=False, so autograd never even builds
its weight gradients (tested: after backward every base parameter's .grad is None).
"""
from __future__ import annotations

from typing import Optional

from tunelab.config import TrainConfig
from tunelab.errors import TunelabError
from tunelab.train.objectives import Weights, resolve


def check_method_available(weights: Weights, device: str) -> None:
    """Fail before loading anything when the method's weights cannot train here (a 4-bit base: CUDA)."""
    if not weights.quantized:
        return
    if not device.startswith("cuda"):
        raise TunelabError(
            "method: qlora needs a CUDA GPU (bitsandbytes 4-bit kernels) and none is available here; "
            "use method: lora on this machine"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TunelabError("method: qlora needs bitsandbytes; run: pip install bitsandbytes, or use method: lora") from None


def quantization_config():
    """NF4 with double quantisation and bf16 compute: the QLoRA paper's settings."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def apply_method(model, cfg: TrainConfig, weights: Optional[Weights] = None):
    """Return the model to train: the model itself (full weights) or a PeftModel (adapter methods).
    `weights`: the run's (objectives.resolve(cfg).weights, the default)."""
    if weights is None:
        weights = resolve(cfg).weights
    if not weights.adapter:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    if weights.quantized:
        from peft import prepare_model_for_kbit_training

        # casts norms to fp32 and enables input grads, as the QLoRA recipe does
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.grad_checkpointing)
    peft_cfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.targets,  # "all-linear": every nn.Linear but the output head
        use_dora=weights.dora,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise TunelabError(f"lora.targets={cfg.lora.targets!r}: {str(e).splitlines()[0]}; "
                           "use 'all-linear' or names of linear layers in the model") from None


def count_parameters(model) -> tuple[int, int]:
    """(all parameters, trainable parameters); tied weights counted once."""
    seen, total, train = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if hasattr(p, "quant_state"):  # bitsandbytes packs two 4-bit values per byte
            n *= 2
        total += n
        train += n if p.requires_grad else 0
    return total, train
