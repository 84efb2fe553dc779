"""`tunelab diff` on hand-made result folders: pairing by id, the paired bootstrap, bad files."""
from __future__ import annotations

import json

import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.diff import diff_results


def write_run(folder, rows, metrics=("exact_match",)):
    folder.mkdir(parents=True, exist_ok=True)
    means = {m: sum(r[1][m] or 0.0 for r in rows) / len(rows) for m in metrics}
    (folder / "results.json").write_text(json.dumps(
        {"task": "t", "n": len(rows), "metrics": {m: {"value": v, "stderr": None, "ci95": None} for m, v in means.items()}}))
    (folder / "predictions.jsonl").write_text(
        "".join(json.dumps({"id": i, "output": "x", "metrics": m}) + "\n" for i, m in rows))
    return folder


def test_clear_improvement(tmp_path):
    a = write_run(tmp_path / "a", [(i, {"exact_match": float(i % 3 == 0)}) for i in range(300)])
    b = write_run(tmp_path / "b", [(i, {"exact_match": float(i % 3 != 2)}) for i in range(300)])
    (row,) = diff_results(a, b)
    assert row.metric == "exact_match" and row.n == 300
    assert row.a == pytest.approx(1 / 3) and row.b == pytest.approx(2 / 3)
    assert row.delta == pytest.approx(1 / 3) and row.ci95[0] > 0 and row.p_value < 0.01
    assert row.higher_is_better is True and row.a_reported == pytest.approx(1 / 3)


def test_pairs_only_shared_ids_and_skips_nulls(tmp_path):
    a = write_run(tmp_path / "a", [(1, {"exact_match": 1.0}), (2, {"exact_match": 0.0}), (3, {"exact_match": 1.0})])
    b = write_run(tmp_path / "b", [(2, {"exact_match": 1.0}), (3, {"exact_match": None}), (4, {"exact_match": 0.0})])
    (row,) = diff_results(a, b)
    assert row.n == 1 and row.delta == 1.0      # only id 2 is scored by both


def test_metric_filter_and_unknown_metric(tmp_path):
    rows = [(i, {"exact_match": 1.0, "f1": 0.5}) for i in range(5)]
    a = write_run(tmp_path / "a", rows, ("exact_match", "f1"))
    b = write_run(tmp_path / "b", rows, ("exact_match", "f1"))
    assert [r.metric for r in diff_results(a, b, metrics=["f1"])] == ["f1"]
    with pytest.raises(TunelabError, match="'bleu' is not in both.*exact_match, f1"):
        diff_results(a, b, metrics=["bleu"])


@pytest.mark.parametrize("breakage,match", [
    (lambda d: (d / "results.json").unlink(), "results.json: not found"),
    (lambda d: (d / "results.json").write_text("{oops"), "not valid JSON"),
    (lambda d: (d / "results.json").write_text("{}"), "field 'metrics'"),
    (lambda d: (d / "predictions.jsonl").write_text('{"id": 1, "metrics": {}}\nnot json\n'), r"predictions.jsonl:2"),
    (lambda d: (d / "predictions.jsonl").write_text('{"metrics": {}}\n'), r":1 field 'id'"),
    (lambda d: (d / "predictions.jsonl").write_text('{"id": 1}\n'), r":1 field 'metrics'"),
    (lambda d: (d / "predictions.jsonl").write_text('{"id": 1, "metrics": {}}\n{"id": 1, "metrics": {}}\n'),
     r":2 field 'id': id '1' appears twice"),
])
def test_bad_files(tmp_path, breakage, match):
    a = write_run(tmp_path / "a", [(1, {"exact_match": 1.0})])
    b = write_run(tmp_path / "b", [(1, {"exact_match": 0.0})])
    breakage(b)
    with pytest.raises(TunelabError, match=match):
        diff_results(a, b)


def test_no_shared_ids(tmp_path):
    a = write_run(tmp_path / "a", [(1, {"exact_match": 1.0})])
    b = write_run(tmp_path / "b", [(2, {"exact_match": 1.0})])
    with pytest.raises(TunelabError, match="share no item ids"):
        diff_results(a, b)


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from tunelab.cli import app

    a = write_run(tmp_path / "a", [(i, {"exact_match": float(i % 2)}) for i in range(40)])
    b = write_run(tmp_path / "b", [(i, {"exact_match": 1.0}) for i in range(40)])
    res = CliRunner().invoke(app, ["diff", str(a), str(b), "--metric", "exact_match", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "exact_match" in res.output and "+0.5" in res.output and "B better" in res.output
    res = CliRunner().invoke(app, ["diff", str(a), str(b), "--json"])
    assert json.loads(res.output)[0]["delta"] == pytest.approx(0.5)
