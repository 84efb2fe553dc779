"""Batched generation: left padding, KV cache, length-sorted batches, stop strings, early exit.

Our own decode loop rather than `model.generate`, for three reasons: (1) position ids are computed
from the attention mask so a left-padded row sees exactly the positions it would see alone, (2)
sampling draws from one generator per item seeded by (seed, item), so sampled outputs do not
depend on batch size or order either, and (3) rows that finished (EOS or a stop string) are
dropped from the batch and its KV cache, so a batch costs what its longest *live* row costs.

The decode step itself (prefill, dropping rows, one step) is evaluate/decode.py, shared with the
server's engine. Greedy decoding at batch size 1 and 8 gives identical text (tests/evaluate/test_generate.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from tunelab.evaluate.decode import DecodeBatch, eos_ids, nucleus, pad_id as pad_of, row_generator, stop_index


@dataclass
class Generation:
    text: str  # decoded continuation, cut at the first stop string
    prompt_tokens: int
    new_tokens: int  # tokens generated up to and including the stop / EOS token
    latency_s: float  # from the start of its batch until this row finished
    finish: str  # "stop" | "eos" | "length"


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
    pad_id = pad_of(model, tokenizer)
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
        probs = nucleus(probs, top_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.stack([torch.multinomial(probs[j], 1, generator=gens[r])[0] for j, r in enumerate(rows)])


def _generate_batch(model, tokenizer, seqs, seeds, max_new_tokens, stop, temperature, top_p, pad_id, eos, device):
    t0 = time.perf_counter()
    gens = [row_generator(device, 0 if s is None else s) for s in seeds]
    batch = DecodeBatch.prefill(model, seqs, pad_id)
    live = list(range(len(seqs)))  # batch row -> original row, for rows still generating
    new: list[list[int]] = [[] for _ in seqs]
    results: list[Optional[Generation]] = [None] * len(seqs)

    for step in range(max_new_tokens):
        tok = _next_tokens(batch.logits, live, gens, temperature, top_p)
        keep = []
        for j, r in enumerate(live):
            t = int(tok[j])
            new[r].append(t)
            finish = None
            if t in eos:
                finish = "eos"
            elif stop and stop_index(tokenizer.decode(new[r], skip_special_tokens=True), stop) is not None:
                finish = "stop"
            if finish is None and step == max_new_tokens - 1:
                finish = "length"
            if finish:
                results[r] = _finish(tokenizer, new[r], seqs[r], stop, finish, t0, eos)
            else:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(live):
            batch.keep(keep)
            tok = tok[torch.tensor(keep, device=tok.device)]
            live = [live[j] for j in keep]
        batch.step(tok)
    return results


def _finish(tokenizer, new_ids, prompt_ids, stop, finish, t0, eos) -> Generation:
    body = new_ids[:-1] if finish == "eos" else new_ids
    text = tokenizer.decode(body, skip_special_tokens=True)
    cut = stop_index(text, stop)
    text = text if cut is None else text[:cut]
    return Generation(text, len(prompt_ids), len(new_ids), time.perf_counter() - t0, finish)
