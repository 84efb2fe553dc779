"""Log-likelihood scoring: multiple choice from a shared KV cache, and rolling-window perplexity.

Tokenisation follows lm-evaluation-harness 0.4 (HFLM) so scores are comparable:
- `encode_pair`: trailing spaces of the context move to the continuation; context + continuation
  are encoded together and split at the context's own token length; no special tokens; an empty
  context becomes the prefix token (BOS, else EOS).
- inputs longer than the model's context are cut from the left (lm-eval keeps the last
  max_length + 1 tokens).

The speed-up over lm-eval: lm-eval runs the whole context once per choice, in padded batches,
and projects every position onto the vocabulary. Here each item becomes one sequence
[context | choice 0 | choice 1 | ...] in which every choice sees the context and itself; items are
packed end to end into rows of a token budget, each under its own small attention
(packed_attention.py), so the context runs once, no pad token is computed, and logits are
projected only where a continuation token is predicted. Items that share context tokens (two
questions about one passage, a context that extends another) are laid out as a token tree
(token_tree.py) so the shared tokens run once too. Perplexity windows are packed the same way.
`score_reference` is the plain one-sequence-per-choice computation, used for items whose
context must be truncated and by the parity tests; method="cache" (contexts into a KV cache
expanded per choice) is kept as a second, independent implementation.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from tunelab.infer import token_tree
from tunelab.infer.decode import cache_kwarg, common_prefix, prefix_cache
from tunelab.infer.packed_attention import block_mask, packed_attention
from tunelab.models.loading import max_length

# A token prefix every item shares is run once into a KV cache when it is at least this long
# (shorter ones save less than the extra attention inputs cost).
MIN_SHARED_PREFIX = 16
# devices whose packed rows run as one flex_attention call per layer (packed_attention.block_mask);
# elsewhere each segment runs its own small sdpa, the faster path on a CPU
FLEX_DEVICES = ("cuda",)

# Token budget of a packed row per unit of batch_size: batch 16 -> rows of 2,048 tokens. Rows of
# ~2k tokens keep the matrix multiplies large on CPU while the per-item attention stays small.
TOKENS_PER_ITEM = 128

# Rows of logits turned into log-probabilities at a time: a (32, 49152) fp32 block (6 MB) stays
# in cache; on 2 CPU cores 32-row blocks took 0.4x the time of one pass over 2,800 rows.
LOGIT_CHUNK = 32

Pair = tuple[list[int], list[int]]  # (context token ids, continuation token ids)


def prefix_token_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, context: str, continuation: str) -> Pair:
    """lm-eval's `_encode_pair`: split context+continuation at the context's token length."""
    if context == "":
        return [prefix_token_id(tokenizer)], _encode(tokenizer, continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def _device(model):
    return next(model.parameters()).device


# ---------------------------------------------------------------- reference (one sequence per pair)
@torch.inference_mode()
def score_pairs(model, pairs: Sequence[Pair], *, max_len: int, batch_size: int = 1) -> list[tuple[float, bool]]:
    """(summed log-likelihood, is_greedy) of each continuation given its context, lm-eval style.

    Each pair runs as its own sequence `(ctx + cont)[-(max_len + 1):][:-1]`; rows are right padded,
    which a causal model cannot see, so results do not depend on the batch.
    """
    dev = _device(model)
    out: list[tuple[float, bool]] = []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        inputs = [(c + k)[-(max_len + 1):][:-1] for c, k in chunk]
        width = max(len(x) for x in inputs)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, x in enumerate(inputs):
            ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        logp = F.log_softmax(model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits.float(), dim=-1)
        for r, ((_, cont), x) in enumerate(zip(chunk, inputs)):
            n = len(cont)
            lp = logp[r, len(x) - n : len(x)]  # (n, V): the positions that predict the continuation
            target = torch.tensor(cont, device=lp.device)
            ll = lp.gather(-1, target[:, None]).sum().item()
            out.append((ll, bool((lp.argmax(-1) == target).all())))
    return out


def score_reference(model, tokenizer, context: str, continuations: Sequence[str]) -> list[tuple[float, bool]]:
    pairs = [encode_pair(tokenizer, context, c) for c in continuations]
    return score_pairs(model, pairs, max_len=max_length(model, tokenizer))


# ---------------------------------------------------------------- multiple choice from a shared cache
@torch.inference_mode()
def score_choices(
    model,
    tokenizer,
    requests: Sequence[tuple[str, Sequence[str]]],
    *,
    batch_size: int = 16,
    method: str = "packed",
    on_batch: Optional[Callable[[int], None]] = None,
    reuse_prefix: bool = True,
) -> list[list[tuple[float, bool]]]:
    """For each (context, continuations) request: [(loglik, is_greedy) per continuation].

    `method`: "packed" (default): every item is [context | choices] under its own small mask,
    items packed padding-free into rows of `batch_size * TOKENS_PER_ITEM` tokens; or "cache":
    batches of `batch_size` items, contexts into a KV cache expanded per choice. Both encode each
    context once; scores do not depend on the batch size (tests/infer/test_loglik.py).
    `reuse_prefix` (packed): the token prefix all contexts share (few-shot demonstrations chosen
    with `first_n`, a system prompt) runs once into a KV cache that every item attends to, and
    context tokens that some items share run once in a token tree; False scores every item alone.
    """
    if method not in ("packed", "cache"):
        raise ValueError(f"method must be 'packed' or 'cache', got {method!r}")
    max_len = max_length(model, tokenizer)
    encoded: list[tuple[list[int], list[list[int]]]] = []
    for ctx, conts in requests:
        pairs = [encode_pair(tokenizer, ctx, c) for c in conts]
        encoded.append((pairs[0][0], [k for _, k in pairs]))
    results: list[Optional[list[tuple[float, bool]]]] = [None] * len(requests)
    shared = []
    for i, (ctx, conts) in enumerate(encoded):
        if len(ctx) + max(len(k) for k in conts) > max_len + 1 or min(len(k) for k in conts) == 0:
            # Truncation cuts each choice's context differently: no shared prefix to reuse.
            results[i] = score_pairs(model, [(ctx, k) for k in conts], max_len=max_len)
        else:
            shared.append(i)
    if method == "packed":
        prefix = shared_prefix([encoded[i][0] for i in shared]) if reuse_prefix else []
        items = [(encoded[i][0][len(prefix):], encoded[i][1]) for i in shared]
        scored = _score_packed(model, items, batch_size * TOKENS_PER_ITEM, on_batch, prefix=prefix,
                               share=reuse_prefix)
        for i, r in zip(shared, scored):
            results[i] = r
    else:
        shared.sort(key=lambda i: (-len(encoded[i][0]), i))
        for s in range(0, len(shared), batch_size):
            idx = shared[s : s + batch_size]
            for i, r in zip(idx, _score_batch_cached(model, [encoded[i] for i in idx])):
                results[i] = r
            if on_batch:
                on_batch(len(idx))
    if on_batch and len(shared) < len(requests):
        on_batch(len(requests) - len(shared))
    return results  # type: ignore[return-value]


def shared_prefix(contexts: Sequence[list[int]]) -> list[int]:
    """The longest token prefix all `contexts` share, leaving each at least its last token (that
    token predicts the first continuation token, so it must run with the item); [] when shorter
    than MIN_SHARED_PREFIX or fewer than two contexts. Found on tokens, not text, so reuse is
    exact whatever the tokenizer does at the prefix's boundary."""
    if len(contexts) < 2:
        return []
    n = min(common_prefix(contexts), min(len(c) for c in contexts) - 1)
    return list(contexts[0][:n]) if n >= MIN_SHARED_PREFIX else []


