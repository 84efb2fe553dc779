"""An OpenAI-compatible HTTP API over one base model and its adapters (FastAPI + uvicorn).

    GET  /v1/models               the base model and every adapter, by name
    POST /v1/chat/completions     messages -> the model's chat template -> text (stream or not)
    POST /v1/completions          raw prompt -> text; `echo` + `logprobs` score the prompt itself

Requests go to a `Batcher` (one worker thread, dynamic batches of one adapter); tokens come back
through an asyncio queue per request, so streaming is Server-Sent Events in OpenAI's chunk format
ending with `data: [DONE]`. Every error is OpenAI's JSON shape with a status that says whose
fault it is (400/401/404/413/429/500); no request body can take the server down.
"""
# no `from __future__ import annotations`: FastAPI reads the route signatures' `Request` (imported
# inside create_app, so FastAPI stays an optional dependency) from real annotation objects
import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Optional

from tunelab.errors import TunelabError
from tunelab.serve.batcher import Batcher, QueueFull
from tunelab.serve.engine import Job, Result, ServedModel
from tunelab.serve.schemas import ApiError, ChatRequest, CompletionRequest, parse

log = logging.getLogger("tunelab.serve")
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt a small local model can take
CHAT_MAX_TOKENS = 512  # when a chat request gives no max_tokens (capped by the context left)
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def create_app(served: ServedModel, *, api_key: Optional[str] = None, batch_size: int = 8, queue_size: int = 64,
               max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI app: three routes, each a thin wrapper over one `Api` handler, and the error shapes."""
    from fastapi import FastAPI, Request

    batcher = Batcher(served, batch_size=batch_size, queue_size=queue_size)
    api = Api(served, batcher, api_key=api_key, max_body_bytes=max_body_bytes)

    @asynccontextmanager
    async def lifespan(app):
        app.state.loop = asyncio.get_running_loop()  # tests count the tasks left on it
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="tunelab", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    _error_handlers(app)

    @app.get("/v1/models")
    async def models(request: Request):
        return api.models(request)

    # the bodies are read by hand (size limit, strict JSON, OpenAI's error shape), so FastAPI cannot
    # see them: openapi_extra puts their schemas into app.openapi(), which the fuzz test reads
    @app.post("/v1/chat/completions", openapi_extra=_body_schema(ChatRequest))
    async def chat(request: Request):
        return await api.chat(request)

    @app.post("/v1/completions", openapi_extra=_body_schema(CompletionRequest))
    async def completions(request: Request):
        return await api.completions(request)

    return app


def _error_handlers(app) -> None:
    """Every error leaves as OpenAI's JSON shape, with a status that says whose fault it is."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        headers = {"Retry-After": "1"} if e.status == 429 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):  # unknown route, wrong method
        return JSONResponse(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}").body(),
                            status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        log.exception("request failed")
        return JSONResponse(ApiError(500, f"internal error: {type(e).__name__}").body(), status_code=500)


def _usage(r: Result) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _final(events: asyncio.Queue) -> Result:
    """The finished result of a job that is not streamed."""
    while True:
        kind, value = await events.get()
        if kind == "done":
            return value
        if kind == "error":
            raise ApiError(500, str(value), code="generation_failed")


async def _stream(job: Job, events: asyncio.Queue, chunk, include_usage: bool) -> AsyncIterator[str]:
    """SSE lines: chunk(delta_text, finish) for each piece, optional usage, then [DONE]."""
    try:
        first = chunk(None, None)
        if first is not None:
            yield _sse(first)
        while True:
            kind, value = await events.get()
            if kind == "delta":
                yield _sse(chunk(value, None))
            elif kind == "done":
                yield _sse(chunk("", value.finish_reason))
                if include_usage:
                    yield _sse({**chunk("", None), "choices": [], "usage": _usage(value)})
                break
            else:  # the status line is already sent: report the error in the stream, as OpenAI does
                yield _sse(ApiError(500, str(value), code="generation_failed").body())
                break
        yield "data: [DONE]\n\n"
    finally:  # the client went away or the stream ended: stop decoding for it
        job.cancelled.set()


def _job_for(req, prompt_ids, adapter, max_tokens, **extra) -> Job:
    return Job(prompt_ids=prompt_ids, max_tokens=max_tokens, adapter=adapter, temperature=req.temperature,
               top_p=req.top_p, seed=req.seed, stop=req.stop or [], **extra)


class Api:
    """The handlers behind the routes: check the key, read and check the body, queue a job, answer."""

    def __init__(self, served: ServedModel, batcher: Batcher, *, api_key: Optional[str], max_body_bytes: int):
        self.served, self.batcher = served, batcher
        self.api_key, self.max_body_bytes = api_key, max_body_bytes

    # ------------------------------------------------------------ the routes
    def models(self, request) -> dict:
        self.check_key(request)
        now = int(time.time())
        return {"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "tunelab"}
                                           for n in self.served.model_names()]}

    async def chat(self, request):
        from fastapi.responses import StreamingResponse

        from tunelab.templates import render_prompt

        self.check_key(request)
        req = parse(ChatRequest, await self.read_json(request))
        adapter = self.adapter_for(req.model)
        if req.logprobs:
            raise ApiError(400, "logprobs are served on /v1/completions (with echo for the prompt), not on chat", param="logprobs")
        try:
            prompt = render_prompt(self.served.tokenizer, req.plain_messages())
        except TunelabError as e:
            raise ApiError(400, f"messages: {e}", param="messages", code="invalid_messages") from None
        ids = self.served.encode(prompt)
        job = _job_for(req, ids, adapter, self.budget(req, ids, CHAT_MAX_TOKENS))
        events = self.submit(job)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
        if req.stream:
            def chunk(text, finish):
                if text is None:  # the opening chunk names the role
                    delta = {"role": "assistant", "content": ""}
                else:
                    delta = {"content": text} if text else {}
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return StreamingResponse(_stream(job, events, chunk, req.include_usage), media_type="text/event-stream")
        r = await _final(events)
        return {**head, "object": "chat.completion", "usage": _usage(r),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                             "logprobs": None, "finish_reason": r.finish_reason}]}

    async def completions(self, request):
        from fastapi.responses import StreamingResponse

        self.check_key(request)
        req = parse(CompletionRequest, await self.read_json(request))
        adapter = self.adapter_for(req.model)
        ids, offsets = self.completion_prompt(req)
        job = _job_for(req, ids, adapter, self.budget(req, ids, COMPLETION_MAX_TOKENS), logprobs=req.logprobs,
                       echo_logprobs=req.echo and req.logprobs is not None, prompt_offsets=offsets,
                       prompt_chars=len(req.prompt))
        events = self.submit(job)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": req.model}
        if req.stream:
            def chunk(text, finish):
                if text is None:
                    text = req.prompt if req.echo else None
                    if text is None:
                        return None
                return {**head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
            return StreamingResponse(_stream(job, events, chunk, req.include_usage), media_type="text/event-stream")
        r = await _final(events)
        text = (req.prompt + r.text) if req.echo else r.text
        return {**head, "usage": _usage(r),
                "choices": [{"index": 0, "text": text, "logprobs": r.logprobs if req.logprobs is not None else None,
                             "finish_reason": r.finish_reason}]}

    # ------------------------------------------------------------ the checks and the queue
    def completion_prompt(self, req: CompletionRequest) -> tuple[list[int], Optional[list[int]]]:
        """(prompt token ids, their character offsets when echoed log-probabilities are asked for)."""
        if req.max_tokens == 0 and not req.echo:
            raise ApiError(400, "max_tokens: must be at least 1 (0 is allowed only with echo, to score the prompt)", param="max_tokens")
        if req.stream and req.logprobs is not None:
            raise ApiError(400, "logprobs: returned only without stream; send stream=false", param="logprobs")
        if req.echo and req.logprobs is not None:
            if not req.prompt:
                raise ApiError(400, "prompt: echo with logprobs needs a non-empty prompt", param="prompt")
            ids, offsets = self.served.encode(req.prompt, offsets=True)
        else:
            ids, offsets = self.served.encode(req.prompt), None
        if not ids:  # an empty prompt starts from the model's BOS (else EOS) token, as lm-eval does
            tk = self.served.tokenizer
            ids = [tk.bos_token_id if tk.bos_token_id is not None else tk.eos_token_id]
        return ids, offsets

    def check_key(self, request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' with the key the server was started with",
                           code="invalid_api_key")

    async def read_json(self, request):
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is {declared} bytes; the limit is {limit}", code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():  # a body without Content-Length is counted as it arrives
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is over the limit of {limit} bytes", code="body_too_large")
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "the request body is not valid JSON (nested too deeply)", code="invalid_json") from None
        try:  # JSON lets "\ud800" through; the tokenizer cannot take an unpaired surrogate
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "the request body holds an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape); "
                                "send valid Unicode text", code="invalid_json") from None
        return data

    def adapter_for(self, name: str) -> Optional[str]:
        try:
            return self.served.adapter_of(name)
        except KeyError:
            raise ApiError(404, f"model '{name}' is not served here; served: {', '.join(self.served.model_names())}",
                           param="model", code="model_not_found") from None

    def budget(self, req, prompt_ids: list[int], default: int) -> int:
        """max_tokens for a request, or a 400 when the prompt (plus what was asked) does not fit."""
        context = self.served.context
        room = context - len(prompt_ids)
        asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
        if room < 1 or (asked is not None and asked > room):
            raise ApiError(400, f"the prompt is {len(prompt_ids)} tokens and asks for {asked or 1} more, but the model's "
                                f"context is {context} tokens; shorten the prompt or lower max_tokens",
                           param="messages" if isinstance(req, ChatRequest) else "prompt", code="context_length_exceeded")
        return min(room, default) if asked is None else asked

    def submit(self, job: Job) -> asyncio.Queue:
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job.emit = lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (kind, value))
        try:
            self.batcher.submit(job)
        except QueueFull as e:
            raise ApiError(429, str(e), code="queue_full") from None
        return events


