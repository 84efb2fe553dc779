"""benchmarks/judge_throughput.py on a tiny model with tiny sizes (CPU): both sides run and print their ratios.

The benchmark itself (default model, 100 pairs) is run by hand; this keeps its plumbing from breaking
unseen: the local side (plain engine vs the judge on the same prompts) and the endpoint side (the
judge at concurrency 2 vs one at a time) against tunelab's own server on 127.0.0.1.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")


def test_judge_throughput_runs_on_a_tiny_model(tiny_dir, tmp_path):
    """As a person runs it: the script in its own process, starting its own `tunelab serve` (the
    endpoint side), so nothing of it shares this process's streams or threads."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "judge_throughput.py"
    proc = subprocess.run([sys.executable, str(script), "--model", str(tiny_dir), "--pairs", "2", "--endpoint-pairs", "2",
                           "--max-new-tokens", "3", "--batch-size", "2", "--concurrency", "2",
                           "--server-batch-size", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=dict(os.environ))
    rc, out = proc.returncode, proc.stdout
    assert rc == 0, proc.stderr[-2000:]
    rows = re.findall(r"^(.+?)\s+(\d+) prompts\s+([\d.]+) s\s+([\d.]+) prompts/s\s+(\d+) tokens", out, re.M)
    assert [r[0].strip() for r in rows] == ["engine, plain batched generation", "judge (same engine, cached, parsed)",
                                            "judge, concurrency 2", "judge, one request at a time"]
    assert all(r[1] == "4" and float(r[2]) > 0 and int(r[4]) > 0 for r in rows)  # 2 pairs, both orders, all generated
    assert re.search(r"ratios: local judge / plain generation = [\d.]+ prompts/s \(goal >= 0.90\)", out)
    assert re.search(r"ratios: endpoint concurrency 2 / one at a time = [\d.]+x prompts/s \(goal >= 5x\)", out)


def test_a_local_judge_sends_the_engine_chunks_of_similar_length(tiny_dir, tmp_path, monkeypatch):
    """The judge cuts its requests into chunks (a failure keeps what was judged); longest first, so each
    chunk pads as little as one call over every prompt would."""
    from tunelab.evaluate.judge.run import Judge, JudgeRequest, JudgeSettings
    from tunelab.infer.backend import LocalBackend
    from tunelab.infer.load import open_backend

    calls = []
    real = LocalBackend.generate

    def spy(self, contexts, seeds, **k):
        calls.append([self.count_tokens(c.text) for c in contexts])
        return real(self, contexts, seeds, **k)

    monkeypatch.setattr(LocalBackend, "generate", spy)
    words = [" ".join(["word"] * (3 * i % 41)) for i in range(40)]  # lengths out of order
    requests = [JudgeRequest([{"role": "user", "content": f"Rate: {w} [[1]]"}], {"i": i}) for i, w in enumerate(words)]
    judge = Judge(JudgeSettings(str(tiny_dir), concurrency=4, max_new_tokens=1, cache_path=str(tmp_path / "c.sqlite")),
                  backend=open_backend(str(tiny_dir)))
    texts = judge.run(requests)
    assert len(texts) == 40 and [len(c) for c in calls] == [32, 8]
    flat = calls[0] + calls[1]
    assert flat == sorted(flat, reverse=True)  # the 32 longest first, then the rest
    assert judge.run(requests) == texts and len(calls) == 2  # answers in the requests' own order, then cached
