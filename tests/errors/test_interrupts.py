"""Ctrl-C during every long command: exit 130, one line saying it was interrupted and what was
kept, no traceback, and nothing the user had is damaged. SIGTERM (a scheduler taking the machine)
takes the same path and exits 143 (issue 34 item 7; test_signals.py checks what the reruns reuse).

Each command runs as a real subprocess on the tiny model; the test waits until the command shows
it is working (its first progress line on stderr, or the server's "serving" line) and then sends
SIGINT, as a terminal does on Ctrl-C (or SIGTERM). Typer turns a KeyboardInterrupt into a silent
exit code that the CLI used to drop, so `tunelab eval` exited 0 after Ctrl-C (issue 26 case 4).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

WAIT_S = 240  # the command's start-up (imports, model load) on a busy machine
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as a shell reports it
SAID = {signal.SIGINT: "interrupted: ", signal.SIGTERM: "interrupted by SIGTERM: "}


def _answers(url: str) -> None:
    """Wait until `url` answers (the server is up, not only loading)."""
    import urllib.request

    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            time.sleep(0.1)


def _interrupt(args: list[str], ready: str, *, cwd: Path, env: dict | None = None, wait=None,
               sig: int = signal.SIGINT) -> tuple[int, str]:
    """Start `tunelab ARGS`, send `sig` once a stderr line contains `ready` (and `wait()` returned);
    returns (exit code, stderr)."""
    env = {**os.environ, "TUNELAB_NO_ENERGY": "1", **(env or {})}
    env.pop("TUNELAB_QUIET", None)  # the progress lines are the signal that work has started
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if ready in line:
                seen.set()
        seen.set()  # the command ended: stop waiting

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not seen.wait(WAIT_S):
            proc.kill()
            pytest.fail(f"no {ready!r} line within {WAIT_S} s: {''.join(lines)[-2000:]}")
        if wait is not None:
            wait()
        assert proc.poll() is None, f"finished before it could be interrupted: {''.join(lines)[-2000:]}"
        proc.send_signal(sig)
        code = proc.wait(WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    return code, "".join(lines)


def _the_line(err: str) -> str:
    """The one 'interrupted: ...' line, which ends the output; no traceback."""
    assert "Traceback" not in err, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1, err[-3000:]
    assert err.strip().splitlines()[-1] == said[0]
    return said[0]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """A generation task with enough items that the first 10% arrive well before the end."""
    folder = tmp_path_factory.mktemp("task")
    rows = [{"q": f"{i} plus one is", "a": str(i + 1)} for i in range(400)]
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "t.yaml").write_text(yaml.safe_dump({"name": "plus", "data": "d.jsonl", "prompt": "{{ q }}",
                                                   "answer": "{{ a }}", "metrics": ["exact_match"],
                                                   "generation": {"max_new_tokens": 16}}))
    return folder / "t.yaml"


def test_eval(tiny_dir, task, tmp_path):
    code, err = _interrupt(["eval", str(tiny_dir), "--task", str(task), "--out", "o", "--batch-size", "4"],
                           "evaluating:", cwd=tmp_path)
    assert code == 130
    assert _the_line(err) == ("interrupted: nothing written to o (results are written once every item is scored); "
                              "run the same command again")
    assert not (tmp_path / "o" / "results.json").exists()


def test_eval_with_debug_also_exits_130(tiny_dir, task, tmp_path):
    code, err = _interrupt(["--debug", "eval", str(tiny_dir), "--task", str(task), "--batch-size", "4"],
                           "evaluating:", cwd=tmp_path)
    assert code == 130 and "Traceback" in err  # --debug: where it stopped
    assert err.strip().splitlines()[-1].startswith("interrupted: no results")


def test_train_keeps_a_checkpoint(tiny_dir, task, tmp_path):
    rows = [{"prompt": f"What is {i} plus 1?", "completion": f"{i + 1}"} for i in range(200)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"name": "r", "model": str(tiny_dir), "method": "lora", "lora": {"r": 4, "alpha": 8},
           "data": {"train": "train.jsonl", "eval": 0.0},
           "train": {"max_steps": 400, "batch_tokens": 128, "save_every": 1000, "eval_every": 1000},
           "out": "run"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _interrupt(["train", "cfg.yaml"], "train:", cwd=tmp_path)
    assert code == 130
    line = _the_line(err)
    assert line.startswith("interrupted: at step ") and line.endswith("cfg.yaml --resume")
    assert list((tmp_path / "run" / "checkpoints").glob("step-*"))


def test_compare_keeps_finished_arms(tiny_dir, tmp_path):
    cfg = {"name": "tiny", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=40",
           "limit": 5, "arms": ["zero_shot", {"lora": {"n": [16]}}],
           "train": {"train": {"max_steps": 400, "batch_tokens": 128, "save_every": 1000}, "data": {"max_length": 128}}}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _interrupt(["compare", "cmp.yaml", f"out={tmp_path / 'c'}"], "train:", cwd=tmp_path)
    assert code == 130
    assert _the_line(err).startswith(f"interrupted: finished arms are kept in {tmp_path / 'c'} ")
    assert (tmp_path / "c" / "arms" / "zero_shot" / "arm.json").exists()  # finished before the Ctrl-C


@pytest.mark.parametrize("sig", SIGNALS)
def test_safety_probe(tiny_dir, tmp_path, sig):
    (tmp_path / "p.txt").write_text("".join(f"prompt number {i} says\n" for i in range(300)))
    code, err = _interrupt(["safety", "probe", str(tiny_dir), "--prompts", "p.txt", "--samples", "2",
                            "--max-new-tokens", "16", "--batch-size", "4", "--out", "o"], "sampling:", cwd=tmp_path,
                           sig=sig)
    assert code == CODE[sig]
    assert _the_line(err).startswith(SAID[sig] + "nothing written to o ")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sig", SIGNALS)
def test_safety_bias(tiny_dir, tmp_path, shared_data, sig):
    code, err = _interrupt(["safety", "bias", str(tiny_dir), "--benchmark", "crows_pairs", "--batch-size", "2",
                            "--data", str(shared_data / "crows_pairs" / "crows_pairs_anonymized.csv")],
                           "scoring:", cwd=tmp_path, sig=sig)
    assert code == CODE[sig]
    assert _the_line(err).startswith(SAID[sig] + "no results")


@pytest.mark.parametrize("sig", SIGNALS)
def test_data_prepare_leaves_no_cache_entry(tiny_dir, tmp_path, sig):
    rows = [{"instruction": f"Add one to {i}.", "input": "", "output": f"{i + 1}"} for i in range(200_000)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    home = tmp_path / "home"
    code, err = _interrupt(["data", "prepare", "a.jsonl", "--model", str(tiny_dir)], "encoding:", cwd=tmp_path,
                           env={"TUNELAB_HOME": str(home)}, sig=sig)
    assert code == CODE[sig]
    assert _the_line(err).startswith(SAID[sig] + "the encoded-data cache is unchanged")
    assert not list(home.rglob("meta.json"))  # no entry, complete or half-written


@pytest.mark.parametrize("sig", SIGNALS)
def test_serve(tiny_dir, tmp_path, sig):
    pytest.importorskip("uvicorn")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _interrupt(["serve", str(tiny_dir), "--port", str(port)], "serving ", cwd=tmp_path,
                           wait=lambda: _answers(f"http://127.0.0.1:{port}/v1/models"), sig=sig)
    assert code == CODE[sig]
    assert _the_line(err).startswith(SAID[sig] + "server stopped")
