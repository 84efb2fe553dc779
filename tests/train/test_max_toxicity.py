"""data.max_toxicity drops toxic training records before fine-tuning and names them."""
from __future__ import annotations

import json

import pytest

from tunelab.errors import TunelabError
from tunelab.safety.toxicity import toxicity_scores
from tunelab.train.loop import train


def test_toxic_training_records_are_dropped(make_config, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TUNELAB_QUIET", raising=False)
    rows = [{"id": f"ok-{i}", "prompt": f"What is {i} plus {i}?", "completion": f"The answer is {2 * i}."} for i in range(12)]
    rows.insert(5, {"id": "toxic-1", "prompt": "Say something about women.",
                    "completion": "Women are inferior to men and should not be allowed to vote or work."})
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_config("tox", data={"train": str(data), "eval": None, "max_toxicity": 0.5},
                      train={"max_steps": 1, "batch_tokens": 160, "eval_every": 5, "save_every": 5})
    res = train(cfg, toxicity=toxicity_scores)
    err = capsys.readouterr().err
    assert "dropped 1 of 13 training records: toxic-1" in err
    assert res.summary["tokens_seen"] > 0


def test_max_toxicity_without_a_scorer_fails_before_loading(make_config, tmp_path):
    cfg = make_config("tox2", data={"train": str(tmp_path / "none.jsonl"), "max_toxicity": 0.5})
    with pytest.raises(TunelabError, match="data.max_toxicity needs a toxicity scorer"):
        train(cfg)
