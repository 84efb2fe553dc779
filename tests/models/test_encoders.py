"""models/encoders.py: the one MiniLM loader, shared by few-shot, retrieval and toxicity; loads once."""
import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.models import encoders

needs_minilm = pytest.mark.skipif(not encoders.minilm_available(), reason="embeddings extra not installed")


@needs_minilm
def test_every_user_shares_one_loaded_model():
    from tunelab.evaluate.retrieval.embedding import EmbeddingRetriever
    from tunelab.fewshot.samplers import _minilm_encoder
    from tunelab.safety.toxicity import ToxicityClassifier

    encoders.load_minilm.cache_clear()
    retriever = EmbeddingRetriever({"d1": "the cat sat", "d2": "stock prices fell"})
    encode = _minilm_encoder()
    ToxicityClassifier("minilm").score(["hello there"])
    info = encoders.load_minilm.cache_info()
    assert info.misses == 1 and info.hits >= 2  # loaded once, reused by the sampler and the classifier
    emb = encode(["the cat sat"])
    assert emb.shape == (1, encoders.MINILM_DIM) and np.allclose(emb[0], retriever.doc_emb[0], atol=1e-5)
    assert np.isclose(np.linalg.norm(emb[0]), 1.0, atol=1e-4)  # unit norm: dot product is the cosine


def test_missing_extra_gives_the_install_hint(monkeypatch):
    monkeypatch.setattr(encoders, "minilm_available", lambda: False)
    encoders.load_minilm.cache_clear()
    try:
        with pytest.raises(TunelabError, match=r"pip install 'tunelab\[embeddings\]'"):
            encoders.load_minilm()
    finally:
        encoders.load_minilm.cache_clear()
    assert encoders.minilm_embed([]).shape == (0, encoders.MINILM_DIM)  # nothing to embed: no model needed
