"""safety/int8_encoder.py: the int8 MiniLM copy behind the toxicity classifier.

Checked: an int8 Linear tracks its fp32 original, a text's output does not depend on the rows it
is batched with (the reason for per-token scales), the shared fp32 encoder is left untouched, and
a torch without int8 matrix products gets a one-line error.
"""
import numpy as np
import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.models import encoders
from tunelab.safety import int8_encoder

needs_minilm = pytest.mark.skipif(not encoders.minilm_available(), reason="embeddings extra not installed")


def test_int8_linear_tracks_fp32_and_ignores_batch_mates():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = int8_encoder.Int8Linear(lin)
    x = torch.randn(5, 7, 64)  # (batch, tokens, features)
    x[0] *= 50.0  # one loud text: under a per-tensor activation scale it would coarsen the others
    with torch.no_grad():
        ref, out = lin(x), q(x)
        alone = q(x[3:4])
    assert out.shape == ref.shape == (5, 7, 48)
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.02, rel
    assert torch.equal(alone[0], out[3])  # row-wise scales: identical whatever the batch holds


def test_int8_linear_without_bias():
    lin = torch.nn.Linear(16, 8, bias=False)
    with torch.no_grad():
        y = int8_encoder.Int8Linear(lin)(torch.randn(3, 16))
    assert y.shape == (3, 8)


def test_quantise_linears_replaces_every_linear():
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 2)))
    int8_encoder.quantise_linears(net)
    assert not any(isinstance(m, torch.nn.Linear) for m in net.modules())
    assert sum(isinstance(m, int8_encoder.Int8Linear) for m in net.modules()) == 2


def test_old_torch_gets_a_one_line_error(monkeypatch):
    monkeypatch.delattr(torch, "_int_mm")
    with pytest.raises(TunelabError, match=r"torch\._int_mm.*upgrade torch"):
        int8_encoder.quantise_linears(torch.nn.Linear(4, 4))


@needs_minilm
def test_int8_minilm_close_to_fp32_and_shared_encoder_untouched():
    texts = ["the cat sat on the mat", "stock prices fell sharply on monday",
             "you people are all the same and should go back", "a short one"]
    fp32 = encoders.minilm_embed(texts)
    q = int8_encoder.toxicity_embed(texts)
    assert q.shape == (4, encoders.MINILM_DIM) and np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    assert ((fp32 * q).sum(1) > 0.98).all()
    alone = np.stack([int8_encoder.toxicity_embed([t])[0] for t in texts])
    assert ((alone * q).sum(1) > 0.995).all()  # padding differs, the per-token int8 scales do not
    shared = encoders.load_minilm()
    assert any(isinstance(m, torch.nn.Linear) for m in shared.modules())
    assert not any(isinstance(m, int8_encoder.Int8Linear) for m in shared.modules())
    assert np.allclose(encoders.minilm_embed(texts), fp32, atol=1e-6)  # retrieval / few-shot see fp32
