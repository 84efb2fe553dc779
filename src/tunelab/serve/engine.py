"""One base model with any number of named PEFT adapters, and a batched decode loop that streams.

`evaluate/generate.py` decodes a fixed list of prompts with one set of sampling settings and
returns whole texts. A server needs three things it does not do: per-row temperature / top_p /
seed / stop / max_tokens (every request brings its own), text handed out while rows are still
decoding (streaming), and rows that can be cancelled when their client goes away. So the loop here
is its own, built the same way (left padding, positions from the attention mask so a padded row
sees the positions it would see alone, finished rows dropped from the batch and its KV cache) and
using the same helpers (`eos_ids`, `cache_kwarg`).

All model calls happen on one thread (the batcher's): PEFT's `set_adapter` changes the model in
place, so two threads must never run it at once.
"""
from __future__ import annotations

import logging
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from tunelab.errors import TunelabError
from tunelab.evaluate.generate import cache_kwarg, eos_ids
from tunelab.evaluate.loglik import max_length

log = logging.getLogger("tunelab.serve")


@dataclass
class Job:
    """One request's generation: its prompt tokens, its own settings, and where its events go."""

    prompt_ids: list[int]
    max_tokens: int
    adapter: Optional[str] = None  # None: the base model
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    logprobs: Optional[int] = None  # top alternatives per generated token (completions' `logprobs`)
    echo_logprobs: bool = False  # also score the prompt's own tokens (completions' echo + logprobs)
    prompt_offsets: Optional[list[int]] = None  # char offset of each prompt token (echo)
    prompt_chars: int = 0  # length of the prompt text (echo: generated offsets continue after it)
    emit: Callable[[str, object], None] = lambda kind, value: None  # ("delta", str) | ("done", Result) | ("error", str)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Result:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) | "length"
    prompt_tokens: int
    completion_tokens: int
    # OpenAI's completions logprobs block: tokens, token_logprobs, top_logprobs, text_offset
    logprobs: Optional[dict] = None


def _safe_end(text: str, stop: list[str]) -> int:
    """How much of `text` may be streamed: hold back a tail that could still grow into a stop string,
    and an unfinished UTF-8 character (the tokenizer decodes it as U+FFFD until it completes)."""
    end = len(text)
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                end = min(end, len(text) - k)
                break
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    return end


def _cut_stop(text: str, stop: list[str]) -> Optional[int]:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


