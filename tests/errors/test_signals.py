"""SIGTERM, what SLURM, Kubernetes and spot instances send before they take the machine, is handled
as Ctrl-C by every long command (issue 34 item 7): exit 143 (130 for Ctrl-C), one line saying what
was kept, and a rerun that finishes without redoing it.

Before, Python's default for SIGTERM ended the process at once: no line, exit -15, and an
evaluation's request cache was written only after every item was scored, so nothing was kept.
The subprocess tests send real signals to `python -m tunelab` on the tiny model once its progress
shows the work has reached a point; test_interrupts.py holds the helpers and the other commands
(safety probe and bias, data prepare, serve) under both signals.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.errors import interrupt_exit_code, interrupted_by, on_interrupt, sigterm_as_ctrl_c
from tunelab.evaluate.cache import STORE_EVERY, RequestCache, cached_call

from .test_interrupts import CODE, SAID, SIGNALS, WAIT_S, _interrupt, _the_line

N_ITEMS = 400  # more than STORE_EVERY, so a late signal finds a stored chunk and an early one none


def _env(**extra) -> dict:
    env = {**os.environ, "TUNELAB_NO_ENERGY": "1", **extra}
    env.pop("TUNELAB_QUIET", None)
    return env


def _tunelab(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunelab", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=WAIT_S * 2)


# ---------------------------------------------------------------- the mechanism, in this process
def test_sigterm_raises_keyboard_interrupt_and_says_so():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000_000):  # the handler runs between bytecodes of this thread
                pass
    assert signal.getsignal(signal.SIGTERM) is before  # put back: library users keep their handling
    assert interrupted_by() == "interrupted" and interrupt_exit_code() == 130  # and forgotten after the command


def test_sigterm_goes_to_the_sigint_handler_in_force():
    """Training installs its own SIGINT handler (finish the step, save a checkpoint): SIGTERM reaches it."""
    calls = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with sigterm_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000_000):
                if calls:
                    break
            assert calls == [signal.SIGINT]
            assert interrupted_by() == "interrupted by SIGTERM" and interrupt_exit_code() == 143
    finally:
        signal.signal(signal.SIGINT, old)


def test_sigterm_stops_a_command_whose_sigint_is_ignored():
    """`tunelab ... &` in a batch script starts with SIGINT ignored; SIGTERM must still stop it."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000_000):
                pass
    finally:
        signal.signal(signal.SIGINT, old)


def test_on_interrupt_words_the_line_by_the_signal():
    with pytest.raises(KeyboardInterrupt) as e, sigterm_as_ctrl_c(), on_interrupt(lambda: "kept X"):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000_000):
            pass
    assert str(e.value) == "interrupted by SIGTERM: kept X" and e.value.exit_code == 143


def test_cached_call_keeps_the_chunks_finished_before_an_interrupt(tmp_path):
    cache = RequestCache("m", path=tmp_path / "c.sqlite")
    requests = [f"r{i}" for i in range(STORE_EVERY * 2 + 5)]
    computed = []

    def stops_in_the_second_chunk(todo):
        if computed:
            raise KeyboardInterrupt
        computed.extend(todo)
        return [{"v": r} for r in todo]

    with pytest.raises(KeyboardInterrupt):
        cached_call(cache, "k", requests, stops_in_the_second_chunk)
    assert computed == requests[:STORE_EVERY]
    again = []

    def compute(todo):
        again.extend(todo)
        return [{"v": r} for r in todo]

    assert cached_call(cache, "k", requests, compute) == [{"v": r} for r in requests]
    assert again == requests[STORE_EVERY:]  # the first chunk is not computed again


# ---------------------------------------------------------------- eval: the request cache
@pytest.fixture(scope="module")
def plus_task(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plus")
    rows = [{"q": f"{i} plus one is", "a": str(i + 1)} for i in range(N_ITEMS)]
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "t.yaml").write_text(yaml.safe_dump({"name": "plus", "data": "d.jsonl", "prompt": "{{ q }}",
                                                   "answer": "{{ a }}", "metrics": ["exact_match"],
                                                   "generation": {"max_new_tokens": 4}}))
    return folder / "t.yaml"


def _stored(home: Path) -> int:
    path = home / "cache.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


