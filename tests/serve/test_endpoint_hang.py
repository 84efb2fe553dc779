"""An endpoint that hangs: every command that talks to one gives up within its timeout, in one line.

A real HTTP server on 127.0.0.1 (the standard library's, on a thread) that answers a set number
of requests and then goes silent: it accepts the connection, reads the request and sends nothing
(`silent`), or sends half of the answer and stalls (`half`: half a JSON body, or the first piece
of a streamed chat answer). eval, compare, chat and the safety probe run against it as a user
runs them, with a 2 s timeout (--timeout or TUNELAB_ENDPOINT_TIMEOUT); each must stop with one
line, exit 2, and keep what it had scored: a re-run sends only the requests not answered before.
Timings are never asserted; subprocess timeouts only bound a test that would otherwise hang.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import tunelab
from tunelab.infer.waiting import TIMEOUT_VAR

ROWS = [{"q": f"question {i}", "a": f"answer-{i}"} for i in range(6)]
WAIT = "2"  # seconds without a byte before a command gives up: short, yet far above a local answer's time
BOUND_S = 120  # a subprocess that has not finished by then hangs: the test fails rather than waits forever


class Fake:
    """The server's behaviour, switchable between runs: answer `answer` more requests, then `mode`."""

    def __init__(self):
        self.mode, self.answer, self.models, self.requests = "silent", 0, True, []
        self.release = threading.Event()  # set on shutdown, so stalled handler threads end
        self.lock = threading.Lock()


def _handler(fake: Fake):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, body: bytes, content_type="application/json", half=False):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2] if half else body)
            self.wfile.flush()
            if half:
                fake.release.wait()

        def do_GET(self):
            if not fake.models:
                fake.release.wait()
                return
            self._send(json.dumps({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0,
                                                               "owned_by": "test"}]}).encode())

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                fake.requests.append(req)
                answering = fake.answer > 0
                fake.answer -= answering
            if not answering and fake.mode == "silent":
                fake.release.wait()
                return
            half = not answering
            if req.get("stream"):
                return self._stream(half)
            text = " answer-" + req["prompt"].split()[-1] if "prompt" in req else " hi"
            body = {"id": "x", "object": "text_completion", "created": 0, "model": "fake",
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
            self._send(json.dumps(body).encode(), half=half)

        def _stream(self, half: bool):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ["Hel", "lo"][:1 if half else 2]:
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            if half:
                fake.release.wait()
                return
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture()
def fake():
    state = Fake()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    state.spec = f"openai:{state.url}#fake"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _task(tmp_path) -> Path:
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump({"name": "gen", "data": "gen.jsonl", "prompt": "{{ q }}", "answer": "{{ a }}",
                                    "metrics": ["exact_match"], "generation": {"max_new_tokens": 4, "stop": ["\n"]}}))
    return path


