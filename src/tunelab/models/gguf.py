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

from tunelab.errors import TunelabError
from tunelab.io import atomic_dir, atomic_write_json, file_sha256

SOURCE_FILE = "tunelab_source.json"  # provenance + weight hash, written next to config.json


def check_gguf(path: Path) -> None:
    """Read the whole header and every tensor's extent (memory-mapped, ~1 s) before converting.

    A truncated download or junk bytes otherwise surface deep inside transformers as struct.error,
    "cannot reshape array" or "GGUF magic" tracebacks; here they become one line.
    """
    from gguf import GGUFReader

    path = Path(path)
    size = path.stat().st_size
    try:
        GGUFReader(path)
    except Exception as e:  # numpy view/reshape errors, struct.error, mmap of an empty file...
        magic = "magic" in str(e).lower()
        what = "it does not start with the GGUF magic bytes" if magic \
            else f"{size:,} bytes: its header or tensor data is cut short"
        raise TunelabError(f"{path}: this .gguf file is damaged or incomplete ({what}); download it again") from None


def convert_gguf(gguf_path: Path, out_dir: Path, *, name: str | None = None) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    check_gguf(gguf_path)
    folder, fname = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        # the file reads as GGUF (checked above) but transformers cannot build a model from it
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise TunelabError(f"{gguf_path}: transformers cannot load this .gguf ({first}); "
                           "use a GGUF of a supported architecture or a Hugging Face model folder") from None
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
