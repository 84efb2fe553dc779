"""The `tunelab` command: a thin Typer shell over the library API.

Each module in this package owns one group of commands and exposes `register(app)`; COMMAND_GROUPS
lists them in the order they appear in `tunelab --help` (a new group: add its module name here).
Shared rendering lives in cli/tables.py (results tables); progress display is tunelab.progress;
cli/flags.py re-words the library's parameter names as flags. Errors the user can fix
(TunelabError, bad YAML, bad overrides) print as one red line and exit 2; `--debug` shows the
traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console

from tunelab.errors import Interrupted, TunelabError

app = typer.Typer(
    name="tunelab",
    help="Fine-tune or few-shot? Train, evaluate, compare and safety-screen LLM variants on your task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Console(Console):
    """Rich's Console, except where there is no terminal (a log file, CI, `| tee`, `| grep`): there
    is no window to fit, and Rich's 80-column default would fold a path after `-> ` or split
    `peak` from `1314.9 MiB` (issue 34 item 6), and fold every long arm name and CI of a table over
    two lines (issue 26 case 9). So a line is never folded and a table keeps its natural width.
    On a terminal: unchanged."""

    def print(self, *objects, **kwargs):
        if self.is_terminal:
            return super().print(*objects, **kwargs)
        kwargs.setdefault("soft_wrap", True)  # Rich: no wrapping, no cropping: one line stays one line
        if "COLUMNS" not in os.environ:
            from rich.measure import Measurement
            from rich.table import Table

            wide = self.options.update_width(10_000)
            natural = [Measurement.get(self, wide, o).maximum for o in objects if isinstance(o, Table)]
            if natural and max(natural) > self.width:
                before = self._width  # print(width=) can only narrow, so widen the console for this call
                self.width = max(natural)
                try:
                    return super().print(*objects, **kwargs)
                finally:
                    self._width = before
        return super().print(*objects, **kwargs)


console = _Console()
err_console = _Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Less output: no progress bars."),
    verbose: bool = typer.Option(False, "--verbose", help="Show other libraries' log lines (codecarbon, transformers, ...) "
                                 "here too; they always go to the run folder's log.txt."),
):
    from tunelab import logs

    _state["debug"] = debug
    if quiet:
        os.environ["TUNELAB_QUIET"] = "1"
    logs.configure(verbose=verbose)


# one module per command group, each with `register(app)`; listed, not discovered, so the
# command set is visible here and a stray module cannot add commands
COMMAND_GROUPS = (
    "train",       # train, export
    "evaluate",    # eval
    "diff",        # diff
    "quickstart",  # quickstart
    "compare",     # compare
    "data",        # data inspect|prepare|tasks|filter
    "cache",       # cache list|clear
    "models",      # models pull|list
    "metrics",     # metrics retrieval|list
    "judge",       # judge agreement
    "safety",      # safety scan|train-classifier|probe|bias
    "chat",        # chat
    "serve",       # serve
    "runs",        # runs list|show
    "report",      # report
)


def _register_all() -> None:
    from tunelab.cli.flags import speak_flags

    for name in COMMAND_GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(app)
    speak_flags(app)  # library errors name parameters (`limit`); users see their flags (`--limit`)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and `python -m tunelab`.

    Exit codes: 0 done, 2 a problem the user can fix (one line on stderr: bad input, usage error,
    unwritable output), 130 interrupted; anything else is a bug and shows its traceback.
    """
    args = sys.argv[1:] if argv is None else argv
    import warnings

    from tunelab.cli import usage

    debug = "--debug" in args or os.environ.get("TUNELAB_DEBUG") == "1"
    command = typer.main.get_command(app)
    usage.check_outputs(command)
    _carry_interrupts(command)
    # for this command only (tests and notebooks call main() in their own process):
    # warnings (ours, e.g. "skipped 2 bad records", and other libraries') print as one line, not
    # Python's "file:line: UserWarning: ..." followed by the source line that raised it
    plain_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_a, **_k: f"warning: {message}\n"
    try:
        with warnings.catch_warnings():  # restores the filters afterwards
            # a deprecation inside PEFT/transformers that users cannot act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            _run(command, args, debug)
    finally:
        warnings.formatwarning = plain_format


def _run(command, args: list[str], debug: bool) -> None:
    """Run one command; exit with its code (see main), one line on stderr for a user's mistake."""
    from tunelab.cli import usage

    try:
        code = command.main(args=args, prog_name="tunelab", standalone_mode=False)
    except _Stopped as stop:
        e = stop.args[0]
        if debug:  # the traceback of where Ctrl-C landed, then the same line and code
            import traceback

            traceback.print_exception(e, file=sys.stderr)
        err_console.print(f"[yellow]{e if isinstance(e, Interrupted) else 'interrupted'}[/]", highlight=False, soft_wrap=True)
        sys.exit(130)
    except TunelabError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # Ctrl-C while the arguments were parsed
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:
        if not usage.is_usage_error(e) or debug:
            raise
        if usage.is_help_request(e):  # `tunelab eval` alone: the help is the answer
            typer.echo(e.ctx.get_help() if getattr(e, "ctx", None) else "")
            sys.exit(2)
        err_console.print(f"[bold red]error:[/] {usage.usage_message(e)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    # a command's own `raise typer.Exit(code)` comes back as its code in non-standalone mode
    sys.exit(code if isinstance(code, int) else 0)


class _Stopped(Exception):
    """Carries a Ctrl-C (args[0]) past Typer, which turns a KeyboardInterrupt into a silent Exit(130)
    that standalone_mode=False returns as a value, so the message of an Interrupted would be lost."""


def _carry_interrupts(command) -> None:
    invoke = command.invoke

    def guarded(ctx):
        try:
            return invoke(ctx)
        except KeyboardInterrupt as e:
            raise _Stopped(e) from None

    command.invoke = guarded
