"""Tables written to a log file, CI or `| tee` keep their natural width (issue 26 case 9).

Rich fits a table to the window; with no terminal it assumed 80 columns and folded the
quickstart's `few_shot-k3-random` and every CI over two lines.
"""
from __future__ import annotations

from types import SimpleNamespace

LONG = "few_shot-k3-random/exact_match/a-rather-long-per-type-metric-name"


def _results():
    metrics = {LONG: {"value": 0.45, "stderr": 0.0312, "ci95": [0.3875, 0.5125], "n": 1000}}
    return SimpleNamespace(task="dates", model={"name": "smollm2-135m-instruct", "adapter": None}, n=1000, shots=3,
                           metrics=metrics, cost={"wall_s": 1.0, "tokens": 10}, signature="sig", out=None)


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("┃", "│"))]


def test_a_table_in_a_log_is_not_folded(capsys, monkeypatch):
    from tunelab.cli.tables import print_results

    monkeypatch.delenv("COLUMNS", raising=False)
    print_results(_results())
    rows = _table_lines(capsys.readouterr().out)
    assert len(rows) == 2  # the header and the one metric: nothing folded onto a second line
    assert LONG in rows[1] and "[0.3875, 0.5125]" in rows[1]
    assert len(rows[1]) > 80


def test_a_terminal_still_fits_its_width(monkeypatch):
    """On a terminal nothing changes: Rich fits the table to the window."""
    import io

    from rich.table import Table

    from tunelab.cli import _Console

    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table("arm", "95% CI")
    table.add_row(LONG, "[0.3875, 0.5125]")
    for terminal, widest in ((True, 40), (False, len(LONG) + 23)):
        out = io.StringIO()
        _Console(file=out, force_terminal=terminal, width=40, color_system=None).print(table)
        assert max(map(len, out.getvalue().splitlines())) == widest
