"""The decode step shared by batched evaluation (generate.py) and the server (serve/engine.py).

Both decode left-padded rows over one KV cache: prompts are prefilled together, each row's
positions count its real tokens only (a padded row sees exactly the positions it would see
alone), finished rows leave the batch and the cache at once, and every step appends one column.
What differs stays with the callers: generate.py runs a fixed list of prompts with one set of
sampling settings; the engine streams text, samples with per-request settings, and lets waiting
requests join a running batch (`join`) and cuts columns that became padding in every row (`trim`).

A token prefix that every prompt starts with (an instruction, a chat template's system prompt,
fixed demonstrations) is run once (`SharedPrefix`) and its keys/values are copied under each row;
a row then prefills only its remainder, at positions that continue after the prefix. Row layout:
[prefix | padding | remainder], so the prefix columns line up in every row and the padding in the
middle is masked out like left padding is.
"""
from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch


def eos_ids(model, tokenizer) -> set[int]:
    """Every id that ends a generation: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), tokenizer):
        v = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return ids


def cache_kwarg(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); pass whichever this model takes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps forward
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def pad_id(model, tokenizer) -> int:
    """The id written into padding columns (masked out, so any id works): pad, else an EOS, else 0."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return next(iter(eos_ids(model, tokenizer)), 0)


def stop_index(text: str, stop: Sequence[str]) -> Optional[int]:
    """Where the earliest stop string starts in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def positions(mask: torch.Tensor) -> torch.Tensor:
    """(b, width) attention mask -> (b, width) position ids: each row counts its real tokens only,
    so a padded row (left padding, or padding between a shared prefix and its remainder) sees the
    positions it would see alone."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence in `seqs` has in common."""
    first, n = seqs[0], min(len(s) for s in seqs)
    for k in range(n):
        if any(s[k] != first[k] for s in seqs):
            return k
    return n


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p filter over the last dim: probabilities outside the nucleus set to 0 (not renormalised)."""
    p, i = probs.sort(dim=-1, descending=True)
    keep = p.cumsum(-1) - p < top_p  # always keeps the most likely token
    return torch.zeros_like(probs).scatter(-1, i, p * keep)


def row_generator(device: torch.device, seed: int) -> torch.Generator:
    """A row's own sampling generator, so its draws do not depend on the other rows."""
    g = torch.Generator(device="cpu" if device.type == "cpu" else device)
    g.manual_seed(int(seed))
    return g


def plain_layers(cache) -> bool:
    """Every layer of `cache` is a plain growing K/V pair (no sliding window, no quantised cache):
    only then can rows be copied, merged or cut column by column."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def prefix_cache(model, ids: Sequence[int], cache_kw: Optional[str] = None):
    """`ids` run once, alone, into a fresh DynamicCache (positions 0..P-1; only the last token's
    logits are projected, and nobody reads them)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    x = torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)  # (1, P)
    model(input_ids=x, position_ids=positions(torch.ones_like(x)), **{cache_kw or cache_kwarg(model): cache},
          use_cache=True, logits_to_keep=1)
    return cache


