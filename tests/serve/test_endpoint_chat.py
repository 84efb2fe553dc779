"""`tunelab chat openai:URL#NAME` against tunelab's own server: the same answers as the local model.

EndpointBackend.stream_chat sends one streamed /chat/completions request per turn; greedy answers
must be the local model's, piece by piece joined, and the terminal chat must behave the same on it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import tunelab
from tunelab.errors import TunelabError
from tunelab.infer.endpoint import EndpointBackend
from tunelab.infer.load import open_backend
from tunelab.infer.stream import ContextFull

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]


def _spec(server, served, name=None):
    return f"openai:{server.url}#{name or served.name}"


def _local(lively_dir, messages, n, adapter=None):
    backend = open_backend(str(lively_dir), adapter, "cpu")
    return "".join(backend.stream_chat(messages, max_new_tokens=n, temperature=0.0, top_p=1.0))


@pytest.mark.parametrize("adapter", [None, "alpha"])
def test_streamed_answers_are_the_local_models(server, served, lively_dir, adapter_dirs, adapter):
    remote = EndpointBackend(_spec(server, served, adapter))
    pieces = list(remote.stream_chat(MESSAGES, max_new_tokens=10, temperature=0.0, top_p=1.0))
    assert len(pieces) > 1  # streamed
    assert "".join(pieces) == _local(lively_dir, MESSAGES, 10, adapter and adapter_dirs[adapter])


def test_chat_on_an_endpoint_keeps_turns_and_stops_on_ctrl_c(server, served, lively_dir):
    from tunelab.serve.chat import Chat

    chat = Chat(EndpointBackend(_spec(server, served)), system="Be brief.", temperature=0.0, max_new_tokens=10)
    first = chat.reply("Hello, world!", lambda _: None)
    assert first == _local(lively_dir, MESSAGES, 10)
    written = []

    def write(text):
        written.append(text)
        if len(written) == 1:
            raise KeyboardInterrupt

    second = chat.reply("Again.", write)
    assert written[-1] == " [stopped]" and second == written[0]
    assert [m["content"] for m in chat.messages()] == ["Be brief.", "Hello, world!", first, "Again.", second]
    assert chat.reply("And once more.", lambda _: None)  # the closed stream left the server able to answer


def test_a_conversation_over_the_servers_context_is_one_line_and_changes_nothing(server, served):
    from tunelab.serve.chat import Chat

    remote = EndpointBackend(_spec(server, served))
    with pytest.raises(ContextFull, match="context_length_exceeded|context is 1024 tokens"):
        remote.stream_chat([{"role": "user", "content": "word " * 1200}], max_new_tokens=5, temperature=0.0, top_p=1.0)
    chat = Chat(remote, temperature=0.0, max_new_tokens=5)
    with pytest.raises(TunelabError) as e:
        chat.reply("word " * 1200, lambda _: None)
    assert str(e.value).startswith(remote.spec) and str(e.value).endswith("/reset to start again")
    assert "\n" not in str(e.value) and chat.history == []


def test_tunelab_chat_on_an_endpoint_in_a_terminal(server, served, lively_dir, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    src = str(Path(tunelab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "tunelab", "chat", _spec(server, served), "--temperature", "0",
                                           "--max-new-tokens", "10", "--system", "Be brief."],
                          env=env, encoding="utf-8", timeout=120, dimensions=(50, 400))
    child.expect_exact("you> ")
    assert f"chatting with {_spec(server, served)};" in child.before
    child.sendline("Hello, world!")
    child.expect_exact("you> ")
    out = child.before.replace("\r\n", "\n").split("\n", 1)[1]
    assert out == f"assistant> {_local(lively_dir, MESSAGES, 10)}\n"
    child.sendline(f"/save {tmp_path / 'chat.json'}")
    child.expect_exact("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    import json

    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["model"] == _spec(server, served) and saved["adapter"] is None and len(saved["messages"]) == 3


def test_an_adapter_with_an_endpoint_is_one_line(server, served, tmp_path):
    with pytest.raises(TunelabError, match="an endpoint model takes no adapter"):
        open_backend(_spec(server, served), tmp_path)