@pytest.mark.parametrize("sig, at, shots", [
    pytest.param(signal.SIGINT, "(70%)", [], id="SIGINT-late"),
    pytest.param(signal.SIGTERM, "(70%)", [], id="SIGTERM-late"),
    # MiniLM demonstrations log a line before the first item, so the run leaves a log.txt (issue 34 item 8)
    pytest.param(signal.SIGTERM, "(10%)", ["--shots", "1", "--sampler", "similar:embedding"], id="SIGTERM-early-log"),
])
def test_eval_keeps_its_cache_and_the_rerun_reuses_it(tiny_dir, plus_task, tmp_path, sig, at, shots):
    home = tmp_path / "home"
    args = ["eval", str(tiny_dir), "--task", str(plus_task), "--out", "o", "--batch-size", "4", "--cache", *shots]
    code, err = _interrupt(args, at, cwd=tmp_path, env={"TUNELAB_HOME": str(home)}, sig=sig)
    assert code == CODE[sig]
    line = _the_line(err)
    assert line.startswith(SAID[sig])
    assert line.endswith(f"the request cache keeps the model outputs finished so far (stored {STORE_EVERY} at a "
                         "time) for the rerun; run the same command again")
    out = tmp_path / "o"
    assert not (out / "results.json").exists()
    # the line is true about the folder: its log when one was written, else nothing at all
    if (out / "log.txt").exists():
        assert f"no results written to o (they are written once every item is scored), only its log {out / 'log.txt'}" \
            in line.replace("o/log.txt", str(out / "log.txt"))
        assert sorted(p.name for p in out.iterdir()) == ["log.txt"]
    else:
        assert "nothing written to o (results are written" in line and not (out.exists() and any(out.iterdir()))
    if shots:
        assert (out / "log.txt").exists()  # this case is the one of item 8: a log left beside "no results"
    stored = _stored(home)
    assert stored % STORE_EVERY == 0 and stored < N_ITEMS  # whole chunks, not the whole run
    if at == "(70%)":
        assert stored == STORE_EVERY  # 280 items were done: the first chunk is kept
    again = _tunelab(args, tmp_path, _env(TUNELAB_HOME=str(home)))
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["n"] == N_ITEMS
    log = (out / "log.txt").read_text()
    assert f"{stored} of {N_ITEMS} requests reused" in log  # what was kept is not computed again


# ---------------------------------------------------------------- compare: finished arms
@pytest.mark.parametrize("sig", SIGNALS)
def test_compare_keeps_finished_arms_and_resumes(tiny_dir, tmp_path, sig):
    cfg = {"name": "tiny", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=40",
           "limit": 5, "arms": ["zero_shot", {"lora": {"n": [16]}}],
           "train": {"train": {"max_steps": 300, "batch_tokens": 128, "save_every": 1000}, "data": {"max_length": 128}}}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "c"
    args = ["compare", "cmp.yaml", f"out={out}"]
    code, err = _interrupt(args, "train:", cwd=tmp_path, sig=sig)
    assert code == CODE[sig]
    assert _the_line(err) == (f"{SAID[sig]}finished arms are kept in {out} (1 of 2: zero_shot; a half-trained arm "
                              "keeps its last checkpoint); run the same command again to resume")
    assert json.loads((out / "arms" / "zero_shot" / "arm.json").read_text())["state"] == "finished"
    # the arm in training saved a checkpoint at the end of its step (the loop's Ctrl-C path)
    step = [p.name for p in (out / "arms" / "lora-n16" / "train" / "checkpoints").glob("step-*")]
    assert len(step) == 1
    again = _tunelab(args, tmp_path, _env())
    assert again.returncode == 0, again.stderr[-2000:]
    assert "zero_shot: finished earlier, kept" in again.stdout
    assert "lora-n16: resuming lora" in again.stdout
    summary = json.loads((out / "compare.json").read_text())
    assert {a["id"] for a in summary["arms"]} == {"zero_shot", "lora-n16"}


