"""Batched generation: left padding, KV cache, length-sorted batches, stop strings, early exit.

Our own decode loop rather than `model.generate`, for three reasons: (1) position ids are computed
from the attention mask so a left-padded row sees exactly the positions it would see alone, (2)
sampling draws from one generator per item seeded by (seed, item), so sampled outputs do not
depend on batch size or order either, and (3) rows that finished (EOS or a stop string) are
dropped from the batch and its KV cache and waiting prompts join it (continuous batching), so
the batch stays full and costs what its longest *live* row costs. (4) The token prefix every
prompt starts with (the task's instruction, a chat template's system prompt, fixed
demonstrations) is run once and its keys/values are reused under every row (decode.SharedPrefix).

The decode step itself (prefill, dropping rows, one step) is infer/decode.py, shared with the
server's engine. Greedy decoding at batch size 1 and 8 gives identical text (tests/infer/test_generate.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch

from tunelab.infer.decode import (DecodeBatch, SharedPrefix, cache_kwarg, common_prefix, eos_ids, nucleus,
                                     pad_id as pad_of, row_generator, stop_index)


@dataclass
class Generation:
    text: str  # decoded continuation, cut at the first stop string
    prompt_tokens: int
    new_tokens: int  # tokens generated up to and including the stop / EOS token
    latency_s: float  # from the start of its batch until this row finished
    finish: str  # "stop" | "eos" | "length"
    prompt_ids: list[int] = field(default_factory=list, repr=False)  # the prompt's tokens as encoded
    ids: list[int] = field(default_factory=list, repr=False)  # every generated token, the stop / EOS token included


@dataclass(frozen=True)
class DecodeSettings:
    """How each continuation is decoded; every field is also a keyword of `generate`."""

    max_new_tokens: int = 64
    """Longest continuation, in tokens."""
    stop: Sequence[str] = ()
    """Strings that end a continuation (cut before them)."""
    temperature: float = 0.0
    """0: greedy; above 0: sampling, seeded per item."""
    top_p: float = 1.0
    """Nucleus sampling mass, in (0, 1]; 1 samples from the whole distribution."""
    max_prompt_tokens: Optional[int] = None
    """A longer prompt keeps its last tokens (lm-eval cuts to max_length - max_new_tokens)."""
    share_prefix: bool = True
    """Run the prompts' common token prefix once (False: every prompt whole)."""


@dataclass
class _Decoder:
    """What stays fixed while one `generate` call decodes its prompts."""

    model: object
    tokenizer: object
    encoded: list[list[int]]  # item -> its prompt's token ids
    settings: DecodeSettings
    stop: list[str]
    pad_id: int
    eos: set[int]
    device: torch.device
    cache_kw: str
    prefix: Optional[SharedPrefix]


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], settings: Optional[DecodeSettings] = None, *,
             seeds: Optional[Sequence[int]] = None, batch_size: int = 8,
             on_batch: Optional[Callable[[int], None]] = None, **keywords) -> list[Generation]:
    """Generate a continuation for every prompt; results come back in prompt order.

    Decoding settings come as a DecodeSettings, as its fields' keywords (`max_new_tokens=8`), or
    both (the keywords override). `seeds[i]` seeds item i's sampling (temperature > 0); greedy
    ignores it.
    """
    settings = replace(settings or DecodeSettings(), **keywords)
    # lm-eval encodes prompts without special tokens; chat prompts already carry theirs.
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if settings.max_prompt_tokens is not None:
        encoded = [e[-max(1, settings.max_prompt_tokens):] for e in encoded]
    # Longest first: the longest prompts are prefilled first (an OOM shows at once) and rows that
    # join later are shorter, so their padding against the running rows stays small.
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    cache_kw = cache_kwarg(model)
    prefix = _shared_prefix(model, encoded, cache_kw) if settings.share_prefix else None
    d = _Decoder(model, tokenizer, encoded, settings, list(settings.stop), pad_of(model, tokenizer),
                 eos_ids(model, tokenizer), next(model.parameters()).device, cache_kw, prefix)
    return _decode_all(d, order, seeds, batch_size, on_batch)


# A model call costs about as much as prefilling a few dozen tokens more (it reads every weight
# once either way), so a prefix is run on its own only when sharing saves more tokens than that.
MIN_SHARED_TOKENS = 32