def _prefix_kv(model, prefix: list[int]):
    """The prefix run once (positions 0..P-1, the model's own attention): per layer (keys, values),
    each (1, Hkv, P, D), rotary positions already applied, as a KV cache holds them."""
    return [(layer.keys, layer.values) for layer in prefix_cache(model, prefix).layers]


def _units(items: list[tuple[list[int], list[list[int]]]], budget: int, share: bool) -> list[token_tree.Segment]:
    """The token trees packed rows are made of (`share=False`: every item alone)."""
    return token_tree.units(items, budget, token_tree.MIN_BRANCH if share else sys.maxsize)


def packed_token_count(items: Sequence[tuple[list[int], list[list[int]]]], *, batch_size: int = 16,
                       reuse_prefix: bool = True) -> int:
    """Tokens the packed path runs through the model for encoded `items` ((context ids, [choice
    ids, ...])): the shared prefix once, then every tree's segments; counted from the layout, no model."""
    prefix = shared_prefix([c for c, _ in items]) if reuse_prefix else []
    cut = [(list(c[len(prefix):]), [list(k) for k in conts]) for c, conts in items]
    return len(prefix) + sum(u.size() for u in _units(cut, batch_size * TOKENS_PER_ITEM, reuse_prefix))


@torch.inference_mode()
def _score_packed(model, items: list[tuple[list[int], list[list[int]]]], budget: int,
                  on_item: Optional[Callable[[int], None]] = None,
                  prefix: Sequence[int] = (), share: bool = True) -> list[list[tuple[float, bool]]]:
    """All items, padding-free: token trees (token_tree.py) packed end to end into rows of `budget` tokens.

    Items that share context tokens run them once (`share`); each segment attends only to its
    ancestors and itself (packed_attention.py), so an item's scores do not depend on its neighbours
    or on the budget; no pad token is ever computed, and logits are projected only where a
    continuation token is predicted. With a `prefix` (tokens that precede every item's context,
    already cut from it) the prefix runs once and every segment attends to its keys and values,
    positions continuing after it.
    """
    dev = _device(model)
    units = _units(items, budget, share)
    extra = {"item_prefix": _prefix_kv(model, list(prefix))} if prefix else {}
    out: list[Optional[list[tuple[float, bool]]]] = [None] * len(items)
    with packed_attention(model):
        for row in token_tree.pack_rows([u.size() for u in units], budget):
            plan = token_tree.lay_out([units[i] for i in row], len(prefix), dev)
            flex = ({"item_block_mask": block_mask(plan.spans, len(prefix), len(plan.ids), dev)}
                    if dev.type in FLEX_DEVICES else {})
            logits = _logits_at(model, torch.tensor([plan.ids], device=dev), None,
                                torch.tensor([plan.positions], device=dev), torch.tensor([plan.keep], device=dev),
                                item_spans=plan.spans, **extra, **flex)  # (kept, V)
            at, target, choice, owners = [], [], [], []  # per scored token: kept row, token id, choice
            for i, first in plan.leaves:
                start = first + 1  # `first` predicts every choice's first token
                for k in items[i][1]:
                    at += [first, *range(start, start + len(k) - 1)]
                    target += k
                    choice += [len(owners)] * len(k)
                    owners.append(i)
                    start += len(k) - 1
            lls, greedy = _choice_scores(logits.reshape(-1, logits.shape[-1]), at, target, choice, len(owners))
            for i, ll, g in zip(owners, lls, greedy):
                out[i] = (out[i] or []) + [(ll, g)]
            if on_item:
                on_item(len(plan.leaves))
    return out  # type: ignore[return-value]


