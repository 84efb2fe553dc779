"""Other libraries' log lines go to the run's log.txt, not the terminal, unless --verbose (tunelab.logs)."""
from __future__ import annotations

import logging
import sys

import pytest

from tunelab import logs


@pytest.fixture
def routed():
    yield logs
    logs.reset()


def _noisy_library(name: str) -> logging.Logger:
    """A logger set up the way codecarbon and transformers do it: its own terminal handler, no propagation."""
    lib = logging.getLogger(name)
    lib.handlers = [logging.StreamHandler(sys.stderr)]
    lib.setLevel(logging.INFO)
    lib.propagate = False
    return lib


def test_library_lines_go_to_the_run_log_not_the_terminal(routed, tmp_path, capsys):
    routed.configure(verbose=False)
    lib = _noisy_library("fakecarbon")
    routed.adopt()
    lib.info("before the run folder opens")  # e.g. while the model loads
    with routed.run_log(tmp_path / "run") as path:
        lib.warning("Multiple instances are allowed")
        logging.getLogger("tunelab.train").warning("a warning of our own")
        logging.getLogger("tunelab.train").info("an info line of our own")
    lib.info("after the run: not in this run's file")
    err = capsys.readouterr().err
    assert "fakecarbon" not in err and "Multiple instances" not in err and "before the run" not in err
    assert "a warning of our own" in err and "an info line" not in err
    text = path.read_text()
    assert path == tmp_path / "run" / "log.txt"
    assert "INFO fakecarbon: before the run folder opens" in text
    assert "WARNING fakecarbon: Multiple instances are allowed" in text
    assert "tunelab.train: a warning of our own" in text and "tunelab.train: an info line of our own" in text
    assert "after the run" not in text
    assert text.index("before the run") < text.index("Multiple instances")


def test_verbose_shows_library_lines_too(routed, tmp_path, capsys):
    routed.configure(verbose=True)
    lib = _noisy_library("fakehf")
    routed.adopt()
    with routed.run_log(tmp_path) as path:
        lib.info("loading weights")
    err = capsys.readouterr().err
    assert err.count("loading weights") == 1  # once: its own handler is gone, ours prints it
    assert "[fakehf info] loading weights" in err
    assert "loading weights" in path.read_text()


def test_a_run_that_logs_nothing_leaves_no_file(routed, tmp_path):
    routed.configure()
    with routed.run_log(tmp_path / "quiet") as path:
        pass
    assert not path.exists() and not (tmp_path / "quiet").exists()


def test_library_use_without_configure_changes_nothing(tmp_path, capsys):
    lib = _noisy_library("fakelib_untouched")
    handlers = list(lib.handlers)
    logs.adopt()
    with logs.run_log(tmp_path) as path:
        lib.warning("shown by its own handler")
    assert path is None and not (tmp_path / "log.txt").exists()
    assert lib.handlers == handlers and lib.propagate is False


def test_codecarbon_lines_go_to_the_run_log(routed, tmp_path, capsys, monkeypatch):
    """The real case of the issue: codecarbon 3.x's INFO and WARNING lines during a training run."""
    pytest.importorskip("codecarbon")
    from tunelab.train.cost import EnergyMeter

    monkeypatch.delenv("TUNELAB_NO_ENERGY", raising=False)
    routed.configure()
    with routed.run_log(tmp_path) as path:
        meter = EnergyMeter(str(tmp_path))
        meter.stop_wh()
    if meter.tracker is None:
        pytest.skip("codecarbon could not start on this machine")
    assert "codecarbon" not in capsys.readouterr().err
    assert "codecarbon" in path.read_text()


def test_a_warning_prints_as_one_line(tmp_path, tiny_dir):
    """`--skip-bad`'s notice through the real console script: one line, not Python's file:line + source."""
    import json
    import os
    import subprocess

    p = tmp_path / "some_bad.jsonl"
    good = json.dumps({"prompt": "2+2?", "completion": "4"})
    p.write_text(good + "\n{broken\n" + good + "\n")
    env = os.environ | {"TUNELAB_HOME": str(tmp_path / "home"), "TUNELAB_QUIET": "1"}
    r = subprocess.run([sys.executable, "-m", "tunelab", "data", "prepare", str(p), "--model", str(tiny_dir), "--skip-bad"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "skipped" in x]
    assert lines and lines[0].startswith("warning: ") and "some_bad.jsonl: skipped 1 bad record" in lines[0]
    assert "UserWarning" not in r.stderr and "warnings.warn" not in r.stderr


def _mc_task(tmp_path):
    import json

    import yaml

    rows = [{"q": f"What comes after {i}?", "options": [str(i + 1), "none"], "label": 0} for i in range(3)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "t", "data": "d.jsonl", "type": "multiple_choice",
                                                    "prompt": "{{ q }}", "choices": "{{ options }}",
                                                    "answer": "{{ label }}", "metrics": ["acc"]}))
    return tmp_path / "t.yaml"


def test_evaluate_writes_its_own_log(routed, tmp_path, tiny_dir, capsys):
    """The library verb opens <out>/log.txt itself (as train and compare do), so every caller gets it."""
    from tunelab.evaluate.runner import evaluate

    routed.configure(verbose=False)
    lib = _noisy_library("fakeeval")
    routed.adopt()
    evaluate(str(tiny_dir), _mc_task(tmp_path), out=tmp_path / "out", batch_size=2,
             progress=lambda done, total: lib.warning("scored %d of %d", done, total))
    assert "scored 3 of 3" in (tmp_path / "out" / "log.txt").read_text()
    assert "scored" not in capsys.readouterr().err


def test_only_rank_0_writes_the_eval_log(routed, tmp_path, tiny_dir, monkeypatch):
    """Under `accelerate launch` every rank evaluates, but only rank 0 writes files, log.txt included."""
    from tunelab.evaluate import shard
    from tunelab.evaluate.runner import evaluate

    monkeypatch.setattr(shard, "current", lambda: shard.Shard(1, 2))
    monkeypatch.setattr(shard.Shard, "gather", lambda self, items: None)  # no process group in a test
    monkeypatch.setattr(shard.Shard, "sum", lambda self, value: value)
    routed.configure(verbose=False)
    lib = _noisy_library("fakeeval")
    routed.adopt()
    res = evaluate(str(tiny_dir), _mc_task(tmp_path), out=tmp_path / "out", batch_size=2,
                   progress=lambda done, total: lib.warning("scored %d", done))
    assert res is None and not (tmp_path / "out" / "log.txt").exists()


def test_the_cli_warning_format_lasts_one_command():
    """main() called in a process of its own (a test, a notebook) hands warnings back as it found them."""
    import warnings

    from tunelab.cli import main

    before_format, before_filters = warnings.formatwarning, list(warnings.filters)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert warnings.formatwarning is before_format and warnings.filters == before_filters
