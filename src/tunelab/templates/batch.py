"""Encode a chunk of conversations at once: one batch call of the fast tokenizer per chunk.

The result is the same token ids and trained-token masks as `render.encode` record by record
(tests/templates/test_batch.py compares them on every record of the shared data sets): the
pieces are cut by the same `render.pieces`, from the same template rendering, and each piece is
tokenized on its own. What changes is the cost:
- the Rust tokenizer encodes all pieces of a chunk in one `encode_batch` call, on every core;
- the template is rendered through the compiled template that `apply_chat_template` itself uses,
  skipping its per-call set-up (about half of the rendering time); any error is re-raised
  through `render.render`, so messages stay those of the per-record path;
- masks, truncation and drop rules run as numpy operations on flat arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from tunelab.data.records import Conversation
from tunelab.templates.render import pieces, render, template_of

# status of a record after encoding (the per-record path's three outcomes)
KEPT, TOO_LONG, NOTHING_TRAINED = 0, 1, 2
ID_DTYPE = np.int32  # vocabularies stay far below 2**31


@dataclass
class Chunk:
    """Encoded records of one chunk, laid end to end. Records not KEPT have no tokens."""

    ids: np.ndarray  # (T,) int32, the kept records' tokens end to end
    trained: np.ndarray  # (T,) uint8, 1 where the token is trained (label = id), else 0
    lengths: np.ndarray  # (N,) int64, tokens of each record (0 unless KEPT)
    status: np.ndarray  # (N,) uint8, KEPT | TOO_LONG | NOTHING_TRAINED
    truncated: np.ndarray  # (N,) uint8, 1 when cut to max_length
    record_ids: list[str] = field(default_factory=list)


def _renderer(tokenizer):
    """render_fn for render.pieces: the compiled template, called the way apply_chat_template calls it.

    apply_chat_template copies the messages into plain dicts and passes the special tokens as
    template variables; our messages are already plain {role, content} strings, so calling the
    compiled template with the same variables gives the same text (checked by the equality
    test). Without transformers' compile helper this falls back to render() itself.
    """
    def slow(messages, add_generation_prompt, where):
        return render(tokenizer, messages, add_generation_prompt=add_generation_prompt, where=where)

    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        compiled = _compile_jinja_template(template_of(tokenizer))
    except Exception:  # a private helper of transformers: a newer release may move it
        return slow
    variables = dict(tokenizer.special_tokens_map)

    def fast(messages, add_generation_prompt, where):
        if not messages:  # apply_chat_template refuses an empty conversation; keep its error
            return slow(messages, add_generation_prompt, where)
        try:
            return compiled.render(messages=messages, tools=None, documents=None,
                                   add_generation_prompt=add_generation_prompt, **variables)
        except Exception:
            return slow(messages, add_generation_prompt, where)  # raises the per-record message

    return fast


def tokenize_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens, as `tokenizer(text, add_special_tokens=False)`.

    The Rust backend is called directly when its state is what transformers' own call sets
    (no truncation, no padding, same special-token splitting); that skips building a
    BatchEncoding. Anything else goes through the tokenizer's batch call.
    """
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if (backend is not None and backend.truncation is None and backend.padding is None
            and bool(backend.encode_special_tokens) == bool(getattr(tokenizer, "split_special_tokens", False))):
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: no offsets
        return [e.ids for e in encode(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@dataclass
class Plan:
    """A chunk rendered and cut into pieces, before tokenising (render_chunk -> tokenize_chunk)."""

    texts: list[str]
    source: list[int]  # per piece: index into texts, or -1 for a text record's eos
    owner: list[int]  # per piece: its record
    trained: list[bool]  # per piece: trained or not
    record_ids: list[str]


def render_chunk(tokenizer, convs: list[Conversation], *, train_on: str = "completion") -> Plan:
    """The Python half of encode_chunk: each record's template rendering cut into pieces."""
    render_fn = _renderer(tokenizer)
    eos = tokenizer.eos_token_id
    plan = Plan([], [], [], [], [c.id for c in convs])
    for k, conv in enumerate(convs):
        for text, answer in pieces(tokenizer, conv, render_fn):
            plan.source.append(len(plan.texts))
            plan.texts.append(text)
            plan.owner.append(k)
            plan.trained.append(answer or train_on == "all")
        if conv.is_text and eos is not None:
            plan.source.append(-1)
            plan.owner.append(k)
            plan.trained.append(True)
    return plan


def tokenize_chunk(tokenizer, plan: Plan, *, max_length: int | None = None, truncate: bool = True) -> Chunk:
    """The tokenizer's half of encode_chunk: one batch call for every piece, then the masks.

    Most of its time is in the Rust tokenizer, which releases the GIL: the cache runs it in a
    worker thread while the next chunk is read and rendered (templates/cache.py).
    """
    encoded = tokenize_many(tokenizer, plan.texts)
    eos = [tokenizer.eos_token_id]
    piece_ids = [encoded[i] if i >= 0 else eos for i in plan.source]
    return _assemble(piece_ids, plan.owner, plan.trained, len(plan.record_ids), max_length, truncate, plan.record_ids)


def encode_chunk(tokenizer, convs: list[Conversation], *, train_on: str = "completion",
                 max_length: int | None = None, truncate: bool = True) -> Chunk:
    """Encode `convs` together; the per-record equivalent is render.encode on each."""
    return tokenize_chunk(tokenizer, render_chunk(tokenizer, convs, train_on=train_on),
                          max_length=max_length, truncate=truncate)


def _assemble(piece_ids: list[list[int]], owner: list[int], piece_trained: list[bool], n: int,
              max_length: int | None, truncate: bool, record_ids: list[str]) -> Chunk:
    """Flat arrays from the pieces, with the per-record rules of render.encode/encode_all."""
    piece_len = np.fromiter((len(p) for p in piece_ids), dtype=np.int64, count=len(piece_ids))
    total = int(piece_len.sum())
    ids = np.fromiter(chain.from_iterable(piece_ids), dtype=ID_DTYPE, count=total)
    mask = np.repeat(np.asarray(piece_trained, dtype=np.uint8), piece_len)  # (T,)
    rec_len = np.bincount(np.asarray(owner, dtype=np.int64), weights=piece_len, minlength=n).astype(np.int64)
    rec_of_tok = np.repeat(np.arange(n), rec_len)  # (T,) record index of each token
    starts = np.concatenate([[0], np.cumsum(rec_len)[:-1]]) if n else np.zeros(0, np.int64)
    pos = np.arange(total) - starts[rec_of_tok]  # (T,) position inside its record

    status = np.full(n, KEPT, dtype=np.uint8)
    truncated = np.zeros(n, dtype=np.uint8)
    keep = np.ones(total, dtype=bool)
    if max_length is not None:
        long = rec_len > max_length
        if truncate:
            truncated[long] = 1
            keep &= pos < max_length
        else:
            status[long] = TOO_LONG
    n_trained = np.bincount(rec_of_tok[keep], weights=mask[keep], minlength=n)
    status[(status == KEPT) & (n_trained == 0)] = NOTHING_TRAINED  # nothing left to learn from
    keep &= status[rec_of_tok] == KEPT
    lengths = np.where(status == KEPT, rec_len if max_length is None else np.minimum(rec_len, max_length), 0)
    truncated[status != KEPT] = 0
    return Chunk(ids[keep], mask[keep], lengths.astype(np.int64), status, truncated, record_ids)