class SharedPrefix:
    """A token prefix run once: `ids` and each layer's keys/values, (1, h, P, d)."""

    def __init__(self, ids: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]]):
        self.ids, self.kv = ids, kv

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def run(cls, model, ids: Sequence[int], cache_kw: Optional[str] = None) -> Optional["SharedPrefix"]:
        """Run `ids` into a fresh cache; None when the model's cache layers are not plain growing
        K/V pairs (then a copied prefix could not be extended row by row)."""
        cache = prefix_cache(model, ids, cache_kw)
        if not plain_layers(cache):
            return None
        return cls(list(ids), [(layer.keys, layer.values) for layer in cache.layers])

    def cache_for(self, rows: int):
        """A cache holding the prefix's keys/values under each of `rows` rows."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))  # (rows, h, P, d)
                                            for k, v in self.kv])


class DecodeBatch:
    """Rows decoding together: the KV cache, the attention mask (b, width), each row's next
    position (b, 1) and the logits for each row's next token (b, V)."""

    def __init__(self, model, cache_kw: str, cache, mask: torch.Tensor, next_pos: torch.Tensor, logits: torch.Tensor):
        self.model, self.cache_kw = model, cache_kw
        self.cache, self.mask, self.next_pos, self.logits = cache, mask, next_pos, logits

    @classmethod
    def prefill(cls, model, seqs: Sequence[Sequence[int]], pad: int, cache_kw: Optional[str] = None,
                prefix: Optional[SharedPrefix] = None) -> "DecodeBatch":
        """Run the prompts `seqs` (token ids) left padded into a fresh cache. With `prefix` (every
        seq starts with its ids and is longer), only each seq's remainder is run, on top of a copy
        of the prefix's keys/values. Identical prompts (GRPO's G samples of one prompt, n samples for
        pass@k) are run once and their keys/values copied under each of their rows."""
        from transformers import DynamicCache

        device = next(model.parameters()).device
        cache_kw = cache_kw or cache_kwarg(model)
        distinct: dict[tuple, int] = {}
        which = [distinct.setdefault(tuple(s), len(distinct)) for s in seqs]  # row -> its distinct prompt
        if len(distinct) < len(seqs):
            batch = cls.prefill(model, [list(s) for s in distinct], pad, cache_kw, prefix)
            batch.keep(which)  # the cache's rows selected by index (any cache layer allows it): copies
            return batch
        p = len(prefix) if prefix is not None else 0
        rest = [list(s)[p:] for s in seqs]
        b, width = len(rest), max(len(s) for s in rest)
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, p + width), dtype=torch.long)
        mask[:, :p] = 1
        for r, s in enumerate(rest):  # left padding: every row's last prompt token is at column -1
            ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[r, p + width - len(s):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = positions(mask)[:, p:]  # (b, width): the remainder's positions continue after the prefix
        cache = prefix.cache_for(b) if prefix is not None else DynamicCache()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **{cache_kw: cache},
                       use_cache=True, logits_to_keep=1).logits[:, -1, :]  # (b, V)
        return cls(model, cache_kw, cache, mask, pos[:, -1:] + 1, logits)

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (batch indices, in order; one may repeat, as a copy): finished rows cost no
        more compute."""
        sel = torch.tensor(rows, device=self.mask.device)
        self.cache.reorder_cache(sel)
        self.mask, self.next_pos, self.logits = self.mask[sel], self.next_pos[sel], self.logits[sel]

    def step(self, tok: torch.Tensor) -> None:
        """Feed each row's next token `tok` (b,); leaves the logits for the token after it."""
        b = tok.shape[0]
        self.mask = torch.cat([self.mask, self.mask.new_ones((b, 1))], dim=1)  # (b, width + 1)
        self.logits = self.model(input_ids=tok.view(-1, 1), attention_mask=self.mask, position_ids=self.next_pos,
                                 **{self.cache_kw: self.cache}, use_cache=True).logits[:, -1, :]
        self.next_pos = self.next_pos + 1

    # ------------------------------------------------ continuous batching (serve/engine.py)
    def joinable(self) -> bool:
        """Rows can be merged into the cache only when every layer is a plain growing K/V pair."""
        return plain_layers(self.cache)

    def join(self, other: "DecodeBatch") -> None:
        """Append `other`'s rows: the narrower side is padded on the left (masked out)."""
        full = max(self.mask.shape[1], other.mask.shape[1])
        for old, add in zip(self.cache.layers, other.cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, full), _left_pad(add.keys, full)], dim=0)  # (b_old + b, h, full, d)
            old.values = torch.cat([_left_pad(old.values, full), _left_pad(add.values, full)], dim=0)
        self.mask = torch.cat([_left_pad(self.mask, full, dim=1), _left_pad(other.mask, full, dim=1)], dim=0)  # (b_old + b, full)
        self.next_pos = torch.cat([self.next_pos, other.next_pos], dim=0)
        self.logits = torch.cat([self.logits, other.logits], dim=0)

    def trim(self) -> None:
        """Cut the leading columns that are padding in every row (they are left after rows leave)."""
        lead = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())
        if lead and self.joinable():
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]
            self.mask = self.mask[:, lead:]


def _left_pad(x: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """Zeros on the left of `dim` up to `width` (K/V are (b, h, T, d): dim 2; masks (b, T): dim 1)."""
    short = width - x.shape[dim]
    if short <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = short
    return torch.cat([x.new_zeros(shape), x], dim=dim)
