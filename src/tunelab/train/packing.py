"""Token-budget batching and padding-free packing.

A micro-batch is a list of documents whose tokens together fit `batch_tokens`. With packing they
are laid end to end in ONE row (no pad tokens at all); position ids restart at 0 for every
document, and the attention mask is block-diagonal causal so no document sees another. Reset
position ids alone do NOT isolate documents in transformers (DESIGN §7), hence the explicit mask:
- CPU / sdpa: a 4D boolean mask [B, 1, T, T] (True = may attend), passed as `attention_mask`;
  transformers hands a 4D mask to the attention kernel unchanged. Its cost is O(T²), so on CPU a
  budget of 1-4k tokens is the sweet spot.
- CPU default (attention.DOC_ATTN): no mask at all; the document lengths go to a registered
  attention function that runs causal sdpa on each document's slice, O(Σ Lᵢ²) (attention.py).
- CUDA: flex_attention with a document BlockMask; only the blocks on the diagonal are computed,
  so attention costs O(Σ Lᵢ²) instead of O(T²).

Fixed shapes: a packed row is padded up to `row_width(batch_tokens)` (the budget rounded up to a
multiple of SHAPE_MULTIPLE), so every training micro-batch reaches the model as ONE shape,
[1, row_width], for the whole run. torch.compile and flex_attention's BlockMask then compile once
instead of once per new row length (on an H200 a step with a new length ran 30-60x slower). The
padding is its own document (doc id -1, positions from 0, targets IGNORE): it is never trained,
no real token attends to it, and the per-document CPU path skips its attention entirely.

Labels are shifted here, per document, into `targets` (targets[t] = label of token t+1), so the
last token of one document never learns to predict the first token of the next and the loss
module can gather supervised positions without any further shifting.

Nothing here exists in transformers/accelerate as a library call (TRL's packing either pads or
relies on flash-attention varlen), so it is written by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from tunelab.errors import TunelabError

IGNORE = -100  # the label value cross-entropy skips (PyTorch / HF convention)
# packed rows are padded to a multiple of this: flex_attention's block size, and a width the GPU's
# matmul tiles divide evenly; the cost is at most 127 pad tokens per row on top of the budget
SHAPE_MULTIPLE = 128


def row_width(batch_tokens: int, multiple: int = SHAPE_MULTIPLE) -> int:
    """The one width every packed training row is padded to: the budget rounded up to `multiple`."""
    return -(-batch_tokens // multiple) * multiple


def check_budget(lengths: Sequence[int], batch_tokens: int, *, key: str = "train.batch_tokens") -> None:
    """A row longer than the token budget can never be batched: say so with both numbers and the fix."""
    longest = max(lengths, default=0)
    if longest > batch_tokens:
        raise TunelabError(
            f"{key}={batch_tokens} is smaller than the longest training row ({longest} tokens); "
            f"set {key}={longest} or more, or lower data.max_length to {batch_tokens} or less"
        )


def plan_batches(
    lengths: Sequence[int],
    batch_tokens: int,
    *,
    seed: int,
    epoch: int = 0,
    packing: bool = True,
    bucket_batches: int = 32,
) -> list[list[int]]:
    """Split example indices into micro-batches of at most `batch_tokens` tokens.

    Length-aware bucketing: the examples are shuffled (seed, epoch), cut into buckets of about
    `bucket_batches` micro-batches' worth of tokens, and inside each bucket filled longest-first
    (first-fit decreasing), which packs rows almost full. Without packing the cost of a batch is
    rows × its longest row (the padded size), so similar lengths go together. The batch order is
    then shuffled again, so the run does not see all long documents first.
    Deterministic for (lengths, batch_tokens, seed, epoch): resume relies on it.
    """
    check_budget(lengths, batch_tokens)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    bucket_tokens = batch_tokens * bucket_batches
    buckets: list[list[int]] = [[]]
    filled = 0
    for i in order:
        if filled + lengths[i] > bucket_tokens and buckets[-1]:
            buckets.append([])
            filled = 0
        buckets[-1].append(int(i))
        filled += lengths[i]

    batches: list[list[int]] = []
    for bucket in buckets:
        # stable sort keeps the seeded order among equal lengths
        bucket.sort(key=lambda i: -lengths[i])
        if packing:
            batches.extend(_first_fit(bucket, lengths, batch_tokens))
        else:
            batches.extend(_padded_fill(bucket, lengths, batch_tokens))
    perm = rng.permutation(len(batches))
    return [batches[k] for k in perm]


def _first_fit(sorted_idx: list[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted_idx:
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(budget - lengths[i])
    return bins


def _padded_fill(sorted_idx: list[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    # sorted longest first, so the first row of a batch sets its padded width
    batches: list[list[int]] = []
    for i in sorted_idx:
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@dataclass
class Batch:
    """One micro-batch, ready for the model. All tensors are (B, T)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor  # next-token label at each position, IGNORE where not trained
    doc_ids: torch.Tensor  # document index per token; -1 on padding
    n_tokens: int  # real (non-pad) tokens
    n_supervised: int  # positions that carry a loss
    attn_pairs: int = 0  # causal (query, key) pairs inside documents, Σ Lᵢ(Lᵢ+1)/2: the attention work

    def to(self, device) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.position_ids), move(self.targets), move(self.doc_ids),
                     self.n_tokens, self.n_supervised, self.attn_pairs)


