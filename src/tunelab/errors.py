"""One exception type for everything the user can fix, and one for Ctrl-C.

The CLI prints a TunelabError as a single line and exits with code 2; anything else is a bug
and shows its traceback. Messages name the file, line or field, and say what to do.
An `Interrupted` (Ctrl-C) prints as one line saying what was kept, and exits 130.
"""
import contextlib


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
    """Ctrl-C stopped a long command; the message says what was kept and how to go on.

    A KeyboardInterrupt too, so code that cleans up on Ctrl-C (`except KeyboardInterrupt`, a
    registry row marked "interrupted") treats it as one; the CLI prints it as one line and exits
    130. Raise it through `on_interrupt`, which also lets an inner, more precise one through.
    """

    def __init__(self, kept: str):
        super().__init__(f"interrupted: {kept}", exit_code=130)


@contextlib.contextmanager
def on_interrupt(kept: str):
    """Turn Ctrl-C inside the block into Interrupted(kept); an Interrupted from deeper passes as is.

    `kept` says what the user still has, e.g. "nothing written to runs/e (results are written
    once every item is scored); run the same command again".
    """
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(kept) from None
