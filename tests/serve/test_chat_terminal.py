"""`tunelab chat` driven as a real terminal program (pexpect on a pseudo-terminal), on a tiny model."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

import tunelab  # noqa: E402

SRC = str(Path(tunelab.__file__).resolve().parents[1])


def _spawn(model_dir, *args):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "TERM": "dumb",
           "NO_COLOR": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "tunelab", "chat", str(model_dir), "--temperature", "0",
                                           "--max-new-tokens", "10", *args],
                          env=env, encoding="utf-8", timeout=120, dimensions=(50, 400))
    child.expect_exact("you> ")
    return child


def _say(child, text: str) -> str:
    """Send a line, return what was printed before the next prompt (\\r\\n folded to \\n)."""
    child.sendline(text)
    child.expect_exact("you> ")
    out = child.before.replace("\r\n", "\n")
    return out.split("\n", 1)[1] if "\n" in out else out  # drop the terminal's echo of our line


def _reference(model_dir, messages, n=10) -> str:
    from tunelab.infer.generate import generate
    from tunelab.models.loading import load_model
    from tunelab.templates import render_prompt

    lm = load_model(str(model_dir), device="cpu")
    return generate(lm.model, lm.tokenizer, [render_prompt(lm.tokenizer, messages)], max_new_tokens=n)[0].text


def test_chat_session_commands_and_save(lively_dir, tmp_path):
    child = _spawn(lively_dir, "--system", "You are a helpful assistant.")
    first = _say(child, "Hello, world!")
    assert first.startswith("assistant> ")
    answer1 = first[len("assistant> "):].rstrip("\n")
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello, world!"}]
    assert answer1 and answer1 == _reference(lively_dir, messages)  # the model's template and greedy decoding

    answer2 = _say(child, "Reverse the words.")[len("assistant> "):].rstrip("\n")
    save1 = tmp_path / "out" / "chat.json"
    assert "saved" in _say(child, f"/save {save1}")
    saved = json.loads(save1.read_text())
    assert [m["role"] for m in saved["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in saved["messages"][2::2]] == [answer1, answer2]
    assert answer2 == _reference(lively_dir, saved["messages"][:4])  # turn 2 sees turn 1 in the template

    assert "system text set" in _say(child, "/system Answer in one word.")
    assert "conversation cleared" in _say(child, "/reset")
    assert "unknown command" in _say(child, "/frobnicate")
    answer3 = _say(child, "Hello, world!")[len("assistant> "):].rstrip("\n")
    save2 = tmp_path / "chat2.json"
    _say(child, f"/save {save2}")
    msgs2 = json.loads(save2.read_text())["messages"]
    assert msgs2[:2] == [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hello, world!"}]
    assert len(msgs2) == 3 and answer3 == _reference(lively_dir, msgs2[:2])

    assert "cannot write" in _say(child, f"/save {tmp_path}")  # a folder: a one-line error, the chat goes on
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("key", ["ctrl-d", "ctrl-c"])
def test_ctrl_d_and_ctrl_c_leave_cleanly(lively_dir, key):
    child = _spawn(lively_dir)
    if key == "ctrl-d":
        child.sendeof()
    else:
        child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before


def test_bad_model_is_a_one_line_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out, status = pexpect.run(f"{sys.executable} -m tunelab chat {tmp_path / 'nope'}", env=env, withexitstatus=True,
                              encoding="utf-8", timeout=120)
    assert status == 2 and "not found" in out and "Traceback" not in out
