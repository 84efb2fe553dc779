"""Render conversations with the tokenizer's chat template and mark the trained tokens.

The mask comes from the template itself, never from searching for a marker string: for each
assistant turn i we render the conversation up to the turn with `add_generation_prompt=True`
(exactly what inference feeds the model) and up to the end of the turn; the characters between
the two renderings are the assistant's, everything else is prompt. Each span is tokenized on its
own and the pieces are concatenated, so the prompt tokens of every turn are the tokens inference
produces for that prompt (tests/templates checks this token by token for three template styles).

Models without a chat template get PLAIN_TEMPLATE:

    <system text>\n\n            (if any)
    ### Prompt:\n<user text>\n\n
    ### Response:\n<assistant text><eos>\n\n
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from tunelab.data.records import Conversation
from tunelab.errors import TunelabError

log = logging.getLogger("tunelab.templates")
IGNORE = -100  # label of a position that is not trained (PyTorch's cross-entropy ignore_index)

PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Prompt:\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}### Response:\n{{ m['content'] }}{{ eos_token }}\n\n"
    "{% else %}{{ raise_exception('the plain template has no role ' + m['role']) }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where not trained
    truncated: bool = False
    id: str = ""

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def template_of(tokenizer) -> str:
    return tokenizer.chat_template or PLAIN_TEMPLATE


def template_sha256(tokenizer) -> str:
    return hashlib.sha256(template_of(tokenizer).encode("utf-8")).hexdigest()


def render(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False, where: str = "") -> str:
    """The template's text for these messages; a template error names the record and role."""
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt,
            chat_template=template_of(tokenizer),
        )
    except Exception as e:  # jinja2 TemplateError, or raise_exception() inside the template
        roles = sorted({m["role"] for m in messages})
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        raise TunelabError(
            f"{where or 'a record'}: the chat template of {name} cannot render roles {roles} ({e}); "
            "drop or merge those turns (e.g. put the system text into the first user turn), or use another model"
        ) from None


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """What inference feeds the model: the conversation so far plus the assistant header."""
    return render(tokenizer, messages, add_generation_prompt=True)


def tokens_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of render_prompt(); the same ids training uses for this prompt."""
    return tokens_of(tokenizer, render_prompt(tokenizer, messages))


def _spans(tokenizer, conv: Conversation, render_fn=None) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering and the character spans [start, end) of each assistant turn.

    `render_fn(messages, add_generation_prompt, where)` defaults to render(); the batch path
    (templates/batch.py) passes a faster call of the same compiled template.
    """
    if render_fn is None:
        def render_fn(messages, add_generation_prompt, where):
            return render(tokenizer, messages, add_generation_prompt=add_generation_prompt, where=where)
    msgs = conv.messages
    full = render_fn(msgs, False, conv.source)
    for m in msgs:
        if m["content"].strip() and m["content"] not in full:
            raise TunelabError(
                f"{conv.source}: the chat template does not render the '{m['role']}' turn (its text is missing "
                "from the output); drop or merge those turns, or use another model"
            )
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start_text = render_fn(msgs[:i], True, conv.source)
        # the last turn ends the conversation: its rendering is `full`, no need to render it again
        end_text = full if i + 1 == len(msgs) else render_fn(msgs[: i + 1], False, conv.source)
        # A template that rewrites earlier turns later (e.g. drops past reasoning) has no
        # single rendering with a clean assistant span; say so rather than mis-mask.
        if not (end_text.startswith(start_text) and full.startswith(end_text)):
            raise TunelabError(
                f"{conv.source}: the chat template renders earlier turns differently as the conversation grows, "
                "so trained tokens cannot be taken from it; train on single-turn records or use train_on: all"
            )
        spans.append((len(start_text), len(end_text)))
    return full, spans


def pieces(tokenizer, conv: Conversation, render_fn=None) -> list[tuple[str, bool]]:
    """The conversation's text cut into (text, is_assistant) pieces, each tokenized on its own.

    A text record is one assistant-like piece (every token trained), after its untrained prefix
    when it has one (format plain); its eos is added by the caller.
    """
    if conv.is_text:
        return [(conv.prefix, False), (conv.text, True)] if conv.prefix else [(conv.text, True)]
    full, spans = _spans(tokenizer, conv, render_fn)
    out, pos = [], 0
    for start, end in spans:
        out += [(full[pos:start], False), (full[start:end], True)]
        pos = end
    out.append((full[pos:], False))
    return [(text, answer) for text, answer in out if text]


def encode(tokenizer, conv: Conversation, *, train_on: str = "completion",
           max_length: int | None = None, truncate: bool = True) -> Encoded | None:
    """Token ids and labels of one conversation; None when dropped for length (truncate=False)."""
    ids, labels = [], []
    for text, answer in pieces(tokenizer, conv):
        piece = tokens_of(tokenizer, text)
        ids += piece
        labels += list(piece) if (answer or train_on == "all") else [IGNORE] * len(piece)
    if conv.is_text and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    truncated = False
    if max_length is not None and len(ids) > max_length:
        if not truncate:
            return None
        ids, labels, truncated = ids[:max_length], labels[:max_length], True
    return Encoded(ids, labels, truncated, conv.id)


def length_notes(n: int, n_trunc: int, n_drop: int, n_empty: int, max_length: int | None) -> list[str]:
    """The warnings of an encoding pass: rows truncated, dropped for length, or left with nothing to train."""
    msgs = []
    if n_trunc:
        msgs.append(f"{n_trunc} of {n} rows were longer than max_length={max_length} and were truncated")
    if n_drop:
        msgs.append(f"{n_drop} of {n} rows were longer than max_length={max_length} and were dropped (truncate: false)")
    if n_empty:
        msgs.append(f"{n_empty} rows had no trained token left after truncation and were dropped; raise data.max_length")
    return msgs


def no_rows_error(msgs: list[str]) -> TunelabError:
    return TunelabError(f"no trainable rows left ({'; '.join(msgs) or 'no assistant tokens'}); raise data.max_length or check the data")


def encode_all(tokenizer, convs: list[Conversation], *, train_on: str = "completion",
               max_length: int | None = None, truncate: bool = True, notes: list[str] | None = None) -> list[Encoded]:
    """Encode many, one by one; warn once with the count of truncated or dropped rows.

    The reference path: templates/batch.py encodes chunks through the tokenizer's batch call and
    must give the same ids and labels (tests/templates/test_batch.py).
    """
    out, n_trunc, n_drop, n_empty = [], 0, 0, 0
    for conv in convs:
        enc = encode(tokenizer, conv, train_on=train_on, max_length=max_length, truncate=truncate)
        if enc is None:
            n_drop += 1
            continue
        if enc.n_trained == 0:
            n_empty += 1  # truncation cut away every trained token: nothing to learn from
            continue
        n_trunc += enc.truncated
        out.append(enc)
    msgs = length_notes(len(convs), n_trunc, n_drop, n_empty, max_length)
    for m in msgs:
        log.warning(m)
        if notes is not None:
            notes.append(m)
    if not out:
        raise no_rows_error(msgs)
    return out
