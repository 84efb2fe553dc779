"""What the runner asks of a model, as one small interface with two implementations.

    backend = open_backend(model, adapter, device)   # infer/load.py: a local model, or "openai:URL#NAME"
    backend.check_task(task, needs)                   # fail early on what it cannot run (needs: the task type's)
    backend.generate(contexts, seeds, batch_size=..., on_batch=..., **settings) -> list[dict]
    backend.score_choices([(context, [continuation, ...]), ...], ...) -> [[(loglik, is_greedy), ...]]
    backend.rolling_loglik(texts, ...) -> [(loglik, n_tokens)]
    backend.stream_chat(messages, max_new_tokens=..., temperature=..., top_p=...) -> iterator of text pieces
    backend.answer_kl(prompts, answers, base=None) -> [(sum of KL(base || this) over the answer tokens, n_tokens)]
    backend.no_reference() -> None | str               # why there is no reference model (None: there is one:
                                                       # the one given to open_backend, or base + adapter's base)
    with backend.reference() as ref: ref.score_choices(...)   # the same calls, scored by the reference

`LocalBackend` runs a loaded model in this process (infer/generate.py, infer/loglik.py);
`EndpointBackend` (infer/endpoint.py) sends the same work to an OpenAI-compatible server. Both
satisfy the `Backend` Protocol of infer/protocol.py, which lists every member a caller uses; the
callers use those members and never ask which backend they hold.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ClassVar, Iterator, Optional, Sequence

from tunelab.infer.protocol import OnBatch

__all__ = ["LocalBackend", "OnBatch"]


class LocalBackend:
    """A LoadedModel in this process (the Backend of infer/protocol.py for every model string without a prefix)."""

    prefix: ClassVar[Optional[str]] = None
    spec: str
    adapter: Optional[str]
    identity: object
    tokenizer: object
    device: object
    cache_scope: tuple

    def __init__(self, lm, reference: Optional[Callable[[], object]] = None, reference_name: Optional[str] = None):
        self.lm = lm
        # DPO's reference for a full-weights fine-tune: the model it started from, loaded by
        # `reference()` on first use (infer/load.py gives it); None: base + adapter's reference is the base
        self.load_reference, self.reference_spec, self._reference = reference, reference_name, None
        # the model as a person names it (an endpoint's is openai:URL#NAME), and its adapter
        self.spec, self.adapter = lm.name, getattr(lm, "adapter", None)
        self.identity = lm  # what results.json's model block and the signature are built from
        self.tokenizer = lm.tokenizer
        self.device = next(lm.model.parameters()).device
        self.cache_scope = (lm.sha256, getattr(lm, "adapter_sha256", None) or getattr(lm, "adapter", None))

    def template_id(self) -> str:
        from tunelab.templates import template_sha256

        return f"sha256:{template_sha256(self.tokenizer)[:16]}"

    def check_task(self, task, needs: frozenset = frozenset()) -> None:
        # a local model offers everything a task type needs (generation, loglik, rolling_loglik, chat_template),
        # but a conversation rendered in the plain fallback format is not one the model was taught to continue
        if "conversation" in needs and not self.tokenizer.chat_template:
            from tunelab.errors import TunelabError

            raise TunelabError(f"{self.spec}: task '{task.name}' (type: {task.type}) holds conversations, rendered "
                               "with the model's chat template, and this model has none; use an instruct (chat) "
                               "model, or a model folder whose tokenizer carries a chat template")

    def max_length(self) -> int:
        from tunelab.models.loading import max_length

        return max_length(self.lm.model, self.tokenizer)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, contexts, seeds: Sequence[Optional[int]], *, batch_size: int, on_batch: OnBatch = None,
                 max_new_tokens: int, stop: Sequence[str], temperature: float, top_p: float) -> list[dict]:
        from tunelab.infer.generate import generate

        gens = generate(self.lm.model, self.tokenizer, [c.text for c in contexts], seeds=list(seeds), batch_size=batch_size,
                        max_prompt_tokens=self.max_length() - max_new_tokens, on_batch=on_batch,
                        max_new_tokens=max_new_tokens, stop=stop, temperature=temperature, top_p=top_p)
        return [{"text": x.text, "prompt_tokens": x.prompt_tokens, "new_tokens": x.new_tokens,
                 "latency_s": x.latency_s, "finish": x.finish} for x in gens]

    def score_choices(self, reqs, *, batch_size: int, on_batch: OnBatch = None):
        from tunelab.infer.loglik import score_choices

        return score_choices(self.lm.model, self.tokenizer, reqs, batch_size=batch_size, on_batch=on_batch)

    # ------------------------------------------------------------ the reference model (DPO's implicit reward)
    def no_reference(self) -> Optional[str]:
        """None when this model has a reference (a given one; base + adapter: the base); else why not, in one line."""
        from peft import PeftModel

        if self.load_reference is not None:
            self._given_reference()  # loaded and its tokenizer checked now, not after the model's own pass
            return None
        if getattr(self.lm, "adapter", None) is None or not isinstance(self.lm.model, PeftModel):
            return (f"model '{getattr(self.lm, 'name', 'model')}' has no adapter, so no reference model to measure "
                    "an implicit reward against; evaluate base + adapter (--adapter DIR), or name the model a "
                    "full fine-tune started from (--reference MODEL)")
        return None

    def reference_identity(self):
        """The given reference model once loaded (its name and hash go in the signature); else None."""
        return None if self._reference is None else self._reference.identity

    @contextlib.contextmanager
    def reference(self) -> Iterator["LocalBackend"]:
        """This backend, scoring with the adapter switched off: the same weights, no second copy
        (PEFT's disable_adapter, as DPO training's reference pass). Its cache scope is the base
        model's, so the reference scores are shared with an evaluation of the base model itself."""
        reason = self.no_reference()
        if reason is not None:
            from tunelab.errors import TunelabError

            raise TunelabError(reason)
        if self.load_reference is not None:
            yield self._given_reference()
            return
        scope = self.cache_scope
        self.cache_scope = (self.lm.sha256, None)
        try:
            with self.lm.model.disable_adapter():
                yield self
        finally:
            self.cache_scope = scope

    def _given_reference(self) -> "LocalBackend":
        """The reference model named by the user: a second set of weights (a full fine-tune has no
        adapter to switch off), loaded once, on this model's device, its scores cached under its own scope."""
        if self._reference is None:
            from tunelab.errors import TunelabError

            ref = LocalBackend(self.load_reference())
            if ref.tokenizer.get_vocab() != self.tokenizer.get_vocab():
                raise TunelabError(f"reference {self.reference_spec}: its tokenizer differs from {self.spec}'s, and an "
                                   "implicit reward compares the same tokens under both models; give the model the "
                                   "fine-tune started from")
            self._reference = ref
        return self._reference

    def rolling_loglik(self, texts, *, batch_size: int, on_batch: OnBatch = None):
        from tunelab.infer.loglik import rolling_loglik
        from tunelab.templates.cache import token_lists

        # the documents' token ids come from the encoded-data cache: a rerun on the same texts
        # (same data, text template, split) with the same tokenizer does not tokenise them again
        tokens = token_lists(self.tokenizer, texts, label=f"{len(texts)} perplexity texts")
        return rolling_loglik(self.lm.model, self.tokenizer, texts, batch_size=batch_size, on_batch=on_batch,
                              tokens=tokens)


    def answer_kl(self, prompts: Sequence[str], answers: Sequence[str], *, base: Optional["LocalBackend"] = None,
                  chat: bool = True, batch_size: int = 4) -> list[tuple[float, int]]:
        """Per prompt, the full-vocabulary KL(base || this model) summed over the answer's tokens (infer/divergence.py).

        base=None: this model is a PEFT model and its base is the same weights with the adapter off.
        """
        from tunelab.infer.divergence import answer_kl

        return answer_kl(self.lm, prompts, answers, base=None if base is None else base.lm, chat=chat,
                         batch_size=batch_size)

    def stream_chat(self, messages: list[dict], *, max_new_tokens: int, temperature: float,
                    top_p: float) -> Iterator[str]:
        """The answer to a conversation, piece by piece (infer/stream.py); closing the iterator stops it.

        The messages go through the model's chat template (templates.render_prompt, as in training
        and evaluation). A conversation with no room left for an answer is a ContextFull, raised
        here, before anything runs; the answer is capped by the room that is left.
        """
        from tunelab.infer.stream import ContextFull, stream_text
        from tunelab.templates import render_prompt

        ids = self.tokenizer(render_prompt(self.tokenizer, messages), add_special_tokens=False)["input_ids"]
        room = self.max_length() - len(ids)
        if room < 1:
            raise ContextFull(f"the conversation is {len(ids)} tokens, over the model's context of {self.max_length()}")
        return stream_text(self.lm.model, self.tokenizer, ids, max_new_tokens=min(max_new_tokens, room),
                           temperature=temperature, top_p=top_p)
