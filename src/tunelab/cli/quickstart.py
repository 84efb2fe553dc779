"""`tunelab quickstart`."""
from __future__ import annotations

import typer


def quickstart(
    task: str = typer.Option("dates", "--task", help="Built-in task (see `tunelab data tasks`)."),
    n_test: int = typer.Option(20, "--n-test", min=1, help="Held-out test items."),
    n_train: int = typer.Option(256, "--n-train", min=8, help="Training examples for the LoRA arm."),
    epochs: float = typer.Option(1.0, "--epochs", min=0.1, help="LoRA epochs."),
    no_train: bool = typer.Option(False, "--no-train", help="Only the zero-shot evaluation."),
    out: str = typer.Option("runs/quickstart", "--out", help="Where results go."),
):
    """Zero-shot vs LoRA fine-tune of the default model on a built-in task, in a few minutes.

    Example: tunelab quickstart --task dates --n-test 20
    """
    from rich.table import Table

    from tunelab.cli import console
    from tunelab.cli.data import print_rendered
    from tunelab.compare.quickstart import run_quickstart

    def show(report, tokenizer):
        print_rendered(tokenizer, report.examples, label="example")

    res = run_quickstart(task=task, n_test=n_test, n_train=n_train, epochs=epochs, train=not no_train,
                         out=out, say=lambda m: console.print(f"[bold cyan]{m}[/]", highlight=False), show=show)
    table = Table(title=f"quickstart: {task}, {n_test} held-out items")
    for col in ("arm", "metric", "value", "95% CI", "train time", "eval time"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for r in res.rows:
        ci = r.get("ci95")
        table.add_row(r["arm"], r["metric"], f"{r['value']:.3f}", f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-",
                      f"{r['train_s']:.0f} s" if r.get("train_s") else "-",
                      f"{r['eval_wall_s']:.0f} s" if r.get("eval_wall_s") else "-")
    console.print(table)
    console.print(f"results: {res.out}/")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
