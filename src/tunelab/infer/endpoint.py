"""Any OpenAI-compatible endpoint as a model: `openai:http://127.0.0.1:8000/v1#NAME`.

vLLM, llama.cpp's server, text-generation-inference and `tunelab serve` all speak this protocol.
- generate tasks: one request per item (`/chat/completions` for chat tasks, `/completions`
  otherwise), at most `batch_size` in flight at once;
- multiple_choice tasks: the log-likelihood of each choice from `/completions` with `echo` and
  `logprobs` (the prompt's own token log-probabilities, as vLLM returns them; lm-eval's
  local-completions model asks the same way). Endpoints without them get a one-line error;
- perplexity tasks, and the drift measure's KL (`answer_kl`: the whole vocabulary's distribution at
  each position, where the API returns at most the top 20 log-probabilities), need a local model;
- chat (`stream_chat`): one streamed `/chat/completions` request per turn, its text pieces as they
  arrive; closing the iterator closes the connection, which tells the server to stop.

The official `openai` client does the HTTP: it retries 429 and 5xx answers and dropped
connections with exponential backoff (0.5 s doubling to 8 s, with jitter, honouring Retry-After),
`max_retries` times. The key comes from TUNELAB_OPENAI_API_KEY, else OPENAI_API_KEY; a local
server without a key needs neither.

A server that accepts a request and then says nothing is not busy, it is stuck: after
`timeout_s` seconds without a byte (before the answer starts, or between two pieces of it) the
request fails at once, unretried, with one line (docs/serve.md). The timeout is --timeout on the
commands that take a model, or TUNELAB_ENDPOINT_TIMEOUT (every command, compare included).
After a few seconds without an answer a line says what is awaited, so a slow answer never looks
like a hang (infer/waiting.py). A batch that fails part-way raises `Unfinished` with the answers it has,
which the evaluation keeps in its request cache (evaluate/cache.py).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import ClassVar, Iterator, Optional, Sequence

from tunelab.errors import TunelabError
from tunelab.infer.protocol import OnBatch, Unfinished, prefixed
from tunelab.infer.waiting import CONNECT_TIMEOUT_S, TIMEOUT_VAR, Notice, check_timeout, default_timeout, http_client

PREFIX = "openai:"
KEY_VARS = ("TUNELAB_OPENAI_API_KEY", "OPENAI_API_KEY")
MAX_RETRIES = 6  # ~0.5+1+2+4+8+8 s of backoff before a busy endpoint counts as failed
NEEDS_LOGPROBS = ("multiple_choice tasks need prompt log-probabilities (/v1/completions with echo=true and logprobs=1, "
                  "as vLLM and `tunelab serve` answer); generate tasks run without them")


def is_endpoint(model) -> bool:
    """True for an `openai:URL#NAME` model string (the one place that spells the prefix)."""
    return isinstance(model, str) and model.startswith(PREFIX)


class _NotSent(Exception):
    """A request not sent because an earlier one of its batch failed."""


class NoLogprobs(TunelabError):
    """The endpoint answered a scoring request without the prompt's log-probabilities (or refused it)."""


def parse_spec(spec: str) -> tuple[str, str]:
    """'openai:URL#NAME' -> (URL, NAME); both parts are required."""
    body = spec[len(PREFIX):]
    url, _, name = body.partition("#")
    if not url.startswith(("http://", "https://")) or not name:
        raise TunelabError(f"model '{spec}': write openai:URL#NAME, e.g. openai:http://127.0.0.1:8000/v1#my-model "
                           "(URL is the API base that ends in /v1, NAME the model it serves)")
    return url.rstrip("/"), name


