"""Dense retrieval with the shared MiniLM encoder (tunelab.models.encoders).

    EmbeddingRetriever(docs).search(queries, k=100) -> run {qid: {docid: cosine}}
        Documents and queries are embedded with unit norm, so the dot product is the cosine.
Install with `pip install tunelab[embeddings]`.
"""
from __future__ import annotations

import numpy as np

from tunelab.errors import TunelabError
from tunelab.models.encoders import load_minilm, minilm_embed


class EmbeddingRetriever:
    """Cosine top-k over MiniLM embeddings of the corpus (embedded once, in batches)."""

    def __init__(self, docs: dict[str, str], batch_size: int = 64):
        if not docs:
            raise TunelabError("embedding retriever: the corpus is empty")
        load_minilm()  # fail here, with the install hint, when the extra is missing
        self.doc_ids = list(docs)
        self.batch_size = batch_size
        self.doc_emb = self._encode([docs[d] for d in self.doc_ids])  # (n_docs, 384)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return minilm_embed(texts, batch_size=self.batch_size)
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
