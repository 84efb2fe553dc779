"""Merge an adapter into its base model and write a plain Hugging Face folder, or one GGUF file.

The merged folder needs neither PEFT nor tunelab: safetensors weights, config, tokenizer and
chat template, loadable with AutoModelForCausalLM.from_pretrained. A QLoRA adapter is merged
into the de-quantised bf16 base (merging into 4-bit weights would round the update away).
`export_gguf` writes the merged model as GGUF for llama.cpp / Ollama (models/gguf_write.py) with
an Ollama Modelfile beside it (models/ollama.py).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io import atomic_dir, atomic_write_text, check_writable

ADAPTER_META_FILE = "tunelab_adapter.json"  # written next to the adapter by tunelab.train


# adapter_meta.json of runs before `quantized_base` was written names only the method; of those
# names, these trained on a 4-bit base
_QUANTIZED_BY_OLD_NAME = {"qlora": True}


def quantized_base(adapter: Path) -> bool:
    """Whether the adapter was trained on a 4-bit base (its merge then defaults to bf16); False for an
    adapter not made by tunelab."""
    try:
        meta = json.loads((Path(adapter) / ADAPTER_META_FILE).read_text())
    except (OSError, ValueError):
        return False
    if "quantized_base" in meta:
        return bool(meta["quantized_base"])
    return _QUANTIZED_BY_OLD_NAME.get(meta.get("method"), False)


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
        dtype = "bf16" if quantized_base(adapter) else "fp32"
    # merge on the CPU in the chosen float dtype: no 4-bit weights, no GPU needed
    lm = load_model(model, adapter=adapter, device="cpu", dtype=dtype)
    merged = lm.model.merge_and_unload()
    tokenizer = lm.tokenizer
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)  # carries the chat template (chat_template.jinja / tokenizer_config)
    return out


@dataclass
class GGUFExport:
    path: Path  # the .gguf file
    modelfile: Path  # the Ollama Modelfile beside it
    quant: str
    bytes: int
    seconds: float  # load + merge + write
    warnings: list[str] = field(default_factory=list)


def export_gguf(model: str | os.PathLike, adapter: str | os.PathLike | None, out: str | os.PathLike, *,
                quant: str = "f16", force: bool = False) -> GGUFExport:
    """Merge `adapter` (if any) into `model` and write one GGUF file plus an Ollama Modelfile.

    Every check runs before the model loads: the quant type, the output path, the adapter and
    its base, the architecture. The merge happens in fp32 on the CPU, so the file differs from
    the merged model only by the chosen quantisation.
    """
    from tunelab.errors import ParameterError
    from tunelab.models import gguf_write, ollama
    from tunelab.models.loading import load_model, resolve

    t0 = time.perf_counter()
    quant = gguf_write.check_quant(quant)
    out = Path(out).expanduser()
    if out.suffix.lower() != ".gguf":
        raise ParameterError(f"{out}: {{gguf}} must name a .gguf file, e.g. {out.with_suffix('.gguf')}", "gguf")
    modelfile = out.with_name(out.stem + ollama.MODELFILE_SUFFIX)
    for p in (out, modelfile):
        if p.exists() and not force:
            raise ParameterError(f"{p}: already exists; pass {{force}} to replace it or choose another {{gguf}}",
                                 "force", "gguf")
    check_writable(out, setting="gguf", folder=False)
    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise TunelabError(f"{adapter}: not an adapter folder (no adapter_config.json); "
                               "give the adapter/ folder of a run, or leave out --adapter to export MODEL alone")
    name, folder = resolve(model)
    if adapter is not None:
        _check_base(adapter, model, folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise TunelabError(f"{folder / 'config.json'}: not readable ({e}); give a complete HF model folder") from None
    gguf_write.check_architecture(config, str(folder / "config.json"))

    lm = load_model(model, adapter=adapter, device="cpu", dtype="fp32")
    merged = lm.model.merge_and_unload() if adapter is not None else lm.model
    label = f"{name}+{adapter.parent.name if adapter.name == 'adapter' else adapter.name}" if adapter is not None else name
    out.parent.mkdir(parents=True, exist_ok=True)
    gguf_write.write_gguf(merged, lm.tokenizer, out, quant=quant, name=label)
    text, warning = ollama.modelfile(out.name, lm.tokenizer)
    atomic_write_text(modelfile, text)
    return GGUFExport(out, modelfile, quant, out.stat().st_size, time.perf_counter() - t0,
                      [warning] if warning else [])


def _check_base(adapter: Path, model, folder: Path) -> None:
    """An adapter made by tunelab names its base's weight hash: refuse another base in one line."""
    from tunelab.models.loading import weights_sha256

    try:
        meta = json.loads((adapter / ADAPTER_META_FILE).read_text())
    except (OSError, ValueError):
        return  # not made by tunelab: PEFT's shape check at load time is what we have
    want = meta.get("base_sha256")
    if want and want != weights_sha256(folder):
        base = meta.get("base_model") or meta.get("base_path") or "another model"
        raise TunelabError(f"{adapter}: adapter was trained on base '{base}' (weights sha256 {want[:12]}), "
                           f"not on '{model}'; export it with that model: tunelab export {base} --adapter {adapter} ...")
