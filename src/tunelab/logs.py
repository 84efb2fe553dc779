"""Where log lines go: tunelab's own warnings to the terminal, other libraries' lines to the run's log.

codecarbon, transformers and friends install their own terminal handlers and switch off
propagation, so their INFO and WARNING lines ("[codecarbon INFO @ 08:34:18] offline tracker
init") land between the progress lines, and the user can do nothing about them. Once the CLI calls
`configure()`:

- `adopt()` takes those libraries' terminal handlers away and lets their records propagate to
  the root logger (it runs again after each such library is imported, because they install the
  handler at import time);
- the terminal shows tunelab's own warnings, and everyone's INFO and above with `--verbose`;
- every record at INFO and above is written to the run folder's `log.txt` while `run_log(folder)`
  is open (training opens it on its run folder, `eval --out` and `compare` on theirs). Records
  from before the folder is known (model loading) are held in memory and written when it opens,
  so none are lost; a command that writes no folder shows them only with `--verbose`.

Library users who never call `configure()` keep Python's logging exactly as they set it up.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, Optional, Union

from tunelab import paths

LOG_FILE = paths.LOG_FILE
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PENDING_MAX = 5000  # records kept before a run folder opens; older ones are dropped first
# servers print their access log to the terminal on purpose; leave them alone
KEEP_ON_TERMINAL = ("uvicorn",)

_state: dict = {"configured": False, "verbose": False}


def _ours(record: logging.LogRecord) -> bool:
    return record.name == "tunelab" or record.name.startswith("tunelab.")


class _TerminalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _ours(record):
            return record.levelno >= logging.WARNING
        return _state["verbose"]


class _Terminal(logging.StreamHandler):
    """stderr as it is at each record (test runners and `CliRunner` swap sys.stderr per command)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


class _Pending(logging.Handler):
    """Holds records until a run's log file opens; replays them into it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: collections.deque = collections.deque(maxlen=PENDING_MAX)

    def emit(self, record: logging.LogRecord) -> None:
        if not _state.get("files"):
            self.records.append(record)


class _RunFile(logging.FileHandler):
    """A log file opened on the first record, so a run that logs nothing leaves no file behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setLevel(logging.INFO)
        self.setFormatter(logging.Formatter(FILE_FORMAT))

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


_pending = _Pending()


def configure(verbose: bool = False) -> None:
    """Route logging as described above (the CLI calls this once per command; idempotent)."""
    _state["verbose"] = verbose
    _pending.records.clear()  # a new command: what an earlier one in this process held is not its
    if _state["configured"]:
        adopt()
        return
    root = logging.getLogger()
    _state["root_level"] = root.level
    root.setLevel(logging.INFO)
    terminal = _Terminal()
    terminal.setFormatter(_TerminalFormatter())
    terminal.addFilter(_TerminalFilter())
    root.addHandler(terminal)
    root.addHandler(_pending)
    _state.update(configured=True, terminal=terminal, files=[])
    adopt()


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if _ours(record) else f"[{record.name} {record.levelname.lower()}] {text}"


def routing() -> bool:
    """True when `configure()` has run: libraries' log lines are ours to place."""
    return _state["configured"]


def adopt() -> None:
    """Take other libraries' own terminal handlers away so their records reach ours (no-op until configured)."""
    if not _state["configured"]:
        return
    if "transformers" in sys.modules:  # it re-adds its handler unless told through its own switches
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name.startswith(KEEP_ON_TERMINAL) or name.startswith("tunelab"):
            continue
        # a plain StreamHandler is a terminal handler (files come as FileHandler, a subclass)
        mine = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for h in mine:
            logger.removeHandler(h)
        if mine:
            logger.propagate = True


@contextlib.contextmanager
def run_log(folder: Optional[Union[str, Path]]) -> Iterator[Optional[Path]]:
    """Write log records to `folder/log.txt` while open (with what was held before); None: no file."""
    if folder is None or not _state["configured"]:
        yield None
        return
    path = Path(folder) / LOG_FILE
    handler = _RunFile(path)
    adopt()
    for record in list(_pending.records):
        handler.handle(record)
    _pending.records.clear()
    root = logging.getLogger()
    root.addHandler(handler)
    _state["files"].append(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        _state["files"].remove(handler)
        handler.close()


def reset() -> None:
    """Undo `configure()` (tests that drive several commands in one process)."""
    if not _state["configured"]:
        return
    root = logging.getLogger()
    root.removeHandler(_state["terminal"])
    root.removeHandler(_pending)
    root.setLevel(_state["root_level"])
    _pending.records.clear()
    _state.update(configured=False, verbose=False, files=[])
