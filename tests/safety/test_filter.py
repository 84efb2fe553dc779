"""filter: counts, ids (or line numbers), kept rows and the audit file."""
import json

import pytest

from tunelab.errors import TunelabError
from tunelab.safety.filter import filter_records, string_values


class FakeClassifier:
    """Toxicity 0.9 for texts containing 'BAD', 0.1 otherwise."""

    def score(self, texts):
        return [0.9 if "BAD" in t else 0.1 for t in texts]


def test_string_values_skips_ids_and_roles():
    rec = {"id": "BAD-1", "conversations": [{"from": "human", "value": "hi"},
                                             {"from": "gpt", "value": "BAD"}], "n": 3}
    assert string_values(rec) == ["hi", "BAD"]


def test_filter_counts_ids_and_kept_rows(tmp_path):
    rows = [
        {"id": "a", "instruction": "say hi", "input": "", "output": "hi"},
        {"id": "b", "messages": [{"role": "user", "content": "hello"},
                                 {"role": "assistant", "content": "you are BAD"}]},
        {"id": "c", "prompt": "q", "completion": "fine"},
        {"id": "d", "prompt": "BAD prompt", "completion": "ok"},
    ]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "clean.jsonl"
    res = filter_records(src, 0.5, out, classifier=FakeClassifier())
    assert (res.n_in, res.n_kept, res.n_dropped) == (4, 2, 2)
    assert [d["id"] for d in res.dropped] == ["b", "d"]
    assert [d["line"] for d in res.dropped] == [2, 4]
    kept = [json.loads(l) for l in out.read_text().splitlines()]
    assert kept == [rows[0], rows[2]]  # kept rows unchanged, nothing added
    audit = [json.loads(l) for l in (tmp_path / "clean.dropped.jsonl").read_text().splitlines()]
    assert [a["id"] for a in audit] == ["b", "d"] and audit[0]["toxicity"] == pytest.approx(0.9)


def test_filter_line_numbers_without_ids_and_field(tmp_path):
    src = tmp_path / "d.json"
    src.write_text(json.dumps([{"q": "BAD", "a": "x"}, {"q": "ok", "a": "BAD"}, {"q": "ok", "a": "ok"}]))
    out = tmp_path / "kept.json"
    res = filter_records(src, 0.5, out, field="q", classifier=FakeClassifier())
    assert [d["id"] for d in res.dropped] == [1]  # list position, since records have no id
    assert json.loads(out.read_text()) == [{"q": "ok", "a": "BAD"}, {"q": "ok", "a": "ok"}]


def test_threshold_is_checked(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"q": "x"}) + "\n")
    with pytest.raises(TunelabError, match="outside"):
        filter_records(src, 1.5, tmp_path / "o.jsonl", classifier=FakeClassifier())


def test_filter_missing_field_error(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text('{"a": "x"}\n')
    with pytest.raises(TunelabError, match=r"d.jsonl:1 .*'q'.*fields present: a"):
        filter_records(src, 0.5, tmp_path / "o.jsonl", field="q", classifier=FakeClassifier())
