"""Shared fixtures: tiny random models with a real BPE tokenizer, and the shared data folder."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# The tests that press Ctrl-C (tests/errors, tests/serve) send SIGINT to a child tunelab. A suite
# started in the background (`nohup ... &`) inherits SIGINT ignored, exec passes that on, and every
# child would ignore the Ctrl-C and finish (exit 0). With Python's own handler installed here, exec
# resets SIGINT to the default in each child, as it is for a suite run from a terminal or CI.
signal.signal(signal.SIGINT, signal.default_int_handler)

# one thread count for the whole suite (results can depend on it); without it tunelab picks
# one from the free cores (models/threads.py), which would differ from run to run
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark(name): benchmarks/<name>.py imported as a module (benchmarks/ holds scripts, not a package)."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 2-layer Llama with a 512-token BPE and a ChatML template."""
    from tunelab.models.tiny import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny model saved as a normal Hugging Face folder."""
    from tunelab.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Each test gets its own TUNELAB_HOME unless it asks for the real cache (slow tests)."""
    import os

    if os.environ.get("TUNELAB_TEST_REAL_HOME") != "1":
        monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "tunelab-home"))
