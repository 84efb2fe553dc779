"""One exception type for everything the user can fix, and one for Ctrl-C.

The CLI prints a TunelabError as a single line and exits with code 2; anything else is a bug
and shows its traceback. Messages name the file, line or field, and say what to do.
An `Interrupted` (Ctrl-C) prints as one line saying what was kept, and exits 130; SIGTERM (a
scheduler or spot instance taking the machine) takes the same path and exits 143 (`sigterm_as_ctrl_c`).
"""
import contextlib
import signal
import threading


class TunelabError(Exception):
    """A problem with the user's input, config or environment, with the fix in the message."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def where(path, line=None, field=None) -> str:
    """Format a location as 'file:line field' for error messages."""
    loc = str(path)
    if line is not None:
        loc += f":{line}"
    if field is not None:
        loc += f" field '{field}'"
    return loc


class ParameterError(TunelabError):
    """A bad argument, worded with the library's parameter names.

    The message marks each parameter as `{name}`; the library shows the bare name
    (`limit must be at least 1`), the CLI re-words it with its flag (`--limit must be at least 1`)
    through `worded`. Example: ParameterError(f"{{limit}} must be at least 1 (got {limit})", "limit").
    """

    def __init__(self, template: str, *params: str, exit_code: int = 2):
        self.template, self.params = template, params
        super().__init__(self.worded({}), exit_code=exit_code)

    def worded(self, names: dict[str, str]) -> str:
        """The message with each `{param}` replaced by names[param] (default: the parameter itself)."""
        text = self.template
        for p in self.params:
            text = text.replace("{" + p + "}", names.get(p, p))
        return text


class Interrupted(TunelabError, KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a long command; the message says what was kept and how to go on.

    A KeyboardInterrupt too, so code that cleans up on Ctrl-C (`except KeyboardInterrupt`, a
    registry row marked "interrupted") treats it as one; the CLI prints it as one line and exits
    130 (143 after SIGTERM). Raise it through `on_interrupt`, which also lets an inner, more
    precise one through.
    """

    def __init__(self, kept: str):
        super().__init__(f"{interrupted_by()}: {kept}", exit_code=interrupt_exit_code())


@contextlib.contextmanager
def on_interrupt(kept):
    """Turn Ctrl-C inside the block into Interrupted(kept); an Interrupted from deeper passes as is.

    `kept` says what the user still has, e.g. "nothing written to runs/e (results are written
    once every item is scored); run the same command again"; a function returning that text is
    called when the interrupt comes, for what is known only then (a log file written meanwhile).
    """
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(kept() if callable(kept) else kept) from None


# ---------------------------------------------------------------- SIGTERM: preemption is a Ctrl-C
# SLURM (time limit, preemption), Kubernetes and spot instances send SIGTERM, then SIGKILL some
# seconds later. Python's default for SIGTERM is to die at once, keeping nothing; routed through
# the Ctrl-C path, every long command keeps what it finished and says how to go on.
SIGINT_EXIT = 128 + signal.SIGINT  # 130: what a shell reports for a process Ctrl-C stopped
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: the same for SIGTERM, so a job script can tell preemption apart
_received: dict = {"signum": None}  # the stop signal of the running command (None: none, or Ctrl-C)


def sigterm_received() -> bool:
    """True once SIGTERM arrived during this command: code that lets Ctrl-C stop only the current
    part (a chat answer) and goes on must stop altogether then, as the machine is going away."""
    return _received["signum"] == signal.SIGTERM


def interrupted_by() -> str:
    """How the one line starts: "interrupted", or "interrupted by SIGTERM" after a SIGTERM."""
    return "interrupted by SIGTERM" if sigterm_received() else "interrupted"


def interrupt_exit_code() -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return SIGTERM_EXIT if sigterm_received() else SIGINT_EXIT


def note_stop_signal(signum: int) -> None:
    """Record the signal that is stopping this command, for code with a stop handler of its own
    (training's: finish the step, save): the one line and the exit code then say which it was."""
    _received["signum"] = signum


def _on_sigterm(signum, frame) -> None:
    """Do what Ctrl-C does at this moment: call the SIGINT handler in force (training's finishes the
    step and saves a checkpoint), or raise KeyboardInterrupt where Ctrl-C would (Python's default
    handler, or SIGINT ignored, as it is for a `cmd &` in a batch script)."""
    note_stop_signal(signum)
    current = signal.getsignal(signal.SIGINT)
    if callable(current) and current is not signal.default_int_handler:
        current(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """While open, SIGTERM takes the Ctrl-C path (see `_on_sigterm`); the old handler comes back after.

    The CLI opens it around every command; library code never does, so a program that imports
    tunelab keeps its own signal handling. Signal handlers can only be set in the main thread:
    elsewhere this does nothing.
    """
    _received["signum"] = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        _received["signum"] = None
