"""Parity with TRL: per-sequence log-probabilities, losses and reward statistics of one batch.

Checked against TRL 1.16.0 (`pip install trl==1.16.0 datasets`, the `test` extra) with transformers
5.24 and PEFT 0.21 on the tiny model: the same pairs go through TRL's own tokenization, collator and
forward (DPOTrainer.compute_ref_log_probs / compute_loss; trl.experimental.orpo.ORPOTrainer's
concatenated_forward and odds_ratio_loss) and through tunelab's packed pairs (the prompt once, both
answers after it under the pair mask). Tolerance 1e-4.
"""
from __future__ import annotations

import math

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tunelab.config import PreferenceConfig  # noqa: E402
from tunelab.data.preference import Pair  # noqa: E402
from tunelab.templates.preference import EncodedPair, encode_pair  # noqa: E402
from tunelab.train.attention import DOC_ATTN, register  # noqa: E402
from tunelab.train.preference import Norms, PreferenceLM, PreferenceObjective, batch_forward, collate_pairs  # noqa: E402

TOL = 1e-4
PAIRS = [
    ([{"role": "user", "content": "What is 2 plus 3?"}], "The answer is 5.", "The answer is 6, maybe."),
    ([{"role": "user", "content": "Reverse the words: Hello, world!"}], "world! Hello,", "Hello"),
    ([{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "Summarize: Alice met Bob in Paris."},
      {"role": "assistant", "content": "Alice met Bob."},
      {"role": "user", "content": "Where?"}], "In Paris.", "The quick brown fox jumps over the lazy dog."),
    ([{"role": "user", "content": "Convert the date March 5, 2021 to ISO format."}], "2021-03-05", "03/05/2021"),
]


