"""Bad input on the command line: one line naming the problem and the fix, exit 2, no traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tunelab.cli import main


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_malformed_file_via_subprocess(tmp_path, tiny_dir):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": }\n')
    proc = subprocess.run([sys.executable, "-m", "tunelab", "data", "inspect", str(p), "--model", str(tiny_dir)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.jsonl:2: not valid JSON" in proc.stderr
    assert len([l for l in proc.stderr.splitlines() if l.strip()]) == 1
    debug = subprocess.run([sys.executable, "-m", "tunelab", "--debug", "data", "inspect", str(p), "--model", str(tiny_dir)],
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize("content, expected", [
    ("", "no records in the file"),
    (json.dumps({"question": "q", "answer": "a"}) + "\n", "cannot tell the data format"),
    (json.dumps({"prompt": "q", "completoin": "a"}) + "\n", "did you mean 'completion' for 'completoin'"),
])
def test_data_inspect_bad_inputs(capsys, tmp_path, tiny_dir, content, expected):
    p = tmp_path / "d.jsonl"
    p.write_text(content)
    code, _, err = run_cli(capsys, "data", "inspect", str(p), "--model", str(tiny_dir))
    assert code == 2 and expected in err and "Traceback" not in err


def test_format_option_and_field_map(capsys, tmp_path, tiny_dir):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"question": "What is two plus two?", "answer": "four"}) + "\n")
    code, out, err = run_cli(capsys, "data", "inspect", str(p), "--model", str(tiny_dir), "--format",
                             "prompt_completion", "--field", "prompt=question", "--field", "completion=answer")
    assert code == 0, err
    assert "trained-token share" in out and "four" in out


def test_bad_model_path(capsys, tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"text": "hello"}) + "\n")
    code, _, err = run_cli(capsys, "data", "inspect", str(p), "--model", str(tmp_path / "nomodel"))
    assert code == 2 and "not found: not a registry name" in err


def test_data_tasks_lists_builtins(capsys):
    code, out, _ = run_cli(capsys, "data", "tasks")
    assert code == 0 and all(name in out for name in ("dates", "arith", "reverse", "summary"))


def test_help_works_without_loading_torch():
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from tunelab.cli import main\n"
                           "try:\n    main(['--help'])\nexcept SystemExit as e:\n    pass\n"
                           "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("False"), proc.stdout + proc.stderr
