"""Load a model by registry name, Hugging Face folder or .gguf file, optionally with an adapter.

    lm = load_model("default")                      # pulls and converts once, then < 3 s
    lm = load_model("runs/x/model")                 # any HF folder
    lm = load_model("default", adapter="runs/x/adapter")
    lm.model, lm.tokenizer, lm.sha256
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tunelab import paths
from tunelab.errors import ParameterError, TunelabError
from tunelab.io import file_sha256
from tunelab.models import gguf, registry
from tunelab.models.threads import choose_threads

log = logging.getLogger("tunelab.models")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    path: Path  # a normal HF folder
    sha256: str  # of the weights (adapter not included; see adapter_sha256)
    adapter: Optional[str] = None
    adapter_sha256: Optional[str] = None


def max_length(model, tokenizer) -> int:
    """The model's context size, found the way lm-eval's HFLM finds it (default 2048)."""
    cfg = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and v < 1_000_000 else 2048


def pull(name: str = "default", *, force: bool = False) -> Path:
    """Make sure a registry model is cached as an HF folder; return the folder."""
    key = registry.canonical(name)
    if key is None:
        raise TunelabError(f"'{name}' is not a registry model; known: {', '.join([*registry.ALIASES, *registry.REGISTRY])}")
    out = registry.cached_dir(key)
    if registry.is_cached(key) and not force:
        return out
    source = registry.REGISTRY[key]
    gguf_path = registry.locate_gguf(source)
    log.info("converting %s -> %s", gguf_path, out)
    return gguf.convert_gguf(gguf_path, out, name=key)


def resolve(name_or_path: str | os.PathLike) -> tuple[str, Path]:
    """(display name, HF folder) for a registry name, folder or .gguf file; pulls if needed."""
    text = str(name_or_path)
    key = registry.canonical(text)
    if key is not None and not Path(text).exists():
        return key, pull(key)
    path = Path(text).expanduser()
    if not path.exists():
        known = ", ".join([*registry.ALIASES, *registry.REGISTRY])
        raise TunelabError(f"model '{text}' not found: not a registry name ({known}), nor an existing folder or .gguf file")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise TunelabError(f"{path}: not a model; give a Hugging Face model folder, a .gguf file or a registry name")
        digest = file_sha256(path)[:16]
        out = paths.models_dir() / f"gguf-{path.stem}-{digest}"
        if not (out / "config.json").is_file():
            gguf.convert_gguf(path, out, name=path.stem)
        return path.stem, out
    if not (path / "config.json").is_file():
        hint = " (it looks like an adapter: pass it as {adapter} with its base model)" if (path / "adapter_config.json").is_file() else ""
        raise ParameterError(f"{path}: not a model folder (no config.json){hint}; give a Hugging Face model folder, a .gguf file or a registry name", "adapter")
    return path.name, path


def weights_sha256(folder: Path) -> str:
    """Hash of the weight files, remembered per (file, size, mtime) so it costs once."""
    source = gguf.read_source(folder)
    if source.get("weights_sha256"):
        return source["weights_sha256"]
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    cache_file = paths.home() / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    import hashlib

    h = hashlib.sha256()
    changed = False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in cache:
            cache[key] = file_sha256(f)
            changed = True
        h.update(cache[key].encode())
    if changed:
        from tunelab.io import WriteFailed, atomic_write_json

        try:
            atomic_write_json(cache_file, cache)
        except (OSError, WriteFailed):
            pass  # a read-only or full cache only costs a re-hash next time
    return h.hexdigest()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(dtype, device: str):
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[dtype]
    return dtype


def load_tokenizer(folder: Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.model_max_length > 10**9:  # "unset" in HF; the model config knows the real context
        try:
            cfg = json.loads((Path(folder) / "config.json").read_text())
            tok.model_max_length = int(cfg.get("max_position_embeddings") or tok.model_max_length)
        except (OSError, ValueError):
            pass
    return tok


def load_model(name_or_path: str | os.PathLike = "default", *, adapter: str | os.PathLike | None = None,
               device: str | None = None, dtype=None, trust_remote_code: bool = False,
               attn_implementation: str | None = "sdpa", threads: bool = True) -> LoadedModel:
    """A model ready to run; on the CPU, torch's thread count follows the free cores (threads.py)
    unless `threads=False` (training picks its own, once per run) or OMP_NUM_THREADS is set."""
    from transformers import AutoModelForCausalLM

    if adapter is not None:
        _adapter_config(Path(adapter))  # a wrong adapter path fails before the base model loads
    name, folder = resolve(name_or_path)
    device = device or default_device()
    if threads and str(device).startswith("cpu"):
        # one rule for every command that runs a model (eval, chat, serve, compare's arms, train)
        choose_threads()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=_dtype(dtype, device), trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
        )
    except (OSError, ValueError) as e:
        raise TunelabError(f"{folder}: could not load the model ({str(e).splitlines()[0]}); check the folder is a complete HF model") from None
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    lm = LoadedModel(model, tokenizer, name, folder, weights_sha256(folder))
    if adapter is not None:
        attach_adapter(lm, adapter)
    return lm


def _adapter_config(adapter: Path) -> dict:
    """The adapter's adapter_config.json, or a one-line error naming the folder."""
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.is_file():
        raise TunelabError(f"{adapter}: not an adapter folder (no adapter_config.json); give the adapter/ folder of a run")
    try:
        return json.loads(cfg_file.read_text())
    except (ValueError, OSError) as e:
        raise TunelabError(f"{cfg_file}: not readable JSON ({e}); the adapter is damaged") from None


def attach_adapter(lm: LoadedModel, adapter: str | os.PathLike, *, name: str | None = None) -> LoadedModel:
    """Wrap lm.model with a PEFT adapter; a mismatched or broken adapter is a one-line error.

    `name` loads it as a named adapter beside any already attached (PEFT multi-adapter: the
    server picks one per request with `set_adapter`).
    """
    from peft import PeftModel

    adapter = Path(adapter)
    cfg = _adapter_config(adapter)
    try:
        if name is not None and isinstance(lm.model, PeftModel):
            lm.model.load_adapter(adapter, adapter_name=name, is_trainable=False)
        else:
            lm.model = PeftModel.from_pretrained(lm.model, adapter, is_trainable=False, adapter_name=name or "default")
    except (RuntimeError, ValueError, KeyError) as e:
        base = cfg.get("base_model_name_or_path") or "another model"
        first = str(e).strip().splitlines()[0][:200]
        raise TunelabError(
            f"{adapter}: adapter does not match base model '{lm.name}' (it was trained on {base}: {first}); "
            "pass the base model it was trained on"
        ) from None
    lm.model.eval()
    lm.adapter = str(adapter)
    weights = sorted(adapter.glob("*.safetensors"))
    lm.adapter_sha256 = file_sha256(weights[0]) if weights else None
    return lm
