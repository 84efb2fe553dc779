"""The OpenAI-compatible server, driven by the official `openai` client over real localhost HTTP.

Outputs are checked against tunelab's own batched `generate` on the same rendered prompt (greedy
decoding is deterministic), so the tests fail if the template, batching, adapters, stop strings or
streaming change what the model says.
"""
from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tunelab.infer.generate import generate
from tunelab.templates import render_prompt

MSGS = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Convert the date March 5, 2021 to ISO format."}]


@pytest.fixture(scope="module")
def local(lively_dir, adapter_dirs):
    """The same model loaded separately: the base and each adapter, for reference outputs."""
    from tunelab.models.loading import load_model

    out = {None: load_model(str(lively_dir), device="cpu")}
    for name, folder in adapter_dirs.items():
        out[name] = load_model(str(lively_dir), adapter=str(folder), device="cpu")
    return out


def _ref(lm, messages, n, stop=()):
    prompt = render_prompt(lm.tokenizer, messages)
    return generate(lm.model, lm.tokenizer, [prompt], max_new_tokens=n, stop=stop)[0]


def test_openai_fields_a_local_model_does_not_use_are_ignored(client, served, local):
    """Clients send options like these by default; the answer is the one without them."""
    r = client.chat.completions.create(model=served.name, messages=MSGS, max_tokens=6, temperature=0, n=1, user="u1",
                                       presence_penalty=0.0, frequency_penalty=0.0, logit_bias={},
                                       extra_body={"some_future_option": True})
    assert r.choices[0].message.content == _ref(local[None], MSGS, 6).text


def test_models_lists_base_and_adapters(client, served, lively_dir):
    ids = [m.id for m in client.models.list().data]
    assert ids == [served.name, str(lively_dir), "alpha", "beta"]  # the base by its name and as it was served


def test_chat_greedy_matches_local_generate_with_usage(client, served, local):
    r = client.chat.completions.create(model=served.name, messages=MSGS, max_tokens=12, temperature=0)
    ref = _ref(local[None], MSGS, 12)
    assert r.choices[0].message.content == ref.text and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == ("length" if ref.finish == "length" else "stop")
    assert r.usage.prompt_tokens == ref.prompt_tokens and r.usage.completion_tokens == ref.new_tokens
    assert r.usage.total_tokens == ref.prompt_tokens + ref.new_tokens and r.object == "chat.completion"


@pytest.mark.parametrize("adapter", ["alpha", "beta"])
def test_request_model_picks_the_adapter(client, served, local, adapter):
    texts = {name: client.chat.completions.create(model=name, messages=MSGS, max_tokens=10, temperature=0)
             .choices[0].message.content for name in (served.name, adapter)}
    assert texts[adapter] == _ref(local[adapter], MSGS, 10).text
    assert texts[served.name] == _ref(local[None], MSGS, 10).text
    assert texts[adapter] != texts[served.name]  # the adapter really changes the model