def _choice_scores(logits: torch.Tensor, at: list[int], target: list[int], choice: list[int],
                   n: int) -> tuple[list[float], list[bool]]:
    """Per choice: summed log-probability of its tokens, and whether each is the argmax.

    logits (kept, V); token t is target[t] predicted at logits row at[t], of choice choice[t]
    (a choice's tokens are consecutive). The log-softmax runs LOGIT_CHUNK rows at a time into
    one reused buffer: a full one would write a second (kept, V) fp32 tensor (~550 MB for a row of
    16 items with long endings), and fresh tensors cost page faults on CPU. It is torch's own
    log-softmax, summed in fp32 per choice, as lm-eval computes it: torch's kernel differs from
    logit - logsumexp by ~6e-6 per token, which over a 600-token document would add up beyond 1e-4.
    """
    dev = logits.device
    at_t = torch.tensor(at, device=dev)
    target_t = torch.tensor(target, device=dev)
    picked = torch.empty(len(at), device=dev)  # (tokens,) log p of each scored token
    hit = torch.empty(len(at), dtype=torch.bool, device=dev)
    order = torch.argsort(at_t, stable=True)  # the scored tokens by the logits row they read
    rows = at_t[order]
    bounds = torch.searchsorted(rows, torch.arange(0, len(logits) + LOGIT_CHUNK, LOGIT_CHUNK, device=dev)).tolist()
    buf = None
    for c, s in enumerate(range(0, len(logits), LOGIT_CHUNK)):
        if bounds[c] == bounds[c + 1]:
            continue  # no scored token reads these rows
        x = logits[s : s + LOGIT_CHUNK].float()  # (chunk, V); bf16 logits on CUDA are scored in fp32
        buf = torch.empty_like(x) if buf is None or len(buf) < len(x) else buf[: len(x)]
        torch.log_softmax(x, dim=-1, out=buf)
        idx = order[bounds[c] : bounds[c + 1]]  # the tokens read here
        local = rows[bounds[c] : bounds[c + 1]] - s
        picked[idx] = buf[local, target_t[idx]]
        hit[idx] = buf.argmax(dim=-1)[local] == target_t[idx]
    lengths = torch.bincount(torch.tensor(choice, device=dev), minlength=n).tolist()
    sums = torch.stack([p.sum() for p in torch.split(picked, lengths)])  # (n,) fp32, like lm-eval
    greedy = torch.stack([h.all() for h in torch.split(hit, lengths)])
    return sums.tolist(), greedy.tolist()


def _logits_at(model, ids, mask, positions, keep, **kwargs):
    """Logits at the `keep` positions only, flattened to (n_kept, V).

    transformers >= 5 takes a boolean (B, T) `logits_to_keep` and skips the vocabulary projection
    elsewhere (most of the positions are context); older versions get full logits, then indexing.
    """
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401  (the feature's marker)

        # use_cache=False: nothing is decoded after this pass, so building a KV cache is wasted copying
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                     use_cache=False, **kwargs).logits
    except ImportError:
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **kwargs).logits[keep]


