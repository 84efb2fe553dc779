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
