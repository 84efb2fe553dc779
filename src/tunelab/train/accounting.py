"""What a training run counts as it goes: each step's FLOPs, the rates, the metrics.jsonl row, and
the figures of summary.json at the end (docs/run-folder.md names every key).

    acct = Accounting(flops_per_token, attn_dims, peak_flops, world)   # at the start of train()
    flops = acct.step(state, n_tok=..., n_sup=..., attn_pairs=..., dt=..., compiled=...)
    row = acct.row(state, ...) | acct.rates(state)                     # one line of metrics.jsonl
    append_row(metrics_path, row); rewind_rows(metrics_path, step)     # the file, written and resumed
    summary = run_summary(parts, RunEnd(stopped, peak, energy, ...))    # summary.json

The loop (loop.py) keeps the order of things; this module keeps the arithmetic, so the loop reads
top to bottom without it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from tunelab import paths
from tunelab.io import atomic_write_text, write_errors
from tunelab.train import cost


class Accounting:
    """FLOPs and rates of one launch of a run (a resumed run starts a new one from its state)."""

    def __init__(self, flops_per_token: float, attn_dims: tuple, peak_flops: Optional[float], world: int):
        self.flops_per_token, self.attn_dims, self.peak_flops, self.world = flops_per_token, attn_dims, peak_flops, world
        self.steady, self.compiles_at_start = cost.SteadyState(), cost.compile_count()

    def step(self, state, *, n_tok: int, n_sup: int, attn_pairs: int, dt: float, compiled: bool) -> float:
        """Add one optimizer step (state.step already counts it) to the run's totals; returns its FLOPs."""
        state.tokens_seen += n_tok
        state.tokens_trained += n_sup
        # weights: 6N (full) or 4N + 6N_trainable (adapters) per token; attention: cost.py
        step_flops = self.flops_per_token * n_tok + cost.attention_flops(attn_pairs, *self.attn_dims)
        state.flops += step_flops
        self.steady.add(state.step, n_tok, step_flops, dt, compiled)
        return step_flops

    def row(self, state, res, *, epoch: float, lr: float, dt: float, step_flops: float, device) -> dict:
        """The step's own figures (res: step.StepResult), the start of its metrics.jsonl line."""
        n_tok = res.counts.tokens
        return {"step": state.step, "epoch": epoch, "loss": res.loss, "lr": lr, "grad_norm": res.grad_norm,
                "tokens": n_tok, "tokens_per_s": n_tok / dt if dt > 0 else None,
                "mfu": cost.mfu(step_flops, dt, self.peak_flops, self.world),
                "mem_mib": round(cost.current_memory_mib(device), 1)}

    def rates(self, state) -> dict:
        """Whole run so far (compilation included) and steady state: tokens/s, MFU, compilations."""
        return {"run_tokens_per_s": state.tokens_seen / state.train_s if state.train_s > 0 else None,
                "run_mfu": cost.mfu(state.flops, state.train_s, self.peak_flops, self.world),
                **self.steady.rates(self.peak_flops, self.world),
                "compiles": cost.compile_count() - self.compiles_at_start}


def append_row(path: Path, row: dict) -> None:
    """One line of metrics.jsonl, appended, not rewritten: readers skip a torn last line, and a
    resumed run rewinds the file to its checkpoint (rewind_rows)."""
    line = json.dumps(row) + "\n"
    with write_errors(path, len(line)), open(path, "a", encoding="utf-8") as f:
        f.write(line)


def rewind_rows(path: Path, step: int) -> None:
    """Keep only complete lines up to `step`: a killed run may have logged past its checkpoint."""
    keep = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line + "\n")
            except (ValueError, KeyError):
                pass  # torn last line
    atomic_write_text(path, "".join(keep))


@dataclass
class RunEnd:
    """How a run ended, for its summary.json."""

    stopped: str  # completed | early_stopping
    peak_mib: float  # per process (mean over processes), max over launches
    energy_wh: Optional[float]
    rates: dict  # Accounting.rates() at the end
    objective: dict = field(default_factory=dict)  # what the objective adds (DPO: reference_s)


