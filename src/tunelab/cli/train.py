"""`tunelab train CONFIG [key=value ...]` and `tunelab export MODEL --adapter DIR --out DIR | --gguf OUT.gguf`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_cmd(
    config: Path = typer.Argument(..., dir_okay=False, help="Training config YAML (every key: docs/train-config.md); see examples/train_lora.yaml."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. train.lr=1e-4 lora.r=8"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint of the run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an existing run folder."),
):
    """Fine-tune a model (METHODS) and write a run folder.

    Examples:

      tunelab train examples/train_lora.yaml

      tunelab train examples/train_lora.yaml train.lr=1e-4 lora.r=8 out=runs/r8

      tunelab train examples/train_lora.yaml --resume

      accelerate launch --multi_gpu --num_processes 2 -m tunelab train examples/train_lora.yaml  (DDP; gloo on CPU)
    """
    from tunelab.cli import console, err_console
    from tunelab.config import load_train_config
    from tunelab.evaluate.rewards import providers
    from tunelab.safety.toxicity import toxicity_scores
    from tunelab.train.loop import train
    from tunelab.train.objectives import get_method

    # what the method's objective needs from above (method: grpo: its prompts, rewards and rollout
    # function; train/ imports neither engine nor metrics)
    cfg = load_train_config(str(config), overrides or [])
    given = providers(cfg, config.resolve().parent) if get_method(cfg.method).objective.needs else {}
    # Ctrl-C: train() saves a checkpoint and raises Interrupted (one line, exit 130: cli/__init__.py)
    result = train(str(config), overrides or [], resume=resume, overwrite=overwrite, toxicity=toxicity_scores,
                   providers=given)
    if not result.summary:  # not the main process of a multi-process run
        return
    if result.stopped == "already_finished":
        err_console.print(f"{result.run_dir}: run already finished at step {result.summary.get('steps')}; nothing to do "
                          "(summary.json unchanged); to train longer, resume with a larger train.max_steps",
                          highlight=False, soft_wrap=True)
    from tunelab.report import build

    report = build(result.run_dir)  # the run knows nothing of reports; the CLI adds one
    from rich.table import Table

    s = result.summary
    table = Table(title=f"run {result.run_dir}", show_header=False)
    for key in ("steps", "final_loss", "final_eval_loss", "best_checkpoint", "tokens_seen", "tokens_per_s",
                "train_s", "peak_mem_mib", "mfu", "energy_wh"):
        v = s.get(key)
        table.add_row(key, f"{v:.4g}" if isinstance(v, float) else str(v))
    table.add_row("weights", str(result.weights_dir))
    table.add_row("report", str(report))
    console.print(table)


def export_cmd(
    model: str = typer.Argument(..., help="Base model: registry name, HF folder or .gguf file."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter folder of a run (runs/NAME/adapter); "
                                          "optional with --gguf (then MODEL is exported as it is)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder for the merged model (Hugging Face format)."),
    gguf: Optional[str] = typer.Option(None, "--gguf", help="Output .gguf file for llama.cpp / Ollama / LM Studio; "
                                       "an Ollama Modelfile is written beside it (OUT.Modelfile)."),
    quant: str = typer.Option("f16", "--quant", help="GGUF weight type: f32 | f16 | bf16 | q8_0 | q5_1 | q5_0 | q4_1 | q4_0 "
                              "(docs/export.md says which to pick)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --gguf file and its Modelfile."),
    dtype: str = typer.Option("auto", "--dtype", help="--out only: auto (bf16 for QLoRA adapters, else the base's) | fp32 | bf16"),
):
    """Merge a LoRA/DoRA adapter into its base: a plain HF folder (--out) or one GGUF file (--gguf).

    The folder holds safetensors weights, the tokenizer and the chat template, and loads with
    AutoModelForCausalLM.from_pretrained. QLoRA adapters merge into a de-quantised bf16 base.
    The GGUF file holds the merged weights, the tokenizer and the chat template, for llama.cpp
    (llama-cli -m OUT.gguf), Ollama (in its folder: ollama create NAME -f OUT.Modelfile) and LM Studio.

    Examples:

      tunelab export default --adapter runs/dates/adapter --out models/dates-merged

      tunelab export default --adapter runs/dates/adapter --gguf models/dates-q8_0.gguf --quant q8_0
    """
    from tunelab.cli import console, err_console
    from tunelab.errors import TunelabError, on_interrupt

    if out is None and gguf is None:
        raise TunelabError("give --out DIR (a merged Hugging Face folder) or --gguf OUT.gguf (one GGUF file), or both")
    if out is not None:
        from tunelab.models.export import export_merged

        if adapter is None:
            raise TunelabError("--out needs --adapter DIR (a model without an adapter is already a folder)")
        with on_interrupt(f"nothing written to {out} (it is written under a temporary name and renamed when complete)"
                          "; run the same command again"):
            folder = export_merged(model, adapter, out, dtype=dtype)
        console.print(f"merged model written to [bold]{folder}[/]")
    if gguf is not None:
        from tunelab.models.export import export_gguf

        with on_interrupt(f"nothing written to {gguf} (it is written under a temporary name and renamed when complete)"
                          + (f"; the merged folder {out} is complete: run the command again without --out"
                             if out is not None else "; run the same command again")):
            done = export_gguf(model, adapter, gguf, quant=quant, force=force)
        for w in done.warnings:
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        console.print(f"GGUF ({done.quant}, {done.bytes / 2**20:.1f} MiB, {done.seconds:.1f} s) written to "
                      f"[bold]{done.path}[/]\nllama.cpp: llama-cli -m {done.path}\n"
                      f"Ollama: cd {done.path.parent} && ollama create NAME -f {done.modelfile.name}", highlight=False)


def register(app: typer.Typer) -> None:
    from tunelab.train.objectives import methods  # the one list: declared beside the objectives (no torch loaded)

    train_cmd.__doc__ = train_cmd.__doc__.replace("METHODS", " | ".join(methods()), 1)
    app.command("train", context_settings={"allow_extra_args": False})(train_cmd)
    app.command("export")(export_cmd)
