"""Preference pairs through the chat template: the prompt's tokens once, each answer's tokens.

The prompt is what inference feeds the model (the conversation plus the assistant header); an
answer is the text the template adds after it when the answer is appended, its end-of-turn
tokens included, tokenized on its own, exactly as SFT's trained span (render.py). TRL's
DPOTrainer cuts the same way (prompt rendered with the generation prompt, the rest is the
completion), so both score the same tokens (tests/train/test_preference_trl.py).

Length (`max_length`, TRL's keep_start): an answer is cut so that prompt + answer fits; a pair
whose prompt alone leaves no room is dropped; both are counted in one warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Optional

from tunelab.data.preference import Pair
from tunelab.errors import TunelabError
from tunelab.templates.render import tokens_of, render

log = logging.getLogger("tunelab.templates")


@dataclass
class EncodedPair:
    id: str
    prompt: list[int]
    chosen: list[int]  # the chosen answer's tokens, all scored
    rejected: list[int]
    truncated: bool = False

    @property
    def length(self) -> int:
        """Tokens the packed pair feeds the model (train/preference.py: the prompt once)."""
        return len(self.prompt) + len(self.chosen) - 1 + len(self.rejected) - 1


def answer_text(tokenizer, pair: Pair, answer: str, prompt_text: str) -> str:
    full = render(tokenizer, pair.prompt + [{"role": "assistant", "content": answer}], where=pair.source)
    if not full.startswith(prompt_text):
        raise TunelabError(f"{pair.source}: the chat template renders the prompt differently once an answer follows "
                           "it, so the answer's tokens cannot be cut from it; use another model or template")
    return full[len(prompt_text):]


def encode_pair(tokenizer, pair: Pair, *, max_length: Optional[int] = None) -> Optional[EncodedPair]:
    """Token ids of one pair; None when its prompt alone fills max_length."""
    prompt_text = render(tokenizer, pair.prompt, add_generation_prompt=True, where=pair.source)
    prompt = tokens_of(tokenizer, prompt_text)
    chosen = tokens_of(tokenizer, answer_text(tokenizer, pair, pair.chosen, prompt_text))
    rejected = tokens_of(tokenizer, answer_text(tokenizer, pair, pair.rejected, prompt_text))
    truncated = False
    if max_length is not None and len(prompt) + max(len(chosen), len(rejected)) > max_length:
        room = max_length - len(prompt)
        if room < 1:
            return None
        chosen, rejected, truncated = chosen[:room], rejected[:room], True
    return EncodedPair(pair.id, prompt, chosen, rejected, truncated)


def encode_pairs(tokenizer, pairs: Iterable[Pair], *, max_length: Optional[int] = None,
                 notes: Optional[list[str]] = None) -> list[EncodedPair]:
    """Encode many; one warning with the counts of truncated and dropped pairs."""
    out, n, n_drop = [], 0, 0
    for pair in pairs:
        n += 1
        enc = encode_pair(tokenizer, pair, max_length=max_length)
        if enc is None:
            n_drop += 1
        else:
            out.append(enc)
    n_trunc = sum(e.truncated for e in out)
    msgs = []
    if n_trunc:
        msgs.append(f"{n_trunc} of {n} pairs had an answer cut to fit max_length={max_length}")
    if n_drop:
        msgs.append(f"{n_drop} of {n} pairs were dropped: their prompt alone fills max_length={max_length}")
    for m in msgs:
        log.warning(m)
        if notes is not None:
            notes.append(m)
    if not out:
        raise TunelabError(f"no pairs left ({'; '.join(msgs)}); raise data.max_length")
    return out
