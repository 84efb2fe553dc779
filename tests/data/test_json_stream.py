""".json arrays are read a chunk at a time: the same records as json.loads, errors that name the
file's line and column across chunk boundaries, --skip-bad per record, and no whole-file read."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest

from tunelab.data import json_stream
from tunelab.data.readers import read_rows
from tunelab.errors import TunelabError

RECORDS = [{"id": i, "text": "x" * (i * 37 % 300) + ' é\n"\\', "score": 1.5e-3 * i, "ok": i % 2 == 0,
            "none": None, "big": 12345678901234567890, "nested": {"list": [1, 2.5, "three"]}} for i in range(400)]


@pytest.fixture(params=[7, 64, 1 << 20], ids=["chunk7", "chunk64", "chunk1M"])
def chunk(request, monkeypatch):
    monkeypatch.setattr(json_stream, "CHUNK", request.param)  # 7: every literal, number and escape is cut somewhere
    return request.param


@pytest.mark.parametrize("indent", [None, 2])
def test_same_records_as_json_loads(tmp_path, chunk, indent):
    p = tmp_path / "d.json"
    p.write_text("\ufeff" + json.dumps(RECORDS, indent=indent, ensure_ascii=False), encoding="utf-8")
    rows = read_rows(p)
    assert [r.data for r in rows] == json.loads(p.read_text(encoding="utf-8-sig"))
    assert (rows[4].line, rows[4].source) == (5, f"{p}: record 5")  # record numbers as before


@pytest.mark.parametrize("text, where, what", [
    ('[\n {"a": 1},\n {"a": 2,,}\n]', ":3:", "Expecting property name enclosed in double quotes at column 10"),
    ('[\n {"a": 1}\n {"a": 2}\n]', ":3:", "expected ',' or ']' after record 1 at column 2"),
    ('[\n {"a": 1},\n {"a": "cut\n"}]', ":3:", "Invalid control character at column 12"),
    ('[\n {"a": 1},\n {"a": 2}\n] [', ":4:", "extra data after the array at column 3"),
    ('[\n {"a": 1},\n {"a": 2}\n', ":4:", "expected ',' or ']' after record 2, found the end of the file at column 1"),
    ('[\n {"a": 1},\n {"a": "never closed}]', ":3:", "Unterminated string starting at column 8"),
])
def test_errors_name_line_and_column(tmp_path, chunk, text, where, what):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(TunelabError) as e:
        read_rows(p, skip_bad=True)  # a broken array cannot be resynchronised: an error even so
    assert str(e.value) == f"{p}{where} not valid JSON ({what}); fix the file"


def test_invalid_utf8_names_its_line(tmp_path, chunk):
    p = tmp_path / "bad.json"
    p.write_bytes(b'[\n{"a": 1},\n{"a": "\xff"}\n]')
    with pytest.raises(TunelabError, match=r"bad\.json:3: not valid UTF-8 \(byte 0xff\)"):
        read_rows(p)


def test_skip_bad_skips_a_record_that_is_not_an_object(tmp_path, chunk):
    p = tmp_path / "d.json"
    p.write_text('[{"a": 1}, 3, {"a": 2}, [4]]')
    with pytest.raises(TunelabError, match=r"d\.json: record 2: expected a JSON object, got int; fix it, or pass --skip-bad"):
        read_rows(p)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rows = read_rows(p, skip_bad=True)
    assert [(r.line, r.data) for r in rows] == [(1, {"a": 1}), (3, {"a": 2})]
    assert "skipped 2 bad record(s)" in str(w[0].message)


@pytest.mark.parametrize("text", ['{"version": 1, "data": [{"a": 1}, {"a": 2}]}', '{\n "data": [\n  {"a": 1},\n  {"a": 2}\n ]\n}',
                                  '{"a": 1}\n{"a": 2}\n', '  [ {"a": 1} ,\n{"a": 2} ]  \n'])
def test_other_json_forms_still_read(tmp_path, chunk, text):
    p = tmp_path / "d.json"
    p.write_text(text)
    assert [r.data for r in read_rows(p)] == [{"a": 1}, {"a": 2}]


def test_an_array_is_never_read_whole(tmp_path, monkeypatch):
    """The reader holds about one chunk: after the first record it has read far less than the file."""
    monkeypatch.setattr(json_stream, "CHUNK", 4096)
    data = json.dumps(RECORDS * 20).encode()
    f = io.BytesIO(data)
    first = next(json_stream.iter_array(Path("d.json"), f))
    assert first == (1, RECORDS[0]) and f.tell() <= 2 * 4096 < len(data) / 10
    p = tmp_path / "d.json"
    p.write_bytes(data)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("an array was read whole"))
    assert len(read_rows(p)) == len(RECORDS) * 20


def test_a_long_record_across_many_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(json_stream, "CHUNK", 16)
    p = tmp_path / "d.json"
    recs = [{"text": "word " * 5000}, {"text": "short"}]
    p.write_text(json.dumps(recs))
    assert [r.data for r in read_rows(p)] == recs
