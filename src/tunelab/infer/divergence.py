"""How far one model's next-token distributions are from another's, on given answers to given prompts.

    per_prompt = answer_kl(tuned, prompts, answers, base=None)   # LoadedModels; base=None: tuned, adapter off

At every answer position t, the full-vocabulary KL(p_base(· | x, y<t) ‖ p_tuned(· | x, y<t)), in
nats, summed over the answer's tokens, with their count, per prompt. evaluate/drift.py turns
these into the drift of a fine-tune (the base model's own answers, a mean per token with a CI);
backends reach it as `LocalBackend.answer_kl`. An endpoint cannot: an OpenAI-compatible API
returns at most the top 20 log-probabilities of a position, not the whole vocabulary.

Why by hand: no library computes a per-token KL between two causal LMs over a set of texts (TRL
computes one inside its trainers, on policy samples, for the loss); this is two forward passes and
one reduction. The answer is tokenised on its own after the prompt, as training and generation
tokenise a prompt and its answer.
"""
from __future__ import annotations

from typing import Sequence

import torch


def _encode(tokenizer, prompt: str, answer: str, chat: bool) -> tuple[list[int], int]:
    """(token ids of prompt + answer, number of prompt tokens)."""
    from tunelab.templates import encode_prompt

    p = (encode_prompt(tokenizer, [{"role": "user", "content": prompt}]) if chat
         else tokenizer(prompt, add_special_tokens=False)["input_ids"])
    a = tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
    return list(p) + list(a), len(p)


def _logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()


@torch.no_grad()
def answer_kl(tuned, prompts: Sequence[str], answers: Sequence[str], *, base=None, chat: bool = True,
              batch_size: int = 4) -> list[tuple[float, int]]:
    """Per prompt: (sum over the answer tokens of KL(base ‖ tuned), number of answer tokens).

    `tuned` and `base` are LoadedModels sharing a tokenizer; with base=None, `tuned.model` is a
    PEFT model and its base is the same weights with the adapter disabled (no second copy).
    """
    tok = tuned.tokenizer
    device = next(tuned.model.parameters()).device
    encoded = [_encode(tok, p, a, chat) for p, a in zip(prompts, answers)]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths share a batch
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tuned.model.eval()
    if base is not None:
        base.model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):  # right padding: positions stay 0..len-1 for every row
            seq = encoded[i][0]
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
        ids, mask = ids.to(device), mask.to(device)
        t_logits = _logits(tuned.model, ids, mask)  # (B, T, V)
        if base is None:
            with tuned.model.disable_adapter():
                b_logits = _logits(tuned.model, ids, mask)
        else:
            b_logits = _logits(base.model, ids, mask)
        for r, i in enumerate(idx):
            seq, n_prompt = encoded[i]
            n_answer = len(seq) - n_prompt
            if n_answer <= 0:
                continue
            # logits at position t predict token t + 1: the answer's tokens are predicted from n_prompt - 1 on
            sl = slice(n_prompt - 1, len(seq) - 1)
            lp_b = torch.log_softmax(b_logits[r, sl], dim=-1)  # (n_answer, V)
            lp_t = torch.log_softmax(t_logits[r, sl], dim=-1)
            kl = (lp_b.exp() * (lp_b - lp_t)).sum(-1).clamp_min(0.0)  # (n_answer,) rounding can dip below 0
            out[i] = (float(kl.sum()), n_answer)
    return out


__all__ = ["answer_kl"]
