"""`tunelab models pull|list`."""
from __future__ import annotations

import typer
from rich.table import Table

models_app = typer.Typer(help="The model registry and cache.", no_args_is_help=True)


@models_app.command("pull")
def pull_cmd(
    name: str = typer.Argument("default", help="Registry name (see `tunelab models list`)."),
    force: bool = typer.Option(False, "--force", help="Convert again even if cached."),
):
    """Fetch a registry model and convert it once into a normal HF folder under $TUNELAB_HOME.

    Example: tunelab models pull default
    """
    from tunelab.cli import console
    from tunelab.models.loading import pull

    with console.status(f"pulling {name} (first time: download + GGUF conversion, ~30 s)"):
        folder = pull(name, force=force)
    console.print(f"[green]ready:[/] {folder}")


@models_app.command("list")
def list_cmd():
    """Show registry models: source, cached or not, size on disk, parameter count.

    Example: tunelab models list
    """
    from tunelab.cli import console
    from tunelab.models import registry
    from tunelab.models.gguf import read_source

    table = Table(title="tunelab models")
    for col in ("name", "aliases", "source", "cached", "size", "parameters", "description"):
        table.add_column(col)
    for name, src in registry.REGISTRY.items():
        folder = registry.cached_dir(name)
        cached = registry.is_cached(name)
        size = sum(f.stat().st_size for f in folder.glob("*") if f.is_file()) if cached else 0
        params = read_source(folder).get("parameters") if cached else None
        aliases = ", ".join(a for a, t in registry.ALIASES.items() if t == name)
        table.add_row(name, aliases, f"pypi:{src.package} ({src.gguf_file})", "yes" if cached else "no",
                      f"{size / 2**20:.0f} MiB" if cached else "-",
                      f"{params / 1e6:.1f} M" if params else src.params, src.description)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
