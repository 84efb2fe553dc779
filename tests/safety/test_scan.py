"""scan: field choice, bad input and the summary numbers on a hand-made file."""
import json

import pytest

from tunelab.errors import TunelabError
from tunelab.safety.scan import scan


class FakeClassifier:
    """Scores a text by a number written in it, so every expected value can be computed by hand."""

    signature = "toxicity|fake"

    def score(self, texts):
        return [float(t.split("=")[1]) if "=" in t else 0.0 for t in texts]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_summary_and_helm_numbers(tmp_path):
    # prompt a: samples 0.9, 0.1 -> max 0.9; prompt b: 0.2, 0.4, 0.3 -> max 0.4; prompt c: 0.5 -> 0.5
    rows = [{"prompt": "a", "output": "s=0.9"}, {"prompt": "a", "output": "s=0.1"},
            {"prompt": "b", "output": "s=0.2"}, {"prompt": "b", "output": "s=0.4"},
            {"prompt": "b", "output": "s=0.3"}, {"prompt": "c", "output": "s=0.5"}]
    src = _jsonl(tmp_path / "pred.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    s = scan(src, out=out, threshold=0.35, classifier=FakeClassifier())
    assert s["field"] == "output" and s["group_by"] == "prompt" and s["n"] == 6
    assert s["toxic_fraction"] == pytest.approx(3 / 6)  # 0.9, 0.4, 0.5 are >= 0.35
    assert s["mean_toxicity"] == pytest.approx(2.4 / 6)
    assert s["n_prompts"] == 3
    assert s["expected_max_toxicity"] == pytest.approx((0.9 + 0.4 + 0.5) / 3)
    assert s["toxicity_probability"] == pytest.approx(2 / 3)  # a (0.9) and c (0.5) reach 0.5
    written = [json.loads(l) for l in out.read_text().splitlines()]
    assert [w["toxicity"] for w in written] == [0.9, 0.1, 0.2, 0.4, 0.3, 0.5]
    assert all(w["lexicon_hits"] == [] for w in written)
    assert written[0]["prompt"] == "a"  # the input record is kept whole


def test_no_repeated_prompts_means_no_helm_numbers(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl", [{"id": 1, "text": "s=0.8"}, {"id": 2, "text": "x"}])
    s = scan(src, classifier=FakeClassifier())
    assert s["field"] == "text" and s["group_by"] == "id"
    assert s["expected_max_toxicity"] is None and s["toxicity_probability"] is None
    assert s["toxic_fraction"] == pytest.approx(0.5)


def test_csv_field_and_lexicon(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text('id,reply\n1,"you idiot s=0.7"\n2,"fine s=0.1"\n')
    lex = tmp_path / "lex"
    lex.write_text("idiot\n")
    out = tmp_path / "o.jsonl"
    s = scan(src, field="reply", lexicon=lex, out=out, classifier=FakeClassifier())
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["lexicon_hits"] for r in rows] == [["idiot"], []]
    assert rows[0]["id"] == "1" and s["lexicon_fraction"] == pytest.approx(0.5)


def test_missing_field_names_fields_present_and_line(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl", [{"output": "a"}, {"id": 7, "answer": "b"}])
    with pytest.raises(TunelabError) as e:
        scan(src, classifier=FakeClassifier())
    msg = str(e.value)
    assert "p.jsonl:2" in msg and "'output'" in msg and "id, answer" in msg and "--field" in msg


def test_no_default_field_names_fields_present(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(TunelabError, match=r"p.jsonl:1 .*question, answer"):
        scan(src, classifier=FakeClassifier())


def test_bad_json_line_named(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text('{"output": "a"}\n{oops\n')
    with pytest.raises(TunelabError, match=r"p.jsonl:2"):
        scan(src, classifier=FakeClassifier())


def test_cli_missing_field_exits_2(tmp_path, capsys):
    from tunelab.cli import main

    src = _jsonl(tmp_path / "p.jsonl", [{"answer": "x"}])
    with pytest.raises(SystemExit) as e:
        main(["safety", "scan", str(src), "--out", str(tmp_path / "o.jsonl"), "--backend", "ngram"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "answer" in err and "Traceback" not in err
