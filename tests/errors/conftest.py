"""Helpers for the bad-input tests: run the CLI in-process and read its one-line error."""
from __future__ import annotations

import pytest


@pytest.fixture
def cli(capsys):
    """cli(*args) -> (exit code, stdout, stderr) of `tunelab ARGS` run in this process."""
    from tunelab.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out = capsys.readouterr()
        return e.value.code, out.out, out.err

    return run


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
