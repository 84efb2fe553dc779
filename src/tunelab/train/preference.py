"""Preference tuning (DPO, ORPO): pairs packed with one copy of their prompt, and their losses.

A pair is laid out as ONE document of the packed row:

    [prompt P tokens | chosen answer without its last token | rejected answer without its last token]

Both answers attend to the prompt and to themselves, never to each other (the per-document
attention of packing, with the pair's own (n, n) mask: models/attention.py), and their positions
both continue from the prompt's end, so each answer's log-probabilities are those of
[prompt | answer] run alone, while the prompt runs once per pair instead of twice. An answer's
first token is predicted from the prompt's last position (which serves both answers), its other
tokens from its own positions; its last token is predicted, never fed. This is the token tree
that evaluation's multiple-choice scoring uses (infer/token_tree.py), for two choices.

The per-sequence log-probability is the SUM over the answer's tokens (as TRL's DPOTrainer); ORPO
and IPO use the per-token mean. Losses, as TRL 1.16 computes them (tests/train/test_preference_trl.py):

    DPO   Δ = (log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))
          sigmoid: -(1-ε) log σ(βΔ) - ε log σ(-βΔ)   (ε = label_smoothing: conservative DPO, as
                   TRL < 1.0 had it; TRL 1.16's sigmoid has no ε; ε = 0 is the DPO paper's loss)
          hinge:   max(0, 1 - βΔ)
          ipo:     (Δ' - 1/(2β))²  with Δ' taken on per-token mean log-ratios
          rewards: β (log π - log π_ref) for each side
    ORPO  NLL of the chosen answer's tokens - λ log σ(log odds(c) - log odds(r)),
          odds(y) = p / (1 - p) with p = exp(mean token log-prob); rewards: λ × mean log-prob

Every loss is a mean over pairs (the NLL a mean over chosen tokens); a micro-batch returns its
share with the step's GLOBAL counts as denominators, so accumulation and processes do not change it
(the same rule as the SFT loss, loop.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunelab.errors import TunelabError
from tunelab.io import atomic_write_json
from tunelab.models.attention import Span
from tunelab.train.loss import CHUNK_TOKENS, KEEP_LOGITS_BYTES, base_causal_lm
from tunelab.train.packing import branch_inputs, branch_mask

PROMPT, CHOSEN, REJECTED = -1, 0, 1  # branch of a token inside its pair


@dataclass
class PairBatch:
    """Pairs packed in one row: (1, T) tensors, plus where each answer token is scored."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    doc_ids: torch.Tensor  # pair index per token; -1 on padding
    branch: torch.Tensor  # PROMPT / CHOSEN / REJECTED per token (PROMPT on padding)
    score_index: torch.Tensor  # (S,) row position whose logits predict each scored token
    score_target: torch.Tensor  # (S,) the scored token
    score_seq: torch.Tensor  # (S,) which sequence: 2i chosen of pair i, 2i + 1 its rejected
    seq_tokens: torch.Tensor  # (2n,) scored tokens of each sequence
    spans: list = field(default_factory=list)  # one Span per pair, for the per-document kernel
    n_pairs: int = 0
    n_tokens: int = 0  # real tokens fed to the model
    n_supervised: int = 0  # scored answer tokens
    n_chosen: int = 0  # scored chosen tokens (ORPO's NLL denominator)
    attn_pairs: int = 0  # (query, key) pairs attention computes: the cost model's count
    standard_tokens: int = 0  # tokens the usual DPO forward feeds ([prompt|chosen] + [prompt|rejected])

    def to(self, device) -> "PairBatch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        spans = [(s, n, None if m is None else move(m)) for s, n, m in self.spans]
        return PairBatch(move(self.input_ids), move(self.position_ids), move(self.doc_ids), move(self.branch),
                         move(self.score_index), move(self.score_target), move(self.score_seq),
                         move(self.seq_tokens), spans, self.n_pairs, self.n_tokens, self.n_supervised,
                         self.n_chosen, self.attn_pairs, self.standard_tokens)


def pair_length(ex) -> int:
    """Tokens one pair feeds the model: its prompt once, each answer but its last token."""
    return len(ex.prompt) + len(ex.chosen) - 1 + len(ex.rejected) - 1


