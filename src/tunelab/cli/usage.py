"""Command-line usage errors and output folders, handled once for every command.

Typer 0.29 bundles its own copy of click, so its usage errors are not `click.ClickException`
instances: catching click's classes let them escape as 30-line tracebacks. `usage_message` knows
both families. `check_outputs` gives every `--out` option of every command (present and future) a
writability check that runs while the arguments are parsed, i.e. before any model loads.
"""
from __future__ import annotations

from pathlib import Path

OUTPUT_PARAMS = ("out", "output", "out_dir")  # parameter names that name something we write


def _click_errors() -> tuple[type, ...]:
    import click
    import typer

    # typer.TyperException is the public base of the bundled click's ClickException family
    return (typer.TyperException, click.ClickException)


def is_usage_error(e: BaseException) -> bool:
    return isinstance(e, _click_errors()) and hasattr(e, "format_message")


def usage_message(e: BaseException) -> str:
    """One line: click's own message (it carries did-you-mean suggestions) and where help is."""
    msg = " ".join(e.format_message().split())  # click may wrap long messages over lines
    ctx = getattr(e, "ctx", None)
    return f"{msg.rstrip('.')} (see `{ctx.command_path} --help`)" if ctx is not None else msg


def is_help_request(e: BaseException) -> bool:
    """A command with no_args_is_help called bare: click shows the help instead of an error."""
    return type(e).__name__ == "NoArgsIsHelpError"


def walk(command, path=()):
    """(path, click command) for the root, every group and every leaf command, depth first."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from walk(sub, (*path, name))


def check_outputs(root) -> None:
    """Chain a writability check onto the callback of every output parameter of every command.

    A path with a suffix (out.jsonl) is checked as a file, one without as a folder; the check
    raises TunelabError, which main() prints as one line.
    """
    from tunelab.io import check_writable

    for _, command in walk(root):
        for param in getattr(command, "params", []):
            if param.name not in OUTPUT_PARAMS:
                continue

            def callback(ctx, p, value, _previous=param.callback):
                if _previous is not None:
                    value = _previous(ctx, p, value)
                if value is not None and not ctx.resilient_parsing:
                    flag = max(p.opts, key=len) if p.opts else p.name
                    check_writable(value, setting=flag, folder=not Path(str(value)).suffix)
                return value

            param.callback = callback
