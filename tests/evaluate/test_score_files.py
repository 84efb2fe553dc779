"""`tunelab metrics score`: text metrics over existing files, against the sacrebleu command line.

Reference: sacrebleu 2.6.0's own CLI, `python -m sacrebleu REF1 [REF2] -i HYP -m bleu chrf ter
-b -w 4`, run on the same files in the test; tunelab must print the same numbers.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.score_files import score_files

DIALOGSUM = Path(__file__).resolve().parents[3] / "shared" / "data" / "dialogsum" / "dialogsum.test.jsonl"
HYP = ["the cat sat on the mat", "a quick brown fox", "", "hello there , world !"]
REF1 = ["the cat is on the mat", "the quick brown fox jumps", "nothing", "hello world !"]
REF2 = ["there is a cat on the mat", "a fast brown fox", "empty", "hello , world"]


def _sacrebleu_cli(hyp: Path, refs: list[Path]) -> list[float]:
    out = subprocess.run([sys.executable, "-m", "sacrebleu", *map(str, refs), "-i", str(hyp),
                          "-m", "bleu", "chrf", "ter", "-b", "-w", "4"], capture_output=True, text=True, check=True)
    return [float(v.strip().strip(",")) for v in out.stdout.strip().strip("[]").split() if v.strip(",")]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunelab", "metrics", "score", *args],
                          capture_output=True, text=True)


def test_matches_sacrebleu_cli_with_two_references(tmp_path):
    hyp, r1, r2 = _write(tmp_path / "hyp.txt", HYP), _write(tmp_path / "r1.txt", REF1), _write(tmp_path / "r2.txt", REF2)
    ours = [r.value for r in score_files(hyp, [r1, r2], ["bleu", "chrf", "ter"])]
    assert ours == pytest.approx(_sacrebleu_cli(hyp, [r1, r2]), abs=1e-4)


@pytest.mark.skipif(not DIALOGSUM.is_file(), reason="../shared/data/dialogsum is absent")
def test_dialogsum_summary1_against_summaries_2_and_3(tmp_path):
    rows = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()]
    files = {k: _write(tmp_path / f"{k}.txt", [r[k].replace("\n", " ") for r in rows])
             for k in ("summary1", "summary2", "summary3")}
    reference = _sacrebleu_cli(files["summary1"], [files["summary2"], files["summary3"]])
    ours = score_files(files["summary1"], [files["summary2"], files["summary3"]], ["bleu", "chrf", "ter"])
    assert [r.value for r in ours] == pytest.approx(reference, abs=1e-4)
    # the same numbers from the data file itself, references given as a list field
    data = tmp_path / "ds.jsonl"
    data.write_text("\n".join(json.dumps({"hyp": r["summary1"].replace("\n", " "),
                                          "refs": [r["summary2"].replace("\n", " "), r["summary3"].replace("\n", " ")]})
                              for r in rows) + "\n")
    from_jsonl = score_files(data, [data], ["bleu"], field="hyp", ref_field="refs")
    assert from_jsonl[0].value == pytest.approx(reference[0], abs=1e-4)


def test_cli_prints_signature_and_json(tmp_path):
    hyp, ref = _write(tmp_path / "hyp.txt", HYP), _write(tmp_path / "ref.txt", REF1)
    res = _cli("--hyp", str(hyp), "--ref", str(ref), "-m", "bleu,exact_match", "-o", "bleu.tokenize=intl")
    assert res.returncode == 0, res.stderr
    assert "bleu|tok:intl|" in res.stdout and "exact_match|" in res.stdout and "95% CI" in res.stdout
    js = _cli("--hyp", str(hyp), "--ref", str(ref), "-m", "chrf", "--json")
    data = json.loads(js.stdout)
    assert set(data) == {"chrf"} and data["chrf"]["signature"].startswith("chrf|") and data["chrf"]["n"] == 4


@pytest.mark.parametrize("make,args,message", [
    (lambda d: (_write(d / "h.txt", HYP), _write(d / "r.txt", REF1[:3])), (), "3 references but"),
    (lambda d: (_write(d / "h.txt", HYP), _write(d / "r.txt", REF1)), ("-m", "acc"), "needs a model's scores"),
    (lambda d: (_write(d / "h.txt", HYP), _write(d / "r.txt", REF1)), ("-m", "blue"), "unknown metric 'blue'"),
    (lambda d: (_write(d / "h.jsonl", ['{"a": "x"}']), _write(d / "r.txt", ["x"])), (), "needs field="),
    (lambda d: (_write(d / "h.jsonl", ['{"a": "x"}']), _write(d / "r.txt", ["x"])), ("--field", "b"),
     "no field 'b'"),
    (lambda d: (_write(d / "h.txt", HYP), _write(d / "r.txt", REF1)), ("-o", "bleu=1"), "metric.option=value"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, make, args, message):
    hyp, ref = make(tmp_path)
    res = _cli("--hyp", str(hyp), "--ref", str(ref), *args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2


def test_invalid_utf8_names_the_line(tmp_path):
    hyp = tmp_path / "h.txt"
    hyp.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(TunelabError, match=r"h.txt:2: not valid UTF-8"):
        score_files(hyp, [_write(tmp_path / "r.txt", ["a", "b"])], ["bleu"])


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    """Notepad's "UTF-8 with BOM" (issue 26 case 6): exact match 1.0, not 0.5."""
    hyp = tmp_path / "h.txt"
    hyp.write_bytes(b"\xef\xbb\xbfParis\nRome\n")
    [res] = score_files(hyp, [_write(tmp_path / "r.txt", ["Paris", "Rome"])], ["exact_match"])
    assert res.value == 1.0
