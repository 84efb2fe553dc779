"""A BM25 baseline retriever (rank-bm25's BM25Okapi) that returns a TREC run dict.

Tokenizer (documented because it moves the scores): lowercase, then the maximal runs of ASCII
letters and digits (`[a-z0-9]+`), so "boundary-layer" -> "boundary", "layer" and "3.5" -> "3",
"5". No stemming. With `stopwords=True` the words in ENGLISH_STOPWORDS are dropped.

Parameters are rank-bm25's BM25Okapi defaults unless given: k1=1.5, b=0.75, epsilon=0.25
(floor for negative IDF of very common terms, as a fraction of the mean IDF).

    retriever = BM25Retriever(docs)                 # docs: {docid: text}
    run = retriever.search(queries, k=100)          # queries: {qid: text} -> {qid: {docid: score}}
Documents scoring exactly 0 (no shared term) are left out of the run.
"""
from __future__ import annotations

import re

import numpy as np

from tunelab.errors import TunelabError

_TOKEN = re.compile(r"[a-z0-9]+")

# A short, conventional English list (articles, pronouns, auxiliaries, prepositions, conjunctions).
ENGLISH_STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves
""".split())


def tokenize(text: str, stopwords: bool = False) -> list[str]:
    """Lowercase alphanumeric tokens; optionally without ENGLISH_STOPWORDS."""
    tokens = _TOKEN.findall(text.lower())
    if stopwords:
        tokens = [t for t in tokens if t not in ENGLISH_STOPWORDS]
    return tokens


class BM25Retriever:
    """BM25Okapi over a fixed corpus; `search` returns the top-k documents per query."""

    def __init__(self, docs: dict[str, str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25,
                 stopwords: bool = False):
        from rank_bm25 import BM25Okapi

        if not docs:
            raise TunelabError("BM25: the corpus is empty")
        self.doc_ids = list(docs)
        self.stopwords = stopwords
        tokenized = [tokenize(docs[d], stopwords) for d in self.doc_ids]
        # rank-bm25 divides by the average document length: an all-empty corpus cannot be indexed.
        if not any(tokenized):
            raise TunelabError("BM25: no document has any alphanumeric token")
        self._bm25 = BM25Okapi(tokenized, k1=k1, b=b, epsilon=epsilon)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for one query, shape (n_docs,)."""
        return np.asarray(self._bm25.get_scores(tokenize(query, self.stopwords)), dtype=np.float64)

    def search(self, queries: dict[str, str], k: int = 100) -> dict[str, dict[str, float]]:
        if k < 1:
            raise TunelabError(f"BM25: k must be >= 1, got {k}")
        run: dict[str, dict[str, float]] = {}
        for qid, text in queries.items():
            s = self.scores(text)
            top = np.argsort(-s, kind="stable")[:k]
            run[qid] = {self.doc_ids[i]: float(s[i]) for i in top if s[i] != 0.0}
        return run
