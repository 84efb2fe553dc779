"""`tunelab chat MODEL [--adapter DIR] [--system TEXT]`: a streaming terminal chat (MODEL may be openai:URL#NAME)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunelab.cli.flags import TIMEOUT_HELP


def chat_command(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder, a .gguf file, or "
                                          "openai:URL#NAME (a model behind an OpenAI-compatible server)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA/DoRA adapter folder (a run's adapter/)."),
    system: Optional[str] = typer.Option(None, "--system", help="System text for the conversation (change it later with /system)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="Longest answer, in tokens (>= 1)."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 = greedy (repeatable); usual 0.2-1.0."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass, in (0, 1]."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, mps (default: the best available)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help=TIMEOUT_HELP),
):
    """Chat with MODEL in the terminal; answers stream as they are generated.

    Commands inside the chat: /reset, /system TEXT, /save FILE (the messages as JSON), /help, /exit.
    Ctrl-C stops an answer; Ctrl-C or Ctrl-D at the prompt leaves.

    Example: tunelab chat default --adapter runs/lora/adapter --system "Answer in one sentence."
    Example: tunelab chat openai:http://127.0.0.1:8000/v1#support
    """
    from tunelab.errors import TunelabError

    problems = []
    if max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be at least 1 (got {max_new_tokens})")
    if not 0 <= temperature <= 2:
        problems.append(f"--temperature must be in [0, 2] (got {temperature})")
    if not 0 < top_p <= 1:
        problems.append(f"--top-p must be in (0, 1] (got {top_p})")
    if problems:
        raise TunelabError("; ".join(problems))
    try:
        import readline  # noqa: F401  (line editing and history for input(), where the platform has it)
    except ImportError:
        pass
    from tunelab.infer.waiting import set_timeout
    from tunelab.infer.load import open_backend
    from tunelab.serve.chat import Chat, run_chat

    if timeout is not None:
        set_timeout(timeout)

    backend = open_backend(model, adapter, device)  # a local model, or an endpoint that streams over HTTP
    run_chat(Chat(backend, system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p))


def register(app: typer.Typer) -> None:
    app.command("chat", no_args_is_help=True)(chat_command)
