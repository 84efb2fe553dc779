"""Built-in tasks: deterministic, disjoint train/test, valid answers."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from tunelab.data.builtin import TASKS, load_builtin_rows
from tunelab.evaluate.tasks import builtin_task
from tunelab.data.load import load_conversations
from tunelab.errors import TunelabError


@pytest.mark.parametrize("name", list(TASKS))
def test_deterministic_and_disjoint(name):
    a = load_builtin_rows(f"builtin:{name}?n=50&seed=3")
    assert [r.data for r in a] == [r.data for r in load_builtin_rows(f"builtin:{name}?n=50&seed=3")]
    assert [r.data for r in a] != [r.data for r in load_builtin_rows(f"builtin:{name}?n=50&seed=4")]
    test = {r.data["prompt"] for r in load_builtin_rows(f"builtin:{name}?n=200&seed=3&split=test")}
    train = {r.data["prompt"] for r in load_builtin_rows(f"builtin:{name}?n=400&seed=3")}
    assert len(test) == 200 and len(train) == 400 and not test & train


def test_answers_are_correct():
    for r in load_builtin_rows("builtin:dates?n=100"):
        iso = r.data["completion"]
        d = dt.date.fromisoformat(iso)
        assert str(d.year) in r.data["prompt"] and str(d.day) in r.data["prompt"]
    for r in load_builtin_rows("builtin:arith?n=100"):
        a, b = map(int, re.findall(r"\d+", r.data["prompt"])[:2])
        assert int(r.data["completion"]) == (a + b if "more" in r.data["prompt"] else a - b)
    for r in load_builtin_rows("builtin:reverse?n=20"):
        words = r.data["prompt"].split(": ", 1)[1].split()
        assert r.data["completion"].split() == words[::-1]


def test_task_spec_and_training_view():
    task = builtin_task("summary")
    assert task.type == "generate" and task.chat and "rougeL" in task.metrics
    convs = load_conversations("builtin:summary?n=5")
    assert convs[0].messages[1]["role"] == "assistant" and convs[0].id == "summary-train-1"


@pytest.mark.parametrize("spec, msg", [
    ("builtin:nope", "unknown built-in task 'nope'"),
    ("builtin:dates?n=abc", "n and seed must be integers"),
    ("builtin:dates?size=3", "unknown option 'size'"),
    ("builtin:dates?split=dev", "split must be train or test"),
])
def test_bad_specs(spec, msg):
    with pytest.raises(TunelabError, match=re.escape(msg)):
        load_builtin_rows(spec)
