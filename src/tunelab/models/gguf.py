"""GGUF -> a normal Hugging Face folder (safetensors, config, tokenizer with chat template).

transformers de-quantises a GGUF to fp32 on load but flags the model as GGUF-quantized, so it
refuses to save it and HF Trainer / TRL refuse to train it. We rebuild a plain model from the
config (without `quantization_config`) and load the de-quantised state dict into it; the result
saves and trains like any other checkpoint. Writing goes to a temp folder renamed at the end,
so an interrupted pull leaves no half model behind.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tunelab.io import atomic_dir, atomic_write_json, file_sha256

SOURCE_FILE = "tunelab_source.json"  # provenance + weight hash, written next to config.json


def convert_gguf(gguf_path: Path, out_dir: Path, *, name: str | None = None) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    folder, fname = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with atomic_dir(out_dir) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        weights = sorted(Path(tmp).glob("*.safetensors"))
        atomic_write_json(Path(tmp) / SOURCE_FILE, {
            "name": name or gguf_path.stem,
            "gguf_file": fname,
            "gguf_sha256": file_sha256(gguf_path),
            "weights_sha256": _weights_hash(weights),
            "parameters": sum(p.numel() for p in plain.parameters()),
        })
    return out_dir


def _weights_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def read_source(folder: Path) -> dict:
    p = Path(folder) / SOURCE_FILE
    return json.loads(p.read_text()) if p.is_file() else {}