def shifted_targets(labels: Sequence[int]) -> list[int]:
    """targets[t] = labels[t + 1]; the last position of a document predicts nothing."""
    return list(labels[1:]) + [IGNORE]


def collate(examples: Sequence[Any], *, packing: bool = True, pad_id: int = 0, width: int | None = None) -> Batch:
    """Examples (anything with `.input_ids` and `.labels`) -> one Batch.

    packing=True: one row of Σ Lᵢ tokens; with `width` the row is padded to exactly `width`
    tokens by one pad document (doc id -1, positions 0.., targets IGNORE), so every row has the
    same shape. packing=False: one row per example, right-padded to the longest (doc id -1 and
    target IGNORE on pads).
    """
    lengths = [len(ex.input_ids) for ex in examples]
    if packing:
        ids, pos, tgt, doc = [], [], [], []
        for d, ex in enumerate(examples):
            n = len(ex.input_ids)
            ids.extend(ex.input_ids)
            pos.extend(range(n))
            tgt.extend(shifted_targets(ex.labels))
            doc.extend([d] * n)
        if width is not None:
            pad = width - len(ids)
            if pad < 0:
                raise ValueError(f"{len(ids)} packed tokens do not fit a row of width {width}")
            ids.extend([pad_id] * pad)
            pos.extend(range(pad))
            tgt.extend([IGNORE] * pad)
            doc.extend([-1] * pad)
        rows = ([ids], [pos], [tgt], [doc])
    else:
        width = max(len(ex.input_ids) for ex in examples)
        rows = ([], [], [], [])
        for ex in examples:
            n, pad = len(ex.input_ids), width - len(ex.input_ids)
            rows[0].append(list(ex.input_ids) + [pad_id] * pad)
            rows[1].append(list(range(n)) + [0] * pad)
            rows[2].append(shifted_targets(ex.labels) + [IGNORE] * pad)
            rows[3].append([0] * n + [-1] * pad)
    input_ids, position_ids, targets, doc_ids = (torch.tensor(r, dtype=torch.long) for r in rows)
    return Batch(
        input_ids=input_ids,
        position_ids=position_ids,
        targets=targets,
        doc_ids=doc_ids,
        n_tokens=int((doc_ids >= 0).sum()),
        n_supervised=int((targets != IGNORE).sum()),
        attn_pairs=sum(n * (n + 1) // 2 for n in lengths),
    )


def attention_mask(doc_ids: torch.Tensor, impl: str, branch: torch.Tensor | None = None):
    """The mask that keeps every token inside its own document (causal within it).

    `branch` (B, T), for preference pairs (train/preference.py): -1 on a document's shared prompt,
    else the branch (answer) a token belongs to; a token then also never sees another branch.
    impl: the model's attention implementation. flex_attention gets a BlockMask; sdpa a 4D
    boolean [B, 1, T, T]; eager the additive float form of the same (eager ignores booleans).
    Padding tokens (doc -1) attend to themselves only, so no softmax row is empty (NaN-free).
    """
    B, T = doc_ids.shape
    if impl == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        def same_doc_causal(b, h, q, k):
            return (doc_ids[b, q] == doc_ids[b, k]) & (q >= k)

        if branch is not None:
            def same_branch(b, h, q, k):
                return same_doc_causal(b, h, q, k) & ((branch[b, k] == -1) | (branch[b, k] == branch[b, q]))

            return create_block_mask(same_branch, B, None, T, T, device=doc_ids.device,
                                     _compile=doc_ids.device.type == "cuda")

        # compiled on CUDA (as transformers does): the eager builder evaluates all T × T pairs at
        # once; with fixed row shapes it compiles once per run, the closure's doc_ids being an input
        return create_block_mask(same_doc_causal, B, None, T, T, device=doc_ids.device,
                                 _compile=doc_ids.device.type == "cuda")
    same = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()  # (T, T)
    if branch is not None:
        same = same & ((branch[:, None, :] == -1) | (branch[:, None, :] == branch[:, :, None]))  # (B, T, T)
    mask = (same & causal).unsqueeze(1)  # (B, 1, T, T)
    if impl == "eager":
        # additive form: 0 where allowed, the dtype's minimum elsewhere
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
            ~mask, torch.finfo(torch.float32).min
        )
    return mask


