"""Continuous batching in the engine: rows that join a running batch decode exactly as they would alone."""
from __future__ import annotations

import pytest

from tunelab.serve.batcher import Batcher
from tunelab.serve.engine import Job


def _job(served, text: str, max_tokens: int, adapter=None, sink=None) -> Job:
    ids = served.encode(text)

    def emit(kind, value):
        if sink is not None:
            sink.append((kind, value))
    return Job(prompt_ids=ids, max_tokens=max_tokens, adapter=adapter, temperature=0.0, emit=emit)


def _alone(served, text, max_tokens, adapter):
    events = []
    served.run([_job(served, text, max_tokens, adapter, events)])
    kind, result = events[-1]
    assert kind == "done"
    return result.text, result.completion_tokens


# Prompts of very different lengths, and answers that end at different steps, so joiners arrive
# both narrower and wider than the running batch, and its width shrinks as rows leave.
CASES = [("Hi", 9), ("Write a long list of the months of the year, one per line, please " * 3, 4),
         ("Count to five", 14), ("Name a colour", 3), ("Translate 'good morning' into French and German " * 2, 11),
         ("x", 6), ("Summarize: the cat sat on the mat and looked at the dog for a while", 8)]


@pytest.mark.parametrize("adapter", [None, "alpha"])
def test_rows_joining_a_running_batch_decode_as_alone(served, adapter):
    expect = [_alone(served, text, n, adapter) for text, n in CASES]
    sinks = [[] for _ in CASES]
    jobs = [_job(served, text, n, adapter, sink) for (text, n), sink in zip(CASES, sinks)]
    waiting, calls = jobs[3:], []

    def more(n):
        running = sum(1 for s in sinks[:len(jobs) - len(waiting)] if not s or s[-1][0] != "done")
        taken = waiting[:min(n, 2)]  # at most two at a time, so joins happen at several steps
        del waiting[:len(taken)]
        calls.append((running, n, len(taken)))
        return taken

    served.run(jobs[:3], more, batch_size=3)
    got = [(s[-1][1].text, s[-1][1].completion_tokens) for s in sinks]
    assert [s[-1][0] for s in sinks] == ["done"] * len(CASES)
    assert got == expect
    assert any(running > 0 and taken > 0 for running, _, taken in calls)  # joined while others decoded
    assert all(running + n <= 3 for running, n, _ in calls)  # never more rows than batch_size


def test_a_waiting_request_of_another_adapter_stops_joining(served):
    batcher = Batcher(served, batch_size=4, queue_size=8)
    base1, alpha, base2 = (_job(served, "Hi", 2, a) for a in (None, "alpha", None))
    for j in (base1, alpha, base2):
        batcher.submit(j)
    assert batcher._more(None, 3) == [base1]  # alpha is now held: the base batch takes no more
    assert batcher._more(None, 3) == []
    assert batcher._next_batch() == [alpha]  # the held request opens the next batch
    assert batcher._next_batch() == [base2]
