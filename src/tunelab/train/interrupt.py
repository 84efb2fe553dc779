"""Ctrl-C and SIGTERM during training: finish the optimizer step, save a checkpoint, stop with one
line that names the resume command.

SIGTERM is what SLURM (`--signal`), Kubernetes and spot instances send before they take the
machine; it is handled exactly as Ctrl-C (the same line, which then starts "interrupted by
SIGTERM", and exit code 143 instead of 130: errors.note_stop_signal). A second signal stops at
once, without saving the step in progress.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

from tunelab.errors import Interrupted, note_stop_signal

NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class TrainingInterrupted(Interrupted):
    """Ctrl-C or SIGTERM during training: a checkpoint was saved; the message says how to resume."""


class StopRequest:
    """Set by the first Ctrl-C / SIGTERM; the loop reads `requested` after each step."""

    def __init__(self, say: Callable[[str], None], resume_command: str):
        self.say, self.resume_command = say, resume_command
        self.requested = False
        self._old: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (a notebook's worker runs without)
        for sig in NAMES:
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self._old.items():
            if old is not None:  # None: a handler not installed from Python, which cannot be put back
                signal.signal(sig, old)
        self._old = {}

    def _handler(self, signum, frame) -> None:
        if self.requested:  # a second signal: stop now, without a checkpoint
            raise TrainingInterrupted(
                "stopped at once, without saving this step; the last saved checkpoint (if any) resumes with: "
                + self.resume_command)
        self.requested = True
        note_stop_signal(signum)  # the closing line and exit code name SIGTERM (143) as for every command
        again = "press again" if signum == signal.SIGINT else "send it again"
        self.say(f"{NAMES[signum]}: finishing this step and saving a checkpoint ({again} to abort)")