@dataclass
class RunParts:
    """The typed parts of a run (state.py) that summary.json reads."""

    setup: object  # state.RunSetup
    procs: object  # state.Procs
    facts: object  # state.ModelFacts
    data: object  # state.RunData
    clock: object  # state.RunClock
    state: object  # checkpoint.ResumeState


def run_summary(p: RunParts, end: RunEnd) -> dict:
    """summary.json of a run at its end (docs/run-folder.md)."""
    from tunelab.train.inputs import skipped_summary

    st, device, data = p.state, p.procs.device, p.data
    rows = [json.loads(x) for x in (p.setup.run_dir / paths.METRICS_FILE).read_text().splitlines() if x.strip()]
    last_eval = next((x["eval_loss"] for x in reversed(rows) if "eval_loss" in x), None)
    return {
        "wall_s": round(p.clock.wall_s(), 3),
        "train_s": round(st.train_s, 3),
        "reference_s": end.objective.get("reference_s"),
        "tokens_seen": st.tokens_seen,
        "tokens_trained": st.tokens_trained,
        "tokens_per_s": st.tokens_seen / st.train_s if st.train_s > 0 else None,
        "flops": st.flops,
        "mfu": cost.mfu(st.flops, st.train_s, p.facts.peak_flops, p.procs.world),
        # steady state (after the last compilation; see cost.SteadyState) and compilations
        **{k: v for k, v in end.rates.items() if not k.startswith("run_")},
        "batch_tokens": data.batch_tokens,
        "schedule": data.schedule.to_json(),
        "row_width": data.row_width,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "peak_mem_mib": round(end.peak_mib, 1),  # per process (mean over processes)
        "energy_wh": end.energy_wh,
        "best_checkpoint": (f"{paths.CHECKPOINTS_DIR}/step-{st.best_step}" if st.best_step else None),
        "best_eval_loss": st.best_eval_loss,
        "final_loss": rows[-1]["loss"] if rows else None,
        "final_eval_loss": last_eval,
        "steps": st.step,
        "stopped": end.stopped,
        "method": p.setup.cfg.method,
        "model": p.facts.base_name,
        "trainable_params": p.facts.n_trainable,
        "total_params": p.facts.n_params,
        "train_rows": len(data.train_ex),
        "eval_rows": len(data.eval_ex),
        "skipped": skipped_summary(data.skipped),  # records the data files held that were skipped (skip_bad)
        "reference_pairs": end.objective.get("reference_pairs"),
        "grpo": end.objective.get("grpo"),
        "device": str(device),
        "processes": p.procs.world,
        "sharding": "fsdp2" if p.procs.sharded else None,
        "precision": p.setup.precision,
    }


@dataclass
class StepCounts:
    """One optimizer step's counts over all processes."""

    supervised: int  # tokens that carry a loss
    tokens: int  # real tokens fed
    attn_pairs: int  # (query, key) pairs attention computes
    pairs: int  # preference pairs
    chosen: int  # scored chosen-answer tokens (ORPO's NLL denominator)
    per_process: list[int]  # supervised tokens of each process


def step_counts(batches, weights: list[float], *, rank: int, world: int, reduce) -> StepCounts:
    """One step's counts over all processes (`reduce` sums a tensor over them), from this process's
    micro-batches and their weights (0 for the copies that keep processes in step)."""
    def total(key) -> float:
        return sum(getattr(b, key, 0) * w for b, w in zip(batches, weights))

    counts = torch.zeros(5 + world, dtype=torch.float64)
    counts[:5] = torch.tensor([total(k) for k in ("n_supervised", "n_tokens", "attn_pairs", "n_pairs", "n_chosen")])
    counts[5 + rank] = counts[0]  # summed over processes: each one's count in its own slot
    counts = [int(x) for x in reduce(counts)]
    return StepCounts(*counts[:5], counts[5:])


def add_energy(before: Optional[float], now: Optional[float]) -> Optional[float]:
    """Earlier launches' energy plus this launch's; None when this machine cannot measure it."""
    return None if now is None else (before or 0.0) + now
