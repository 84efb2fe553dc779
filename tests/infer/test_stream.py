"""LocalBackend.stream_chat (infer/stream.py): one answer, streamed, from a local model; and the terminal Chat on it."""
from __future__ import annotations

import threading

import pytest

from tunelab.errors import TunelabError
from tunelab.infer.load import open_backend
from tunelab.infer.stream import ContextFull

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]
LONG = [{"role": "user", "content": "word " * 1200}]  # over the tiny model's 1024-token context


@pytest.fixture(scope="module")
def backend(tiny_dir):
    return open_backend(str(tiny_dir), device="cpu")


def _greedy(backend, messages, n):
    from tunelab.infer.generate import generate
    from tunelab.templates import render_prompt

    return generate(backend.lm.model, backend.tokenizer, [render_prompt(backend.tokenizer, messages)],
                    max_new_tokens=n)[0].text


def test_the_streamed_pieces_are_the_greedy_answer_to_the_templated_conversation(backend):
    pieces = list(backend.stream_chat(MESSAGES, max_new_tokens=12, temperature=0.0, top_p=1.0))
    assert len(pieces) > 1  # it streamed, not one block at the end
    assert "".join(pieces) == _greedy(backend, MESSAGES, 12)


def test_closing_the_stream_early_stops_the_generation_thread(backend):
    before = threading.active_count()
    pieces = backend.stream_chat(MESSAGES, max_new_tokens=200, temperature=0.0, top_p=1.0)
    first = next(pieces)
    assert first and threading.active_count() == before + 1  # the generation runs beside us
    pieces.close()
    assert threading.active_count() == before  # stopped and joined, not left decoding 200 tokens


def test_a_conversation_over_the_context_is_refused_before_anything_runs(backend):
    before = threading.active_count()
    with pytest.raises(ContextFull, match=r"over the model's context of 1024"):
        backend.stream_chat(LONG, max_new_tokens=5, temperature=0.0, top_p=1.0)
    assert threading.active_count() == before


def test_chat_keeps_the_partial_answer_when_ctrl_c_stops_it(backend):
    from tunelab.serve.chat import Chat

    chat = Chat(backend, temperature=0.0, max_new_tokens=50)
    written = []

    def write(text):
        written.append(text)
        if len(written) == 2:
            raise KeyboardInterrupt  # as Ctrl-C arrives while an answer is printed

    before = threading.active_count()
    answer = chat.reply("Hello, world!", write)
    assert written[-1] == " [stopped]" and answer == "".join(written[:2]) and answer
    assert chat.history == [{"role": "user", "content": "Hello, world!"}, {"role": "assistant", "content": answer}]
    assert threading.active_count() == before


def test_chat_over_the_context_is_one_line_and_changes_nothing(backend):
    from tunelab.serve.chat import Chat

    chat = Chat(backend, temperature=0.0, max_new_tokens=5)
    first = chat.reply("Hi", lambda _: None)
    kept = list(chat.history)
    with pytest.raises(TunelabError) as e:
        chat.reply(LONG[0]["content"], lambda _: None)
    assert "over the model's context of 1024" in str(e.value) and str(e.value).endswith("/reset to start again")
    assert "\n" not in str(e.value) and chat.history == kept and kept[1]["content"] == first
