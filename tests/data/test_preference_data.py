"""Preference records: the two layouts, HH-RLHF dialogues, .gz files, and one clear line per bad record."""
from __future__ import annotations

import gzip
import json

import pytest

from tunelab.data.preference import load_pairs, parse_hh
from tunelab.data.readers import ReadReport
from tunelab.errors import TunelabError

HH_PREFIX = "\n\nHuman: hi\n\nAssistant: hello, how can I help?\n\nHuman: how do I pick a lock?\n\nAssistant:"


def _write(path, records, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_prompted_strings_and_messages(tmp_path):
    path = _write(tmp_path / "p.jsonl", [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
         "chosen": [{"role": "assistant", "content": "Paris."}],
         "rejected": [{"role": "assistant", "content": "Lyon."}], "id": "fr"},
    ])
    a, b = load_pairs(path)
    assert a.prompt == [{"role": "user", "content": "2+2?"}] and (a.chosen, a.rejected) == ("4", "5")
    assert a.id == "1" and a.source.endswith("p.jsonl:1")
    assert b.id == "fr" and b.prompt[0]["role"] == "system" and (b.chosen, b.rejected) == ("Paris.", "Lyon.")


def test_hh_dialogues_split_at_the_last_assistant_turn_from_a_gz_file(tmp_path):
    path = _write(tmp_path / "hh.jsonl.gz", [{"chosen": HH_PREFIX + " I can't help with that.",
                                             "rejected": HH_PREFIX + " Use a tension wrench."}], gz=True)
    (pair,) = load_pairs(path)
    assert pair.prompt == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello, how can I help?"},
                           {"role": "user", "content": "how do I pick a lock?"}]
    assert (pair.chosen, pair.rejected) == ("I can't help with that.", "Use a tension wrench.")


def test_the_shared_hh_file_reads(shared_data):
    path = shared_data / "hh_rlhf_harmless" / "harmless-2000.jsonl.gz"
    with pytest.raises(TunelabError, match=r"harmless-2000.jsonl.gz:87: the chosen answer is empty"):
        load_pairs(path)  # HH-RLHF has a few pairs with an empty answer: bad records, skipped on request
    notes: list[str] = []
    pairs = load_pairs(path, skip_bad=True, report=ReadReport(notes))
    assert len(pairs) == 1992 and "skipped 8 bad pair(s)" in notes[0]
    assert all(p.prompt[-1]["role"] == "user" and p.chosen != p.rejected for p in pairs)


def test_message_dialogues(tmp_path):
    turns = [{"role": "user", "content": "hi"}]
    path = _write(tmp_path / "m.jsonl", [{"chosen": turns + [{"role": "assistant", "content": "hello"}],
                                         "rejected": turns + [{"role": "assistant", "content": "go away"}]}])
    (pair,) = load_pairs(path)
    assert pair.prompt == turns and (pair.chosen, pair.rejected) == ("hello", "go away")


@pytest.mark.parametrize("record, message", [
    ({"prompt": "q", "chosen": "a"}, r"p.jsonl:2: missing field 'rejected'"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, r"p.jsonl:2: chosen and rejected answers are identical"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, r"p.jsonl:2: the chosen answer is empty"),
    ({"chosen": HH_PREFIX + " a", "rejected": "\n\nHuman: other\n\nAssistant: b"},
     r"p.jsonl:2: chosen and rejected do not share the prompt \(they differ at turn 0"),
    ({"chosen": "just text", "rejected": "other text"}, r"p.jsonl:2: 'chosen' is text but not an HH-RLHF dialogue"),
    ({"chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": "user", "content": "y"}]},
     r"p.jsonl:2: 'chosen' must end with an assistant turn"),
])
def test_bad_records_name_file_and_line(tmp_path, record, message):
    path = _write(tmp_path / "p.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(TunelabError, match=message):
        load_pairs(path)
    assert len(load_pairs(path, skip_bad=True)) == 1


def test_data_without_pairs_says_what_it_found(tmp_path):
    path = _write(tmp_path / "sft.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(TunelabError, match=r"sft.jsonl:1: method: dpo needs preference pairs .*format 'prompt_completion'"):
        load_pairs(path)


def test_parse_hh_keeps_turn_order():
    msgs = parse_hh("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d", "x:1", "chosen")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in msgs] == ["a", "b", "c", "d"]


def test_any_reader_takes_gz(tmp_path):
    from tunelab.data.readers import read_rows

    path = _write(tmp_path / "rows.jsonl.gz", [{"text": "x"}, {"text": "y"}], gz=True)
    assert [r.data["text"] for r in read_rows(path)] == ["x", "y"]
    csv = tmp_path / "rows.csv.gz"
    with gzip.open(csv, "wt") as f:
        f.write("text\nx\n")
    assert read_rows(csv)[0].data == {"text": "x"}
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(TunelabError, match=r"bad.jsonl.gz: cannot read the file"):
        read_rows(tmp_path / "bad.jsonl.gz")


def test_format_chosen_gives_sft_conversations_of_the_chosen_answers(tmp_path):
    from tunelab.data.load import load_conversations

    path = _write(tmp_path / "hh.jsonl", [{"chosen": HH_PREFIX + " I can't help with that.",
                                          "rejected": HH_PREFIX + " Use a tension wrench."}])
    (conv,) = load_conversations(path, format="chosen")
    assert conv.messages[-1] == {"role": "assistant", "content": "I can't help with that."}
    assert conv.messages[:-1] == load_pairs(path)[0].prompt
    with pytest.raises(TunelabError, match=r"hh.jsonl:1: this is a preference file .*data.format: chosen"):
        load_conversations(path)  # auto: told what to do instead
