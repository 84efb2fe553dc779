"""The batch path (templates/batch.py) gives the per-record path's ids and masks, record for record.

Fast tests use the tiny tokenizer with the template fixtures of test_masks.py; the slow test runs
every record of the shared data sets through the default model's tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunelab.data.load import load_conversations
from tunelab.data.records import Conversation
from tunelab.errors import TunelabError
from tunelab.models.tiny import tiny_tokenizer
from tunelab.templates import encode
from tunelab.templates.batch import KEPT, NOTHING_TRAINED, TOO_LONG, encode_chunk
from tunelab.templates.render import IGNORE

from test_masks import MULTI, SINGLE, TEMPLATES

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def assert_same(tok, convs, **kw):
    """Every record: same status, ids, labels, truncation and id as render.encode; returns the count."""
    chunk = encode_chunk(tok, convs, **kw)
    labels = np.where(chunk.trained == 1, chunk.ids, IGNORE)
    pos = 0
    for k, conv in enumerate(convs):
        ref = encode(tok, conv, **kw)
        n = int(chunk.lengths[k])
        if ref is None:
            assert chunk.status[k] == TOO_LONG and n == 0, conv.source
            continue
        if ref.n_trained == 0:
            assert chunk.status[k] == NOTHING_TRAINED and n == 0, conv.source
            continue
        assert chunk.status[k] == KEPT, conv.source
        assert chunk.ids[pos:pos + n].tolist() == ref.input_ids, conv.source
        assert labels[pos:pos + n].tolist() == ref.labels, conv.source
        assert bool(chunk.truncated[k]) == ref.truncated and chunk.record_ids[k] == ref.id
        pos += n
    assert pos == len(chunk.ids)
    return len(convs)


def _convs():
    long_user = [{"role": "user", "content": "word " * 59 + "end"}, {"role": "assistant", "content": "ok"}]
    return [Conversation("single", SINGLE, "f:1"), Conversation("multi", MULTI, "f:2"),
            Conversation("text", [], "f:3", text="plain text to learn, all of it"),
            Conversation("long", long_user, "f:4"),
            Conversation("spaces", [{"role": "user", "content": "inner  spaces\n\nand lines"},
                                    {"role": "assistant", "content": "answer with  spaces\n\n- a list"}], "f:5")]


@pytest.mark.parametrize("style", list(TEMPLATES))
@pytest.mark.parametrize("train_on", ["completion", "all"])
@pytest.mark.parametrize("max_length,truncate", [(None, True), (40, True), (40, False), (12, True)])
def test_batch_equals_per_record_on_template_fixtures(style, train_on, max_length, truncate):
    tok = tiny_tokenizer(chat_template=TEMPLATES[style])
    assert_same(tok, _convs(), train_on=train_on, max_length=max_length, truncate=truncate)


def test_statuses_are_reached():
    """The fixture sweep above does cover drops and empty rows (else it would prove little)."""
    tok = tiny_tokenizer(chat_template=TEMPLATES["chatml"])
    assert TOO_LONG in encode_chunk(tok, _convs(), max_length=40, truncate=False).status
    assert NOTHING_TRAINED in encode_chunk(tok, _convs(), max_length=12).status
    assert encode_chunk(tok, _convs(), max_length=40).truncated.any()


def test_template_errors_keep_the_per_record_message():
    no_system = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                 "{{ raise_exception('System role not supported') }}{% endif %}"
                 "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")
    tok = tiny_tokenizer(chat_template=no_system)
    bad = Conversation("x", MULTI, "data.jsonl:7")
    with pytest.raises(TunelabError) as ref:
        encode(tok, bad)
    with pytest.raises(TunelabError) as got:
        encode_chunk(tok, [Conversation("ok", SINGLE, "data.jsonl:6"), bad])
    assert str(got.value) == str(ref.value) and "data.jsonl:7" in str(got.value)


def test_assistant_first_turn_error_matches():
    """An empty prompt (the conversation opens with the assistant) fails as in the per-record path."""
    tok = tiny_tokenizer(chat_template=TEMPLATES["chatml"])
    conv = Conversation("a", [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "yo"}], "f:9")
    with pytest.raises(TunelabError) as ref:
        encode(tok, conv)
    with pytest.raises(TunelabError) as got:
        encode_chunk(tok, [conv])
    assert str(got.value) == str(ref.value)


# (data set, file, format, fields) for every shared training-shaped file
SHARED_SETS = [
    ("alpaca_small", "alpaca_small/alpaca_small.json", "auto", None),
    ("fastchat_dummy", "fastchat_dummy/dummy_conversation.json", "auto", None),
    ("dialogsum dev", "dialogsum/dialogsum.dev.jsonl", "prompt_completion", {"prompt": "dialogue", "completion": "summary"}),
    ("dialogsum test", "dialogsum/dialogsum.test.jsonl", "prompt_completion", {"prompt": "dialogue", "completion": "summary1"}),
    ("gsm8k train", "gsm8k/train.jsonl", "prompt_completion", {"prompt": "question", "completion": "answer"}),
    ("gsm8k test", "gsm8k/test.jsonl", "prompt_completion", {"prompt": "question", "completion": "answer"}),
    ("gsm8k socratic", "gsm8k/test_socratic.jsonl", "prompt_completion", {"prompt": "question", "completion": "answer"}),
    ("self_instruct", "self_instruct/user_oriented_instructions.jsonl", "text", {"text": "instruction"}),
    ("mt_bench", "mt_bench/question.jsonl", "text", {"text": "category"}),
]


@pytest.mark.parametrize("name,path,fmt,fields", SHARED_SETS[:3], ids=[s[0] for s in SHARED_SETS[:3]])
def test_batch_equals_per_record_on_shared_data_tiny(name, path, fmt, fields):
    """Every record of three shared sets, tiny tokenizer (fast; the slow test below covers all)."""
    if not (SHARED / path).exists():
        pytest.skip(f"shared data {path} not present")
    convs = load_conversations(SHARED / path, format=fmt, fields=fields)
    tok = tiny_tokenizer(chat_template=TEMPLATES["smollm2"])
    assert assert_same(tok, convs, max_length=256) == len(convs)


@pytest.mark.slow
def test_batch_equals_per_record_on_shared_data_default_model():
    """Every record of every shared set with the default model's tokenizer and template."""
    from tunelab.models.loading import load_tokenizer, resolve

    present = [s for s in SHARED_SETS if (SHARED / s[1]).exists()]
    if not present:
        pytest.skip("shared data not present")
    tok = load_tokenizer(resolve("default")[1])
    counts = {}
    for name, path, fmt, fields in present:
        convs = load_conversations(SHARED / path, format=fmt, fields=fields)
        counts[name] = assert_same(tok, convs, max_length=1024)
    assert_same(tok, load_conversations(SHARED / present[0][1], format=present[0][2], fields=present[0][3]),
                train_on="all", max_length=64, truncate=False)
    print(json.dumps(counts))  # the coverage, for the record (-s)
