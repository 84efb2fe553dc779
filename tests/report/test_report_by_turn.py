"""A metric given per part of the items (multi_turn's by_turn) on the report: a row per turn under the metric on
an eval page, a column per turn in a compare's arms table; pages of results without parts are as before.

The folders are written by hand in the shape `tunelab eval` and `tunelab compare` write (docs/judge.md,
"Multi-turn: MT-Bench", shows the by_turn entry), so no model runs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tunelab.report import build
from tunelab.report.pages import metric_parts
from .html_parts import section as _section, arms_table

QUALITY_HEAD = ["arm", "method", "examples", "judge_score", "95% CI", "Δ vs best", "Δ 95% CI", "p", "toxicity"]


def _entry(value: float, lo: float, hi: float, n: int, turns=None) -> dict:
    e = {"value": value, "stderr": 0.25, "ci95": [lo, hi], "n": n}
    if turns is not None:
        e["by_turn"] = {str(t): {"value": v, "stderr": 0.5, "ci95": [v - 1, v + 1], "n": k} for t, (v, k) in turns.items()}
    return e


def _eval_folder(folder: Path, metrics: dict) -> Path:
    """results.json and predictions.jsonl of a 4-conversation, 2-turn multi_turn run (8 items)."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "task": "mt_bench", "model": {"name": "tiny", "sha256": "0" * 8, "adapter": None}, "n": 8, "shots": 0,
        "metrics": metrics, "cost": {"wall_s": 3.0, "tokens": 800, "prompt_tokens": 600, "generated_tokens": 200},
        "signature": f"tunelab|{folder.name}"}))
    lines = [{"id": f"q{i}#{t}", "prompt": f"question {i} turn {t}", "output": "an answer",
              "metrics": {name: 5.0 + i for name in metrics}} for i in range(4) for t in (1, 2)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def _metric_rows(page: str) -> list[tuple[str, list[str]]]:
    """The eval page's metric table: (row class, its cells) per row."""
    body = re.search(r"<tbody>(.*?)</tbody>", _section(page, "table"), flags=re.S).group(1)
    return [(cls or "", re.findall(r"<td>(.*?)</td>", row)) for cls, row in
            re.findall(r'<tr(?: class="([^"]*)")?>(.*?)</tr>', body, flags=re.S)]


def test_eval_page_has_a_row_per_turn_under_the_metric(tmp_path):
    d = _eval_folder(tmp_path / "e", {"judge_score": _entry(6.1, 5.5, 6.7, 8, {1: (6.6, 4), 2: (5.6, 4)}),
                                      "response_chars": _entry(120.0, 100.0, 140.0, 8, {1: (130.0, 4), 2: (110.0, 4)})})
    page = build(d).read_text()
    head = re.findall(r"<th>(.*?)</th>", _section(page, "table").split("</thead>")[0])
    assert head == ["metric", "value", "± stderr", "95% CI", "n"]
    assert _metric_rows(page) == [
        ("", ["judge_score", "6.1", "0.25", "[5.5, 6.7]", "8"]),
        ("part", ["judge_score turn 1", "6.6", "0.5", "[5.6, 7.6]", "4"]),
        ("part", ["judge_score turn 2", "5.6", "0.5", "[4.6, 6.6]", "4"]),
        ("", ["response_chars", "120", "0.25", "[100, 140]", "8"]),
        ("part", ["response_chars turn 1", "130", "0.5", "[129, 131]", "4"]),
        ("part", ["response_chars turn 2", "110", "0.5", "[109, 111]", "4"]),
    ]


def test_eval_page_without_parts_is_as_before(tmp_path):
    d = _eval_folder(tmp_path / "e", {"acc": _entry(0.5, 0.25, 0.75, 8), "judge_score": _entry(6.1, 5.5, 6.7, 8)})
    table = _section(build(d).read_text(), "table")
    assert re.findall(r"<th>(.*?)</th>", table.split("</thead>")[0]) == ["metric", "value", "± stderr", "95% CI"]
    assert _metric_rows(table.join(['<section id="table">', "</section>"])) == [
        ("", ["acc", "0.5", "0.25", "[0.25, 0.75]"]), ("", ["judge_score", "6.1", "0.25", "[5.5, 6.7]"])]
    assert "turn" not in table and 'class="part"' not in table and "per part" not in table


def _compare_folder(root: Path, turns: dict) -> Path:
    """compare.json (the main metric over all items only, as compare/table.py writes it) and each arm's eval
    folder; `turns`: arm id -> its by_turn values, or None for results without parts."""
    folder = root / "cmp"
    arms = []
    for i, (aid, by_turn) in enumerate(turns.items()):
        value = 6.0 + i
        _eval_folder(folder / "arms" / aid / "eval", {"judge_score": _entry(value, value - 0.5, value + 0.5, 8, by_turn)})
        arms.append({"id": aid, "method": "zero_shot" if i == 0 else "lora", "model": "tiny",
                     "metric": {"value": value, "ci95": [value - 0.5, value + 0.5]},
                     "diff_vs_best": None if i == len(turns) - 1 else {"delta": i - len(turns) + 1.0,
                                                                      "ci95": [-2.0, 0.0], "p": 0.04},
                     "infer_cost_per_1k": {"wall_s": 375.0, "prompt_tokens": 75000.0, "generated_tokens": 25000.0},
                     "eval_dir": f"arms/{aid}/eval"})
    (folder / "compare.json").write_text(json.dumps({
        "name": "mt", "task": "mt_bench", "main_metric": "judge_score", "higher_is_better": True,
        "best": arms[-1]["id"], "arms": arms, "sentences": ["fixture"], "signature": "tunelab|compare"}))
    return folder


def _quality_table(page: str) -> tuple[list[str], dict[str, list[str]]]:
    return arms_table(page, "arms-quality")


def test_compare_arms_table_has_a_column_per_turn_from_the_arms_results(tmp_path):
    folder = _compare_folder(tmp_path, {"zero_shot": {1: (6.5, 4), 2: (5.5, 4)},
                                        "lora-n16": None,  # results without parts (an older eval): no turn cells
                                        "lora-n32": {1: (8.25, 4), 2: (7.75, 4)}})
    page = build(folder).read_text()
    head, rows = _quality_table(page)
    assert head == QUALITY_HEAD[:5] + ["turn 1", "95% CI", "turn 2", "95% CI"] + QUALITY_HEAD[5:]
    assert rows["zero_shot"][3:9] == ["6", "[5.5, 6.5]", "6.5", "[5.5, 7.5]", "5.5", "[4.5, 6.5]"]
    assert rows["lora-n32"][3:9] == ["8", "[7.5, 8.5]", "8.25", "[7.25, 9.25]", "7.75", "[6.75, 8.75]"]
    assert rows["lora-n16"][3:9] == ["7", "[6.5, 7.5]", "–", "–", "–", "–"]
    assert rows["zero_shot"][9:11] == ["-2", "[-2, 0]"]  # Δ and p still over all the items, after the turns
    assert "show it. Columns turn 1, turn 2: judge_score over each part's items alone" in _section(page, "table")


def test_compare_arms_table_without_parts_is_as_before(tmp_path):
    folder = _compare_folder(tmp_path, {"zero_shot": None, "lora-n32": None})
    page = build(folder).read_text()
    head, rows = _quality_table(page)
    assert head == QUALITY_HEAD
    assert rows["zero_shot"][3:6] == ["6", "[5.5, 6.5]", "-1"] and len(rows["zero_shot"]) == len(QUALITY_HEAD)
    assert "turn" not in _section(page, "table") and 'class="part' not in page


def test_metric_parts_reads_only_breakdown_keys():
    entry = _entry(6.1, 5.5, 6.7, 8, {1: (6.6, 4), 2: (5.6, 4)})
    entry.update({"signature": "x", "unparsed": 0, "by_nothing": 3, "by_length": {"short": {"value": 1.0}, "bad": 2}})
    assert [label for label, _ in metric_parts(entry)] == ["turn 1", "turn 2", "length short"]
    assert metric_parts(entry)[1][1]["value"] == 5.6
    assert metric_parts(0.5) == [] and metric_parts({"value": 0.5, "ci95": [0.1, 0.9]}) == []


def test_report_of_a_tiny_multi_turn_eval_shows_its_turns(tiny_dir, tmp_path):
    """End to end: what the runner writes for a multi_turn task is what the page reads."""
    import yaml

    from tunelab.evaluate.runner import evaluate
    from tunelab.report.pages import ci, num

    records = [{"turns": ["What is 2 + 3?", "Now double it."]}, {"turns": ["Say hi.", "Louder."]}, {"turns": ["Bye."]}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "mt.yaml").write_text(yaml.safe_dump({
        "name": "mt", "type": "multi_turn", "data": "q.jsonl", "turns": "turns", "metrics": ["refusal"],
        "generation": {"max_new_tokens": 4, "stop": [], "temperature": 0.0}}))
    res = evaluate(str(tiny_dir), tmp_path / "mt.yaml", out=tmp_path / "out")
    rows = dict((cells[0], (cls, cells[1:])) for cls, cells in _metric_rows(build(tmp_path / "out").read_text()))
    for turn, n in (("1", 3), ("2", 2)):
        e = res.metrics["refusal"]["by_turn"][turn]
        assert rows[f"refusal turn {turn}"] == ("part", [num(e["value"]), num(e["stderr"]), ci(e["ci95"]), str(n)])
    assert rows["refusal"][0] == "" and rows["refusal"][1][-1] == "5"
