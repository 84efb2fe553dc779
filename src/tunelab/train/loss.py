"""Cross-entropy at supervised positions only, in chunks, so [tokens × vocab] logits never exist.

A causal LM's `forward` computes logits for every position (T × V floats; for a 128k vocabulary
and 16k tokens that is 8 GiB in fp32) and then throws most of them away. Here the decoder runs
alone, the hidden states of supervised positions are gathered, and the LM head + cross-entropy
run over chunks of them. When all supervised logits together are small (≤ KEEP_LOGITS_BYTES, e.g.
a CPU micro-batch of a few hundred supervised tokens: 70 MB at vocab 49k) they are computed once
and kept for the backward, which spares a second pass through the LM head (~1/3 of its cost).
Above that each chunk runs under activation checkpointing, so its logits are freed right after
the forward and recomputed in the backward: peak logit memory is one chunk. Both routes run the
same per-chunk arithmetic, so the loss and gradients are identical.

The module returns the SUM of the token losses and the number of supervised tokens; the loop
divides by the global count over the accumulation window and all processes, which makes the
loss (and gradients) independent of how documents are split into micro-batches and processes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunelab.train.packing import IGNORE

CHUNK_TOKENS = 1024  # supervised positions per LM-head chunk; 1024 × 128k vocab × 4 B = 0.5 GiB
# fp32 logits of the whole micro-batch below which no chunk is recomputed in the backward; autograd
# then holds about twice this (logits + log-softmax) until the backward frees it
KEEP_LOGITS_BYTES = 128 * 2**20


def _ce_sum(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias, softcap) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()  # (c, V): fp32 for a stable log-softmax
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, targets, reduction="sum")


def supervised_ce_sum(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    lm_head: nn.Linear,
    *,
    chunk: int = CHUNK_TOKENS,
    softcap: float | None = None,
    keep_logits_bytes: int = KEEP_LOGITS_BYTES,
) -> tuple[torch.Tensor, int]:
    """Sum of cross-entropy over positions whose target is not IGNORE.

    hidden: (B, T, H) final hidden states; targets: (B, T) already shifted (packing.collate).
    Returns (loss_sum as a 0-d fp32 tensor, number of supervised positions).
    """
    H = hidden.shape[-1]
    flat_h = hidden.reshape(-1, H)  # (B*T, H)
    flat_t = targets.reshape(-1)  # (B*T,)
    keep = (flat_t != IGNORE).nonzero().squeeze(1)  # (S,)
    h = flat_h.index_select(0, keep)  # (S, H)
    t = flat_t.index_select(0, keep)  # (S,)
    total = hidden.new_zeros((), dtype=torch.float32)
    logits_bytes = h.shape[0] * lm_head.weight.shape[0] * 4  # S × V fp32
    recompute = torch.is_grad_enabled() and h.requires_grad and logits_bytes > keep_logits_bytes
    for start in range(0, h.shape[0], chunk):
        args = (h[start:start + chunk], t[start:start + chunk], lm_head.weight, lm_head.bias, softcap)
        if recompute:
            total = total + checkpoint(_ce_sum, *args, use_reentrant=False)
        else:
            total = total + _ce_sum(*args)
    return total, int(keep.numel())


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PEFT wrapper (PEFT injects its layers in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class PackedCausalLM(nn.Module):
    """A causal LM whose forward returns (loss_sum, n_supervised) for a packed micro-batch.

    It is the module handed to `Accelerator.prepare`, so DDP wraps this forward — calling the
    inner decoder from outside DDP's forward would skip its gradient synchronisation.
    """

    def __init__(self, model: nn.Module, *, chunk: int = CHUNK_TOKENS):
        super().__init__()
        self.model = model  # the PEFT or plain model: its parameters are the ones trained
        self.chunk = chunk
        # FSDP's transformer auto-wrap shards each decoder layer as its own unit; it finds the
        # layer classes by this attribute on the module it is given
        self._no_split_modules = list(getattr(base_causal_lm(model), "_no_split_modules", None) or [])

    def forward(self, input_ids, position_ids, attention_mask, targets, doc_lengths=None):
        lm = base_causal_lm(self.model)
        # doc_lengths (packed rows under attention.DOC_ATTN) rides through transformers' **kwargs
        # down to the attention function; other implementations never see the keyword
        extra = {} if doc_lengths is None else {"doc_lengths": doc_lengths}
        out = lm.get_decoder()(
            input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False, **extra
        )
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        return supervised_ce_sum(out.last_hidden_state, targets, lm.get_output_embeddings(),
                                 chunk=self.chunk, softcap=softcap)