def _trainer(trainer_cls, config, tiny_dir, seed: int = 0):
    """TRL's trainer over the tiny model with a new LoRA (TRL adds it: its reference is then the base with
    the adapter off; a PeftModel handed in would be taken as an adapter to re-train, with a copy as the
    reference). B is made random and small, so the policy differs from the reference by realistic rewards."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    trainer = trainer_cls(model=base, args=config, train_dataset=_dataset(), processing_class=tokenizer,
                          peft_config=lora)
    model = trainer.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    model.eval()
    return trainer, model, tokenizer


def _ours(model, tokenizer, method: str, encoded=None, **settings):
    """(policy logps (2n,), reference logps (2n,), loss, stats as per-pair means) from tunelab."""
    register()
    model.set_attn_implementation(DOC_ATTN)
    if encoded is None:
        encoded = [encode_pair(tokenizer, Pair(str(i), p, c, r)) for i, (p, c, r) in enumerate(PAIRS)]
    batch = collate_pairs(encoded)
    lm = PreferenceLM(model).eval()
    with torch.no_grad():
        logps = batch_forward(lm, batch, DOC_ATTN)
        with model.disable_adapter():
            ref = batch_forward(lm, batch, DOC_ATTN)
    objective = PreferenceObjective(method, PreferenceConfig(**settings))
    loss, stats = objective(logps, batch.seq_tokens, Norms(batch.n_pairs, batch.n_chosen), ref)
    model.set_attn_implementation("sdpa")
    return encoded, logps, ref, float(loss), {k: float(v) / batch.n_pairs for k, v in stats.items()}


def _dataset():
    return datasets.Dataset.from_list([{"prompt": p, "chosen": [{"role": "assistant", "content": c}],
                                        "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS])


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_equals_trl(tiny_dir, tmp_path, loss_type):
    from trl import DPOConfig, DPOTrainer

    beta = 0.2
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=[loss_type], report_to=[], use_cpu=True,
                     bf16=False, per_device_train_batch_size=len(PAIRS), max_length=None, dataset_num_proc=None)
    trainer, model, tokenizer = _trainer(DPOTrainer, args, tiny_dir)
    encoded, logps, ref, loss, stats = _ours(model, tokenizer, "dpo", beta=beta, loss=loss_type)
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    for row, enc in zip(rows, encoded):  # the same tokens are scored
        assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (enc.prompt, enc.chosen, enc.rejected)
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        ref_c, ref_r = trainer.compute_ref_log_probs(model, batch)  # adapter off: the reference
        trainer.ref_model = model  # a set ref_model makes compute_ref_log_probs run the model as given: the policy
        pol_c, pol_r = trainer.compute_ref_log_probs(model, batch)
        trainer.ref_model = None
        trl_loss = float(trainer.compute_loss(model, batch))
    torch.testing.assert_close(ref, torch.stack([ref_c, ref_r], 1).reshape(-1), atol=TOL, rtol=0)
    torch.testing.assert_close(logps, torch.stack([pol_c, pol_r], 1).reshape(-1), atol=TOL, rtol=0)
    assert loss == pytest.approx(trl_loss, abs=TOL)
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}  # eval mode: no dropout
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected"):
        assert stats[key] == pytest.approx(logged[key], abs=TOL), key


def test_orpo_equals_trl(tiny_dir, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    lam = 0.25
    args = ORPOConfig(output_dir=str(tmp_path), beta=lam, report_to=[], use_cpu=True, bf16=False, max_length=512,
                      per_device_train_batch_size=len(PAIRS), dataset_num_proc=None)
    trainer, model, tokenizer = _trainer(ORPOTrainer, args, tiny_dir, seed=1)
    # ORPOTrainer (TRL's older tokenization) appends one more eos after the template's end of turn, which
    # DPOTrainer and tunelab do not: the pairs are taken as ORPOTrainer tokenized them, so the test checks
    # the packed forward and the loss on the same tokens
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    encoded = [EncodedPair(str(i), row["prompt_input_ids"], row["chosen_input_ids"][len(row["prompt_input_ids"]):],
                           row["rejected_input_ids"][len(row["prompt_input_ids"]):]) for i, row in enumerate(rows)]
    for row, enc in zip(rows, encoded):  # the prompt is not scored: the labels start with the answer
        assert row["chosen_labels"][len(enc.prompt):] == enc.chosen
    encoded, logps, _, loss, stats = _ours(model, tokenizer, "orpo", encoded, orpo_lambda=lam)
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        pol_c, pol_r, _, _, _ = trainer.concatenated_forward(model, batch)
        ratio_terms, chosen_rewards, rejected_rewards, log_odds_ratio, log_odds_chosen = trainer.odds_ratio_loss(pol_c, pol_r)
    n_c = torch.tensor([len(e.chosen) for e in encoded], dtype=torch.float32)
    n_r = torch.tensor([len(e.rejected) for e in encoded], dtype=torch.float32)
    # TRL's ORPO logps are per-token means
    torch.testing.assert_close(logps[0::2] / n_c, pol_c, atol=TOL, rtol=0)
    torch.testing.assert_close(logps[1::2] / n_r, pol_r, atol=TOL, rtol=0)
    assert stats["rewards/chosen"] == pytest.approx(float(chosen_rewards.mean()), abs=TOL)
    assert stats["rewards/rejected"] == pytest.approx(float(rejected_rewards.mean()), abs=TOL)
    assert stats["rewards/accuracies"] == pytest.approx(float((chosen_rewards > rejected_rewards).float().mean()), abs=TOL)
    assert stats["log_odds_ratio"] == pytest.approx(float(log_odds_ratio), abs=TOL)
    assert stats["log_odds_chosen"] == pytest.approx(float(log_odds_chosen), abs=TOL)
    # the odds-ratio term is TRL's; the NLL is over the chosen answer's tokens (TRL 1.16 also adds the
    # prompt's tokens to it, see docs/train-config.md), so the loss is checked term by term
    nll = -float(logps[0::2].sum()) / float(n_c.sum())
    assert loss == pytest.approx(nll - float(ratio_terms.mean()), abs=TOL)
    assert stats["nll_loss"] == pytest.approx(nll, abs=TOL)


def test_first_dpo_loss_is_ln2_with_a_zero_adapter(tiny_dir):
    """LoRA starts with B = 0: the policy IS the reference, every log-ratio is 0, the loss ln 2."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    _, logps, ref, loss, stats = _ours(model, tokenizer, "dpo", beta=0.1)
    assert torch.equal(logps, ref)
    assert loss == float(torch.tensor(math.log(2), dtype=torch.float32))  # exactly ln 2, in the loss's fp32
    assert stats["rewards/margins"] == 0.0 and stats["rewards/accuracies"] == 0.0
