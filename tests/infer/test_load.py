"""infer/load.py: a model spec becomes the Backend that runs it (a local model, or an `openai:` endpoint)."""
from __future__ import annotations

from tunelab.infer.backend import LocalBackend
from tunelab.infer.load import load_local, open_backend
from tunelab.models.loading import load_model, max_length


def test_a_folder_or_a_loaded_model_is_a_local_backend(tiny_dir):
    lm = load_model(tiny_dir, device="cpu")
    assert load_local(lm, None) is lm  # already loaded: not loaded again
    backend = open_backend(lm)
    assert isinstance(backend, LocalBackend) and backend.identity is lm and backend.tokenizer is lm.tokenizer
    assert backend.max_length() == max_length(lm.model, lm.tokenizer) == 1024
    assert backend.template_id().startswith("sha256:")
    from_folder = open_backend(str(tiny_dir), device="cpu")
    assert isinstance(from_folder, LocalBackend) and from_folder.identity.sha256 == lm.sha256
    assert from_folder.cache_scope == (lm.sha256, None)


def test_an_openai_spec_is_an_endpoint_backend(monkeypatch):
    from tunelab.infer import endpoint, protocol

    assert protocol.registered()[endpoint.PREFIX] is endpoint.EndpointBackend  # found by scanning infer/
    seen = []

    class Recorder:
        prefix = endpoint.PREFIX

        def __init__(self, spec, adapter=None):
            seen.append((spec, adapter))

    monkeypatch.setitem(protocol._PREFIXED, endpoint.PREFIX, Recorder)
    got = open_backend("openai:http://127.0.0.1:8000/v1#m", adapter="alpha")
    assert isinstance(got, Recorder) and seen == [("openai:http://127.0.0.1:8000/v1#m", "alpha")]


def test_an_unknown_prefix_or_a_folder_with_a_colon_is_a_local_model(tmp_path, monkeypatch):
    from tunelab.infer.load import backend_class

    assert backend_class("vllm:http://x#m") is None and backend_class("default") is None
    monkeypatch.chdir(tmp_path)
    assert backend_class("openai:odd") is not None
    (tmp_path / "openai:odd").mkdir()
    assert backend_class("openai:odd") is None  # an existing path is a path, whatever it starts with