def _shared_prefix(model, encoded: list[list[int]], cache_kw: str) -> Optional[SharedPrefix]:
    """The prompts' common token prefix, run once; every prompt keeps at least one token of its own
    (its last token's logits pick the first new token)."""
    if len(encoded) < 2:
        return None
    p = min(common_prefix(encoded), min(len(e) for e in encoded) - 1)
    if p < 1 or p * (len(encoded) - 1) < MIN_SHARED_TOKENS:
        return None
    return SharedPrefix.run(model, encoded[0][:p], cache_kw)


def _next_tokens(logits: torch.Tensor, gens: list, temperature: float, top_p: float) -> torch.Tensor:
    """logits (b, V) -> (b,) token ids; sampling uses each row's own generator."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        probs = nucleus(probs, top_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.stack([torch.multinomial(probs[j], 1, generator=g)[0] for j, g in enumerate(gens)])


def join_group(batch_size: int) -> int:
    """How many free rows a running batch waits for before waiting prompts join it.

    A join is a model call of its own, and on CPU a call costs about one decode step whatever its
    size (every weight is read once): joining each row the step its slot frees up costs a call per
    finished row. Waiting for a quarter of the batch runs a few steps short of rows instead; on the
    translation benchmark (50 prompts, batch 16) that is 9 joins instead of 23 and ~10% less time.
    """
    return max(1, batch_size // 4)


def _decode_all(d: _Decoder, order: list[int], seeds, batch_size: int, on_batch) -> list[Generation]:
    """Continuous batching: at most `batch_size` rows decode together; a row that finishes leaves
    the batch and its KV cache at once and, once `join_group` rows are free, the next waiting
    prompts are prefilled and join."""
    out: list[Optional[Generation]] = [None] * len(d.encoded)
    waiting = list(order)
    batch: Optional[DecodeBatch] = None
    live: list[int] = []  # batch row -> item index
    new: dict[int, list[int]] = {}
    gens: dict[int, torch.Generator] = {}
    t0: dict[int, float] = {}
    group = join_group(batch_size)
    while waiting or live:
        # Admit: a fresh batch, or a group of rows joining a running one (when its cache layers allow it).
        free = batch_size - len(live)
        if waiting and free > 0 and (batch is None or (free >= min(group, len(waiting)) and batch.joinable())):
            idx, waiting = waiting[:free], waiting[free:]
            for i in idx:
                t0[i], new[i] = time.perf_counter(), []
                gens[i] = row_generator(d.device, 0 if seeds is None or seeds[i] is None else seeds[i])
            fresh = DecodeBatch.prefill(d.model, [d.encoded[i] for i in idx], d.pad_id, d.cache_kw, d.prefix)
            if batch is None:
                batch, live = fresh, idx
            else:
                batch.join(fresh)
                live = live + idx
        tok = _next_tokens(batch.logits, [gens[i] for i in live], d.settings.temperature, d.settings.top_p)
        keep = []
        for j, i in enumerate(live):
            new[i].append(int(tok[j]))
            finish = _finish_reason(d, new[i])
            if finish:
                out[i] = _finish(d.tokenizer, new.pop(i), d.encoded[i], d.stop, finish, t0[i], d.eos)
            else:
                keep.append(j)
        if on_batch and len(keep) < len(live):
            on_batch(len(live) - len(keep))
        if not keep:
            batch, live = None, []
            continue
        if len(keep) < len(live):
            batch.keep(keep)
            tok = tok[torch.tensor(keep, device=tok.device)]
            live = [live[j] for j in keep]
            batch.trim()
        batch.step(tok)
    return out  # type: ignore[return-value]


def _finish_reason(d: _Decoder, new_ids: list[int]) -> Optional[str]:
    """Why a row whose latest token is new_ids[-1] ends now ("eos", "stop", "length"), or None."""
    if new_ids[-1] in d.eos:
        return "eos"
    if d.stop and stop_index(d.tokenizer.decode(new_ids, skip_special_tokens=True), d.stop) is not None:
        return "stop"
    if len(new_ids) == d.settings.max_new_tokens:
        return "length"
    return None


def _finish(tokenizer, new_ids, prompt_ids, stop, finish, t0, eos) -> Generation:
    body = new_ids[:-1] if finish == "eos" else new_ids
    text = tokenizer.decode(body, skip_special_tokens=True)
    cut = stop_index(text, stop)
    text = text if cut is None else text[:cut]
    return Generation(text, len(prompt_ids), len(new_ids), time.perf_counter() - t0, finish, list(prompt_ids),
                      list(new_ids))
