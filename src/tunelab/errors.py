"""One exception type for everything the user can fix.

The CLI prints a TunelabError as a single line and exits with code 2; anything else is a bug
and shows its traceback. Messages name the file, line or field, and say what to do.
"""


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