def branch_mask(branch: Sequence[int]) -> torch.Tensor:
    """(n, n) boolean for one document of a shared stem (branch -1) and branches (0, 1, ...): causal,
    and a branch token sees the stem and its own branch, never another branch."""
    own = torch.tensor(list(branch))
    visible = (own[None, :] == -1) | (own[None, :] == own[:, None])  # (n, n)
    return torch.ones((len(own), len(own)), dtype=torch.bool).tril() & visible


def branch_inputs(batch, impl: str) -> dict:
    """Keyword arguments for the decoder over a packed row of branched documents, a shared stem (branch
    -1) and branches that see the stem and themselves (a preference pair: preference.py; a GRPO group:
    grpo_math.py). `batch` has input_ids, position_ids, doc_ids, branch and spans: the spans for the
    CPU's per-span kernel, else the 4D (or BlockMask) form of the same visibility."""
    from tunelab.train.attention import DOC_ATTN

    inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
    if impl == DOC_ATTN:
        return {**inputs, "attention_mask": None, "doc_spans": batch.spans}
    return {**inputs, "attention_mask": attention_mask(batch.doc_ids, impl, branch=batch.branch)}


def doc_lengths(doc_ids: torch.Tensor) -> tuple[int, ...] | None:
    """Lengths of the real documents of one packed row (B == 1; padding only at its end), else None.

    The trailing pad document is left out: the per-document attention gives it zeros unseen.
    """
    if doc_ids.shape[0] != 1:
        return None
    ids, counts = torch.unique_consecutive(doc_ids[0], return_counts=True)  # (n_docs,) each
    if bool((ids[:-1] < 0).any()):
        return None  # padding in the middle: not a row collate() builds
    return tuple(counts[ids >= 0].tolist())


def model_inputs(batch: Batch, impl: str) -> dict:
    """Keyword arguments for the decoder: ids, restarting positions, document mask.

    With the per-document implementation a packed row gets its document lengths instead of a
    mask (no O(T²) tensor is ever built); a padded batch still gets the 4D sdpa mask.
    """
    from tunelab.train.attention import DOC_ATTN

    inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
    if impl == DOC_ATTN:
        lengths = doc_lengths(batch.doc_ids)
        if lengths is not None:
            return {**inputs, "attention_mask": None, "doc_lengths": lengths}
        impl = "sdpa"  # DOC_ATTN defers to sdpa whenever a mask is present
    return {**inputs, "attention_mask": attention_mask(batch.doc_ids, impl)}
