"""What a run refuses before it loads a model or data (the recipe's fail-fast, loop.py), and the
one-line fixes it proposes when the hardware refuses later.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from tunelab import paths
from tunelab.config import TrainConfig, to_yaml
from tunelab.errors import ParameterError, TunelabError
from tunelab.io import check_writable
from tunelab.train import checkpoint as ckpt
from tunelab.train import inputs
from tunelab.train.methods import check_method_available
from tunelab.train.objectives import RunMethod


def check_settings(cfg: TrainConfig, how: RunMethod, *, cuda: bool, base_dir,
                   toxicity: Optional[Callable[[list[str]], Sequence[float]]]) -> str:
    """Settings that cannot work together or on this machine; returns the precision `auto` means here.
    (The objective's own refusals: its `check`, objectives/.)"""
    if cfg.data.max_toxicity is not None and toxicity is None:
        raise TunelabError("data.max_toxicity needs a toxicity scorer: pass toxicity="
                           "tunelab.safety.toxicity.toxicity_scores to train() (the tunelab CLI does)")
    check_method_available(how.weights, "cuda" if cuda else "cpu")
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise TunelabError("train.precision=fp16 needs a CUDA GPU; use train.precision=fp32 (or auto) on CPU")
    if cfg.replay is not None:
        where = inputs.data_path(cfg.replay.data, base_dir, "replay.data")
        if not where.startswith("builtin:") and not Path(where).is_file():
            raise TunelabError(f"replay.data: {cfg.replay.data} not found (looked at {where}); give a file of "
                               "general instruction data, or drop replay:")
    for flag, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        if getattr(cfg.log, flag):
            try:
                __import__(package)
            except ImportError:
                raise TunelabError(f"log.{flag}: true needs {package}; run: pip install {package}") from None
    return precision


def check_run_folder(cfg: TrainConfig, run_dir: Path, *, resume: bool, overwrite: bool) -> tuple[dict, Optional[dict]]:
    """The run folder as this launch finds it: (settings changed since the checkpoint, the summary
    of an already finished run), both only on resume; refuses a folder this launch would clobber."""
    check_writable(run_dir, setting="out")
    latest = ckpt.latest(run_dir)
    if resume and latest is None:
        raise ParameterError(f"{run_dir}: no complete checkpoint to resume from; start without {{resume}}", "resume")
    # resume: refuse settings that would make config.yaml lie about the checkpoints
    changes = ckpt.config_changes(latest, to_yaml(cfg)) if resume else {}
    finished = ckpt.finished_summary(run_dir, latest, changes) if resume else None
    started = (run_dir / paths.CONFIG_FILE).exists() or (run_dir / paths.CHECKPOINTS_DIR).exists()
    if started and not resume and not overwrite:
        raise ParameterError(f"{run_dir}: run folder already exists; pass {{resume}} to continue it, "
                             "{overwrite} to start over, or set out=<another folder>", "resume", "overwrite")
    return changes, finished


def oom_message(step: int, batch_tokens: int, grad_accum: int, grad_checkpointing: bool) -> str:
    """The one-line fix for CUDA out-of-memory: halve the budget, keep the batch, or recompute."""
    half = max(batch_tokens // 2, 16)
    fixes = [f"set train.batch_tokens={half} with train.grad_accum={grad_accum * 2} (same effective batch)"]
    if not grad_checkpointing:
        fixes.append("set train.grad_checkpointing=true")
    return (f"CUDA ran out of memory at step {step} with train.batch_tokens={batch_tokens}; "
            + " or ".join(fixes))
