"""The one results module: build -> write -> read round trip, old files, bad files, the signature."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate.results import (COST_KEYS, build_results, make_cost, read_items, read_results, signature,
                                      task_sha256, write_results)

MODEL = {"name": "tiny", "sha256": "ab" * 32, "adapter": None}


def _results(lines=None):
    lines = lines if lines is not None else [
        {"id": "a", "prompt": "p", "output": "x", "metrics": {"exact_match": 1.0, "f1": 0.5}},
        {"id": "b", "prompt": "q", "output": "y", "metrics": {"exact_match": 0.0, "f1": None}},
    ]
    return build_results(task="t", model=MODEL, n=len(lines), shots=0,
                         metrics={"exact_match": {"value": 0.5, "stderr": 0.5, "ci95": [0.0, 1.0]}},
                         cost=make_cost(2.0, prompt_tokens=30, generated_tokens=10, peak_mem_mib=12.345),
                         signature=signature(MODEL, "f" * 64, shots=0), predictions=lines)


def test_round_trip(tmp_path):
    res = _results()
    write_results(res, tmp_path / "e")
    back = read_results(tmp_path / "e")
    assert back.to_json() == res.to_json() and back.predictions == res.predictions and back.out == tmp_path / "e"
    assert back.cost == {"wall_s": 2.0, "tokens": 40, "prompt_tokens": 30, "generated_tokens": 10,
                         "tokens_per_s": 20.0, "peak_mem_mib": 12.3}
    assert back.items == {"a": {"exact_match": 1.0, "f1": 0.5}, "b": {"exact_match": 0.0, "f1": None}}
    assert read_items(tmp_path / "e") == back.items
    assert back.value("exact_match") == 0.5 and back.value("bleu") is None
    # no temp files left beside the artifacts
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["predictions.jsonl", "results.json"]


def test_signature_names_model_and_adapter():
    sig = signature(MODEL, "0123456789abcdef" * 4, shots=3, sampler="random", seed=None)
    assert sig.startswith(f"tunelab 0.1.0|model tiny sha256:{'ab' * 8}|task sha256:0123456789abcdef|")
    assert sig.endswith("|shots 3|sampler random|seed none")
    with_adapter = signature({**MODEL, "adapter": "runs/x/adapter"}, "0" * 64)
    assert "|adapter sha256:" in with_adapter and with_adapter != signature(MODEL, "0" * 64)


def test_task_hash_ignores_shots_but_not_data(tmp_path):
    from tunelab.config import load_task

    (tmp_path / "d.jsonl").write_text('{"q": "1", "a": "2"}\n')
    spec = {"name": "t", "data": "d.jsonl", "prompt": "{{ q }}", "answer": "{{ a }}", "metrics": ["exact_match"]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    task = load_task(tmp_path / "t.yaml")
    h0 = task_sha256(task)
    task.fewshot.k = 5  # shots are their own signature field, so the task identity stays
    assert task_sha256(task) == h0
    task.fewshot.seed = 7
    assert task_sha256(task) != h0
    (tmp_path / "d.jsonl").write_text('{"q": "1", "a": "3"}\n')  # same settings, other bytes
    assert task_sha256(load_task(tmp_path / "t.yaml")) != h0


def test_reads_results_written_before_the_module(tmp_path):
    """A results.json of the earlier runner: 4 cost keys, no model in the signature."""
    d = tmp_path / "old"
    d.mkdir()
    (d / "results.json").write_text(json.dumps({
        "task": "mc", "model": {"name": "m", "sha256": "c" * 64, "adapter": None}, "n": 1, "shots": 2,
        "metrics": {"acc": {"value": 1.0, "stderr": None, "ci95": [1.0, 1.0]}},
        "cost": {"wall_s": 1.5, "tokens": 9, "tokens_per_s": 6.0, "peak_mem_mib": 100.0},
        "signature": "tunelab 0.1.0|task sha256:x|template sha256:y|shots 2|sampler random|seed 1234|metric acc"}))
    (d / "predictions.jsonl").write_text('{"id": "q0", "prompt": "p", "metrics": {"acc": 1.0}}\n')
    res = read_results(d)
    assert res.shots == 2 and res.cost["tokens"] == 9 and res.cost["prompt_tokens"] is None
    assert set(res.cost) == set(COST_KEYS) and res.items == {"q0": {"acc": 1.0}}


@pytest.mark.parametrize("breakage, match", [
    (lambda d: (d / "results.json").unlink(), r"results.json: not found; is .* an evaluation output"),
    (lambda d: (d / "predictions.jsonl").unlink(), r"predictions.jsonl: not found"),
    (lambda d: (d / "results.json").write_text('{"task": "t", "metr'), r"results.json: not valid JSON .*re-run"),
    (lambda d: (d / "results.json").write_bytes(b'{"task": "\xff"}'), r"results.json: not UTF-8"),
    (lambda d: (d / "results.json").write_text("[1, 2]"), r"expected a JSON object"),
    (lambda d: (d / "results.json").write_text('{"task": "t"}'), r"results.json field 'metrics': missing"),
    (lambda d: (d / "predictions.jsonl").write_text('{"id": "a", "metrics": {}}\n{"id": "b"\n'), r"predictions.jsonl:2"),
    (lambda d: (d / "predictions.jsonl").write_text('{"id": "a"}\n'), r"predictions.jsonl:1 field 'metrics'"),
])
def test_bad_files_give_one_line_errors(tmp_path, breakage, match):
    write_results(_results(), tmp_path / "e")
    breakage(tmp_path / "e")
    with pytest.raises(TunelabError, match=match) as e:
        read_results(tmp_path / "e")
    assert "\n" not in str(e.value)


def test_missing_folder(tmp_path):
    with pytest.raises(TunelabError, match="no such folder"):
        read_results(tmp_path / "nope")


def test_cost_block_is_complete():
    cost = make_cost(0.0)
    assert set(cost) == set(COST_KEYS) and cost["tokens"] == 0 and cost["tokens_per_s"] is None
    with pytest.raises(ValueError, match="make_cost"):
        build_results(task="t", model=MODEL, n=0, shots=0, metrics={}, cost={"wall_s": 1}, signature="s")


def test_the_task_hash_of_a_task_without_the_newer_keys_is_what_it_was():
    """A compare folder resumes only while its task hash matches; keys added to task files later
    (multi_turn's turns and references), left unset, must not change it. The value is the hash of
    examples/tasks/builtin_dates.yaml as stop 37 (10dde82) computed it."""
    from tunelab.evaluate.results import task_sha256
    from tunelab.evaluate.tasks import load_task

    root = Path(__file__).resolve().parents[2]
    task = load_task(str(root / "examples" / "tasks" / "builtin_dates.yaml"))
    assert task_sha256(task) == "f918d25cd9122f88cc51450f6f4ceb8bed7d12331bc2b9d6aad7d11e37388ea9"
