"""Bad bytes and bad records: file:line in the error, advice that names the caller's real switch."""
from __future__ import annotations

import json

import pytest

from tunelab.data.readers import read_rows
from tunelab.errors import TunelabError

from .conftest import one_line

GOOD = json.dumps({"prompt": "What is 2 plus 2?", "completion": "4"}).encode()
BAD_UTF8 = b'{"prompt": "caf\xe9", "completion": "x"}'  # latin-1 bytes inside a UTF-8 file


@pytest.mark.parametrize("suffix, lines", [
    (".jsonl", [GOOD, BAD_UTF8, GOOD]),
    (".csv", [b"prompt,completion", b"a,b", b"caf\xe9,x", b"c,d"]),
])
def test_invalid_utf8_names_the_line_and_skip_bad_skips_only_it(tmp_path, suffix, lines):
    p = tmp_path / f"d{suffix}"
    p.write_bytes(b"\n".join(lines) + b"\n")
    bad_line = next(i for i, line in enumerate(lines, start=1) if b"\xe9" in line)
    with pytest.raises(TunelabError, match=rf"d{suffix}:{bad_line}: not valid UTF-8 \(byte 0xe9"):
        read_rows(p)
    with pytest.warns(UserWarning, match="skipped 1 bad record"):
        rows = read_rows(p, skip_bad=True)
    assert len(rows) == len(lines) - 1 - (suffix == ".csv")  # every other record, line numbers kept
    assert bad_line not in [r.line for r in rows] and rows[-1].line == len(lines)


def test_invalid_utf8_in_a_json_array_names_its_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(b'[\n {"text": "ok"},\n {"text": "caf\xe9"}\n]\n')
    with pytest.raises(TunelabError, match=r"d.json:3: not valid UTF-8"):
        read_rows(p, skip_bad=True)


def test_train_advice_names_data_skip_bad(tmp_path, tiny):
    """train has no --skip-bad flag: its advice is the config key, and that key really works."""
    from tunelab.config import load_train_config
    from tunelab.train.inputs import DataSource, load_examples

    p = tmp_path / "d.jsonl"
    p.write_bytes(GOOD + b"\n" + json.dumps({"prompt": "q"}).encode() + b"\n" + GOOD + b"\n")

    def load(skip_bad):
        cfg = load_train_config({"model": "x", "data": {"train": str(p), "eval": 0, "skip_bad": skip_bad},
                                 "out": str(tmp_path / "r")})
        return load_examples(DataSource(cfg, tiny[1], base_dir=None, say=lambda msg: None))  # the data stage: no model

    with pytest.raises(TunelabError) as e:
        load(False)
    assert "d.jsonl:2" in str(e.value) and "set data.skip_bad=true" in str(e.value)
    assert "--skip-bad" not in str(e.value)
    train_ex, _ = load(True)
    assert len(train_ex) == 2


def test_data_inspect_advice_names_its_flag(cli, tmp_path, tiny_dir):
    p = tmp_path / "d.jsonl"
    p.write_bytes(GOOD + b"\n" + BAD_UTF8 + b"\n")
    code, _, err = cli("data", "inspect", p, "--model", tiny_dir)
    line = one_line(err)
    assert code == 2 and "d.jsonl:2: not valid UTF-8" in line and "pass --skip-bad" in line
    code, out, err = cli("data", "inspect", p, "--model", tiny_dir, "--skip-bad")
    assert code == 0, err


def test_missing_template_field_names_the_task_file(tmp_path):
    from tunelab.config import load_task
    from tunelab.evaluate.prompts import TaskTemplates
    from tunelab.evaluate.runner import _task_source, load_task_rows

    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    task_file = tmp_path / "mytask.yaml"
    task_file.write_text("name: t\ndata: d.jsonl\nprompt: '{{ query }}'\nanswer: '{{ answer }}'\n")
    task = load_task(task_file)
    rows = load_task_rows(task)
    with pytest.raises(TunelabError) as e:
        TaskTemplates(task, _task_source(task)).prompt(rows[0])
    msg = str(e.value)
    assert f"in {task_file} uses field 'query'" in msg and "<t>" not in msg


SHORT_CSV = b"prompt,completion\nWhat is 2 plus 2?,4\nWhat is 3 plus 3?\n"  # line 3 has no completion cell


def test_a_csv_row_with_a_missing_cell_names_the_file_and_line(tmp_path, cli, tiny_dir):
    """Issue 26 case 7: eval scored the row against "None"; inspect and train said "missing field
    'completion' (fields present: completion, prompt)". Each now names d.csv:3 and the missing cell."""
    p = tmp_path / "d.csv"
    p.write_bytes(SHORT_CSV)
    want = "d.csv:3: 1 cells but 2 header columns (no cell for completion)"
    with pytest.raises(TunelabError, match=want.replace("(", r"\(").replace(")", r"\)")):
        read_rows(p)
    code, _, err = cli("data", "inspect", p, "--model", tiny_dir)
    line = one_line(err)
    assert code == 2 and want in line and "pass --skip-bad" in line and "fields present" not in line
    code, _, err = cli("data", "inspect", p, "--model", tiny_dir, "--skip-bad")
    assert code == 0, err
    task = tmp_path / "t.yaml"
    task.write_text("name: t\ndata: d.csv\nprompt: '{{ prompt }}'\nanswer: '{{ completion }}'\nmetrics: [exact_match]\n")
    code, _, err = cli("eval", tiny_dir, "--task", task)
    assert code == 2 and want in one_line(err)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_dir}\ndata: {{train: d.csv, eval: 0}}\nout: {tmp_path / 'r'}\n")
    code, _, err = cli("train", cfg)
    assert code == 2 and want in one_line(err) and "data.skip_bad" in err


def test_a_null_field_is_not_called_missing(tmp_path, tiny):
    from tunelab.data.formats import to_conversation
    from tunelab.data.records import Row

    with pytest.raises(TunelabError) as e:
        to_conversation(Row(2, {"prompt": "q", "completion": None}, "d.jsonl:2"), "prompt_completion")
    assert str(e.value) == "d.jsonl:2: field 'completion' has no value (null); give it one or remove the record"