def test_streaming_chunks_join_to_the_full_answer(client, served):
    whole = client.chat.completions.create(model="alpha", messages=MSGS, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(model="alpha", messages=MSGS, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # more than one piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_sse_ends_with_done(server, served):
    body = json.dumps({"model": served.name, "messages": MSGS, "max_tokens": 4, "stream": True}).encode()
    req = urllib.request.Request(server.url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.read().decode().split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_stop_string_cuts_the_answer_stream_and_not(client, served, local):
    full = _ref(local[None], MSGS, 24).text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip() and len(full) > 6
    expect = full[:full.find(stop)]
    r = client.chat.completions.create(model=served.name, messages=MSGS, max_tokens=24, temperature=0, stop=[stop, "@@@"])
    assert r.choices[0].message.content == expect and r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=served.name, messages=MSGS, max_tokens=24, temperature=0, stop=stop, stream=True) if c.choices)
    assert streamed == expect  # the held-back tail of a possible stop string never leaks


def test_seed_reproduces_sampling_and_temperature_top_p_apply(client, served):
    def ask(**kw):
        return client.chat.completions.create(model=served.name, messages=MSGS, max_tokens=12, **kw).choices[0].message.content

    a, b = ask(temperature=1.5, seed=7), ask(temperature=1.5, seed=7)
    assert a == b
    assert len({ask(temperature=1.5, seed=s) for s in range(6)}) > 1
    greedy = ask(temperature=0)
    assert ask(temperature=1.5, top_p=1e-6, seed=3) == greedy  # top_p that small keeps only the argmax


def test_completions_max_tokens_and_finish(client, served, local):
    lm = local[None]
    prompt = "The quick brown fox"
    r = client.completions.create(model=served.name, prompt=prompt, max_tokens=7, temperature=0)
    ref = generate(lm.model, lm.tokenizer, [prompt], max_new_tokens=7)[0]
    assert r.choices[0].text == ref.text and r.object == "text_completion"
    assert r.usage.completion_tokens == ref.new_tokens
    assert (r.choices[0].finish_reason == "length") == (ref.finish == "length")
    streamed = list(client.completions.create(model=served.name, prompt=prompt, max_tokens=7, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == ref.text


def test_echo_logprobs_score_the_prompt_like_loglik(client, served, local):
    from tunelab.infer.loglik import score_choices

    lm = local[None]
    ctx, cont = "Question: what is the answer? Answer:", " yes"
    r = client.completions.create(model=served.name, prompt=ctx + cont, max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == ctx + cont and lp.token_logprobs[0] is None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == r.usage.prompt_tokens
    ours = sum(x for x, off in zip(lp.token_logprobs, lp.text_offset) if off >= len(ctx))
    [[(ref, greedy)]] = score_choices(lm.model, lm.tokenizer, [(ctx, [cont])])
    assert ours == pytest.approx(ref, abs=1e-4)
    cont_top = [t for t, off in zip(lp.top_logprobs, lp.text_offset) if off >= len(ctx)]
    is_greedy = all(max(d, key=d.get) == tok for d, tok, off in zip(lp.top_logprobs, lp.tokens, lp.text_offset)
                    if off >= len(ctx))
    assert cont_top and is_greedy == greedy


def test_concurrent_requests_are_batched_and_unchanged(client, served, server):
    prompts = [[{"role": "user", "content": f"Reverse the words {i} {'abc ' * i}"}] for i in range(8)]
    one_by_one = [client.chat.completions.create(model=served.name, messages=m, max_tokens=10, temperature=0)
                  .choices[0].message.content for m in prompts]
    batcher = server.server.config.app.state.batcher
    before = (batcher.batches, batcher.batched_jobs)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda m: client.chat.completions.create(
            model=served.name, messages=m, max_tokens=10, temperature=0).choices[0].message.content, prompts))
    batches, jobs = batcher.batches - before[0], batcher.batched_jobs - before[1]
    assert together == one_by_one
    assert jobs == 8 and batches < 8  # at least one batch held several requests


def test_mixed_adapters_at_once_each_get_their_own(client, served, local):
    names = [served.name, "alpha", "beta"] * 3
    with ThreadPoolExecutor(9) as pool:
        texts = list(pool.map(lambda n: client.chat.completions.create(
            model=n, messages=MSGS, max_tokens=8, temperature=0).choices[0].message.content, names))
    expect = {n: _ref(local[None if n == served.name else n], MSGS, 8).text for n in set(names)}
    assert texts == [expect[n] for n in names]


def test_the_name_it_was_served_as_is_a_model_name(served):
    """`tunelab serve default` serves smollm2-135m-instruct; `openai:URL#default` is that model too."""
    from tunelab.infer.endpoint import EndpointBackend
    from tunelab.serve.engine import ServedModel
    from tunelab.serve.server import BackgroundServer, create_app

    with BackgroundServer(create_app(ServedModel(served.lm, alias="default"))) as srv:
        by_alias = EndpointBackend(f"openai:{srv.url}#default")  # refused before: "does not serve 'default'"
        assert [m.id for m in by_alias.client.models.list().data] == [served.name, "default"]
        by_name = EndpointBackend(f"openai:{srv.url}#{served.name}")
        answers = ["".join(b.stream_chat(MSGS, max_new_tokens=6, temperature=0.0, top_p=1.0)) for b in (by_alias, by_name)]
        assert answers[0] == answers[1] and answers[0]
