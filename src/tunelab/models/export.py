"""Merge an adapter into its base model and write a plain Hugging Face folder.

The merged folder needs neither PEFT nor tunelab: safetensors weights, config, tokenizer and
chat template, loadable with AutoModelForCausalLM.from_pretrained. A QLoRA adapter is merged
into the de-quantised bf16 base (merging into 4-bit weights would round the update away).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io import atomic_dir, check_writable

ADAPTER_META_FILE = "tunelab_adapter.json"  # written next to the adapter by tunelab.train


def adapter_method(adapter: Path) -> str:
    """'qlora', 'lora', 'dora', or 'lora' when the adapter was not made by tunelab."""
    try:
        return json.loads((Path(adapter) / ADAPTER_META_FILE).read_text()).get("method", "lora")
    except (OSError, ValueError):
        return "lora"


def export_merged(model: str | os.PathLike, adapter: str | os.PathLike, out: str | os.PathLike, *,
                  dtype: str = "auto") -> Path:
    """Load base + adapter, merge, save to `out` atomically; return `out`."""
    from tunelab.models.loading import load_model

    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").is_file():
        raise TunelabError(f"{adapter}: not an adapter folder (no adapter_config.json); "
                           "give the adapter/ folder of a run (a full fine-tune's model/ folder needs no export)")
    check_writable(out, setting="out")
    if dtype == "auto":
        dtype = "bf16" if adapter_method(adapter) == "qlora" else "fp32"
    # merge on the CPU in the chosen float dtype: no 4-bit weights, no GPU needed
    lm = load_model(model, adapter=adapter, device="cpu", dtype=dtype)
    merged = lm.model.merge_and_unload()
    tokenizer = lm.tokenizer
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)  # carries the chat template (chat_template.jinja / tokenizer_config)
    return out
