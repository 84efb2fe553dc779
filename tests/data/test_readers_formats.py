"""Readers and formats: every bad input names the file, the line and the field."""
from __future__ import annotations

import json

import pytest

from tunelab.data.formats import detect_format, to_conversation
from tunelab.data.load import load_conversations
from tunelab.data.readers import ReadReport, read_rows
from tunelab.data.records import Row
from tunelab.errors import TunelabError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_json_csv_parquet_read_the_same_records(tmp_path):
    recs = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    jl = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n\n")
    js = write(tmp_path / "d.json", json.dumps(recs))
    cs = write(tmp_path / "d.csv", "prompt,completion\np1,c1\np2,c2\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "d.parquet")
    for p in (jl, js, cs, tmp_path / "d.parquet"):
        assert [r.data for r in read_rows(p)] == recs
    assert [r.line for r in read_rows(cs)] == [2, 3]  # csv lines count the header


def test_malformed_json_line_is_named(tmp_path):
    p = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(TunelabError, match=r"bad.jsonl:3: not valid JSON .*--skip-bad"):
        read_rows(p)


def test_skip_bad_skips_and_counts(tmp_path):
    p = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": oops}\n[1]\n{"text": "fine"}\n')
    with pytest.warns(UserWarning, match="skipped 2 bad record"):
        rows = read_rows(p, skip_bad=True)
    assert [r.line for r in rows] == [1, 4]


def test_empty_file(tmp_path):
    for name in ("e.jsonl", "e.json", "e.csv"):
        with pytest.raises(TunelabError, match="no records in the file"):
            read_rows(write(tmp_path / name, ""))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(TunelabError, match="data file not found"):
        read_rows(tmp_path / "nope.jsonl")
    with pytest.raises(TunelabError, match="unknown data file type '.txt'"):
        read_rows(write(tmp_path / "x.txt", "hi"))


def test_malformed_json_array_names_line(tmp_path):
    p = write(tmp_path / "bad.json", '[\n {"a": 1},\n {"a": 2,,}\n]')
    with pytest.raises(TunelabError, match=r"bad.json:3: not valid JSON"):
        read_rows(p)


@pytest.mark.parametrize("record, fmt", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "messages"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "sharegpt"),
    ({"instruction": "q", "input": "", "output": "a"}, "alpaca"),
    ({"prompt": "q", "completion": "a"}, "prompt_completion"),
    ({"text": "q a"}, "text"),
])
def test_detect_and_convert(record, fmt):
    row = Row(1, record, "f.jsonl:1")
    got, why = detect_format(row)
    assert got == fmt and "field" in why
    conv = to_conversation(row, fmt)
    if fmt == "text":
        assert conv.text == "q a"
    else:
        assert conv.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_alpaca_input_joins_instruction():
    conv = to_conversation(Row(1, {"instruction": "Translate", "input": "hola", "output": "hello"}, "f:1"), "alpaca")
    assert conv.messages[0]["content"] == "Translate\n\nhola"


def test_fields_rename_map(tmp_path):
    p = write(tmp_path / "qa.jsonl", json.dumps({"question": "2+2?", "answer": "4", "id": "q1"}) + "\n")
    notes: list[str] = []
    convs = load_conversations(p, fields={"prompt": "question", "completion": "answer"}, report=ReadReport(notes))
    assert convs[0].id == "q1" and convs[0].messages[1]["content"] == "4"
    assert "detected format 'prompt_completion'" in notes[0]


def test_format_guess_impossible_lists_fields_and_fix():
    with pytest.raises(TunelabError, match=r"f.jsonl:1: cannot tell the data format from fields \['answer', 'question'\].*data.fields.*"
                                           r"\(the formats: docs/train-config.md#data-formats\)$"):
        detect_format(Row(1, {"question": "q", "answer": "a"}, "f.jsonl:1"))


def test_missing_field_lists_present_fields(tmp_path):
    p = write(tmp_path / "d.jsonl", json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps({"prompt": "a", "completoin": "b"}) + "\n")
    with pytest.raises(TunelabError, match=r"d.jsonl:2: missing field 'completion' \(fields present: completoin, prompt\)"):
        load_conversations(p)
    assert len(load_conversations(p, skip_bad=True)) == 1


def test_empty_text_and_bad_roles():
    with pytest.raises(TunelabError, match="field 'completion' is empty"):
        to_conversation(Row(1, {"prompt": "q", "completion": "  "}, "f:1"), "prompt_completion")
    with pytest.raises(TunelabError, match="role 'wizard'"):
        to_conversation(Row(1, {"messages": [{"role": "wizard", "content": "x"}]}, "f:1"), "messages")
    with pytest.raises(TunelabError, match="no assistant turn"):
        to_conversation(Row(1, {"messages": [{"role": "user", "content": "x"}]}, "f:1"), "messages")


def test_system_prompt_is_added():
    conv = to_conversation(Row(1, {"prompt": "q", "completion": "a"}, "f:1"), "prompt_completion", system="Be brief.")
    assert conv.messages[0] == {"role": "system", "content": "Be brief."}


def test_shared_sharegpt_and_alpaca_files_load(shared_data):
    convs = load_conversations(shared_data / "fastchat_dummy" / "dummy_conversation.json")
    assert len(convs) == 500 and all(c.messages[-1]["role"] == "assistant" for c in convs)
    convs = load_conversations(shared_data / "alpaca_small" / "alpaca_small.json")
    assert len(convs) == 2000


def test_callers_without_skip_bad_give_their_own_hint(tmp_path):
    p = write(tmp_path / "preds.jsonl", '{"id": 1}\n{"id": \n')
    with pytest.raises(TunelabError, match=r"preds.jsonl:2: not valid JSON .*; fix that line$"):
        read_rows(p, hint="fix that line")
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(TunelabError, match=r"preds.jsonl:1: not valid UTF-8 \(byte 0xff at column 1\)"):
        read_rows(p)