def collate_pairs(examples: Sequence, *, pad_id: int = 0, width: Optional[int] = None) -> PairBatch:
    """EncodedPairs (templates/preference.py) -> one packed PairBatch (padded to `width` if given)."""
    ids, pos, doc, branch, spans = [], [], [], [], []
    s_index, s_target, s_seq, seq_tokens = [], [], [], []
    pairs_attn = standard = 0
    for d, ex in enumerate(examples):
        start, P = len(ids), len(ex.prompt)
        ids += ex.prompt
        pos += range(P)
        mine = [PROMPT] * P
        for side, answer in ((CHOSEN, ex.chosen), (REJECTED, ex.rejected)):
            fed = answer[:-1]
            # answer token j is predicted at the prompt's last position (j = 0) or at fed token j - 1
            s_index += [start + P - 1] + list(range(len(ids), len(ids) + len(fed)))
            s_target += answer
            s_seq += [2 * d + side] * len(answer)
            seq_tokens.append(len(answer))
            ids += fed
            pos += range(P, P + len(fed))
            mine += [side] * len(fed)
            standard += P + len(answer)
        branch += mine
        doc += [d] * len(mine)
        spans.append((start, len(mine), branch_mask(mine)))
        # prompt causal once, each answer over prompt + itself
        c, r = len(ex.chosen) - 1, len(ex.rejected) - 1
        pairs_attn += P * (P + 1) // 2 + c * P + c * (c + 1) // 2 + r * P + r * (r + 1) // 2
    n_real = len(ids)
    if width is not None:
        if width < n_real:
            raise ValueError(f"{n_real} packed tokens do not fit a row of width {width}")
        pad = width - n_real
        ids += [pad_id] * pad
        pos += range(pad)
        doc += [-1] * pad
        branch += [PROMPT] * pad
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    seq = t(seq_tokens)
    return PairBatch(
        input_ids=t([ids]), position_ids=t([pos]), doc_ids=t([doc]), branch=t([branch]),
        score_index=t(s_index), score_target=t(s_target), score_seq=t(s_seq), seq_tokens=seq, spans=spans,
        n_pairs=len(examples), n_tokens=n_real, n_supervised=len(s_target), n_chosen=int(seq[0::2].sum()),
        attn_pairs=pairs_attn, standard_tokens=standard)


def _token_logps(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias, softcap) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()  # (c, V): fp32 for a stable log-softmax
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return -F.cross_entropy(logits, targets, reduction="none")  # (c,)


class PreferenceLM(nn.Module):
    """A causal LM whose forward returns each packed answer's summed log-probability, (2n,).

    It is the module handed to `Accelerator.prepare` (as PackedCausalLM is for SFT), so DDP sees
    the forward. Logits exist only at scored positions, chunk by chunk (loss.py's reasoning).
    """

    def __init__(self, model: nn.Module, *, chunk: int = CHUNK_TOKENS):
        super().__init__()
        self.model = model
        self.chunk = chunk

    def forward(self, input_ids, position_ids, attention_mask, score_index, score_target, score_seq, n_seqs: int,
                doc_spans: Optional[list[Span]] = None):
        lm = base_causal_lm(self.model)
        extra = {} if doc_spans is None else {"doc_spans": doc_spans}
        out = lm.get_decoder()(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                               use_cache=False, **extra)
        hidden = out.last_hidden_state[0].index_select(0, score_index)  # (S, H)
        head = lm.get_output_embeddings()
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        recompute = (torch.is_grad_enabled() and hidden.requires_grad
                     and hidden.shape[0] * head.weight.shape[0] * 4 > KEEP_LOGITS_BYTES)
        parts = []
        for s in range(0, hidden.shape[0], self.chunk):
            args = (hidden[s:s + self.chunk], score_target[s:s + self.chunk], head.weight, head.bias, softcap)
            parts.append(checkpoint(_token_logps, *args, use_reentrant=False) if recompute else _token_logps(*args))
        token_logps = torch.cat(parts)  # (S,)
        return token_logps.new_zeros(n_seqs).index_add(0, score_seq, token_logps)  # (2n,)


def batch_forward(module, batch: PairBatch, impl: str) -> torch.Tensor:
    """Summed log-probabilities (2n,) of a PairBatch through a PreferenceLM (or its DDP wrapper)."""
    return module(**branch_inputs(batch, impl), score_index=batch.score_index, score_target=batch.score_target,
                  score_seq=batch.score_seq, n_seqs=2 * batch.n_pairs)


