"""A compare ranked by a corpus metric: every Δ it shows is the difference of the values it shows.

Issue 34 item 0: on Multi30K en-de the table showed BLEU 6.321 (lora-n256) and 0.532 (3-shot) and
"Δ vs best -5.04", the sentences "ahead of the runner-up by 5.039" and the report's gain plot
+1.30 where the table said +0.21: all of them the mean of sentence BLEU. The arms' evaluation
folders are written by hand with the real metric objects, in the layout `tunelab compare` uses;
compare.json, its sentences and the report are then made by today's code.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))
from test_paired_corpus import WORDS, sentences, write_generate  # noqa: E402

ARMS = ["zero_shot", {"few_shot": {"k": [1, 2]}}]


@pytest.fixture(scope="module")
def arm_folders(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A generate task (bleu, chrf, ter) and three arms' evaluations of its 60 items."""
    root = tmp_path_factory.mktemp("corpus")
    refs, weak, strong = sentences(60)
    _, middle, _ = sentences(60, seed=5)  # another system's outputs of other sentences: poor on these refs
    data = root / "test.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "src": r, "ref": r}) + "\n" for i, r in enumerate(refs)))
    pool = root / "pool.jsonl"
    pool.write_text("".join(json.dumps({"src": w, "ref": w}) + "\n" for w in WORDS))
    (root / "task.yaml").write_text(json.dumps({
        "name": "copy", "data": str(data), "type": "generate", "prompt": "{{ src }}", "answer": "{{ ref }}",
        "metrics": ["bleu", "chrf", "ter"], "fewshot": {"k": 0, "pool": str(pool)}}))
    folders = {}
    for aid, outputs in (("zero_shot", middle), ("few_shot-k1-random", weak), ("few_shot-k2-random", strong)):
        folders[aid] = write_generate(root / "evals" / aid, outputs, refs, ["bleu", "chrf", "ter"])
    return root, folders


def _summary(root: Path, folders: dict[str, Path], metric: str, out: Path) -> dict:
    from tunelab.compare.plan import make_plan
    from tunelab.compare.table import summarize

    plan = make_plan({"task": str(root / "task.yaml"), "train_data": str(root / "pool.jsonl"), "arms": ARMS,
                      "metric": metric, "out": str(out)})
    for arm in plan.arms:
        shutil.copytree(folders[arm.id], plan.arm_dir(arm) / "eval")
    summary = summarize(plan)
    (out / "compare.json").write_text(json.dumps(summary))
    return summary


@pytest.mark.parametrize("metric", ["bleu", "chrf", "ter"])
def test_compare_delta_is_the_difference_of_the_values_shown(metric, arm_folders, tmp_path):
    root, folders = arm_folders
    s = _summary(root, folders, metric, tmp_path / "cmp")
    value = {a["id"]: a["metric"]["value"] for a in s["arms"]}
    best = s["best"]
    for a in s["arms"]:
        d = a["diff_vs_best"]
        assert d["delta"] == value[a["id"]] - value[best], a["id"]
        assert d["ci95"][0] <= d["delta"] <= d["ci95"][1] and d["basis"] == "corpus"
        z = a["diff_vs_zero_shot"]  # the report's gain axis
        assert z["delta"] == value[a["id"]] - value["zero_shot"], a["id"]
    # the sentences state the gap to the runner-up as the difference of the two values shown
    from tunelab.compare.sentences import fmt

    runner = min((a for a in s["arms"] if a["id"] != best), key=lambda a: abs(a["diff_vs_best"]["delta"]))
    gap = fmt(abs(value[best] - value[runner["id"]]))
    assert any(f"{runner['id']} by {gap}" in x or f"to {runner['id']} is {gap}" in x for x in s["sentences"]), s["sentences"]


def test_report_shows_the_same_differences(arm_folders, tmp_path):
    from tunelab.report import pages, plots

    root, folders = arm_folders
    out = tmp_path / "cmp"
    s = _summary(root, folders, "bleu", out)
    ctx = pages.compare_context(out)
    value = {a["id"]: a["metric"]["value"] for a in s["arms"]}
    rows = {r["id"]: r for r in ctx["table"]}
    for aid, v in value.items():
        if aid != s["best"]:
            assert rows[aid]["delta"] == pages.num(v - value[s["best"]]), aid
    # the gain-over-zero-shot axis plots diff_vs_zero_shot: the difference of the values shown
    for a in s["arms"]:
        assert plots.gain_point(a)[0] == value[a["id"]] - value["zero_shot"], a["id"]


def test_an_arm_that_cannot_be_recomputed_is_said_so(arm_folders, tmp_path):
    """An arm folder whose predictions lack the outputs: the difference is of item means, and a sentence says so."""
    root, folders = arm_folders
    broken = dict(folders)
    broken["zero_shot"] = shutil.copytree(folders["zero_shot"], tmp_path / "old")
    lines = [json.loads(x) for x in (broken["zero_shot"] / "predictions.jsonl").read_text().splitlines()]
    (broken["zero_shot"] / "predictions.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in x.items() if k != "output"}) + "\n" for x in lines))
    s = _summary(root, broken, "bleu", tmp_path / "cmp")
    zero = next(a for a in s["arms"] if a["id"] == "zero_shot")
    assert zero["diff_vs_best"]["basis"] == "item mean" and "no 'output'" in zero["diff_vs_best"]["note"]
    assert any(x.startswith("Careful with the differences above: the corpus bleu could not be recomputed")
               for x in s["sentences"])


def test_report_flags_a_compare_json_from_before(arm_folders, tmp_path):
    from tunelab.report import pages

    root, folders = arm_folders
    out = tmp_path / "cmp"
    s = _summary(root, folders, "bleu", out)
    assert not any("earlier tunelab" in m for m in pages.compare_context(out)["missing"])
    for a in s["arms"]:
        for key in ("diff_vs_best", "diff_vs_zero_shot"):
            a[key].pop("basis")
    (out / "compare.json").write_text(json.dumps(s))
    assert any("earlier tunelab" in m and "mean per-item bleu" in m for m in pages.compare_context(out)["missing"])


def test_retention_differences_of_a_perplexity_task_are_corpus_differences(tmp_path):
    """Retention scores each arm against its base model with checks.paired_items on Results read
    from disk; a perplexity retention task's change is the difference of the two corpus values."""
    from test_paired_corpus import PPL_METRICS, write_perplexity

    from tunelab.compare.checks import paired_items
    from tunelab.evaluate.results import read_results

    base, own = read_results(write_perplexity(tmp_path / "base", 1)), read_results(write_perplexity(tmp_path / "own", 2))
    for metric in PPL_METRICS:
        d = paired_items(base, own, metric, seed=1)
        assert d["delta"] == own.value(metric) - base.value(metric) and d["basis"] == "corpus", metric
        assert d["ci95"][0] <= d["delta"] <= d["ci95"][1]