# ---------------------------------------------------------------- train: sft, dpo, orpo
@pytest.fixture(scope="module")
def train_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trainfiles")
    sft = [{"prompt": f"What is {i} plus 1?", "completion": f"{i + 1}"} for i in range(200)]
    pairs = [{"prompt": f"What is {i} plus 1?", "chosen": f"It is {i + 1}.", "rejected": f"It is {i + 7}, I think."}
             for i in range(60)]
    (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return folder


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("method", ["lora", "dpo", "orpo"])
def test_train_saves_a_checkpoint_that_resumes(tiny_dir, train_files, tmp_path, method, sig):
    data = train_files / ("sft.jsonl" if method == "lora" else "pairs.jsonl")
    cfg = {"name": "r", "model": str(tiny_dir), "method": method, "lora": {"r": 4, "alpha": 8},
           "data": {"train": str(data), "eval": 0.0},
           "train": {"max_steps": 150, "batch_tokens": 256, "save_every": 1000, "eval_every": 1000}, "out": "run"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _interrupt(["train", "cfg.yaml"], "train:", cwd=tmp_path, sig=sig)
    assert code == CODE[sig]
    line = _the_line(err)
    m = re.fullmatch(re.escape(SAID[sig]) + r"at step (\d+); checkpoint saved to (\S+); resume with: (.+)", line)
    assert m, line
    assert m.group(3) == "tunelab train cfg.yaml --resume"
    assert Path(tmp_path / m.group(2)).name == f"step-{m.group(1)}" and (tmp_path / m.group(2)).is_dir()
    again = _tunelab(["train", "cfg.yaml", "--resume"], tmp_path, _env())
    assert again.returncode == 0, again.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps[-1] == 150 and len(steps) == len(set(steps))  # resumed after the saved step, none twice


# ---------------------------------------------------------------- export (fast: interrupted from inside)
@pytest.mark.parametrize("sig", SIGNALS)
def test_export_leaves_nothing_half_written(tiny_dir, tmp_path, monkeypatch, cli, sig):
    """A signal while the GGUF tensors are written: no file, no temporary, one line, 130/143."""
    import gguf

    real = gguf.GGUFWriter.write_tensors_to_file

    def signalled(self, *a, **k):
        os.kill(os.getpid(), sig)
        for _ in range(10_000_000):  # the handler runs here, between bytecodes
            pass
        return real(self, *a, **k)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", signalled)
    folder = tmp_path / "export"
    folder.mkdir()
    code, out, err = cli("export", tiny_dir, "--gguf", folder / "m.gguf", "--quant", "f32")
    assert code == CODE[sig]
    assert _the_line(err) == (f"{SAID[sig]}nothing written to {folder / 'm.gguf'} (it is written under a "
                              "temporary name and renamed when complete); run the same command again")
    assert list(folder.iterdir()) == []  # no m.gguf, no .m.gguf.*.tmp, no Modelfile


# ---------------------------------------------------------------- chat: SIGTERM ends it, Ctrl-C only the answer
class _Stream:
    """An answer that is signalled after its first piece (as a terminal or a scheduler would)."""

    def __init__(self, sig):
        self.sig, self.closed = sig, False

    def __iter__(self):
        yield "first "
        os.kill(os.getpid(), self.sig)
        for _ in range(10_000_000):  # the handler runs here
            pass
        yield "never"

    def close(self):
        self.closed = True


@pytest.mark.parametrize("sig", SIGNALS)
def test_chat_answer_stops_and_sigterm_also_ends_the_chat(sig):
    import io
    from types import SimpleNamespace

    from tunelab.serve.chat import Chat, run_chat

    streams = []

    def stream_chat(messages, **kw):
        streams.append(_Stream(sig))
        return streams[-1]

    lines = iter(["hello", "again"])

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    backend = SimpleNamespace(stream_chat=stream_chat, spec="fake", adapter=None)
    out = io.StringIO()
    with sigterm_as_ctrl_c():
        if sig == signal.SIGTERM:  # before: "[stopped]", then the chat waited for input until SIGKILL
            with pytest.raises(KeyboardInterrupt):
                run_chat(Chat(backend), read=read, out=out)
            assert len(streams) == 1 and streams[0].closed and "[stopped]" not in out.getvalue()
            assert interrupt_exit_code() == 143
        else:  # Ctrl-C stops the answer; the chat goes on with the next line
            run_chat(Chat(backend), read=read, out=out)
            assert len(streams) == 2 and out.getvalue().count("first  [stopped]") == 2
