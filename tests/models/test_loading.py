"""Loading by folder / registry name / bad path; tiny models behave like real checkpoints."""
from __future__ import annotations

import pytest

from tunelab.errors import TunelabError
from tunelab.models import registry
from tunelab.models.loading import load_model, resolve


def test_load_hf_folder(tiny_dir):
    lm = load_model(tiny_dir, device="cpu")
    assert lm.name == "tiny-llama" and lm.path == tiny_dir and len(lm.sha256) == 64
    assert lm.tokenizer.chat_template and lm.tokenizer.pad_token is not None
    assert lm.tokenizer.model_max_length == 1024  # taken from the config, not HF's "unset"
    assert load_model(tiny_dir, device="cpu").sha256 == lm.sha256  # cached hash, same answer


def test_bad_model_paths(tmp_path):
    with pytest.raises(TunelabError, match="model 'no/such/model' not found: not a registry name"):
        resolve("no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunelabError, match="not a model folder \\(no config.json\\)"):
        resolve(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(TunelabError, match="not a model; give a Hugging Face model folder"):
        resolve(tmp_path / "weights.bin")
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text("{}")
    with pytest.raises(TunelabError, match="looks like an adapter"):
        resolve(ad)


def test_registry_aliases():
    assert registry.canonical("default") == "smollm2-135m-instruct"
    assert registry.canonical("SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert registry.canonical("gpt-17") is None


def test_adapter_that_is_not_an_adapter(tiny_dir, tmp_path):
    with pytest.raises(TunelabError, match="not an adapter folder"):
        load_model(tiny_dir, adapter=tmp_path, device="cpu")


@pytest.mark.parametrize("config,tokenizer_max,want", [
    ({"n_positions": 512, "max_position_embeddings": 4096}, 99, 512),  # GPT-2's name first, as lm-eval's HFLM
    ({"max_position_embeddings": 4096}, 99, 4096),
    ({"n_ctx": 256}, None, 256),
    ({"max_position_embeddings": 0}, 300, 300),  # no usable config value: the tokenizer's
    ({}, 10**30, 2048),  # HF's "unset" tokenizer value is not a context size
    ({}, None, 2048),
])
def test_max_length_is_the_models_context_size(config, tokenizer_max, want):
    from types import SimpleNamespace

    from tunelab.models.loading import max_length

    model = SimpleNamespace(config=SimpleNamespace(**config))
    assert max_length(model, SimpleNamespace(model_max_length=tokenizer_max)) == want


@pytest.mark.parametrize("omp, others, want", [(None, 1.0, 1), (None, 0.0, 2), ("2", 1.0, "torch's")])
def test_a_model_on_the_cpu_runs_with_the_free_cores(tiny_dir, monkeypatch, omp, others, want):
    """Issue 26 case 10: eval, chat and serve load through load_model and now follow the same
    free-core rule as training (models/threads.py); OMP_NUM_THREADS still wins."""
    import torch

    from tunelab.models import threads

    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(threads, "other_runnable", lambda: others)  # one busy process beside us, or none
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(7)  # a value neither rule gives
    try:
        load_model(str(tiny_dir), device="cpu")
        assert torch.get_num_threads() == (7 if want == "torch's" else want)
        torch.set_num_threads(7)
        load_model(str(tiny_dir), device="cpu", threads=False)  # training chose already
        assert torch.get_num_threads() == 7
    finally:
        torch.set_num_threads(before)
