"""The run registry: record, filter, show; two processes writing at once; registry trouble never fails a run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tunelab import runs
from tunelab.errors import TunelabError


def test_start_finish_list_show(tmp_path):
    a = runs.start("train", name="r1", path=tmp_path / "r1", task="builtin:dates", model="default")
    b = runs.record("eval", name="e1", path=tmp_path / "e1", task="dates", model="smollm2 + runs/r1/adapter",
                    metric="exact_match", value=0.5, signature="tunelab 0.1.0|model x")
    runs.finish(a, "completed", metric="best_eval_loss", value=1.25)
    c = runs.record("safety", name="probe", task="probe", model="default", metric="toxic_fraction", value=0.0)
    assert a < b < c
    assert [r.id for r in runs.list_runs()] == [c, b, a]  # newest first
    assert [r.id for r in runs.list_runs(limit=1)] == [c]
    assert [r.id for r in runs.list_runs(kind="eval")] == [b]
    assert [r.id for r in runs.list_runs(task="DATES")] == [b, a]  # any part, any case
    assert [r.id for r in runs.list_runs(model="adapter")] == [b]
    assert runs.list_runs(task="100%") == []  # a % in the filter is literal text
    r = runs.get_run(a)
    assert (r.kind, r.status, r.metric, r.value, r.path) == ("train", "completed", "best_eval_loss", 1.25,
                                                              str(tmp_path / "r1"))
    assert r.finished is not None and r.started <= r.finished
    assert runs.get_run(b).signature == "tunelab 0.1.0|model x"
    assert runs.db_path() == Path(os.environ["TUNELAB_HOME"]) / "runs.sqlite"


def test_bad_queries():
    with pytest.raises(TunelabError, match="--kind must be one of train, eval, compare, safety"):
        runs.list_runs(kind="evals")
    with pytest.raises(TunelabError, match="-n must be at least 1"):
        runs.list_runs(limit=0)
    runs.record("eval", name="x")
    with pytest.raises(TunelabError, match=r"no run with id 99 .*tunelab runs list"):
        runs.get_run(99)


def test_registry_trouble_is_a_warning_not_a_failure(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TUNELAB_HOME", str(blocker / "home"))  # cannot be created
    with pytest.warns(RuntimeWarning, match="run registry .* the run itself is unaffected"):
        assert runs.start("eval", name="x") is None
    runs.finish(None)  # a run whose start was not recorded closes quietly


def test_damaged_database_reads_with_a_clear_error(tmp_path):
    runs.db_path().parent.mkdir(parents=True, exist_ok=True)
    runs.db_path().write_bytes(b"this is not sqlite" * 100)
    with pytest.warns(RuntimeWarning):
        assert runs.record("eval", name="x") is None
    with pytest.raises(TunelabError, match="cannot read the run registry .* move the file away"):
        runs.list_runs()


WRITER = """
import pathlib, sys, time, warnings
warnings.simplefilter("error")  # a registry warning (e.g. database is locked) fails this writer
from tunelab import runs
tag, n, barrier = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
(barrier / tag).touch()
while len(list(barrier.iterdir())) < 2:  # both processes start writing together, on a fresh database
    time.sleep(0.005)
for i in range(n):
    rid = runs.start("eval", name=f"{tag}-{i}", task="t", model=tag)
    runs.finish(rid, "completed", metric="acc", value=i)
print("ok", tag)
"""


def test_two_processes_writing_at_once(tmp_path):
    """Two tunelab processes record 200 runs each at the same time: none lost, none locked out."""
    n = 200
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(runs.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, tag, str(n), str(barrier)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "locked" not in err, err[-2000:]
    rows = runs.list_runs(limit=None)
    assert len(rows) == 2 * n
    for tag in ("a", "b"):
        mine = [r for r in rows if r.model == tag]
        assert sorted(r.name for r in mine) == sorted(f"{tag}-{i}" for i in range(n))
        assert all(r.status == "completed" and r.value is not None for r in mine)
    import sqlite3

    con = sqlite3.connect(runs.db_path())
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_eval_and_safety_runs_are_recorded(tiny_dir, tmp_path):
    import yaml

    from tunelab.evaluate.runner import evaluate

    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"q": f"{i}+1=", "a": str(i + 1)}) + "\n" for i in range(3)))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "plus", "data": "d.jsonl", "prompt": "{{ q }}",
                                                     "answer": "{{ a }}", "metrics": ["exact_match"],
                                                     "generation": {"max_new_tokens": 2}}))
    res = evaluate(str(tiny_dir), tmp_path / "t.yaml", out=tmp_path / "e")
    (row,) = runs.list_runs(kind="eval")
    assert (row.name, row.task, row.model, row.status) == ("e", "plus", res.model["name"], "completed")
    assert row.metric == "exact_match" and row.value == res.metrics["exact_match"]["value"]
    assert row.signature == res.signature and row.path == str(tmp_path / "e")


def test_cli_runs_list_and_show(tmp_path):
    rid = runs.record("compare", name="cmp", task="dates", model="default", metric="exact_match", value=0.75)
    runs.record("eval", name="other", task="sums", model="default")
    env = dict(os.environ, COLUMNS="200")
    out = subprocess.run([sys.executable, "-m", "tunelab", "runs", "list", "--kind", "compare"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "cmp" in out.stdout and "other" not in out.stdout and "0.75" in out.stdout
    out = subprocess.run([sys.executable, "-m", "tunelab", "runs", "show", str(rid)], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0 and "exact_match" in out.stdout and "compare" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "tunelab", "runs", "show", "999"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "no run with id 999" in bad.stderr and bad.stderr.count("\n") == 1
    bad = subprocess.run([sys.executable, "-m", "tunelab", "runs", "list", "--kind", "nope"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "--kind must be one of" in bad.stderr