# ---------------------------------------------------------------- losses
def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation on either side of -ln 2 (Mächler, 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


@dataclass
class Norms:
    """The step's global denominators (all micro-batches and processes)."""

    pairs: int
    chosen_tokens: int


def PreferenceObjective(method: str, settings):
    """The pair loss of preference method `method` (its objective's own code, objectives/), bound to
    `settings` (a PreferenceConfig): (logps, seq_tokens, norms, ref) -> (loss share, statistic SUMS)."""
    from functools import partial

    from tunelab.train.objectives import get_method

    return partial(get_method(method).objective.pair_loss, settings)


def reward_stats(chosen, rejected, logps_c, logps_r) -> dict[str, torch.Tensor]:
    """TRL's rewards/* and logps/* statistics, as SUMS over the micro-batch's pairs."""
    return {"rewards/chosen": chosen.sum(), "rewards/rejected": rejected.sum(),
            "rewards/accuracies": (chosen > rejected).float().sum(),
            "rewards/margins": (chosen - rejected).sum(),
            "logps/chosen": logps_c.sum(), "logps/rejected": logps_r.sum()}


def interleave(ref_rows: torch.Tensor) -> torch.Tensor:
    """(n, 2) [chosen, rejected] rows -> (2n,) [c0, r0, c1, r1, ...] as the batch orders sequences."""
    return ref_rows.reshape(-1)


@torch.no_grad()
def reference_logps(module: nn.Module, examples: Sequence, plan: list[list[int]], *, impl: str, device,
                    pad_id: int, adapter: bool, width: Optional[int] = None) -> torch.Tensor:
    """(len(examples), 2) summed log-probabilities of every pair's answers under the reference model.

    The reference is the model as it is now, before any step: with an adapter, the base with the
    adapter switched off (PEFT's disable_adapter: no second copy of the weights); with full weights,
    the initial weights. Computed once per pair and kept with the run (objectives/dpo.py).
    """
    import contextlib

    inner = module.model
    out = torch.zeros(len(examples), 2, dtype=torch.float32)
    was_training = module.training
    module.eval()  # dropout off, as a reference model is
    try:
        with inner.disable_adapter() if adapter else contextlib.nullcontext():
            for b in plan:
                batch = collate_pairs([examples[i] for i in b], pad_id=pad_id, width=width).to(device)
                logps = batch_forward(module, batch, impl).float().cpu()  # (2n,)
                out[torch.tensor(b)] = logps.reshape(-1, 2)
    finally:
        module.train(was_training)
    return out


class ReferenceStore:
    """Reference log-probabilities of a run's pairs, (n, 2) per split ("train", "eval"), NaN where
    not computed yet. Saved as JSON {"train": [[chosen, rejected] or null, ...], "eval": [...]}; files
    of earlier versions hold every row, and read back the same."""

    def __init__(self, n_train: int, n_eval: int):
        self.rows = {"train": torch.full((n_train, 2), math.nan), "eval": torch.full((n_eval, 2), math.nan)}
        self.changed = False

    def missing(self, split: str, idx: Sequence[int]) -> bool:
        return bool(torch.isnan(self.rows[split][torch.tensor(list(idx), dtype=torch.long)]).any())

    def fill(self, split: str, idx: Sequence[int], values: torch.Tensor) -> None:
        self.rows[split][torch.tensor(list(idx), dtype=torch.long)] = values
        self.changed = True

    def get(self, split: str, idx: Sequence[int]) -> torch.Tensor:
        """(2n,) interleaved [c0, r0, c1, ...] of rows `idx`."""
        return interleave(self.rows[split][idx])

    def computed(self, split: str) -> int:
        """Rows whose reference is known."""
        return int((~torch.isnan(self.rows[split][:, 0])).sum())

    def read(self, path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        n_train, n_eval = len(self.rows["train"]), len(self.rows["eval"])
        if len(data["train"]) != n_train or len(data["eval"]) != n_eval:
            raise TunelabError(f"{path} holds {len(data['train'])} + {len(data['eval'])} pairs but the data has "
                               f"{n_train} + {n_eval}; the data changed since the run began: start over with "
                               "--overwrite")
        for split, rows in self.rows.items():
            for i, row in enumerate(data[split]):
                if row is not None:
                    rows[i] = torch.tensor(row, dtype=torch.float32)

    def write(self, path) -> None:
        def listed(t: torch.Tensor) -> list:
            return [None if math.isnan(c) else [c, r] for c, r in t.tolist()]

        atomic_write_json(path, {k: listed(v) for k, v in self.rows.items()})
        self.changed = False