@prefixed
class EndpointBackend:
    """A model behind an OpenAI-compatible HTTP API (see the module docstring)."""

    prefix: ClassVar[Optional[str]] = PREFIX
    spec: str
    adapter: Optional[str]
    identity: object
    tokenizer: object
    device: object
    cache_scope: tuple

    def __init__(self, spec: str, *, adapter=None, max_retries: int = MAX_RETRIES, timeout: Optional[float] = None):
        if adapter is not None:
            raise TunelabError(f"--adapter {adapter}: an endpoint model takes no adapter; serve the adapter under a name "
                               "(tunelab serve MODEL --adapter NAME=DIR) and use openai:URL#NAME")
        self.url, self.name = parse_spec(spec)
        try:
            from openai import OpenAI
        except ImportError:
            raise TunelabError(f"model '{spec}': endpoints need the openai client: pip install 'tunelab[openai]'") from None
        import httpx2

        key = next((os.environ[v] for v in KEY_VARS if os.environ.get(v)), None)
        self.timeout_s = default_timeout() if timeout is None else check_timeout(timeout)
        limits = httpx2.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.timeout_s))
        # a local server without a key still needs a non-empty value for the client to start
        self.client = OpenAI(base_url=self.url, api_key=key or "no-key", max_retries=max_retries, timeout=limits,
                             http_client=http_client(limits))
        self.spec = f"{PREFIX}{self.url}#{self.name}"
        self.adapter = None  # a served adapter is a model name of its own
        # results.json's model block: the endpoint is the model's identity (no weights to hash)
        self.identity = {"name": self.spec, "sha256": None, "adapter": None}
        self.tokenizer = None  # chat prompts go to the server as messages; its template applies them
        self.device = None
        self.cache_scope = (self.spec, None)
        self._prompt_tokens: dict[str, int] = {}
        self._check_model()

    # ------------------------------------------------------------ errors in one voice
    def _fail(self, e: Exception, what: str, partway: bool = False) -> TunelabError:
        import httpx2
        import openai

        silent = not isinstance(e.__cause__, (httpx2.ConnectTimeout, httpx2.PoolTimeout))  # else: never connected
        if isinstance(e, openai.APITimeoutError) and silent:  # before APIConnectionError, its base class
            return TunelabError(f"{self.spec}: the endpoint sent nothing for {self.timeout_s:g} s "
                                f"({'after part of ' + what if partway else 'after accepting ' + what}); check the "
                                f"server is not stuck or overloaded, or wait longer with --timeout SECONDS ({TIMEOUT_VAR})")
        if isinstance(e, openai.AuthenticationError):
            return TunelabError(f"{self.spec}: the endpoint refused the API key (401); set TUNELAB_OPENAI_API_KEY or OPENAI_API_KEY")
        if isinstance(e, openai.APIStatusError):
            try:
                message = e.response.json()["error"]["message"]
            except Exception:  # any shape: fall back to the client's own text
                message = str(e)
            return TunelabError(f"{self.spec}: {what} failed with HTTP {e.status_code} ({message})")
        if isinstance(e, openai.APIConnectionError):
            return TunelabError(f"{self.spec}: cannot reach the endpoint ({e.__cause__ or e}); is the server running at {self.url}?")
        return TunelabError(f"{self.spec}: {what} failed ({type(e).__name__}: {e})")

    def _notice(self) -> Notice:
        return Notice(f"waiting for an answer from {self.url} (model {self.name}); it gives up after "
                       f"{self.timeout_s:g} s without a byte (--timeout SECONDS, {TIMEOUT_VAR})")

    def _check_model(self) -> None:
        import openai

        notice = self._notice()
        try:
            served = [m.id for m in self.client.models.list().data]
        except openai.NotFoundError:
            return  # some servers have no /models; the first request will tell
        except openai.OpenAIError as e:
            raise self._fail(e, "the request for its models") from None
        finally:
            notice.stop()
        if served and self.name not in served:
            raise TunelabError(f"{self.spec}: the endpoint does not serve '{self.name}'; it serves {', '.join(served)}")

    def template_id(self) -> str:
        return "endpoint"  # the server applies its own chat template; its text is not visible here

    def check_task(self, task) -> None:
        if task.type == "perplexity":
            raise TunelabError(f"{self.spec}: perplexity tasks need a local model; through an endpoint run generate tasks, "
                               f"and {NEEDS_LOGPROBS.split(';')[0]}")
        if task.type == "preference":
            raise TunelabError(f"{self.spec}: task '{task.name}' is a preference task, which renders each pair with the "
                               "model's chat template to score its answers, and an endpoint does not expose it; "
                               "evaluate the model locally")
        if task.type == "multiple_choice" and task.chat:
            raise TunelabError(f"{self.spec}: task '{task.name}' is multiple_choice with chat: true, which needs the model's "
                               "chat template to score choices, and an endpoint does not expose it; set chat: false")

    def no_reference(self) -> Optional[str]:
        return (f"{self.spec}: an endpoint serves one model, with no reference model beside it to measure an "
                "implicit reward against; evaluate locally, base + adapter (--adapter DIR) or with --reference MODEL")

    def reference(self):
        raise TunelabError(self.no_reference())

    def reference_identity(self):
        return None

    def max_length(self) -> int:
        return 0  # unknown; the server rejects an over-long prompt itself

    def count_tokens(self, text: str) -> int:
        return self._prompt_tokens.get(text, 0)  # as the server counted it (usage), when it scored this text

    # ------------------------------------------------------------ the work, `batch_size` requests at a time
    def _map(self, fn, items: list, batch_size: int, on_batch: OnBatch) -> list:
        """[fn(x) for x in items], `batch_size` at a time; a failure raises Unfinished with the answers that came."""
        notice, failed = self._notice(), threading.Event()

        def one(x):
            if failed.is_set():  # set by the first failure, in its own worker: no request starts after it
                raise _NotSent
            try:
                return fn(x)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=max(1, batch_size), thread_name_prefix="tunelab-endpoint") as pool:
            futures = [pool.submit(one, x) for x in items]
            out = []
            try:
                for f in futures:  # in order; progress as each finishes
                    out.append(f.result())
                    notice.reset()
                    if on_batch:
                        on_batch(1)
            except NoLogprobs:  # what the server cannot do: a re-run fails the same, nothing to keep
                for f in futures:
                    f.cancel()
                raise
            except TunelabError as e:
                for f in futures:
                    f.cancel()
                wait(futures)  # the requests already sent end (answered or timed out); their answers count too
                done = {i: f.result() for i, f in enumerate(futures) if not f.cancelled() and f.exception() is None}
                raise Unfinished(e, done, len(items)) from None
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                notice.stop()
            return out

    def generate(self, contexts, seeds: Sequence[Optional[int]], *, batch_size: int, on_batch: OnBatch = None,
                 max_new_tokens: int, stop: Sequence[str], temperature: float, top_p: float) -> list[dict]:
        import openai

        common = {"model": self.name, "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        if stop:
            common["stop"] = list(stop)

        def one(job):
            context, seed = job
            extra = {} if seed is None else {"seed": int(seed)}
            t0 = time.perf_counter()
            try:
                if context.messages is not None:
                    r = self.client.chat.completions.create(messages=context.messages, **common, **extra)
                    text = r.choices[0].message.content or ""
                else:
                    r = self.client.completions.create(prompt=context.text, **common, **extra)
                    text = r.choices[0].text
            except openai.OpenAIError as e:
                raise self._fail(e, "a generation request") from None
            cut = [i for i in (text.find(s) for s in stop if s) if i >= 0]  # servers that keep the stop string
            usage = r.usage
            return {"text": text[:min(cut)] if cut else text, "prompt_tokens": usage.prompt_tokens if usage else 0,
                    "new_tokens": usage.completion_tokens if usage else 0, "latency_s": time.perf_counter() - t0,
                    "finish": "length" if r.choices[0].finish_reason == "length" else "stop"}

        return self._map(one, list(zip(contexts, seeds)), batch_size, on_batch)

    def score_choices(self, reqs, *, batch_size: int, on_batch: OnBatch = None):
        """[(context, [continuation, ...])] -> [[(loglik, is_greedy), ...]] from echoed prompt logprobs."""
        pairs = [(ctx, cont) for ctx, conts in reqs for cont in conts]
        try:
            scored = self._map(lambda p: self._score(*p), pairs, batch_size, None)
        except Unfinished as e:  # keep the items whose every choice was scored
            done, i = {}, 0
            for r, (_, conts) in enumerate(reqs):
                if all(j in e.done for j in range(i, i + len(conts))):
                    done[r] = [e.done[j] for j in range(i, i + len(conts))]
                i += len(conts)
            raise Unfinished(e, done, len(reqs)) from None
        out, i = [], 0
        for _, conts in reqs:
            out.append(scored[i:i + len(conts)])
            i += len(conts)
            if on_batch:
                on_batch(1)
        return out

    def _score(self, context: str, continuation: str) -> tuple[float, bool]:
        import openai

        # lm-eval's convention: trailing whitespace of the context belongs to the continuation
        boundary = len(context.rstrip())
        prompt = context + continuation
        try:
            # max_tokens=1, not 0: servers differ on 0, and the one generated token is dropped below
            r = self.client.completions.create(model=self.name, prompt=prompt, max_tokens=1, echo=True, logprobs=1,
                                               temperature=0)
        except openai.BadRequestError as e:
            raise NoLogprobs(f"{self.spec}: the endpoint refused echo+logprobs ({self._fail(e, 'scoring')}); {NEEDS_LOGPROBS}") from None
        except openai.OpenAIError as e:
            raise self._fail(e, "a scoring request") from None
        lp = r.choices[0].logprobs
        if lp is None or not lp.token_logprobs or lp.text_offset is None:
            raise NoLogprobs(f"{self.spec}: the endpoint returned no log-probabilities; {NEEDS_LOGPROBS}")
        total, greedy, seen = 0.0, True, False
        for tok, logp, off, top in zip(lp.tokens, lp.token_logprobs, lp.text_offset, lp.top_logprobs or [None] * len(lp.tokens)):
            if off >= len(prompt):
                break  # the generated token
            if off < boundary:
                continue
            if logp is None:  # the first token of an empty context has nothing to condition on
                continue
            seen = True
            total += logp
            if top:
                greedy = greedy and max(top, key=top.get) == tok
        if not seen:
            raise NoLogprobs(f"{self.spec}: the echoed tokens of a choice could not be found after its context "
                               f"(choice {continuation!r}); {NEEDS_LOGPROBS}")
        if r.usage is not None:
            self._prompt_tokens[prompt] = r.usage.prompt_tokens
        return total, greedy

    def rolling_loglik(self, texts, *, batch_size: int, on_batch: OnBatch = None):
        raise TunelabError(f"{self.spec}: perplexity tasks need a local model")

    def answer_kl(self, prompts, answers, *, base=None, chat: bool = True, batch_size: int = 4):
        raise TunelabError(f"{self.spec}: drift (the KL from the base model over the whole vocabulary) needs a local "
                           "model; an OpenAI-compatible endpoint returns at most the top 20 log-probabilities per token")

    def stream_chat(self, messages: list[dict], *, max_new_tokens: int, temperature: float,
                    top_p: float) -> Iterator[str]:
        """The answer to a conversation, piece by piece, from a streamed /chat/completions request.

        The request is sent here, so a refused one (a conversation over the context is a
        ContextFull, as from a local model) raises before any piece; the server applies its own
        chat template. Closing the iterator closes the connection.
        """
        import openai

        from tunelab.infer.stream import ContextFull

        notice = self._notice()  # stopped by the first piece (or the end of the stream)
        try:
            stream = self.client.chat.completions.create(model=self.name, messages=messages, max_tokens=max_new_tokens,
                                                         temperature=temperature, top_p=top_p, stream=True)
        except openai.BadRequestError as e:
            notice.stop()
            if e.code == "context_length_exceeded":  # `tunelab serve` and vLLM's code for it
                raise ContextFull(str(self._fail(e, "a chat request"))) from None
            raise self._fail(e, "a chat request") from None
        except openai.OpenAIError as e:
            notice.stop()
            raise self._fail(e, "a chat request") from None
        return self._pieces(stream, notice)

    def _pieces(self, stream, notice: Notice) -> Iterator[str]:
        import openai

        started = False
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    started = True
                    notice.stop()
                    yield chunk.choices[0].delta.content
        except openai.OpenAIError as e:  # an error the server reported inside the stream, or its silence
            raise self._fail(e, "a chat answer" if started else "a chat request", partway=started) from None
        finally:
            notice.stop()
            stream.close()