def _run(tmp_path, *args, stdin=None, timeout_var=None):
    src = str(Path(tunelab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TUNELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env.pop(TIMEOUT_VAR, None)
    if timeout_var is not None:
        env[TIMEOUT_VAR] = timeout_var
    return subprocess.run([sys.executable, "-m", "tunelab", "-q", *args], capture_output=True, text=True,
                          input=stdin, env=env, timeout=BOUND_S, cwd=tmp_path)


def _one_line(r) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


@pytest.mark.parametrize("mode", ["silent", "half"])
def test_eval_gives_up_keeps_what_it_scored_and_resumes(fake, tmp_path, mode):
    fake.mode, fake.answer = mode, 3
    args = ["eval", fake.spec, "--task", str(_task(tmp_path)), "--batch-size", "1", "--cache", "--timeout", WAIT,
            "--out", str(tmp_path / "o")]
    line = _one_line(_run(tmp_path, *args))
    assert line.startswith(f"error: {fake.spec}: the endpoint sent nothing for {WAIT} s (after accepting a generation request)")
    assert "--timeout SECONDS" in line and "3 of 6 answers are kept in the request cache" in line
    assert len(fake.requests) == 4  # one timeout ends the request: it is not sent again 6 times
    assert not (tmp_path / "o" / "results.json").exists()
    fake.answer = 99
    r = _run(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    assert len(fake.requests) == 4 + 3  # the re-run asked only for the answers it did not have
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["n"] == 6 and results["metrics"]["exact_match"]["value"] == 1.0


def test_eval_without_cache_says_what_was_lost(fake, tmp_path):
    fake.mode, fake.answer = "half", 2
    line = _one_line(_run(tmp_path, "eval", fake.spec, "--task", str(_task(tmp_path)), "--batch-size", "1",
                          "--timeout", WAIT))
    assert f"sent nothing for {WAIT} s" in line and "the 2 of 6 answers that came are not kept: with --cache" in line


def test_a_server_that_never_answers_at_all(fake, tmp_path):
    """The issue's case: `tunelab chat` on a server that accepts and says nothing, not even its models."""
    fake.models = False
    line = _one_line(_run(tmp_path, "chat", fake.spec, "--timeout", WAIT, stdin="hello\n"))
    assert line == (f"error: {fake.spec}: the endpoint sent nothing for {WAIT} s (after accepting the request for its "
                    f"models); check the server is not stuck or overloaded, or wait longer with --timeout SECONDS "
                    f"({TIMEOUT_VAR})")


@pytest.mark.parametrize("mode,said", [("silent", "(after accepting a chat request)"),
                                       ("half", "(after part of a chat answer)")])
def test_chat_turn_gives_up_and_the_chat_goes_on(fake, tmp_path, mode, said):
    fake.mode = mode
    r = _run(tmp_path, "chat", fake.spec, "--timeout", WAIT, stdin="hello\nagain\n")
    assert r.returncode == 0, r.stderr  # the user leaves with Ctrl-D; a failed turn does not end the chat
    errors = [x for x in r.stdout.splitlines() if x.startswith("error:")]
    assert len(errors) == 2 and all(said in x and f"sent nothing for {WAIT} s" in x for x in errors)
    assert len(fake.requests) == 2  # one request per turn, none retried
    if mode == "half":
        assert "assistant> Hel" in r.stdout  # what came is shown


def test_compare_gives_up_keeps_the_arms_answers_and_resumes(fake, tmp_path):
    task = _task(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "model": fake.spec, "task": str(task), "train_data": str(tmp_path / "gen.jsonl"), "batch_size": 1,
        "arms": [{"endpoint": {"model": fake.spec, "k": [0]}}], "retention_prompts": None, "out": "cmp"}))
    fake.mode, fake.answer = "silent", 2
    line = _one_line(_run(tmp_path, "compare", "c.yaml", timeout_var=WAIT))
    assert f"sent nothing for {WAIT} s" in line and "2 of 6 answers are kept in the request cache" in line
    fake.answer = 99
    r = _run(tmp_path, "compare", "c.yaml", timeout_var=WAIT)
    assert r.returncode == 0, r.stderr
    assert len(fake.requests) == 3 + 4  # the second run asked only for the 4 answers it lacked


def test_safety_probe_gives_up_and_writes_nothing(fake, tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\nthree\n")
    fake.mode, fake.answer = "half", 1
    line = _one_line(_run(tmp_path, "safety", "probe", fake.spec, "--prompts", "p.txt", "--samples", "1", "--temperature", "0",
                          "--out", "probe", timeout_var=WAIT))
    assert f"sent nothing for {WAIT} s" in line
    assert not (tmp_path / "probe" / "results.json").exists()


def test_a_bad_timeout_is_one_line(fake, tmp_path):
    line = _one_line(_run(tmp_path, "eval", fake.spec, "--task", str(_task(tmp_path)), "--timeout", "0"))
    assert line == "error: --timeout must be a number of seconds > 0 (got 0.0)"
    line = _one_line(_run(tmp_path, "chat", fake.spec, timeout_var="soon"))
    assert line.startswith(f"error: {TIMEOUT_VAR} must be a number of seconds > 0 (got 'soon')")


def test_a_slow_answer_says_what_it_waits_for(fake, monkeypatch, caplog):
    """After NOTICE_AFTER_S without an answer, one line says what is awaited and for how long."""
    from tunelab.errors import TunelabError
    from tunelab.infer import endpoint, waiting

    fake.mode = "silent"
    backend = endpoint.EndpointBackend(fake.spec, timeout=1)  # its models answer: no line (at the usual 3 s)
    monkeypatch.setattr(waiting, "NOTICE_AFTER_S", 0.05)
    with pytest.raises(TunelabError, match="sent nothing for 1 s"):
        list(backend.stream_chat([{"role": "user", "content": "hi"}], max_new_tokens=4, temperature=0.0, top_p=1.0))
    said = [r.getMessage() for r in caplog.records if r.name == "tunelab.infer.waiting"]
    assert said == [f"waiting for an answer from {fake.url} (model fake); it gives up after 1 s without a byte "
                    f"(--timeout SECONDS, {TIMEOUT_VAR})"]


def test_scoring_that_stops_part_way_keeps_the_items_whose_every_choice_was_scored(fake):
    """multiple_choice through an endpoint: an item counts as answered only with all its choices."""
    from tunelab.errors import TunelabError
    from tunelab.infer.endpoint import EndpointBackend
    from tunelab.infer.protocol import Unfinished

    backend = EndpointBackend(fake.spec, timeout=1)
    sent = []

    def score(context, continuation):
        sent.append(continuation)
        if continuation == "z":
            raise TunelabError("the server went silent")
        return -1.0, True

    backend._score = score
    reqs = [("a", ["x", "y"]), ("b", ["q", "z"]), ("c", ["w"])]
    with pytest.raises(Unfinished) as info:
        backend.score_choices(reqs, batch_size=1)
    assert info.value.done == {0: [(-1.0, True), (-1.0, True)]} and info.value.total == 3
    assert sent == ["x", "y", "q", "z"]  # nothing is sent after the failure
    assert str(info.value) == "the server went silent"
