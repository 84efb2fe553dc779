"""`replay:runs/e/predictions.jsonl` as a model: a finished evaluation's outputs, answered again.

    tunelab eval replay:runs/e/predictions.jsonl --task t.yaml --out runs/e2   # new metrics, old answers

A metric added after an expensive run (or a metric option changed) scores the saved answers
without running the model again. Each generate item is answered with the `output` saved under
the same `prompt`, so replay the predictions of the same task, shots and sampler. Nothing is
scored by a model: choices, perplexity, drift and chat need the model itself.

It is also the worked example of adding a backend (docs/architecture.md, "Where to add things"):
one module with `@prefixed` and the Backend Protocol's members, and its test.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Iterator, Optional, Sequence

from tunelab.errors import TunelabError
from tunelab.infer.protocol import OnBatch, prefixed

PREFIX = "replay:"


@prefixed
class ReplayBackend:
    """The outputs of a predictions.jsonl (docs/results.md), looked up by prompt."""

    prefix: ClassVar[Optional[str]] = PREFIX
    spec: str
    adapter: Optional[str]
    identity: object
    tokenizer: object
    device: object
    cache_scope: tuple

    def __init__(self, spec: str, *, adapter=None):
        if adapter is not None:
            raise TunelabError(f"--adapter {adapter}: {spec} replays saved answers; it takes no adapter")
        self.spec, self.adapter, self.tokenizer, self.device = spec, None, None, None
        self.path = Path(spec[len(PREFIX):]).expanduser()
        self.identity = {"name": spec, "sha256": None, "adapter": None}
        self.cache_scope = (spec, None)
        self.outputs = self._read()

    def _read(self) -> dict[str, str]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise TunelabError(f"{self.spec}: cannot read {self.path} ({getattr(e, 'strerror', None) or e}); "
                               "give an evaluation's predictions.jsonl") from None
        out = {}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                p = json.loads(line)
            except ValueError:
                p = None
            if not (isinstance(p, dict) and isinstance(p.get("prompt"), str) and isinstance(p.get("output"), str)):
                raise TunelabError(f"{self.path}:{n}: not a generate task's prediction line (a JSON object with "
                                   "'prompt' and 'output' strings, docs/results.md); replay an eval's predictions.jsonl")
            out[p["prompt"]] = p["output"]
        if not out:
            raise TunelabError(f"{self.path}: no predictions in it; replay an eval's predictions.jsonl")
        return out

    def template_id(self) -> str:
        return "replay"

    def check_task(self, task) -> None:
        if task.chat:  # its prompts were rendered by the model's template, which a replay does not have
            raise TunelabError(f"{self.spec}: task '{task.name}' has chat: true; a replay answers plain prompts "
                               "only, so evaluate the model itself")

    def max_length(self) -> int:
        return 0  # unknown, and nothing is cut: the answers exist already

    def count_tokens(self, text: str) -> int:
        return 0  # no tokenizer: the cost block counts nothing for a replay

    def generate(self, contexts, seeds: Sequence[Optional[int]], *, batch_size: int, on_batch: OnBatch = None,
                 max_new_tokens: int, stop: Sequence[str], temperature: float, top_p: float) -> list[dict]:
        out = []
        for c in contexts:
            if c.text not in self.outputs:
                raise TunelabError(f"{self.spec}: no saved output for the prompt {c.text[:60]!r}...; replay the "
                                   "predictions of the same task, shots and sampler")
            out.append({"text": self.outputs[c.text], "prompt_tokens": 0, "new_tokens": 0, "latency_s": 0.0,
                        "finish": "stop"})
            if on_batch:
                on_batch(1)
        return out

    def _cannot(self, what: str) -> TunelabError:
        return TunelabError(f"{self.spec}: {what} needs the model itself; a replay holds generated answers only")

    def score_choices(self, reqs, *, batch_size: int, on_batch: OnBatch = None):
        raise self._cannot("scoring choices (multiple_choice and preference tasks)")

    def rolling_loglik(self, texts, *, batch_size: int, on_batch: OnBatch = None):
        raise self._cannot("perplexity")

    def answer_kl(self, prompts, answers, *, base=None, chat: bool = True, batch_size: int = 4):
        raise self._cannot("drift (the KL from the base model)")

    def stream_chat(self, messages: list[dict], *, max_new_tokens: int, temperature: float,
                    top_p: float) -> Iterator[str]:
        raise self._cannot("chat")

    def no_reference(self) -> Optional[str]:
        return f"{self.spec}: a replay has no reference model to measure an implicit reward against"

    def reference(self):
        raise TunelabError(self.no_reference())

    def reference_identity(self):
        return None
