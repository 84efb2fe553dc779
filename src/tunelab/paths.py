"""Where tunelab keeps things, and the names of the artifacts it writes (one place for both)."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """$TUNELAB_HOME, default ~/.cache/tunelab: the model cache and the request cache live here."""
    return Path(os.environ.get("TUNELAB_HOME", Path.home() / ".cache" / "tunelab")).expanduser()


def models_dir() -> Path:
    return home() / "models"


# Run folder (docs/run-folder.md)
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
REPORT_FILE = "report.html"
RESUME_LOG_FILE = "resume_log.jsonl"  # one line per --resume: from which step, which settings changed
REFERENCE_FILE = "reference_logps.json"  # method: dpo: the reference pass, computed once per run
COMPLETIONS_FILE = "completions.jsonl"  # method: grpo: sample completions with their rewards
ROLLOUTS_FILE = "grpo_rollouts.json"  # method: grpo: the current generation batch (for --resume)
GRPO_TOTALS_FILE = "grpo_totals.json"  # method: grpo: summary.json's whole-run counts at each checkpoint
LOG_FILE = "log.txt"  # other libraries' log lines and tunelab's own (tunelab.logs)
# Evaluation output (docs/results.md)
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
