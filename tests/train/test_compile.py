"""train.compile: decoder layers compiled one by one; same losses as eager; compilations counted."""
from __future__ import annotations

import pytest

from tunelab.config import load_train_config
from tunelab.train.loop import Recipe

from .conftest import metrics


def _run(make_config, name, compile_):
    # no LoRA dropout: the compiled run pads its rows, which would shift the dropout masks' random stream
    recipe = Recipe(load_train_config(make_config(name, lora={"dropout": 0.0},
                                                  train={"max_steps": 4, "compile": compile_, "eval_every": 2,
                                                         "save_every": 100})))
    recipe.setup()
    return recipe, recipe.train()


def test_compile_per_layer_matches_eager(make_config, monkeypatch):
    # aot_eager: dynamo + AOTAutograd graphs without inductor's C++ build, so the test stays fast
    monkeypatch.setenv("TUNELAB_COMPILE_BACKEND", "aot_eager")
    eager_recipe, eager = _run(make_config, "eager", "auto")  # auto = off on CPU
    assert eager_recipe.facts.compile is False and eager.summary["compiles"] == 0
    recipe, compiled = _run(make_config, "compiled", True)
    layers = recipe._inner().get_base_model().get_decoder().layers
    assert all(layer._compiled_call_impl is not None for layer in layers)  # each layer, in place
    assert recipe.facts.attn == "sdpa"  # the per-document path would recompile for every new set of lengths
    # fixed shapes: a handful of graphs for the whole run (train and eval), not one per step
    assert 1 <= compiled.summary["compiles"] <= 4
    a, b = metrics(eager.run_dir), metrics(compiled.run_dir)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-4)
    assert a[-1]["eval_loss"] == pytest.approx(b[-1]["eval_loss"], rel=1e-4)
    s = compiled.summary
    assert s["tokens_per_s"] > 0 and "steady_tokens_per_s" in s and "steady_mfu" in s
    assert b[-1]["compiles"] == s["compiles"] and b[-1]["run_tokens_per_s"] > 0
