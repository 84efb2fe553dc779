"""`tunelab cache list|clear`: the encoded-data cache under $TUNELAB_HOME/cache."""
from __future__ import annotations

import typer
from rich.table import Table

cache_app = typer.Typer(help="The encoded-data cache (tokenised data sets, see `tunelab data prepare`).",
                        no_args_is_help=True)


@cache_app.command("list")
def list_cmd():
    """Show the cached encoded data sets and their sizes.

    Example: tunelab cache list
    """
    from tunelab.cli import console
    from tunelab.templates.cache import cache_dir, entries

    rows = entries()
    table = Table(title=f"{len(rows)} encoded data set(s) in {cache_dir()}")
    for col in ("key", "data", "records", "tokens", "MB"):
        table.add_column(col, justify="right" if col in ("records", "tokens", "MB") else "left")
    for folder, size, meta in rows:
        table.add_row(folder.name[:12], meta.get("spec", "?"), str(meta.get("records")), str(meta.get("tokens")),
                      f"{size / 2**20:.1f}")
    console.print(table)


@cache_app.command("clear")
def clear_cmd():
    """Delete every cached encoded data set (they are rebuilt when next needed).

    Example: tunelab cache clear
    """
    from tunelab.cli import console
    from tunelab.templates.cache import cache_dir, clear

    n, size = clear()
    console.print(f"removed {n} encoded data set(s), {size / 2**20:.1f} MB, from {cache_dir()}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
