"""`evaluate("openai:URL#NAME", task)` against tunelab's own server: the same answers as the local model.

Greedy generation through the API must give the local run's outputs item for item, and
multiple-choice log-likelihoods from echoed prompt log-probabilities must match local scoring.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate.runner import evaluate

GEN_ROWS = [{"q": f"Reverse the words: {w}", "a": " ".join(reversed(w.split()))}
            for w in ["hello world", "the quick fox", "alice met bob", "yes no maybe", "one two", "a b c"]]
MC_ROWS = [{"id": f"q{i}", "question": f"What comes after {i}?", "options": [str(i + 1), str(i + 2), "none"],
            "label": 0} for i in range(8)]


def _task(tmp_path, name, rows, **spec):
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "data": f"{name}.jsonl", **spec}))
    return path


def _gen(tmp_path, **extra):
    return _task(tmp_path, "gen", GEN_ROWS, prompt="{{ q }}", answer="{{ a }}", metrics=["exact_match", "chrf"],
                 generation={"max_new_tokens": 8, "stop": ["\n"]}, **extra)


def _mc(tmp_path, **extra):
    return _task(tmp_path, "mc", MC_ROWS, type="multiple_choice", prompt="Q: {{ question }}\nA:",
                 choices="{{ options }}", answer="{{ label }}", metrics=["acc", "acc_norm"], **extra)


def _spec(server, served, name=None):
    return f"openai:{server.url}#{name or served.name}"


@pytest.mark.parametrize("chat,shots", [(False, 0), (True, 2)])
def test_generate_task_through_the_api_matches_local(server, served, lively_dir, tmp_path, chat, shots):
    task = _gen(tmp_path, chat=chat)
    local = evaluate(str(lively_dir), task, shots=shots)
    remote = evaluate(_spec(server, served), task, shots=shots, batch_size=3, out=tmp_path / "out")
    assert [p["output"] for p in remote.predictions] == [p["output"] for p in local.predictions]
    assert len({p["output"] for p in local.predictions}) > 1  # the outputs differ: the test can tell items apart
    assert remote.metrics == local.metrics
    assert remote.cost["prompt_tokens"] == local.cost["prompt_tokens"] and remote.cost["generated_tokens"] > 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["model"] == {"name": f"openai:{server.url}#{served.name}", "sha256": None, "adapter": None}
    assert f"|model openai:{server.url}#{served.name} sha256:none|" in results["signature"]
    assert "|template endpoint|" in results["signature"]


def test_an_adapter_served_by_name_is_a_model(server, served, lively_dir, adapter_dirs, tmp_path):
    task = _gen(tmp_path)
    local = evaluate(str(lively_dir), task, adapter=str(adapter_dirs["beta"]))
    remote = evaluate(_spec(server, served, "beta"), task)
    assert [p["output"] for p in remote.predictions] == [p["output"] for p in local.predictions]


def test_multiple_choice_from_echoed_logprobs_matches_local(server, served, lively_dir, tmp_path):
    task = _mc(tmp_path)
    local = evaluate(str(lively_dir), task, shots=1)
    remote = evaluate(_spec(server, served), task, shots=1, batch_size=4)
    for a, b in zip(remote.predictions, local.predictions):
        assert a["choice_logliks"] == pytest.approx(b["choice_logliks"], abs=1e-3)
        assert a["is_greedy"] == b["is_greedy"] and a["pred"] == b["pred"]
    assert remote.metrics["acc"]["value"] == local.metrics["acc"]["value"]
    assert remote.cost["prompt_tokens"] == local.cost["prompt_tokens"]


def test_busy_server_429s_are_retried_until_every_item_is_done(served, lively_dir, tmp_path):
    from tunelab.serve.server import BackgroundServer, create_app

    task = _gen(tmp_path)
    with BackgroundServer(create_app(served, batch_size=1, queue_size=1)) as srv:
        remote = evaluate(_spec(srv, served), task, batch_size=6)  # 6 in flight, room for 2: the rest get 429
    local = evaluate(str(lively_dir), task)
    assert [p["output"] for p in remote.predictions] == [p["output"] for p in local.predictions]


def test_the_key_comes_from_the_environment(served, tmp_path, monkeypatch):
    from tunelab.serve.server import BackgroundServer, create_app

    task = _gen(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("TUNELAB_OPENAI_API_KEY", raising=False)
    with BackgroundServer(create_app(served, api_key="k3y")) as srv:
        with pytest.raises(TunelabError, match="refused the API key"):
            evaluate(_spec(srv, served), task, limit=1)
        monkeypatch.setenv("TUNELAB_OPENAI_API_KEY", "k3y")
        assert evaluate(_spec(srv, served), task, limit=2).n == 2


@pytest.mark.parametrize("make,words", [
    (lambda s, m: "openai:localhost:8000#x", "write openai:URL#NAME"),
    (lambda s, m: f"openai:{s.url}", "write openai:URL#NAME"),
    (lambda s, m: f"openai:{s.url}#gpt-9", "does not serve 'gpt-9'"),
    (lambda s, m: "openai:http://127.0.0.1:9/v1#x", "cannot reach the endpoint"),
])
def test_bad_endpoint_strings(server, served, tmp_path, make, words):
    with pytest.raises(TunelabError, match=words):
        evaluate(make(server, served), _gen(tmp_path), limit=1)


def test_task_types_an_endpoint_cannot_run(server, served, tmp_path):
    ppl = _task(tmp_path, "ppl", [{"text": "hello world"}], type="perplexity", prompt="{{ text }}",
                metrics=["token_perplexity"])
    with pytest.raises(TunelabError, match=r"\(type: perplexity\) .*needs a local model"):
        evaluate(_spec(server, served), ppl)
    with pytest.raises(TunelabError, match="chat: true"):
        evaluate(_spec(server, served), _mc(tmp_path, chat=True))
    with pytest.raises(TunelabError, match="takes no adapter"):
        evaluate(_spec(server, served), _gen(tmp_path), adapter="runs/x/adapter")


def test_an_endpoint_without_logprobs_gets_a_clear_error(tmp_path):
    """A server that answers completions but returns no log-probabilities (like many hosted APIs)."""
    from fastapi import FastAPI

    from tunelab.serve.server import BackgroundServer

    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "plain", "object": "model", "created": 0, "owned_by": "x"}]}

    @app.post("/v1/completions")
    def completions():
        return {"id": "c", "object": "text_completion", "created": 0, "model": "plain",
                "choices": [{"index": 0, "text": " ok", "logprobs": None, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}

    with BackgroundServer(app) as srv:
        with pytest.raises(TunelabError, match="multiple_choice tasks need prompt log-probabilities") as info:
            evaluate(f"openai:{srv.url}#plain", _mc(tmp_path), limit=2)
        assert "generate tasks run without them" in str(info.value)
        assert evaluate(f"openai:{srv.url}#plain", _gen(tmp_path), limit=2).predictions[0]["output"] == " ok"


def test_cli_eval_of_an_endpoint(server, served, tmp_path):
    spec = _spec(server, served)
    r = subprocess.run([sys.executable, "-m", "tunelab", "-q", "eval", spec, "--task", str(_gen(tmp_path)),
                        "--out", str(tmp_path / "o"), "--limit", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "exact_match" in r.stdout and f"model {spec}" in r.stdout.replace("\n", "")
    assert json.loads((tmp_path / "o" / "results.json").read_text())["n"] == 3
