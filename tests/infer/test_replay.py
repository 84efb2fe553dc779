"""infer/replay.py: `replay:FILE` answers a generate task with a finished evaluation's outputs
(and is the worked example of a backend in docs/architecture.md: one module and this test)."""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate.runner import evaluate

ROWS = [{"q": f"Say {w}", "a": w} for w in ["yes", "no", "maybe", "soon"]]


def _task(tmp_path, **extra):
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "data": "t.jsonl", "prompt": "{{ q }}", "answer": "{{ a }}",
                                    "metrics": ["exact_match"], "generation": {"max_new_tokens": 4}, **extra}))
    return path


def test_a_replay_scores_the_saved_answers_with_new_metrics(tiny_dir, tmp_path):
    first = evaluate(str(tiny_dir), _task(tmp_path), out=tmp_path / "e")
    again = evaluate(f"replay:{tmp_path / 'e' / 'predictions.jsonl'}", _task(tmp_path, metrics=["exact_match", "chrf"]))
    assert [p["output"] for p in again.predictions] == [p["output"] for p in first.predictions]
    assert again.metrics["exact_match"] == first.metrics["exact_match"] and "chrf" in again.metrics


def test_hand_written_answers_are_scored(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"prompt": r["q"], "output": r["a"] if i % 2 == 0 else "wrong"}) + "\n"
                             for i, r in enumerate(ROWS)))
    assert evaluate(f"replay:{preds}", _task(tmp_path)).metrics["exact_match"]["value"] == 0.5


def test_what_a_replay_cannot_do_is_one_line(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"prompt": "Say yes", "output": "yes"}) + "\n")
    with pytest.raises(TunelabError, match=r"no saved output for the prompt 'Say no'"):
        evaluate(f"replay:{preds}", _task(tmp_path))
    with pytest.raises(TunelabError, match="chat: true"):
        evaluate(f"replay:{preds}", _task(tmp_path, chat=True))
    preds.write_text('{"prompt": "Say yes", "output": "yes"}\nnot json\n')
    with pytest.raises(TunelabError, match=r"p.jsonl:2: not a generate task's prediction line"):
        evaluate(f"replay:{preds}", _task(tmp_path))
    with pytest.raises(TunelabError, match="cannot read"):
        evaluate(f"replay:{tmp_path / 'none.jsonl'}", _task(tmp_path))
