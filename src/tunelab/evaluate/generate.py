"""Batched generation: left padding, KV cache, length-sorted batches, stop strings, early exit.

Our own decode loop rather than `model.generate`, for three reasons: (1) position ids are computed
from the attention mask so a left-padded row sees exactly the positions it would see alone, (2)
sampling draws from one generator per item seeded by (seed, item), so sampled outputs do not
depend on batch size or order either, and (3) rows that finished (EOS or a stop string) are
dropped from the batch and its KV cache, so a batch costs what its longest *live* row costs.

Greedy decoding at batch size 1 and 8 gives identical text (tests/evaluate/test_generate.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch


@dataclass
class Generation:
    text: str  # decoded continuation, cut at the first stop string
    prompt_tokens: int
    new_tokens: int  # tokens generated up to and including the stop / EOS token
    latency_s: float  # from the start of its batch until this row finished
    finish: str  # "stop" | "eos" | "length"


def eos_ids(model, tokenizer) -> set[int]:
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
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps forward
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    stop: Sequence[str] = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Optional[Sequence[int]] = None,
    batch_size: int = 8,
    max_prompt_tokens: Optional[int] = None,
    on_batch: Optional[Callable[[int], None]] = None,
) -> list[Generation]:
    """Generate a continuation for every prompt; results come back in prompt order.

    `seeds[i]` seeds item i's sampling (temperature > 0); greedy ignores it. A prompt longer than
    `max_prompt_tokens` keeps its last tokens (lm-eval cuts to max_length - max_new_tokens).
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids(model, tokenizer)), 0)
    eos = eos_ids(model, tokenizer)
    # lm-eval encodes prompts without special tokens; chat prompts already carry theirs.
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_tokens is not None:
        encoded = [e[-max(1, max_prompt_tokens):] for e in encoded]
    # Longest first: the slowest batch runs first (an OOM shows at once) and rows in a batch have
    # similar lengths, so little compute goes to padding.
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    out: list[Optional[Generation]] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch_seeds = [None if seeds is None else seeds[i] for i in idx]
        for i, g in zip(idx, _generate_batch(model, tokenizer, [encoded[i] for i in idx], batch_seeds,
                                             max_new_tokens, list(stop), temperature, top_p, pad_id, eos, device)):
            out[i] = g
        if on_batch:
            on_batch(len(idx))
    return out  # type: ignore[return-value]


def _next_tokens(logits: torch.Tensor, rows: list[int], gens, temperature: float, top_p: float) -> torch.Tensor:
    """logits (b, V) -> (b,) token ids; sampling uses each row's own generator."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, sorted_i = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(-1, sorted_i, sorted_p * keep)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.stack([torch.multinomial(probs[j], 1, generator=gens[r])[0] for j, r in enumerate(rows)])


def _generate_batch(model, tokenizer, seqs, seeds, max_new_tokens, stop, temperature, top_p, pad_id, eos, device):
    from transformers import DynamicCache

    t0 = time.perf_counter()
    b, width = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for r, s in enumerate(seqs):  # left padding: every row's last prompt token is at column -1
        ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s):] = 1
    ids, mask = ids.to(device), mask.to(device)
    # Positions count real tokens only, so a padded row sees the positions it would see alone.
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    gens = []
    for s in seeds:
        g = torch.Generator(device="cpu" if device.type == "cpu" else device)
        g.manual_seed(0 if s is None else int(s))
        gens.append(g)

    cache = DynamicCache()
    ckw = {cache_kwarg(model): cache}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **ckw,
                   use_cache=True, logits_to_keep=1).logits[:, -1, :]  # (b, V)
    live = list(range(b))  # batch row -> original row, for rows still generating
    new: list[list[int]] = [[] for _ in range(b)]
    results: list[Optional[Generation]] = [None] * b
    next_pos = pos[:, -1:] + 1  # (b, 1)

    for step in range(max_new_tokens):
        tok = _next_tokens(logits, live, gens, temperature, top_p)
        keep = []
        for j, r in enumerate(live):
            t = int(tok[j])
            new[r].append(t)
            finish = None
            if t in eos:
                finish = "eos"
            elif stop:
                text, hit = _cut_at_stop(tokenizer.decode(new[r], skip_special_tokens=True), stop)
                finish = "stop" if hit else None
            if finish is None and step == max_new_tokens - 1:
                finish = "length"
            if finish:
                results[r] = _finish(tokenizer, new[r], seqs[r], stop, finish, t0, eos)
            else:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(live):
            # Drop finished rows from the batch and the cache: no compute is spent on them.
            sel = torch.tensor(keep, device=device)
            cache.reorder_cache(sel)
            mask, next_pos, tok = mask[sel], next_pos[sel], tok[sel]
            live = [live[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        logits = model(input_ids=tok.view(-1, 1), attention_mask=mask, position_ids=next_pos,
                       **ckw, use_cache=True).logits[:, -1, :]
        next_pos = next_pos + 1
    return results


def _finish(tokenizer, new_ids, prompt_ids, stop, finish, t0, eos) -> Generation:
    body = new_ids[:-1] if finish == "eos" else new_ids
    text, _ = _cut_at_stop(tokenizer.decode(body, skip_special_tokens=True), stop)
    return Generation(text, len(prompt_ids), len(new_ids), time.perf_counter() - t0, finish)
