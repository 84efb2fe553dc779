"""A tiny model with two LoRA adapters, served on a free localhost port for the module's tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _lively(folder: Path) -> Path:
    """A tiny model with larger weights, so greedy outputs vary instead of repeating one token."""
    from tunelab.models.tiny import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(seed=3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (not zero) B matrices, so it really changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lively_dir(tmp_path_factory) -> Path:
    return _lively(tmp_path_factory.mktemp("serve") / "lively")


@pytest.fixture(scope="session")
def adapter_dirs(lively_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"alpha": _adapter(lively_dir, root / "alpha", 1), "beta": _adapter(lively_dir, root / "beta", 2)}


@pytest.fixture(scope="session")
def served(lively_dir, adapter_dirs):
    from tunelab.serve.engine import load_served

    return load_served(str(lively_dir), {k: str(v) for k, v in adapter_dirs.items()}, device="cpu")


@pytest.fixture(scope="module")
def server(served):
    """The app on a thread at 127.0.0.1:<free port>; stopped (and its batcher joined) after the module."""
    from tunelab.serve.server import BackgroundServer, create_app

    with BackgroundServer(create_app(served, batch_size=4, queue_size=32)) as srv:
        yield srv
    assert not srv.thread.is_alive()


@pytest.fixture()
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def server_tasks():
    """server_tasks(srv): how many tasks are alive on a BackgroundServer's event loop."""
    import asyncio

    def count_on(srv) -> int:
        async def count():
            return len(asyncio.all_tasks()) - 1  # not this one

        return asyncio.run_coroutine_threadsafe(count(), srv.server.config.app.state.loop).result(10)

    return count_on
