"""Retrain the shipped toxicity classifier and run its evaluation protocol (MODEL_CARD.md).

    python scripts/train_toxicity_classifier.py [--data ../shared/data/toxigen] [--out src/tunelab/safety/weights]
        [--cache /tmp/tunelab-tox-emb] [--no-peer] [--no-logo]

Writes the weights and metrics.json (every number in the model card) into --out. The peer,
alt-profanity-check (`pip install 'tunelab[bench]'`), scores the same items when it is installed;
it is a benchmark dependency only and loads its own packaged model with joblib, here and nowhere
in tunelab's runtime. --cache keeps MiniLM embeddings in a .npy so reruns skip the encoder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from tunelab.safety import toxicity
from tunelab.safety.train_classifier import train

ROOT = Path(__file__).resolve().parents[1]


class EmbeddingCache:
    """MiniLM embeddings keyed by sha1 of the text, kept as DIR/minilm.npy + DIR/minilm.json.

    The protocol refits dozens of heads on the same ~35k texts; embedding them takes minutes on
    2 cores, so development reruns reuse the vectors.
    """

    def __init__(self, folder: Path):
        self.npy, self.keys_file = folder / "minilm.npy", folder / "minilm.json"
        self.rows: dict[str, int] = {}
        self.vecs = np.zeros((0, 384), dtype=np.float32)
        if self.npy.is_file() and self.keys_file.is_file():
            keys = json.loads(self.keys_file.read_text())
            vecs = np.load(self.npy, allow_pickle=False)
            if len(keys) == len(vecs):
                self.rows, self.vecs = {k: i for i, k in enumerate(keys)}, vecs

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if self.key(t) not in self.rows})
        if missing:
            new = toxicity.minilm_embed(missing)
            for t in missing:
                self.rows[self.key(t)] = len(self.rows)
            self.vecs = np.concatenate([self.vecs, new])
            self.npy.parent.mkdir(parents=True, exist_ok=True)
            np.save(self.npy, self.vecs, allow_pickle=False)
            self.keys_file.write_text(json.dumps(sorted(self.rows, key=self.rows.get)))
        if not texts:
            return self.vecs[:0]
        return self.vecs[[self.rows[self.key(t)] for t in texts]]


def profanity_check_peer():
    """alt-profanity-check's predict_prob, or None when the bench extra is not installed."""
    try:
        from profanity_check import predict_prob
    except ImportError:
        return None
    return lambda texts: np.asarray(predict_prob(list(texts)), dtype=np.float64)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "toxigen"))
    ap.add_argument("--out", default=str(toxicity.WEIGHTS_DIR))
    ap.add_argument("--cache", default=None, help="folder for cached MiniLM embeddings (development)")
    ap.add_argument("--no-peer", action="store_true", help="skip alt-profanity-check")
    ap.add_argument("--no-logo", action="store_true", help="skip leave-one-group-out (quick iterations)")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    peer = None if args.no_peer else profanity_check_peer()
    if peer is None and not args.no_peer:
        print("alt-profanity-check is not installed (pip install 'tunelab[bench]'): no peer numbers")
    train(args.data, args.out, embed=EmbeddingCache(Path(args.cache)) if args.cache else None,
          peer=peer, logo=not args.no_logo)
