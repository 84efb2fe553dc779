"""`tunelab serve MODEL [--adapter NAME=DIR ...]`: an OpenAI-compatible HTTP API on 127.0.0.1."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def parse_adapters(specs: list[str]) -> dict[str, str]:
    """NAME=DIR pairs -> {name: dir}; every problem is gathered into one error naming --adapter."""
    from tunelab.errors import TunelabError

    out, problems = {}, []
    for spec in specs:
        name, eq, folder = spec.partition("=")
        name, folder = name.strip(), folder.strip()
        if not eq or not name or not folder:
            problems.append(f"--adapter '{spec}': write NAME=DIR, e.g. --adapter support=runs/support/adapter")
        elif name in out:
            problems.append(f"--adapter '{spec}': the name '{name}' is given twice")
        elif not (Path(folder) / "adapter_config.json").is_file():
            problems.append(f"--adapter '{spec}': {folder} is not an adapter folder (no adapter_config.json)")
        else:
            out[name] = folder
    if problems:
        raise TunelabError("; ".join(problems))
    return out


def serve_command(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder or a .gguf file."),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", help="NAME=DIR: serve a LoRA/DoRA adapter as model NAME (repeatable)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 127.0.0.1 keeps it on this machine."),
    port: int = typer.Option(8000, "--port", help="TCP port (1-65535)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="TUNELAB_SERVE_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' (or set TUNELAB_SERVE_API_KEY)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Most requests decoded together (>= 1)."),
    queue_size: int = typer.Option(64, "--queue-size", help="Requests that may wait; more get HTTP 429 (>= 1)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, mps (default: the best available)."),
):
    """Serve MODEL (and adapters, chosen by the request's `model`) with the OpenAI API.

    Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (stream or not).
    Any OpenAI client works: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY or anything").

    Example: tunelab serve default --adapter support=runs/support/adapter --port 8000
    """
    from tunelab.cli import err_console
    from tunelab.errors import TunelabError, on_interrupt

    problems = []
    if not 1 <= port <= 65535:
        problems.append(f"--port must be in 1-65535 (got {port})")
    if batch_size < 1:
        problems.append(f"--batch-size must be at least 1 (got {batch_size})")
    if queue_size < 1:
        problems.append(f"--queue-size must be at least 1 (got {queue_size})")
    if api_key is not None and not api_key.strip():
        problems.append("--api-key is empty; give a key or leave the option out")
    if problems:
        raise TunelabError("; ".join(problems))
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise TunelabError("tunelab serve needs FastAPI and uvicorn: pip install 'tunelab[serve]'") from None
    adapters = parse_adapters(adapter or [])
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        err_console.print(f"[yellow]warning:[/] listening on {host} without --api-key: anyone who can reach it can use the model")
    from tunelab.serve.server import serve

    def ready(served) -> None:
        base = served.name + (f" (also as {served.alias})" if served.alias else "")
        names = ", ".join([base, *served.adapters])
        err_console.print(f"serving {names} at http://{host}:{port}/v1 (Ctrl-C stops)", highlight=False)

    # uvicorn finishes the requests in flight on Ctrl-C, then raises it again: one line, exit 130
    with on_interrupt("server stopped; it keeps nothing between runs (start it again with the same command)"):
        serve(model, adapters=adapters, host=host, port=port, api_key=api_key, batch_size=batch_size,
              queue_size=queue_size, device=device, on_ready=ready)


def register(app: typer.Typer) -> None:
    app.command("serve", no_args_is_help=True)(serve_command)
