"""Methods (frozen base), merged export, adapter/base mismatch, the OOM message."""
from __future__ import annotations

import copy

import pytest
import torch

from tunelab.config import load_train_config
from tunelab.errors import TunelabError
from tunelab.models.export import export_merged
from tunelab.train.loop import oom_message, train
from tunelab.train.loss import PackedCausalLM
from tunelab.train.methods import apply_method
from tunelab.train.packing import collate, model_inputs

from .helpers import random_examples


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_frozen_base_gets_no_gradients(tiny, method):
    model, _ = tiny
    cfg = load_train_config({"method": method, "data": {"train": "x.jsonl"}})
    peft_model = apply_method(copy.deepcopy(model), cfg).train()
    b = collate(random_examples(3, seed=9))
    s, n = PackedCausalLM(peft_model)(**model_inputs(b, "sdpa"), targets=b.targets)
    (s / n).backward()
    trained = {k for k, p in peft_model.named_parameters() if p.grad is not None}
    frozen_with_grad = [k for k, p in peft_model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []
    assert trained and all("lora_" in k for k in trained)
    if method == "dora":
        assert any("lora_magnitude_vector" in k for k in trained)
    # every linear layer of the decoder got an adapter ("all-linear"), the LM head did not
    assert any("mlp.down_proj.lora_A" in k for k in trained) and any("self_attn.q_proj.lora_A" in k for k in trained)
    assert not any("lm_head" in k for k in trained)


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory, tiny_dir, arith_data):
    out = tmp_path_factory.mktemp("runs") / "exp"
    cfg = {"name": "exp", "model": str(tiny_dir), "method": "lora", "lora": {"r": 4, "alpha": 16},
           "data": {"train": str(arith_data), "eval": 0.0},
           "train": {"max_steps": 4, "batch_tokens": 400, "lr": 0.02, "save_every": 100}, "out": str(out)}
    return train(cfg).weights_dir


def test_export_merged_logits_equal_base_plus_adapter(trained_adapter, tiny_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_merged(str(tiny_dir), trained_adapter, tmp_path / "merged")
    ids = torch.tensor([random_examples(1, seed=11)[0].input_ids])
    with torch.no_grad():
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), trained_adapter).eval()
        expected = peft(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        got = merged(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()(input_ids=ids).logits
    assert not torch.allclose(base, expected, atol=1e-3)  # the adapter changed something
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert not any("lora" in k for k in merged.state_dict())


def test_adapter_from_another_base_is_a_clear_error(trained_adapter, tmp_path):
    from tunelab.models.tiny import save_tiny

    other = save_tiny(tmp_path / "other-base", hidden_size=32, intermediate_size=64)
    with pytest.raises(TunelabError) as e:
        export_merged(str(other), trained_adapter, tmp_path / "merged")
    msg = str(e.value)
    assert "does not match" in msg and str(trained_adapter) in msg
    assert not (tmp_path / "merged").exists()


def test_export_rejects_a_folder_that_is_not_an_adapter(tiny_dir, tmp_path):
    with pytest.raises(TunelabError, match="not an adapter folder"):
        export_merged(str(tiny_dir), tiny_dir, tmp_path / "m")


def test_oom_message_proposes_smaller_budget_and_checkpointing():
    msg = oom_message(step=12, batch_tokens=8192, grad_accum=1, grad_checkpointing=False)
    assert "step 12" in msg and "train.batch_tokens=8192" in msg
    assert "train.batch_tokens=4096" in msg and "train.grad_accum=2" in msg
    assert "train.grad_checkpointing=true" in msg
    msg2 = oom_message(step=1, batch_tokens=4096, grad_accum=4, grad_checkpointing=True)
    assert "grad_checkpointing" not in msg2 and "train.grad_accum=8" in msg2
