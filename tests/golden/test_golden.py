"""Golden tests (STYLE rule 7): today's numbers and today's files, kept so later versions answer to them.

- the per-step losses of a 6-step tiny-model run (LoRA and full, and LoRA interrupted and resumed)
  equal losses.json to 1e-5;
- a run folder, three evaluation folders and a run registry written by earlier code (the
  fixtures beside this file) still read with today's readers: results, diff, compare, report,
  the registry and `tunelab runs`, and the adapter still loads onto its base model;
- the files a run and an evaluation write today carry exactly the keys docs/run-folder.md and
  docs/results.md list (both pages are generated from tunelab.train.files and
  tunelab.evaluate.results, so this ties the pages to the writers).

A failure of the first kind means the numbers changed: find out why before regenerating
(README.md). A failure of the second kind means old folders no longer read: fix the reader.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_golden", HERE / "make_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

TOL = 1e-5


@pytest.fixture(autouse=True)
def _golden_env(monkeypatch):
    """Quiet runs on the thread count the numbers were made with (results can depend on it)."""
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    monkeypatch.setenv("TUNELAB_NO_ENERGY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", str(golden.THREADS))
    monkeypatch.delenv("TUNELAB_FAULT", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(golden.THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_dir):
    from tunelab.train.loop import train

    return train(golden.train_config("lora", tiny_dir, tmp_path_factory.mktemp("golden") / "lora"))


# ---------------------------------------------------------------- numbers
def _assert_losses(run_dir: Path, method: str) -> None:
    want = json.loads(golden.LOSSES.read_text())[method]
    got = golden.run_losses(run_dir)
    assert len(got["loss"]) == len(want["loss"]) == golden.STEPS
    for step, (g, w) in enumerate(zip(got["loss"], want["loss"]), start=1):
        assert abs(g - w) <= TOL, f"{method} step {step}: loss {g!r}, golden {w!r}"
    assert got["eval_loss"].keys() == want["eval_loss"].keys()
    for step, w in want["eval_loss"].items():
        assert abs(got["eval_loss"][step] - w) <= TOL, f"{method} step {step}: eval_loss {got['eval_loss'][step]!r}, golden {w!r}"


def test_lora_losses_match_golden(lora_run):
    _assert_losses(lora_run.run_dir, "lora")


def test_interrupted_and_resumed_lora_run_matches_golden(tmp_path, tiny_dir, monkeypatch):
    """Ctrl-C during step 4 saves a checkpoint after it; --resume finishes the run on the golden numbers."""
    from tunelab.train.loop import TrainingInterrupted, train

    cfg = golden.train_config("lora", tiny_dir, tmp_path / "lora")
    monkeypatch.setenv("TUNELAB_FAULT", "sigint@4")
    with pytest.raises(TrainingInterrupted):
        train(cfg)
    monkeypatch.delenv("TUNELAB_FAULT")
    assert len(golden.run_losses(tmp_path / "lora")["loss"]) == 4
    res = train(cfg, resume=True)
    _assert_losses(res.run_dir, "lora")


def test_full_finetune_losses_match_golden(tmp_path, tiny_dir):
    from tunelab.train.loop import train

    res = train(golden.train_config("full", tiny_dir, tmp_path / "full"))
    _assert_losses(res.run_dir, "full")


# ---------------------------------------------------------------- today's files have the documented keys
def test_run_folder_has_the_documented_files_and_keys(lora_run):
    from tunelab.train import files

    d = lora_run.run_dir
    documented = {name.rstrip("/") for name in files.RUN_FOLDER} | {"checkpoints"}
    assert {p.name for p in d.iterdir()} <= documented
    for step_dir in (d / "checkpoints").iterdir():
        names = {p.name for p in step_dir.iterdir()}
        assert names == {n for n in files.CHECKPOINT_FILES if "/" not in n} | {"adapter"}, step_dir
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    one_process = set(files.METRICS_KEYS) - (files.METRICS_OPTIONAL - {"eval_loss"})
    assert all(set(r) == one_process - {"eval_loss"} for r in rows if "eval_loss" not in r)
    assert all(set(r) == one_process for r in rows if "eval_loss" in r)
    assert set(json.loads((d / "summary.json").read_text())) == set(files.SUMMARY_KEYS)


def _retrieval_task(tmp_path: Path) -> dict:
    docs = ["the cat sat on the mat", "dogs bark at night", "a cat and a dog", "stock prices fell"]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"id": "q1", "text": "cat"}) + "\n" + json.dumps({"id": "q2", "text": "dog"}) + "\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d0 1\nq1 0 d2 1\nq2 0 d1 1\nq2 0 d2 1\n")
    return {"name": "r", "type": "retrieval", "corpus": str(tmp_path / "corpus.jsonl"),
            "queries": str(tmp_path / "queries.jsonl"), "qrels": str(tmp_path / "qrels.txt"), "metrics": ["map"]}


@pytest.mark.parametrize("kind", ["generate", "multiple_choice", "perplexity", "retrieval"])
def test_prediction_lines_carry_exactly_the_documented_keys(kind, tmp_path, tiny_dir):
    from tunelab.config import load_task
    from tunelab.evaluate.runner import evaluate
    from tunelab.evaluate.task_types import prediction_keys

    PREDICTION_KEYS = prediction_keys()  # every line's keys, then each task type's own

    if kind == "retrieval":
        task = load_task(_retrieval_task(tmp_path))
    elif kind == "perplexity":
        task = load_task({"name": "p", "data": str(golden.DATA / "test.jsonl"), "type": "perplexity",
                          "text": "{{ prompt }} {{ completion }}", "metrics": ["token_perplexity"]})
    else:
        task = load_task(golden.TASK if kind == "multiple_choice" else golden.TASK_GENERATE)
        task.fewshot.k = 1  # demonstrations (from the same file) add `demos`
    res = evaluate(str(tiny_dir), task, limit=3, out=tmp_path / "out")
    want = set(PREDICTION_KEYS["every line"]) | set(PREDICTION_KEYS[kind])
    if task.fewshot.k == 0:
        want.discard("demos")
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert lines and all(set(line) == want for line in lines), (sorted(set(lines[0]) ^ want))
    assert res.n == len(lines)


@pytest.mark.parametrize("benchmark", ["crows_pairs", "bbq"])
def test_bias_lines_carry_exactly_the_documented_keys(benchmark, shared_data, tiny_dir):
    from tunelab.evaluate.results import PREDICTION_KEYS
    from tunelab.safety.bias import bias

    data = shared_data / ("crows_pairs/crows_pairs_anonymized.csv" if benchmark == "crows_pairs" else "bbq/Age.jsonl")
    res = bias(str(tiny_dir), benchmark, data, limit=3, device="cpu")
    want = (set(PREDICTION_KEYS["every line"]) - {"demos"}) | set(PREDICTION_KEYS[f"safety bias {benchmark}"])
    assert res.predictions and all(set(line) == want for line in res.predictions), sorted(set(res.predictions[0]) ^ want)


def test_probe_lines_carry_exactly_the_documented_keys(tmp_path, tiny_dir):
    from tunelab.evaluate.results import PREDICTION_KEYS
    from tunelab.safety.probe import probe

    (tmp_path / "prompts.txt").write_text("the weather today is\nonce upon a time\n")
    res = probe(str(tiny_dir), tmp_path / "prompts.txt", samples=2, max_new_tokens=4, device="cpu",
                scorer=lambda texts: [0.0] * len(texts))
    want = (set(PREDICTION_KEYS["every line"]) - {"demos"}) | set(PREDICTION_KEYS["safety probe"])
    assert res.predictions and all(set(line) == want for line in res.predictions), sorted(set(res.predictions[0]) ^ want)


# ---------------------------------------------------------------- old files still read
def test_golden_eval_folders_still_read():
    from tunelab.evaluate.results import read_items, read_results

    ids = {json.loads(x)["id"] for x in (golden.DATA / "test.jsonl").read_text().splitlines()}
    for key, folder in golden.EVAL_FIXTURES.items():
        res = read_results(folder)
        written = json.loads((folder / "results.json").read_text())
        assert res.n == 8 and set(res.items) == ids == set(read_items(folder)), key
        assert res.signature.startswith("tunelab ") and res.model["sha256"]
        for name, entry in written["metrics"].items():
            assert res.value(name) == entry["value"]
        assert res.cost["prompt_tokens"] > 0


def test_diff_pairs_the_golden_evaluations():
    from tunelab.evaluate.diff import diff_results

    rows = {r.metric: r for r in diff_results(golden.EVAL_FIXTURES["base"], golden.EVAL_FIXTURES["lora"])}
    assert set(rows) == {"acc", "acc_norm"} and all(r.n == 8 for r in rows.values())
    base = json.loads((golden.EVAL_FIXTURES["base"] / "results.json").read_text())
    assert rows["acc"].a_reported == base["metrics"]["acc"]["value"]


def test_compare_summarises_golden_arms(tmp_path):
    """compare.json from arm folders laid out as `tunelab compare` lays them out, filled with the fixtures."""
    from tunelab.compare.plan import make_plan
    from tunelab.compare.table import summarize

    plan = make_plan({"task": str(golden.TASK), "train_data": str(golden.DATA / "train.jsonl"),
                      "arms": ["zero_shot", {"lora": {"n": 24}}], "out": str(tmp_path / "cmp")})
    zero, lora = plan.arms
    shutil.copytree(golden.EVAL_FIXTURES["base"], plan.arm_dir(zero) / "eval")
    shutil.copytree(golden.EVAL_FIXTURES["lora"], plan.arm_dir(lora) / "eval")
    shutil.copytree(golden.RUN_FIXTURE, plan.arm_dir(lora) / "train")
    table = summarize(plan)
    rows = {r["id"]: r for r in table["arms"]}
    summary = json.loads((golden.RUN_FIXTURE / "summary.json").read_text())
    assert rows["lora-n24"]["train_cost"]["tokens"] == summary["tokens_seen"]
    for arm, key in ((zero, "base"), (lora, "lora")):
        want = json.loads((golden.EVAL_FIXTURES[key] / "results.json").read_text())["metrics"]["acc"]["value"]
        assert rows[arm.id]["metric"]["value"] == want


@pytest.mark.parametrize("folder", [golden.RUN_FIXTURE, *golden.EVAL_FIXTURES.values()], ids=lambda p: p.name)
def test_report_renders_golden_folders_with_nothing_missing(folder, tmp_path):
    from tunelab.report import pages, render

    copy = shutil.copytree(folder, tmp_path / folder.name)
    ctx = pages.train_context(copy) if folder == golden.RUN_FIXTURE else pages.eval_context(copy)
    assert ctx["missing"] == []
    html = render(copy)
    assert html.lstrip().lower().startswith("<!doctype html") and ctx["title"] in html


def test_golden_adapter_loads_onto_its_base(tiny_dir):
    """The adapter was trained on save_tiny()'s weights: their hash must not move, and it still loads."""
    from tunelab.models.loading import load_model

    meta = json.loads((golden.RUN_FIXTURE / "adapter" / "tunelab_adapter.json").read_text())
    lm = load_model(str(tiny_dir), adapter=str(golden.RUN_FIXTURE / "adapter"), device="cpu")
    assert lm.sha256 == meta["base_sha256"]
    assert lm.adapter is not None and lm.adapter_sha256


def test_golden_registry_still_reads(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tunelab import runs
    from tunelab.cli import app

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(golden.REGISTRY_FIXTURE, home / runs.DB_FILE)
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    found = runs.list_runs(limit=None)
    assert [(r.kind, r.name) for r in reversed(found)] == [
        ("train", "golden-lora"), ("train", "golden-full"), ("eval", "eval-base"), ("eval", "eval-lora"),
        ("eval", "eval-generate")]
    assert all(r.status == "completed" for r in found)
    out = CliRunner().invoke(app, ["runs", "list"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "golden-lora" in out.output and "eval-generate" in out.output