def _body_schema(model) -> dict:
    """An OpenAPI requestBody entry for a pydantic request model (its JSON schema, $defs inside)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


class BackgroundServer:
    """Run an app with uvicorn on a thread (tests, benchmarks); `with` starts it and always stops it.

    port=0 lets the OS pick a free port; `.url` is the base URL of the API (…/v1).
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="tunelab-uvicorn", daemon=True)
        self.host = host
        self.port = port

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class ServeOptions:
    """Where `serve` listens and how it takes requests (`tunelab serve`'s flags, checked there)."""

    host: str = "127.0.0.1"  # 127.0.0.1 keeps it on this machine
    port: int = 8000
    api_key: Optional[str] = None  # when set, every request needs 'Authorization: Bearer KEY'
    batch_size: int = 8  # most requests decoded together
    queue_size: int = 64  # requests that may wait; more get HTTP 429


def serve(model: str, options: Optional[ServeOptions] = None, *, adapters: Optional[dict[str, str]] = None,
          device: Optional[str] = None, on_ready=None) -> None:
    """Load MODEL and its adapters, then serve until interrupted (Ctrl-C stops cleanly)."""
    import uvicorn

    from tunelab.serve.engine import load_served

    o = options or ServeOptions()
    check_bindable(o.host, o.port)
    served = load_served(model, adapters, device=device)
    app = create_app(served, api_key=o.api_key, batch_size=o.batch_size, queue_size=o.queue_size)
    if on_ready is not None:
        on_ready(served)
    # uvicorn.Server rather than uvicorn.run: run() exits 3 ("startup failed") when Ctrl-C lands
    # while the server starts; Server.run raises the Ctrl-C again after shutting down, either way
    server = uvicorn.Server(uvicorn.Config(app, host=o.host, port=o.port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    server.run()
    if not server.started:
        raise TunelabError(f"the server did not start on {o.host}:{o.port}; the lines above say why")


def check_bindable(host: str, port: int) -> None:
    """Fail before loading the model when HOST:PORT is taken (uvicorn would only log and exit)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind(infos[0][4])
    except OSError as e:
        raise TunelabError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); pick another --port or host") from None
