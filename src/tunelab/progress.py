"""The one progress display: a Rich bar on a terminal, plain log lines elsewhere, nothing when quiet.

Library code (training, evaluation, safety runs) and the CLI both report `done/total` through
`Progress`. On a TTY it draws a Rich bar on stderr. When stderr is a pipe or a file (CI logs,
`nohup`, `2> log`) a bar would print nothing useful until the end, so it writes one line per ~10%
of the work or per 30 s, whichever comes first (with no known total: the first update, then per 30 s):

    evaluating: 120/1000 (12%), 35.2 items/s, ETA 0:00:25

`--quiet` (TUNELAB_QUIET=1) and non-zero ranks of a multi-process run stay silent.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, TextIO

EVERY_FRACTION = 0.10  # a plain line per 10% of the work ...
EVERY_SECONDS = 30.0  # ... or per 30 s, whichever comes first


@dataclass(frozen=True)
class Cadence:
    """How often a plain (not a terminal) progress line is written: whichever comes first."""

    fraction: float = EVERY_FRACTION
    """A line each time this share of the work is done (0.10: per 10%)."""
    seconds: float = EVERY_SECONDS
    """A line at least this often, in seconds (also the only cadence when the total is unknown)."""


def quiet() -> bool:
    """True under --quiet (TUNELAB_QUIET=1) or on a non-zero rank of `accelerate launch`."""
    return os.environ.get("TUNELAB_QUIET") == "1" or os.environ.get("RANK", "0") != "0"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Report `done` of `total` units; use as a context manager or call `close()`.

    `update(done, total=None, **fields)` takes the absolute count (not an increment), so it can be
    handed to the library as its `progress(done, total)` callback. `fields` (e.g. loss) are shown
    after the rate. `stream`, `tty` and the cadence (`every`) are parameters so tests can drive it.
    """

    def __init__(self, label: str, total: Optional[int] = None, *, unit: str = "items", done: int = 0,
                 enabled: Optional[bool] = None, stream: Optional[TextIO] = None, tty: Optional[bool] = None,
                 every: Cadence = Cadence()):
        self.label, self.unit, self.total = label, unit, total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = (not quiet()) if enabled is None else enabled
        self.every_fraction, self.every_seconds = every.fraction, every.seconds
        self.start_done = self.done = done
        self.t0 = self.last_t = time.monotonic()
        self.last_mark = self._mark(done)
        self.fields: dict = {}
        self.wrote = False  # a plain line was written
        self.bar = None
        if not self.enabled:
            return
        is_tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        if is_tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[extra]}"), TimeRemainingColumn(),
                                    console=Console(file=self.stream), transient=True)
            self.task = self.bar.add_task(label, total=total, completed=done, extra="")
            self.bar.start()

    def _mark(self, done: int) -> int:
        """Index of the last `every_fraction` boundary reached (0 when the total is unknown)."""
        if not self.total:
            return 0
        return int(done / self.total / self.every_fraction + 1e-9)

    def _extra(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.fields.items())

    def update(self, done: int, total: Optional[int] = None, **fields) -> None:
        if total is not None:
            self.total = total
        self.done = done
        if fields:
            self.fields.update(fields)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=self.total, extra=self._extra())
            return
        now = time.monotonic()
        mark = self._mark(done)
        finished = self.total is not None and done >= self.total
        # with no total there are no 10% marks: the first update is written at once (a log shows the
        # work started, and its rate), then one line per `every_seconds`
        first_unknown = not self.total and not self.wrote
        if (mark > self.last_mark or now - self.last_t >= self.every_seconds or first_unknown
                or (finished and mark != self.last_mark)):
            self.last_mark, self.last_t, self.wrote = mark, now, True
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    __call__ = update  # a Progress is itself a `progress(done, total)` callback

    def line(self, now: Optional[float] = None) -> str:
        """`label: done/total (pct%), rate unit/s, ETA h:mm:ss[, field value ...]`."""
        elapsed = (now if now is not None else time.monotonic()) - self.t0
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}: {self.done}/{self.total if self.total is not None else '?'}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        if self.fields:
            parts.append(self._extra())
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_with_progress(label: str, run, *, unit: str = "items"):
    """Call `run(progress)` with a `Progress` (or None when quiet) and close the display after."""
    if quiet():
        return run(None)
    with Progress(label, unit=unit) as p:
        return run(p)


def counter(progress, total: int):
    """An `on_batch(n)` callback that adds up the items done and reports `progress(done, total)`.

    The engine's batch loops report how many items each batch finished; the callers' progress
    displays (a `Progress`, or any `progress(done, total)`) want the running count. `progress`
    may be None (quiet): the count is still kept, and nothing is reported.
    """
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    return on_batch


__all__ = ["Progress", "run_with_progress", "quiet", "counter"]
