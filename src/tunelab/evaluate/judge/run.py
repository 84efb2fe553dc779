"""Running a judge model: any Backend (infer/), batched, concurrent, cached on disk.

    judge = Judge(JudgeSettings(model="openai:http://127.0.0.1:8000/v1#judge"))
    texts = judge.run([JudgeRequest(messages, key), ...])     # one judgment text per request
    judge.cost.to_json()                                       # calls, cached, tokens, seconds

A local judge gets its prompts through the engine's batched generation (`concurrency` prompts a
batch); an endpoint judge `concurrency` requests in flight at once (the Backend's thread pool),
each retried with backoff by the openai client. Judgments are cached in the request cache
(evaluate/cache.py) under the judge's identity (its weight hash, or its openai:URL#NAME) and the
request's key: the template's hash, the question, the answers in the order shown, the rubric, the
reference and the decoding settings. They are written a chunk at a time, so a judge that fails
half-way keeps what it judged and a re-run continues from there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from tunelab.errors import TunelabError
from tunelab.evaluate.cache import RequestCache

log = logging.getLogger("tunelab.evaluate")
_OPENED: dict[str, Any] = {}  # the judge backend opened last, by model spec


@dataclass
class JudgeSettings:
    model: str
    concurrency: int = 8
    max_new_tokens: int = 512
    temperature: float = 0.0
    cache: bool = True
    cache_path: Optional[str] = None  # None: $TUNELAB_HOME/cache.sqlite


@dataclass
class JudgeRequest:
    messages: list[dict]
    key: dict[str, Any]  # what makes this judgment this one (see the module docstring)


@dataclass
class JudgeCost:
    calls: int = 0          # judgments the judge model made in this run
    cached: int = 0         # judgments read back from the cache instead
    prompt_tokens: int = 0
    generated_tokens: int = 0
    wall_s: float = 0.0

    def to_json(self) -> dict:
        return {"calls": self.calls, "cached": self.cached, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens, "tokens": self.prompt_tokens + self.generated_tokens,
                "wall_s": round(self.wall_s, 3)}


@dataclass
class Judge:
    settings: JudgeSettings
    backend: Any = None  # opened from settings.model on first use; tests pass a fake
    cost: JudgeCost = field(default_factory=JudgeCost)

    def _open(self):
        if self.backend is None:
            model = self.settings.model
            if model not in _OPENED:  # judge_score and judge_win_rate in one task share one loaded judge
                from tunelab.infer.load import open_backend

                _OPENED.clear()  # keep one judge in memory, not every judge a long session ever used
                _OPENED[model] = open_backend(model)
            self.backend = _OPENED[model]
        return self.backend

    def identity(self) -> str:
        return "|".join(str(x) for x in self._open().cache_scope)

    def _context(self, messages: list[dict]):
        from tunelab.fewshot.context import Context, transcript

        tok = self.backend.tokenizer
        if tok is None:  # an endpoint: the messages travel as they are, the server applies its template
            return Context(text=transcript(messages), demos=[], messages=messages)
        from tunelab.templates.render import render_prompt

        return Context(text=render_prompt(tok, messages), demos=[], messages=messages)

    def _local_order(self, requests: list[JudgeRequest], todo: list[int]) -> tuple[list[int], dict[int, str]]:
        """A local judge's requests to generate, longest prompt first, and the texts of those not judged.

        Longest first: each chunk sent to the engine then holds prompts of similar length (the engine sorts
        within a call; chunks cut from an unsorted list would pad more). Not judged: prompts that do not fit
        the judge's context beside max_new_tokens (the engine would cut their start, the instructions);
        their text says why and they count as unparsed.
        """
        b, s = self.backend, self.settings
        if b.tokenizer is None or b.max_length() <= 0:
            return todo, {}  # an endpoint refuses an over-long prompt itself
        limit = b.max_length() - s.max_new_tokens
        lengths = {i: b.count_tokens(self._context(requests[i].messages).text) for i in todo}
        out = {i: (f"(not judged: the judge prompt has {n} tokens and {s.model} reads at most {limit} beside "
                   f"judge.max_new_tokens {s.max_new_tokens}; use a judge with a longer context)")
               for i, n in lengths.items() if n > limit}
        if out:
            log.warning(f"judge: {len(out)} prompt(s) too long for {s.model} were not judged (counted as unparsed); "
                        f"the first: {next(iter(out.values()))}")
        return sorted((i for i in todo if i not in out), key=lambda i: (-lengths[i], i)), out

    def _generate(self, todo: list[JudgeRequest]) -> list[dict]:
        s = self.settings
        seeds = [None if s.temperature == 0 else int(_sha(r.key)[:8], 16) for r in todo]
        outs = self.backend.generate([self._context(r.messages) for r in todo], seeds, batch_size=s.concurrency,
                                     max_new_tokens=s.max_new_tokens, stop=[], temperature=s.temperature, top_p=1.0)
        self.cost.calls += len(todo)
        self.cost.prompt_tokens += sum(o["prompt_tokens"] for o in outs)
        self.cost.generated_tokens += sum(o["new_tokens"] for o in outs)
        return [{"text": o["text"], "prompt_tokens": o["prompt_tokens"], "new_tokens": o["new_tokens"]} for o in outs]

    def run(self, requests: list[JudgeRequest], again: str = "run the same command again to continue") -> list[str]:
        """The judge's text for each request, from the cache where it has one; `again`: how to carry on
        after a judge failure (the end of its one line)."""
        t0 = time.perf_counter()
        self._open()
        s = self.settings
        settings = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature}
        cache = RequestCache(self.identity(), None, s.cache_path) if s.cache else None
        try:
            keys = [cache.key("judge", [r.key, settings]) for r in requests] if cache else [None] * len(requests)
            found = cache.get_many(keys) if cache else {}
            todo = [i for i, k in enumerate(keys) if k not in found]
            self.cost.cached += len(requests) - len(todo)
            todo, skipped = self._local_order(requests, todo)  # skipped: not cached, a longer context judges them
            found.update({(keys[i] if cache else i): {"text": t} for i, t in skipped.items()})
            before = len(requests) - len(todo) - len(skipped)  # judgments the cache already held
            chunk = max(32, 4 * s.concurrency)
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                try:
                    outs = self._generate([requests[i] for i in part])
                except TunelabError as e:
                    raise TunelabError(f"judge {s.model}: {e}; the {before + start} judgments made "
                                       "so far are cached: " + again) from None
                if cache:
                    cache.put_many((keys[i], o) for i, o in zip(part, outs))
                found.update({(keys[i] if cache else i): o for i, o in zip(part, outs)})
            return [found[k if cache else i]["text"] for i, k in enumerate(keys)]
        finally:
            if cache:
                cache.close()
            self.cost.wall_s += time.perf_counter() - t0


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
