"""One base model with any number of named PEFT adapters, and a batched decode loop that streams.

`infer/generate.py` decodes a fixed list of prompts with one set of sampling settings and
returns whole texts. A server needs what it does not do: per-row temperature / top_p / seed /
stop / max_tokens (every request brings its own), text handed out while rows are still decoding
(streaming), rows that can be cancelled when their client goes away, and requests that join a
batch already decoding (continuous batching: under steady load a finished row's slot is refilled
at the next step). So the loop here is its own; the decode step under it (left-padded prefill,
positions from the attention mask, finished rows dropped from the batch and its KV cache, joining
rows, cutting dead padding) is infer/decode.py's `DecodeBatch`, shared with evaluation.

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
from tunelab.infer.decode import DecodeBatch, cache_kwarg, eos_ids, nucleus, pad_id, row_generator, stop_index
from tunelab.models.loading import max_length

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


class ServedModel:
    """The base model, its adapters (PEFT multi-adapter) and the tokenizer, served under names."""

    def __init__(self, lm, adapters: Optional[dict[str, str]] = None, *, alias: Optional[str] = None):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.name = lm.name
        # the name the user typed (`tunelab serve default`) is the base model's too, so a client
        # that asks for `openai:URL#default` gets it (and /v1/models lists it)
        self.alias = alias if alias and alias != lm.name else None
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
        self.cache_kw = cache_kwarg(self.model)  # looked up once: it inspects forward's signature
        self.pad_id = pad_id(self.model, self.tokenizer)

    def model_names(self) -> list[str]:
        """The names a request may give: the base model's, the one it was served as, then the adapters'."""
        return [self.name, *([self.alias] if self.alias else []), *self.adapters]

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
    def run(self, jobs: list[Job], more: Optional[Callable[[int], list[Job]]] = None, *, batch_size: int = 0) -> None:
        """Decode jobs that share one adapter; every job gets its events, errors included.

        `more(n)` hands over up to n waiting jobs of the same adapter: they join the running batch
        whenever rows finish (continuous batching), so a short answer's slot is refilled at once
        instead of idling until the batch's longest answer ends. `batch_size` caps the rows.
        """
        rows = _Rows(self)
        taken = list(jobs)  # every job handed to this call, admitted or not
        try:
            with self.using(jobs[0].adapter):
                rows.admit(jobs)
                cap = max(batch_size, len(jobs))
                while rows.live:
                    rows.step()
                    if more is not None and len(rows.live) < cap and rows.joinable():
                        joining = more(cap - len(rows.live))
                        taken += joining
                        rows.admit(joining)
        except Exception as e:  # one bad batch must not stop the server: its requests get a 500
            log.exception("generation failed")
            # a job whose row could not even be built (admit failed) is answered too: a request
            # left without an event would wait forever, and its task with it
            finished = {id(r.job) for r in rows.all if r.done}
            for j in taken:
                if id(j) not in finished:
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
                probs = nucleus(probs, j.top_p)
            tok[r] = torch.multinomial(probs, 1, generator=gens[r])[0]
        return tok


class _Row:
    """One job's decoding state while it is in the batch."""

    def __init__(self, job: Job, echo: Optional[dict], device: torch.device):
        self.job, self.echo = job, echo
        self.gen = row_generator(device, secrets.randbits(63) if job.seed is None else job.seed)
        self.new: list[int] = []  # generated ids
        self.full = ""  # decoded text so far, before any stop-string cut
        self.sent = 0  # characters already streamed
        self.lps = ({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                    if job.logprobs is not None else None)
        self.done = False


class _Rows:
    """The running batch: its rows and their `DecodeBatch` (KV cache, mask, positions, next logits).

    Rows are left-padded so every row's newest token sits in the last column. A row that finishes
    leaves the batch and the cache at once; rows admitted later are prefilled on their own (no
    padding against the running rows) and joined, the narrower cache padded on the left. Columns
    that are padding in every row are cut off, so the width stays the longest live row's length.
    """

    def __init__(self, served: ServedModel):
        self.s = served
        self.all: list[_Row] = []  # every row ever admitted (errors go to the unfinished ones)
        self.live: list[_Row] = []
        self.batch: Optional[DecodeBatch] = None

    def unfinished(self) -> list[Job]:
        return [r.job for r in self.all if not r.done]

    def joinable(self) -> bool:
        return self.batch is None or self.batch.joinable()

    def admit(self, jobs: list[Job]) -> None:
        s = self.s
        fresh = []
        for j in jobs:
            if j.cancelled.is_set():
                continue
            row = _Row(j, s._prompt_logprobs(j) if j.echo_logprobs else None, s.device)
            self.all.append(row)
            if j.max_tokens == 0:
                row.done = True
                j.emit("done", Result("", "length", len(j.prompt_ids), 0, row.echo))
            else:
                fresh.append(row)
        if not fresh:
            return
        batch = DecodeBatch.prefill(s.model, [r.job.prompt_ids for r in fresh], s.pad_id, s.cache_kw)
        if self.batch is None or not self.live:
            self.batch, self.live = batch, fresh
        else:
            self.batch.join(batch)
            self.live = self.live + fresh

    def step(self) -> None:
        """Pick each live row's next token from the logits, hand out text, drop finished rows, and
        run one decode step for the rest (which leaves the next logits)."""
        s, tk, logits = self.s, self.s.tokenizer, self.batch.logits
        live = self.live
        tok = s._pick(logits, [r.job for r in live], [r.gen for r in live])
        logp = torch.log_softmax(logits.float(), dim=-1) if any(r.lps is not None for r in live) else None
        keep = []
        for k, r in enumerate(live):
            j, t = r.job, int(tok[k])
            if j.cancelled.is_set():
                r.done = True
                continue
            before = r.full
            r.new.append(t)
            text = r.full = tk.decode(r.new, skip_special_tokens=True)
            if r.lps is not None:
                r.lps["tokens"].append(tk.decode([t]))
                r.lps["token_logprobs"].append(float(logp[k, t]))
                r.lps["top_logprobs"].append(s._top(logp[k], max(1, j.logprobs)))
                r.lps["text_offset"].append(len(before))
            finish, cut = None, stop_index(text, j.stop)
            if t in s.eos:
                finish, text = "stop", before
            elif cut is not None:
                finish, text = "stop", text[:cut]
            elif len(r.new) >= j.max_tokens:
                finish = "length"
            end = len(text) if finish else _safe_end(text, j.stop)
            if end > r.sent:
                j.emit("delta", text[r.sent:end])
                r.sent = end
            if finish:
                r.done = True
                j.emit("done", Result(text, finish, len(j.prompt_ids), len(r.new), _join(j, r.echo, r.lps)))
            else:
                keep.append(k)
        if not keep:
            self.live, self.batch = [], None
            return
        if len(keep) < len(live):
            self.batch.keep(keep)
            tok = tok[torch.tensor(keep, device=tok.device)]
            self.live = [live[k] for k in keep]
            self.batch.trim()
        self.batch.step(tok)


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

