"""The encoded-data cache: a hit does not tokenise again, every key input makes a miss, the entry
memory-maps, equals the per-record encoding, and survives concurrent writers."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tunelab.data.load import load_conversations
from tunelab.errors import TunelabError
from tunelab.models.tiny import tiny_tokenizer
from tunelab.templates import cache as cache_mod
from tunelab.templates import encode_all
from tunelab.templates.cache import EncodedSet, clear, entries, prepare

ROWS = [{"prompt": f"question {i}?", "completion": f"answer {i}" + " more" * (i % 7)} for i in range(30)]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    return tmp_path


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def counting(monkeypatch):
    """Counts calls of the chunk tokenizer: a cache hit must make none."""
    calls = []
    real = cache_mod.tokenize_chunk

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "tokenize_chunk", spy)
    return calls


def test_hit_does_not_encode_again_and_matches_per_record(home, counting):
    data = write(home / "d.jsonl", ROWS)
    tok = tiny_tokenizer()
    first = prepare(data, tok, max_length=64)
    assert not first.hit and counting
    n = len(counting)
    second = prepare(data, tok, max_length=64)
    assert second.hit and len(counting) == n and second.folder == first.folder
    assert isinstance(second.arrays["ids"], np.memmap)
    ref = encode_all(tok, load_conversations(data), max_length=64)
    kept = second.trainable()
    assert [(e.input_ids, e.labels, e.id) for e in ref] == [(kept[i].input_ids, kept[i].labels, kept[i].id) for i in range(len(kept))]
    assert kept.lengths.tolist() == [len(e.input_ids) for e in ref]


MISSES = {
    "data": lambda p, kw: (write(p, ROWS[:-1]), kw),
    "format": lambda p, kw: (p, {**kw, "format": "prompt_completion"}),
    "fields": lambda p, kw: (p, {**kw, "fields": {"id": "prompt"}}),
    "system": lambda p, kw: (p, {**kw, "system": "Be brief."}),
    "skip_bad": lambda p, kw: (p, {**kw, "skip_bad": True}),
    "train_on": lambda p, kw: (p, {**kw, "train_on": "all"}),
    "max_length": lambda p, kw: (p, {**kw, "max_length": 32}),
    "truncate": lambda p, kw: (p, {**kw, "truncate": False}),
    "template": lambda p, kw: (p, {**kw, "tok": tiny_tokenizer(chat_template=None)}),
    "tokenizer": lambda p, kw: (p, {**kw, "tok": tiny_tokenizer(vocab_size=300)}),
}


@pytest.mark.parametrize("what", list(MISSES))
def test_each_key_input_makes_a_miss(home, counting, what):
    data = write(home / "d.jsonl", ROWS)
    kw = {"tok": tiny_tokenizer(), "max_length": 64}
    args = dict(kw)
    prepare(data, args.pop("tok"), **args)
    assert prepare(data, kw["tok"], max_length=64).hit
    path, changed = MISSES[what](data, kw)
    tok = changed.pop("tok")
    again = prepare(path, tok, **changed)
    assert not again.hit


def test_encoding_version_makes_a_miss(home, monkeypatch):
    data = write(home / "d.jsonl", ROWS)
    tok = tiny_tokenizer()
    prepare(data, tok)
    monkeypatch.setattr(cache_mod, "ENCODING_VERSION", cache_mod.ENCODING_VERSION + 1)
    assert not prepare(data, tok).hit


def test_chunked_path_streams_and_keeps_order(home, monkeypatch):
    monkeypatch.setattr(cache_mod, "CHUNK", 7)  # many chunks, a short last one
    data = write(home / "d.jsonl", ROWS)
    tok = tiny_tokenizer()
    done = []
    got = prepare(data, tok, progress=done.append).trainable()
    assert done == [7, 14, 21, 28, 30]
    ref = encode_all(tok, load_conversations(data))
    assert [got[i].input_ids for i in range(len(got))] == [e.input_ids for e in ref]


def test_bad_line_keeps_its_number_and_skip_bad_counts_it(home, monkeypatch):
    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    lines = [json.dumps(r) for r in ROWS[:10]]
    lines[8] = '{"prompt": "broken'
    data = home / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    tok = tiny_tokenizer()
    with pytest.raises(TunelabError, match=r"bad\.jsonl:9: not valid JSON"):
        prepare(data, tok)
    with pytest.warns(UserWarning, match="skipped 1 bad record"):
        got = prepare(data, tok, skip_bad=True)
    assert len(got) == 9 and [got.record_id(k) for k in range(len(got))] == [str(i) for i in range(1, 11) if i != 9]
    assert not any(p.name.startswith(".") for p in cache_mod.cache_dir().iterdir())  # failed write left nothing


def test_truncate_drop_counts_match_encode_all(home):
    data = write(home / "d.jsonl", ROWS)
    tok = tiny_tokenizer()
    for truncate in (True, False):
        notes_ref, notes = [], []
        ref = encode_all(tok, load_conversations(data), max_length=24, truncate=truncate, notes=notes_ref)
        got = prepare(data, tok, max_length=24, truncate=truncate).trainable(notes=notes)
        assert notes == notes_ref and len(got) == len(ref)


def test_concurrent_writers_both_get_a_valid_entry(home):
    data = write(home / "d.jsonl", ROWS)
    tok, out, errors = tiny_tokenizer(), [], []

    def run():
        try:
            out.append(prepare(data, tok))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({str(s.folder) for s in out}) == 1
    assert len(entries()) == 1 and len(EncodedSet.open(out[0].folder)) == len(ROWS)


def test_clear_removes_entries(home):
    data = write(home / "d.jsonl", ROWS)
    prepare(data, tiny_tokenizer())
    n, size = clear()
    assert n == 1 and size > 0 and entries() == []


def test_missing_file_is_a_one_line_error(home):
    with pytest.raises(TunelabError, match=r"nope\.jsonl: data file not found"):
        prepare(home / "nope.jsonl", tiny_tokenizer())
