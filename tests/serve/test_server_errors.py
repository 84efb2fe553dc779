"""Bad requests get OpenAI's error shape with the right status, and the server keeps serving.

Most cases go through the official `openai` client (what users run); a body the client cannot
produce (broken JSON, a JSON list) goes through urllib.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

OK = [{"role": "user", "content": "Hello"}]


def _chat(**kw):
    return lambda c, name: c.chat.completions.create(**{"model": name, "messages": OK, "max_tokens": 4, **kw})


def _comp(**kw):
    return lambda c, name: c.completions.create(**{"model": name, "prompt": "Hello", "max_tokens": 4, **kw})


# (case, call, status, param, words the message must contain)
CASES = [
    ("empty messages", _chat(messages=[]), 400, "messages", "at least 1"),
    ("no messages", lambda c, n: c.chat.completions.create(model=n, messages=None), 400, "messages", "required"),
    ("temperature as text", _chat(temperature="hot"), 400, "temperature", "number"),
    ("temperature out of range", _chat(temperature=9), 400, "temperature", "less than or equal to 2"),
    ("top_p zero", _chat(top_p=0), 400, "top_p", "greater than 0"),
    ("max_tokens as text", _chat(max_tokens="ten"), 400, "max_tokens", "integer"),
    ("negative max_tokens", _chat(max_tokens=-1), 400, "max_tokens", "greater than or equal to 0"),
    ("unknown role", _chat(messages=[{"role": "robot", "content": "x"}]), 400, "messages[0].role", "system"),
    ("content as number", _chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content", "valid"),
    ("stop as number", _chat(stop=5), 400, "stop", "valid"),
    ("too many stops", _chat(stop=[str(i) for i in range(17)]), 400, "stop", "at most 16"),
    ("n above 1", _chat(n=2), 400, "n", "less than or equal to 1"),
    ("seed as float", _chat(seed=1.5), 400, "seed", "integer"),
    ("seed 2**64", _chat(seed=2**64), 400, "seed", "less than 18446744073709551616"),  # issue 26 case 5: no answer
    ("seed below -2**63", _comp(seed=-(2**63) - 1), 400, "seed", "greater than or equal to"),
    ("stream as text", _chat(stream="yes"), 400, "stream", "boolean"),
    ("over-long prompt", _chat(messages=[{"role": "user", "content": "abc " * 1200}]), 400, "messages", "context is 1024"),
    ("max_tokens past the context", _chat(max_tokens=5000), 400, "messages", "lower max_tokens"),
    ("chat logprobs", _chat(logprobs=True), 400, "logprobs", "/v1/completions"),
    ("unknown model", _chat(model="gpt-9"), 404, "model", "not served here"),
    ("completion without prompt", lambda c, n: c.completions.create(model=n, prompt=None), 400, "prompt", "required"),
    ("completion max_tokens 0", _comp(max_tokens=0), 400, "max_tokens", "only with echo"),
    ("several prompts", _comp(prompt=["a", "b"]), 400, "prompt", "one prompt"),
    ("stream with logprobs", _comp(stream=True, logprobs=1), 400, "logprobs", "without stream"),
    ("logprobs over 20", _comp(logprobs=50), 400, "logprobs", "less than or equal to 20"),
    ("oversized body", _chat(messages=[{"role": "user", "content": "x" * (1 << 20)}]), 413, None, "limit"),
]


@pytest.mark.parametrize("case,call,status,param,words", CASES, ids=[c[0] for c in CASES])
def test_bad_request_table(client, served, case, call, status, param, words):
    with pytest.raises(openai.APIStatusError) as info:
        call(client, served.name)
    e = info.value
    assert e.status_code == status, e.body
    err = e.response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and words in err["message"], err
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("body,words", [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"),
                                        (b"\xff\xfe", "not valid JSON"), (b"", "not valid JSON"),
                                        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
                                        (b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate")])
def test_malformed_bodies(server, body, words):
    req = urllib.request.Request(server.url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 400
    assert words in json.loads(info.value.read())["error"]["message"]


def test_oversized_body_without_content_length_is_413(server):
    """A chunked body declares no size: it is counted as it arrives and cut off at the limit."""
    import http.client

    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        piece = b"x" * 65536
        try:
            for _ in range(20):  # 1.25 MiB, over the 1 MiB limit
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the whole body is sent
        resp = conn.getresponse()
        err = json.loads(resp.read())["error"]
        assert resp.status == 413 and err["code"] == "body_too_large", err
    finally:
        conn.close()


def test_unknown_route_and_method_keep_the_shape(server):
    for url, data in ((server.url + "/embeddings", b"{}"), (server.url + "/models", b"{}")):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30)
        assert info.value.code in (404, 405) and "error" in json.loads(info.value.read())


def test_still_serving_after_the_table(client, served):
    r = client.chat.completions.create(model=served.name, messages=OK, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1


def test_api_key_required_when_set(served):
    from openai import OpenAI

    from tunelab.serve.server import BackgroundServer, create_app

    with BackgroundServer(create_app(served, api_key="s3cret")) as srv:
        with OpenAI(base_url=srv.url, api_key="wrong", max_retries=0) as c, pytest.raises(openai.AuthenticationError) as info:
            c.models.list()
        assert info.value.status_code == 401 and info.value.response.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(urllib.error.HTTPError) as no_key:  # no Authorization header at all
            urllib.request.urlopen(srv.url + "/models", timeout=30)
        assert no_key.value.code == 401 and "API key" in json.loads(no_key.value.read())["error"]["message"]
        with OpenAI(base_url=srv.url, api_key="s3cret", max_retries=0) as c:
            assert c.chat.completions.create(model=served.name, messages=OK, max_tokens=2).usage.completion_tokens >= 1


def test_full_queue_answers_429_and_retrying_clients_all_finish(served):
    from openai import OpenAI

    from tunelab.serve.server import BackgroundServer, create_app

    with BackgroundServer(create_app(served, batch_size=1, queue_size=1)) as srv:
        def ask(retries):
            with OpenAI(base_url=srv.url, api_key="x", max_retries=retries) as c:
                try:
                    return c.chat.completions.create(model=served.name, messages=OK, max_tokens=60, temperature=0).usage
                except openai.RateLimitError as e:
                    assert e.response.json()["error"]["type"] == "rate_limit_error"
                    assert e.response.headers["retry-after"] == "1"
                    return 429

        with ThreadPoolExecutor(6) as pool:
            first = list(pool.map(ask, [0] * 6))
        assert first.count(429) >= 1 and any(x != 429 for x in first)
        with ThreadPoolExecutor(6) as pool:  # the client's own backoff (429 is retried) gets everyone through
            second = list(pool.map(ask, [10] * 6))
        assert 429 not in second


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_generation_answers_500_with_json_and_leaves_no_task(served, monkeypatch, stream, server_tasks):
    """Issue 26 case 5: a job whose row could not be built got no event; its request hung and
    its task stayed until shutdown. Now every request taken by a failed batch is answered."""
    from openai import OpenAI

    from tunelab.serve import engine
    from tunelab.serve.server import BackgroundServer, create_app

    def broken(*_a, **_k):
        raise RuntimeError("Overflow when unpacking long")

    with BackgroundServer(create_app(served, batch_size=4, queue_size=8)) as srv:
        before = server_tasks(srv)
        monkeypatch.setattr(engine, "row_generator", broken)
        with OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=30) as c:
            def ask(_):
                try:
                    if stream:
                        return "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                            model=served.name, messages=OK, max_tokens=3, stream=True) if ch.choices)
                    return c.chat.completions.create(model=served.name, messages=OK, max_tokens=3)
                except openai.APIStatusError as e:
                    return e
                except openai.APIError as e:  # the stream's in-band error event
                    return e

            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(ask, range(6)))
        for a in answers:
            assert isinstance(a, openai.APIError), a
            if isinstance(a, openai.APIStatusError):
                assert a.status_code == 500 and a.response.json()["error"]["code"] == "generation_failed"
            assert "Overflow when unpacking long" in str(a)
        monkeypatch.undo()
        deadline = time.monotonic() + 10
        while server_tasks(srv) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server_tasks(srv) == before


@pytest.mark.parametrize("field", ["temperature", "top_p"])
@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_number_that_is_not_finite_is_named_as_such(server, served, field, value):
    """Python's JSON reads NaN; it fails every range check, so it used to read as "not <= 2"."""
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "Hi"}], "%s": %s}' % (
        served.name.encode(), field.encode(), value)
    req = urllib.request.Request(server.url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    err = json.loads(info.value.read())["error"]
    assert info.value.code == 400 and err["param"] == field
    assert err["message"] == f"{field}: Input should be a finite number"
