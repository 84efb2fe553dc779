"""tunelab.progress: plain lines in logs (every ~10% or 30 s), a Rich bar on a TTY, silence when quiet."""
import io

import pytest

from tunelab import progress as progress_mod
from tunelab.progress import Progress, run_with_progress


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    monkeypatch.delenv("TUNELAB_QUIET", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return c


def test_a_line_per_tenth_when_not_a_tty(clock):
    out = io.StringIO()
    p = Progress("evaluating", 100, stream=out, tty=False)
    for done in range(1, 101):
        clock.t += 0.5  # 2 items/s
        p(done, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 100%
    assert lines[0] == "evaluating: 10/100 (10%), 2 items/s, ETA 0:00:45"
    assert lines[-1].startswith("evaluating: 100/100 (100%), 2 items/s")


def test_a_line_every_30_seconds_between_tenths(clock):
    out = io.StringIO()
    p = Progress("train", 1000, unit="steps", stream=out, tty=False)
    for done in range(1, 50):  # under 10% of the work, 10 s per step
        clock.t += 10
        p.update(done, loss="1.2345")
    lines = out.getvalue().splitlines()
    assert len(lines) == 16  # one per 30 s: steps 3, 6, ..., 48
    assert lines[0] == "train: 3/1000 (0%), 0.1 steps/s, ETA 2:46:10, loss 1.2345"


def test_unknown_total_and_quiet(clock, monkeypatch):
    out = io.StringIO()
    p = Progress("scoring", stream=out, tty=False)
    clock.t += 31
    p(5)
    assert out.getvalue() == "scoring: 5/?, 0.161 items/s\n"
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    out = io.StringIO()
    p = Progress("scoring", 10, stream=out, tty=False)
    p(10, 10)
    assert out.getvalue() == ""
    assert run_with_progress("x", lambda prog: prog) is None  # the library gets no callback


def test_rank_above_zero_is_silent(clock, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    out = io.StringIO()
    Progress("evaluating", 10, stream=out, tty=False)(10, 10)
    assert out.getvalue() == ""


def test_a_tty_gets_the_rich_bar_not_lines(clock):
    out = io.StringIO()
    with Progress("evaluating", 4, stream=out, tty=True) as p:
        assert p.bar is not None
        for done in range(1, 5):
            p(done, 4)
    assert "evaluating: " not in out.getvalue()  # the plain-line form is only for logs


def test_counter_adds_up_batches_into_done_of_total():
    from tunelab.progress import counter

    seen = []
    on_batch = counter(lambda done, total: seen.append((done, total)), 10)
    for n in (4, 4, 2):
        on_batch(n)
    assert seen == [(4, 10), (8, 10), (10, 10)]
    counter(None, 3)(3)  # quiet: no display, no error
