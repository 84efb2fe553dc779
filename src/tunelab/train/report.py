"""A minimal self-contained report.html for one run: loss curve (inline PNG) and the summary.

The report package will take this over; until then it is the one page a run writes.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from tunelab import paths
from tunelab.io import atomic_write_text


def _read_metrics(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn last line of a killed run
    return rows


def loss_curve_png(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", lw=1.2, ms=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / supervised token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(run_dir: Path, summary: dict, config_yaml: str) -> Path:
    run_dir = Path(run_dir)
    rows = _read_metrics(run_dir / paths.METRICS_FILE)
    png = base64.b64encode(loss_curve_png(rows)).decode("ascii")
    table = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunelab run {html.escape(run_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>Training run: {html.escape(run_dir.name)}</h1>
<img alt="loss curve" src="data:image/png;base64,{png}">
<h2>Summary</h2><table>{table}</table>
<h2>Config</h2><pre>{html.escape(config_yaml)}</pre>
</body></html>
"""
    return atomic_write_text(run_dir / paths.REPORT_FILE, page)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)