def _score_batch_cached(model, items: list[tuple[list[int], list[list[int]]]]) -> list[list[tuple[float, bool]]]:
    """Two forwards per batch: the contexts (left padded) into a KV cache, then the cache expanded
    to one row per choice and the continuation tokens run on top of it."""
    from transformers import DynamicCache

    dev = _device(model)
    b, width = len(items), max(len(c) for c, _ in items)
    ids = torch.zeros((b, width), dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for r, (ctx, _) in enumerate(items):  # left padding: every context ends at column width-1
        ids[r, width - len(ctx):] = torch.tensor(ctx)
        mask[r, width - len(ctx):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # real-token positions, as if each row ran alone
    cache = DynamicCache()
    ckw = {cache_kwarg(model): cache}
    first = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **ckw).logits
    first = F.log_softmax(first[:, -1, :].float(), dim=-1)  # (b, V): predicts each continuation's 1st token

    rows = [(r, k) for r, (_, conts) in enumerate(items) for k in conts]  # one row per choice
    tail = max(len(k) - 1 for _, k in rows)  # continuation tokens that must run through the model
    rest = None
    if tail > 0:
        sel = torch.tensor([r for r, _ in rows], device=dev)
        cache.reorder_cache(sel)  # (b, ...) -> (R, ...): each item's cache repeated per choice
        cid = torch.zeros((len(rows), tail), dtype=torch.long)
        cmask = torch.zeros((len(rows), tail), dtype=torch.long)
        for j, (_, k) in enumerate(rows):  # right padding after the real continuation tokens
            cid[j, : len(k) - 1] = torch.tensor(k[:-1])
            cmask[j, : len(k) - 1] = 1
        cpos = pos[sel, -1:] + 1 + torch.arange(tail, device=dev)  # (R, tail)
        full_mask = torch.cat([mask[sel], cmask.to(dev)], dim=1)
        logits = model(input_ids=cid.to(dev), attention_mask=full_mask, position_ids=cpos, use_cache=True, **ckw).logits
        rest = F.log_softmax(logits.float(), dim=-1)  # (R, tail, V)

    out: list[list[tuple[float, bool]]] = [[] for _ in items]
    for j, (r, k) in enumerate(rows):
        ll = first[r, k[0]].item()
        greedy = int(first[r].argmax()) == k[0]
        if len(k) > 1:
            target = torch.tensor(k[1:], device=dev)
            lp = rest[j, : len(k) - 1]  # (n-1, V)
            ll += lp.gather(-1, target[:, None]).sum().item()
            greedy = greedy and bool((lp.argmax(-1) == target).all())
        out[r].append((ll, greedy))
    return out


# ---------------------------------------------------------------- perplexity (rolling windows)
def rolling_windows(tokens: list[int], prefix: int, max_seq_len: int) -> list[Pair]:
    """lm-eval's get_rolling_token_windows(context_len=1) + make_disjoint_window.

    Every token is predicted exactly once; each window after the first is conditioned on as many
    preceding tokens as fit in the model's context.
    """
    if not tokens:
        return []
    first = min(max_seq_len, len(tokens))
    windows = [([prefix] + tokens[: first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_seq_len)
        end = done + n
        ctx = tokens[max(0, end - max_seq_len - 1) : end - 1]
        windows.append((ctx, tokens[end - n : end]))
        done = end
    # disjoint: drop from the context the tokens the continuation already feeds in
    return [(c[: len(c) - (len(k) - 1)], k) for c, k in windows]


def rolling_loglik(model, tokenizer, texts: Sequence[str], *, batch_size: int = 4,
                   max_seq_len: Optional[int] = None,
                   on_batch: Optional[Callable[[int], None]] = None,
                   tokens: Optional[Sequence[list[int]]] = None) -> list[tuple[float, int]]:
    """(summed log-likelihood, token count) of each whole text.

    `tokens[t]`, when given, are text t's ids already encoded without special tokens (the
    encoded-data cache, templates/cache.token_lists); else each text is encoded here.

    The windows of all texts are packed padding-free into rows of `batch_size` windows' worth of
    tokens (`batch_size * max_seq_len`), each window under its own causal attention.
    """
    max_len = max_seq_len or max_length(model, tokenizer)
    windows: list[Pair] = []
    owner: list[int] = []
    counts = []
    for t, text in enumerate(texts):
        toks = tokens[t] if tokens is not None else _encode(tokenizer, text)
        counts.append(len(toks))
        for w in rolling_windows(toks, prefix_token_id(tokenizer), max_len):
            windows.append(w)
            owner.append(t)
    totals = [0.0] * len(texts)
    with torch.inference_mode():
        scored = _score_packed(model, [(c, [k]) for c, k in windows], max(batch_size, 1) * max_len)
    for t, ((ll, _),) in zip(owner, scored):
        totals[t] += ll
    if on_batch:
        on_batch(len(texts))
    return list(zip(totals, counts))
