"""`tunelab data prepare` and `tunelab cache list|clear` on the command line: counts and lengths
printed, the second run a cache hit, bad inputs one line naming the file and line."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tunelab.cli import main
from tunelab.models.loading import load_tokenizer
from tunelab.templates.cache import entries, prepare

ROWS = [{"instruction": f"Count to {i}.", "input": "", "output": " ".join(str(k) for k in range(i + 1))} for i in range(12)]


def _plain(text: str) -> str:
    """Rich's output as words: table borders (box drawing, U+2500..U+257F) and wrapping undone."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def run_cli(capsys, *args):
    """(exit code, stdout as words, stderr); a command that succeeds returns instead of exiting: 0."""
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, _plain(out.out), out.err


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "alpaca.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def test_prepare_prints_counts_and_lengths_then_hits_the_cache(capsys, data, tiny_dir):
    code, out, err = run_cli(capsys, "data", "prepare", str(data), "--model", str(tiny_dir), "--max-length", "24")
    assert code == 0, err
    enc = prepare(data, load_tokenizer(tiny_dir), max_length=24)  # the entry the command wrote
    assert enc.hit and len(entries()) == 1
    lengths = enc.lengths[enc.status == 0]
    m = enc.meta
    assert "encoded in" in out and "already in the cache" not in out
    assert f"records {len(ROWS)}" in out and f"kept for training {m['kept']}" in out
    assert f"truncated to 24 {m['truncated']}" in out and m["truncated"] > 0  # the long rows
    assert (f"tokens min / median / p95 / max {lengths.min()} / {np.median(lengths):.0f} / "
            f"{np.percentile(lengths, 95):.0f} / {lengths.max()}") in out
    assert f"tokens total / trained {m['tokens']} / {m['trained_tokens']}" in out
    assert "detected format 'alpaca'" in out

    code, again, err = run_cli(capsys, "data", "prepare", str(data), "--model", str(tiny_dir), "--max-length", "24")
    assert code == 0, err
    assert "already in the cache" in again and f"records {len(ROWS)}" in again and len(entries()) == 1
    code, other, _ = run_cli(capsys, "data", "prepare", str(data), "--model", str(tiny_dir), "--max-length", "32")
    assert code == 0 and "encoded in" in other and len(entries()) == 2  # another setting, another entry


@pytest.mark.parametrize("name, content, expected", [
    ("bad.jsonl", json.dumps(ROWS[0]) + '\n{"instruction": "x", "output": }\n',
     "bad.jsonl:2: not valid JSON (Expecting value at column 32); fix it, or pass --skip-bad to skip bad records"),
    ("bad.json", "[\n" + json.dumps(ROWS[0]) + ',\n{"instruction": "x" "output": "y"}\n]',
     "bad.json:3: not valid JSON (Expecting ',' delimiter at column 21); fix the file"),
    ("notobj.json", "[" + json.dumps(ROWS[0]) + ", 7]",
     "notobj.json: record 2: expected a JSON object, got int; fix it, or pass --skip-bad to skip bad records"),
    ("empty.jsonl", "", "empty.jsonl: no records in the file"),
    ("odd.jsonl", json.dumps({"question": "q", "answer": "a"}) + "\n", "cannot tell the data format"),
])
def test_prepare_bad_inputs_are_one_line(capsys, tmp_path, tiny_dir, name, content, expected):
    p = tmp_path / name
    p.write_text(content)
    code, _, err = run_cli(capsys, "data", "prepare", str(p), "--model", str(tiny_dir))
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and expected in " ".join(err.split()), err
    assert "Traceback" not in err and entries() == []  # a failed write leaves no entry


def test_prepare_missing_file_and_bad_option(capsys, tmp_path, data, tiny_dir):
    code, _, err = run_cli(capsys, "data", "prepare", str(tmp_path / "nope.jsonl"), "--model", str(tiny_dir))
    assert code == 2 and "nope.jsonl: data file not found" in err
    code, _, err = run_cli(capsys, "data", "prepare", str(data), "--model", str(tiny_dir), "--train-on", "prompt")
    assert code == 2 and "--train-on must be completion or all, got 'prompt'" in err


def test_prepare_skip_bad_counts_the_skipped_line(capsys, tmp_path, tiny_dir):
    p = tmp_path / "some_bad.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]) + "{broken\n" + json.dumps(ROWS[5]) + "\n")
    with pytest.warns(UserWarning, match=r"some_bad\.jsonl: skipped 1 bad record"):
        code, out, err = run_cli(capsys, "data", "prepare", str(p), "--model", str(tiny_dir), "--skip-bad")
    assert code == 0, err
    assert "records 6" in out and "some_bad.jsonl: skipped 1 unreadable record(s); first:" in out
    assert "some_bad.jsonl:6: not valid JSON" in out


def test_cache_list_and_clear(capsys, data, tiny_dir):
    code, out, _ = run_cli(capsys, "cache", "list")
    assert code == 0 and "0 encoded data set(s)" in out
    run_cli(capsys, "data", "prepare", str(data), "--model", str(tiny_dir))
    (folder, size, meta), = entries()
    code, out, _ = run_cli(capsys, "cache", "list")
    assert code == 0 and "1 encoded data set(s)" in out and folder.name[:12] in out
    assert f"{len(ROWS)} {meta['tokens']} {size / 2**20:.1f}" in out
    code, out, _ = run_cli(capsys, "cache", "clear")
    assert code == 0 and f"removed 1 encoded data set(s), {size / 2**20:.1f} MB" in out
    assert entries() == [] and not folder.exists()
    code, out, _ = run_cli(capsys, "cache", "list")
    assert "0 encoded data set(s)" in out


def test_a_cached_run_loads_no_tokenizer_and_a_changed_tokenizer_is_a_miss(data, tmp_path, tiny_dir):
    """Issue 26 case 11: the second run found its entry only after importing transformers to hash
    the loaded tokenizer (8 s). It is now found from the tokenizer's files; any change to those
    files is another entry, and the entry is the one prepare() with the loaded tokenizer uses."""
    import os
    import shutil
    import subprocess
    import sys

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    code = ("import sys\nfrom tunelab.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nprint('transformers loaded:', 'transformers' in sys.modules)")
    env = {**os.environ, "TUNELAB_QUIET": "1"}

    def prepare_cmd():
        r = subprocess.run([sys.executable, "-c", code, "data", "prepare", str(data), "--model", str(model)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return _plain(r.stdout)

    first = prepare_cmd()
    assert "encoded in" in first and "transformers loaded: True" in first
    second = prepare_cmd()
    assert "already in the cache" in second and "transformers loaded: False" in second
    [(folder, _, _)] = entries()
    assert f"cache entry {folder}" in second
    assert prepare(data, load_tokenizer(model), max_length=1024).folder == folder  # the library key's entry
    config = model / "tokenizer_config.json"
    config.write_text(config.read_text() + "\n")  # any change to the files, even one that means nothing
    third = prepare_cmd()
    assert "transformers loaded: True" in third  # the files changed: the tokenizer is loaded again