class ServedModel:
    """The base model, its adapters (PEFT multi-adapter) and the tokenizer, served under names."""

    def __init__(self, lm, adapters: Optional[dict[str, str]] = None, *, alias: Optional[str] = None):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.name = lm.name
        self.aliases = {lm.name} | ({alias} if alias else set())
        self.adapters: dict[str, str] = {}
        for name, folder in (adapters or {}).items():
            if name in self.aliases:
                raise TunelabError(f"--adapter {name}={folder}: the name '{name}' is the base model's; pick another name")
            from tunelab.models.loading import attach_adapter

            attach_adapter(lm, folder, name=name)
            self.adapters[name] = str(folder)
        self.model = lm.model
        self.device = next(self.model.parameters()).device
        self.context = max_length(self.model, self.tokenizer)
        self.eos = eos_ids(self.model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.eos), 0)

    def model_names(self) -> list[str]:
        return [self.name, *self.adapters]

    def adapter_of(self, requested: str) -> Optional[str]:
        """The adapter a request's `model` selects (None = base); KeyError when unknown."""
        if requested in self.aliases:
            return None
        if requested in self.adapters:
            return requested
        raise KeyError(requested)

    @contextmanager
    def using(self, adapter: Optional[str]):
        if not self.adapters:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield

    # ------------------------------------------------------------ tokens
    def encode(self, text: str, *, offsets: bool = False):
        """Token ids (no special tokens: chat prompts carry theirs), with each token's char offset."""
        if not offsets:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return enc["input_ids"], [a for a, _ in enc["offset_mapping"]]
        except NotImplementedError:  # slow tokenizers have no offset mapping: decode prefixes
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids, [len(self.tokenizer.decode(ids[:i])) for i in range(len(ids))]

    # ------------------------------------------------------------ model calls (batcher thread only)
    @torch.inference_mode()
    def run(self, jobs: list[Job]) -> None:
        """Run jobs that share one adapter; every job gets its events, errors included."""
        try:
            with self.using(jobs[0].adapter):
                echo = {id(j): self._prompt_logprobs(j) for j in jobs if j.echo_logprobs}
                live = [j for j in jobs if j.max_tokens > 0 and not j.cancelled.is_set()]
                for j in jobs:
                    if j.max_tokens == 0:
                        j.emit("done", Result("", "length", len(j.prompt_ids), 0, echo.get(id(j))))
                if live:
                    self._decode(live, echo)
        except Exception as e:  # one bad batch must not stop the server: its requests get a 500
            log.exception("generation failed")
            for j in jobs:
                j.emit("error", f"generation failed: {type(e).__name__}: {e}")

    def _prompt_logprobs(self, job: Job) -> dict:
        """Log-probability of every prompt token given the ones before it (the first has none)."""
        ids = torch.tensor([job.prompt_ids], device=self.device)
        logp = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)  # (T, V)
        toks = job.prompt_ids
        out = {"tokens": [], "token_logprobs": [None], "top_logprobs": [None], "text_offset": list(job.prompt_offsets or [])}
        out["tokens"] = [self.tokenizer.decode([t]) for t in toks]
        k = max(1, job.logprobs or 1)
        for i in range(1, len(toks)):
            row = logp[i - 1]
            out["token_logprobs"].append(float(row[toks[i]]))
            out["top_logprobs"].append(self._top(row, k))
        return out

    def _top(self, row: torch.Tensor, k: int) -> dict:
        vals, idx = row.topk(k)
        return {self.tokenizer.decode([int(i)]): float(v) for v, i in zip(vals, idx)}

    def _pick(self, logits: torch.Tensor, jobs: list[Job], gens: list) -> torch.Tensor:
        """logits (b, V) -> (b,) token ids; each row samples with its own settings and generator."""
        tok = logits.argmax(dim=-1)
        for r, j in enumerate(jobs):
            if j.temperature <= 0:
                continue
            probs = torch.softmax(logits[r].float() / j.temperature, dim=-1)  # (V,)
            if j.top_p < 1.0:
                p, i = probs.sort(descending=True)
                keep = p.cumsum(-1) - p < j.top_p  # always keeps the most likely token
                probs = torch.zeros_like(probs).scatter(-1, i, p * keep)
            tok[r] = torch.multinomial(probs, 1, generator=gens[r])[0]
        return tok

    def _decode(self, jobs: list[Job], echo: dict) -> None:
        tk, dev = self.tokenizer, self.device
        b, width = len(jobs), max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for r, j in enumerate(jobs):  # left padding: every row's last prompt token is at column -1
            ids[r, width - len(j.prompt_ids):] = torch.tensor(j.prompt_ids, dtype=torch.long)
            mask[r, width - len(j.prompt_ids):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, width): positions count real tokens only
        gens = []
        for j in jobs:
            g = torch.Generator(device="cpu" if dev.type == "cpu" else dev)
            g.manual_seed(secrets.randbits(63) if j.seed is None else int(j.seed))
            gens.append(g)
        from transformers import DynamicCache

        cache = DynamicCache()
        ckw = {cache_kwarg(self.model): cache}
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **ckw,
                            use_cache=True, logits_to_keep=1).logits[:, -1, :]  # (b, V)
        next_pos = pos[:, -1:] + 1  # (b, 1)
        live = list(range(b))  # batch row -> index into jobs
        new: list[list[int]] = [[] for _ in jobs]
        sent = [0] * b  # characters already streamed
        full = [""] * b  # decoded text so far, before any stop-string cut
        lps: list[Optional[dict]] = [
            {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []} if j.logprobs is not None else None
            for j in jobs]
        while live:
            act = [jobs[r] for r in live]
            tok = self._pick(logits, act, [gens[r] for r in live])
            logp = torch.log_softmax(logits.float(), dim=-1) if any(lps[r] is not None for r in live) else None
            keep = []
            for k, r in enumerate(live):
                j, t = jobs[r], int(tok[k])
                if j.cancelled.is_set():
                    continue
                before = full[r]
                new[r].append(t)
                text = full[r] = tk.decode(new[r], skip_special_tokens=True)
                if lps[r] is not None:
                    lps[r]["tokens"].append(tk.decode([t]))
                    lps[r]["token_logprobs"].append(float(logp[k, t]))
                    lps[r]["top_logprobs"].append(self._top(logp[k], max(1, j.logprobs)))
                    lps[r]["text_offset"].append(len(before))
                finish, cut = None, _cut_stop(text, j.stop)
                if t in self.eos:
                    finish, text = "stop", before
                elif cut is not None:
                    finish, text = "stop", text[:cut]
                elif len(new[r]) >= j.max_tokens:
                    finish = "length"
                end = len(text) if finish else _safe_end(text, j.stop)
                if end > sent[r]:
                    j.emit("delta", text[sent[r]:end])
                    sent[r] = end
                if finish:
                    j.emit("done", Result(text, finish, len(j.prompt_ids), len(new[r]), _join(j, echo.get(id(j)), lps[r])))
                else:
                    keep.append(k)
            if not keep:
                break
            if len(keep) < len(live):
                # Drop finished rows from the batch and the cache: no compute is spent on them.
                sel = torch.tensor(keep, device=dev)
                cache.reorder_cache(sel)
                mask, next_pos, tok = mask[sel], next_pos[sel], tok[sel]
                live = [live[k] for k in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)  # (b_live, width + step)
            logits = self.model(input_ids=tok.view(-1, 1), attention_mask=mask, position_ids=next_pos,
                                **ckw, use_cache=True).logits[:, -1, :]
            next_pos = next_pos + 1


def _join(job: Job, prompt: Optional[dict], gen: Optional[dict]) -> Optional[dict]:
    """Echoed prompt logprobs followed by the generated tokens' (offsets continue after the prompt)."""
    if prompt is None:
        return gen
    if gen is None:
        return prompt
    shift = job.prompt_chars
    return {"tokens": prompt["tokens"] + gen["tokens"],
            "token_logprobs": prompt["token_logprobs"] + gen["token_logprobs"],
            "top_logprobs": prompt["top_logprobs"] + gen["top_logprobs"],
            "text_offset": prompt["text_offset"] + [shift + o for o in gen["text_offset"]]}


def load_served(model: str, adapters: Optional[dict[str, str]] = None, *, device: Optional[str] = None) -> ServedModel:
    """Load MODEL (name, folder or .gguf) once and attach every named adapter to it."""
    from tunelab.models.loading import load_model

    return ServedModel(load_model(model, device=device), adapters, alias=model)

