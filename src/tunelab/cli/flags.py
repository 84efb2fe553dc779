"""Library errors in the CLI's words: a ParameterError names `limit`, the user typed `--limit`.

The library checks its inputs once and words each problem with its parameter names
(tunelab.errors.ParameterError). Every command callback is wrapped so such an error is re-worded
with the flag the user typed, read from the callback's own Typer options: a library parameter
that is not a flag of the command (e.g. a config key) keeps its name.
"""
from __future__ import annotations

import functools
import inspect

import typer

from tunelab.errors import ParameterError, TunelabError
from tunelab.infer.waiting import TIMEOUT_S, TIMEOUT_VAR

# --timeout of the commands that take a model (eval, chat); compare and safety read the variable
TIMEOUT_HELP = (f"An openai:URL#NAME model: give up after this many seconds without a byte of an answer "
                f"(default {TIMEOUT_S:g}; every command reads {TIMEOUT_VAR}).")


def flag_names(callback) -> dict[str, str]:
    """{parameter: how the user writes it}: the first long option (`--batch-size`), else the
    first option, else the argument's name in capitals (`MODEL`)."""
    names = {}
    for name, p in inspect.signature(callback).parameters.items():
        info = p.default
        if isinstance(info, typer.models.OptionInfo):
            decls = [d for d in (info.param_decls or ()) if d.startswith("-")]
            longs = [d for d in decls if d.startswith("--")]
            names[name] = (longs or decls or ["--" + name.replace("_", "-")])[0]
        elif isinstance(info, typer.models.ArgumentInfo):
            names[name] = name.upper()
    return names


def speaking_flags(callback):
    """The callback, re-raising ParameterError worded with this command's flags."""
    names = flag_names(callback)

    @functools.wraps(callback)  # Typer reads the signature through __wrapped__
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except ParameterError as e:
            raise TunelabError(e.worded(names), exit_code=e.exit_code) from None

    return run


def speak_flags(app: typer.Typer) -> None:
    """Wrap every command of `app` and of its sub-apps (call once, after registration)."""
    for info in app.registered_commands:
        if info.callback is not None and not hasattr(info.callback, "__wrapped__"):
            info.callback = speaking_flags(info.callback)
    for group in app.registered_groups:
        speak_flags(group.typer_instance)
