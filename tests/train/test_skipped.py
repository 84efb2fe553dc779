"""Issue 34 item 1: with data.skip_bad every skipped record of a training run is counted and its first
line named, in the output and in summary.json, whatever the method (SFT, DPO, ORPO)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from tunelab.train.loop import train

from .conftest import subprocess_env, write_config

GOOD_PAIR = {"prompt": "What is 2 plus 2?", "chosen": "The answer is 4.", "rejected": "It is 5, I think."}
GOOD_ROW = {"prompt": "What is 2 plus 2?", "completion": "The answer is 4."}


def _six(path, good: dict, drop: str):
    """One good record, then five that lack `drop` (lines 2-6)."""
    bad = [{k: v for k, v in good.items() if k != drop} for _ in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [good, *bad]))
    return path


CASES = [("lora", GOOD_ROW, "completion", "record"), ("dpo", GOOD_PAIR, "rejected", "pair"),
         ("orpo", GOOD_PAIR, "rejected", "pair")]


@pytest.mark.parametrize("method,good,drop,noun", CASES)
def test_skipped_records_are_counted_with_the_first_line(make_config, tmp_path, caplog, method, good, drop, noun):
    data = _six(tmp_path / f"{method}.jsonl", good, drop)
    cfg = make_config(method, method=method, data={"train": str(data), "eval": None, "skip_bad": True},
                      train={"max_steps": 1})
    with caplog.at_level(logging.INFO):
        res = train(cfg)
    note = f"{data}: skipped 5 bad {noun}(s); first: {data}:2: missing field '{drop}'"
    assert res.summary["train_rows"] == 1
    assert res.summary["skipped"]["count"] == 5
    assert [n.startswith(note) for n in res.summary["skipped"]["notes"]] == [True]
    assert sum(note in r.getMessage() for r in caplog.records) == 1  # said once
    again = train({**cfg, "out": str(tmp_path / "again")})  # SFT's encoded data now comes from the cache
    assert again.summary["skipped"] == res.summary["skipped"]


def test_a_run_without_skips_says_none(make_config):
    res = train(make_config("clean", train={"max_steps": 1}))
    assert res.summary["skipped"] is None


def test_the_cli_prints_the_count_for_dpo(make_config, tmp_path):
    """The issue's command: a 6-pair file with 5 bad pairs used to train on 1 pair without a word."""
    data = _six(tmp_path / "pairs.jsonl", GOOD_PAIR, "rejected")
    cfg = make_config("cli", method="dpo", train={"max_steps": 1})
    path = write_config(cfg, tmp_path / "dpo.yaml")
    env = subprocess_env(TUNELAB_QUIET="0")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path), f"data.train={data}",
                           "data.skip_bad=true", "data.eval=null"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"skipped 5 bad pair(s); first: {data}:2: missing field 'rejected'" in proc.stderr
    assert "1 training rows" in proc.stderr
