"""The evaluation benchmark's tunelab side on a tiny model (CPU): every task type runs and compares.

benchmarks/eval_throughput.py pits tunelab against lm-eval 0.4.13 (a bench extra, not installed in
CI) on the default model; this drives the same functions with tiny items so a change to the task
config or the results cannot break the benchmark unseen. The lm-eval side is checked as far as its
task YAML, which must parse and name the same fields.
"""
from __future__ import annotations

import json

import pytest
import yaml


ROWS = {
    "mc_long": [{"context": f"Two friends, one aged {20 + i}, met.", "question": "Who was older?",
                 "ans0": "The first", "ans1": "The second", "ans2": "Unknown", "label": i % 3} for i in range(4)],
    "mc_short": [{"ctx": f"Name a colour number {i}.", "endings": ["red", "a long blue ending", "green", "no"],
                  "label": i % 4} for i in range(4)],
    "generate": [{"prompt": f"Translate into French.\nEnglish: cat {i}\nFrench:", "ref": "chat"} for i in range(3)],
    "perplexity": [{"text": f"An instruction {i}.\nAn answer with a few words."} for i in range(3)],
}


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("eval_throughput")


@pytest.mark.parametrize("kind", ["mc_long", "mc_5shot", "mc_short", "generate", "perplexity"])
def test_every_task_type_runs_on_a_tiny_model(bench, kind, tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    rows = ROWS["mc_long" if kind == "mc_5shot" else kind]
    test = bench._jsonl(tmp_path / "test.jsonl", rows)
    pool = bench._jsonl(tmp_path / "pool.jsonl", ROWS["mc_long"] * 2) if kind == "mc_5shot" else None
    task = bench.tunelab_task(kind, f"bench_{kind}", test, pool, gen_tokens=4)
    wall, ours = bench.run_tunelab(str(tiny_dir), kind, task, batch_size=2)
    assert wall > 0 and len(ours) == len(rows)
    if kind == "generate":
        assert all(isinstance(o, str) for o in ours)
    else:
        width = {"mc_short": 4, "perplexity": 1}.get(kind, 3)
        assert all(len(o) == width for o in ours)
    assert bench.compare(kind, ours, ours) == (0, 0.0)  # a side equals itself: 0 differ, no ll gap

    peer = yaml.safe_load(bench.lm_eval_yaml(kind, f"bench_{kind}", test, pool, gen_tokens=4))
    assert peer["task"] == f"bench_{kind}" and peer["dataset_kwargs"]["data_files"]["test"] == str(test)
    assert ("fewshot_split" in peer) == (pool is not None)
    assert peer["output_type"] == {"generate": "generate_until", "perplexity": "loglikelihood_rolling"}.get(
        kind, "multiple_choice")


def test_token_counts_share_the_context(bench, tiny):
    """tunelab runs a context once for all its choices; lm-eval once per choice."""
    _, tok = tiny
    theirs, ours = bench.tokens_per_item(tok, "mc_short", ROWS["mc_short"], demos="")
    assert theirs > ours > 0


def test_token_counts_follow_the_token_tree(bench, tiny):
    """Contexts several items share (one passage, two questions; a passage that extends another,
    as in BBQ) are counted once, as loglik lays them out; lm-eval's count does not change."""
    from tunelab.infer.loglik import encode_pair

    _, tok = tiny
    passage = "Two friends, one aged 20 and one aged 70, met at the park on a sunny Sunday afternoon."
    base = {"ans0": "The first", "ans1": "The second", "ans2": "Unknown", "label": 0}
    rows = [{**base, "context": c, "question": q}
            for c in (passage, passage + " The younger one was lost.")
            for q in ("Who was lost?", "Who gave directions?")]
    alone = [{**r, "context": f"{i} {r['context']}"} for i, r in enumerate(rows)]  # nothing shared
    theirs, ours = bench.tokens_per_item(tok, "mc_long", rows, demos="")
    theirs_alone, ours_alone = bench.tokens_per_item(tok, "mc_long", alone, demos="")
    assert theirs_alone >= theirs > ours_alone > ours > 0
    ctx = passage + "\nQuestion: Who was lost?\nAnswer:"
    n_passage = len(tok(passage, add_special_tokens=False)["input_ids"])
    assert ours_alone - ours >= 3 * (n_passage - 2) / 4  # the passage ran once for four items
    assert ours_alone - ours < len(encode_pair(tok, ctx, " x")[0])  # but each question is its own


def test_the_item_builders_read_the_shared_data(bench, shared_data):
    rows = bench.hellaswag_rows(5)
    assert len(rows) == 5 and all(len(r["endings"]) == 4 and 0 <= r["label"] < 4 for r in rows)
    assert len(bench.translation_rows(5)) == 5 and len(bench.perplexity_rows(5)) == 5
    assert {"context", "question", "ans0", "label"} <= set(bench.bbq_rows()[0])
    json.dumps(rows)  # the rows are written as JSONL for both sides


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_the_gpu_evaluation_smoke_test_runs_on_cpu(load_benchmark, monkeypatch, capsys):
    """benchmarks/gpu_eval_smoke.py (flex rows, perplexity, compiles, generation) with eager flex on
    CPU, so its first run on a lent GPU is not its first run."""
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    assert load_benchmark("gpu_eval_smoke").main(["--device", "cpu", "--items", "3"]) == 0
    out = capsys.readouterr().out
    assert "differ 0" in out and "batched = alone on the first 4: True" in out and out.rstrip().endswith("OK")
