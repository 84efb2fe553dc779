"""One optimizer step and one evaluation: the inner loops of the recipe (loop.py), the same for
every objective (objectives/): the objective gives the batches and the loss, this file the order.

How one optimizer step is counted: the epoch's micro-batches (token-budget packs, see packing.py)
are taken `processes × grad_accum` at a time; process r takes every processes-th one of them.
The loss of each micro-batch is its token-loss SUM divided by the supervised-token count of the
whole step, summed over all processes, so any split into micro-batches and processes gives the
same loss and gradients (tests/train/test_loss.py, test_ddp.py).
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
from dataclasses import dataclass

import torch

from tunelab.errors import TunelabError
from tunelab.train import checkpoint as ckpt
from tunelab.train import shard
from tunelab.train.accounting import StepCounts, step_counts
from tunelab.train.checks import oom_message
from tunelab.train.state import ModelFacts, Procs, RunData, RunSetup, Trainables

# Test hook: TUNELAB_FAULT=kind@N injects a fault at optimizer step N, so the reliability paths are
# tested through the real code: kill@N SIGKILLs the process after step N (loop.py), sigint@N /
# sigterm@N send it SIGINT / SIGTERM during step N, nan@N makes the loss of step N NaN.
FAULT_ENV = "TUNELAB_FAULT"
FAULT_SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}


def fault() -> tuple[str, int]:
    """(kind, step) of TUNELAB_FAULT, or ("", -1)."""
    kind, _, step = os.environ.get(FAULT_ENV, "").partition("@")
    return (kind, int(step)) if kind and step.isdigit() else ("", -1)


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    counts: StepCounts
    stats: dict  # the objective's statistics of the step


def optimizer_step(setup: RunSetup, procs: Procs, facts: ModelFacts, data: RunData, tr: Trainables,
                   step_batches: list[list[int]], step: int) -> StepResult:
    """One optimizer step over this process's share of the step's micro-batches."""
    obj, world = tr.objective, procs.world
    obj.step = step
    obj.before_step(step_batches)  # every process sees the whole step: what its batches need comes first
    mine = step_batches[procs.rank::world]
    weights = [1.0] * len(mine)
    # a short last step leaves some processes one micro-batch short (or without any): they run
    # a copy with weight 0, so every process makes the same collective calls (DDP's gradient
    # all-reduce, FSDP's per-layer all-gathers in every forward and backward)
    pad = math.ceil(len(step_batches) / world) - len(mine)
    mine, weights = mine + step_batches[:1] * pad, weights + [0.0] * pad
    batches = [obj.batch(data.train_ex, b, pad_id=facts.pad_id, width=data.row_width) for b in mine]
    counts = step_counts(batches, weights, rank=procs.rank, world=world, reduce=procs.sum)
    n_sup = max(counts.supervised, 1)
    loss_sum = torch.zeros((), dtype=torch.float32, device=procs.device)
    try:
        for i, (batch, w) in enumerate(zip(batches, weights)):
            batch = batch.to(procs.device)
            last = i == len(batches) - 1
            # gradients are all-reduced once per step, on the last micro-batch only
            with contextlib.nullcontext() if last else procs.acc.no_sync(tr.model):
                ce_sum = obj.step_loss(tr.model, batch, mine[i], counts, w)
                if setup.fault == ("nan", step):
                    ce_sum = ce_sum * float("nan")
                if setup.fault[1] == step and setup.fault[0] in FAULT_SIGNALS and i == 0:
                    os.kill(os.getpid(), FAULT_SIGNALS[setup.fault[0]])
                # × world: DDP averages gradients over processes; the global count already did
                procs.acc.backward(ce_sum * (w * world / n_sup))
            loss_sum += ce_sum.detach() * w
    except torch.OutOfMemoryError:
        raise TunelabError(oom_message(step, data.batch_tokens, data.schedule.grad_accum,
                                       setup.cfg.train.grad_checkpointing)) from None
    loss = float(procs.sum(loss_sum.reshape(1).double())[0]) / n_sup
    stats = obj.step_stats(counts, procs.sum)
    grad_norm = _clip(setup, procs, tr)
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        tr.optimizer.zero_grad(set_to_none=True)
        last = ckpt.latest(setup.run_dir)
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        raise TunelabError(
            f"{what} became {loss if what == 'loss' else grad_norm} at step {step}; stopped without applying it; "
            f"last good checkpoint: {last if last else 'none yet (lower train.save_every)'}; "
            "lower train.lr or check the data, then continue with --resume")
    tr.optimizer.step()
    tr.scheduler.step()
    tr.optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, grad_norm, counts, stats)


def _clip(setup: RunSetup, procs: Procs, tr: Trainables) -> float:
    """The gradient norm, clipped to train.max_grad_norm when set."""
    params = [p for p in tr.model.parameters() if p.requires_grad]
    if setup.cfg.train.max_grad_norm:
        return float(procs.acc.clip_grad_norm_(params, setup.cfg.train.max_grad_norm))
    if procs.sharded:
        return shard.grad_norm(params)
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))


@torch.no_grad()
def evaluate(procs: Procs, facts: ModelFacts, data: RunData, tr: Trainables) -> tuple[float, dict]:
    """(held-out loss, the objective's eval_* statistics); each process takes every world-th batch."""
    obj = tr.objective
    obj.before_eval(data.eval_ex, data.eval_plan)
    tr.model.eval()
    total = torch.zeros(2, dtype=torch.float64)
    mine = [(b, 1.0) for b in data.eval_plan[procs.rank::procs.world]]
    if procs.sharded:  # same number of forwards everywhere: each one all-gathers the layers
        mine += [(data.eval_plan[0], 0.0)] * (math.ceil(len(data.eval_plan) / procs.world) - len(mine))
    for b, w in mine:
        batch = obj.batch(data.eval_ex, b, pad_id=facts.pad_id, width=data.row_width)
        total += torch.tensor(obj.eval_part(tr.model, batch.to(procs.device), b, w), dtype=torch.float64)
    tr.model.train()
    s, n = procs.sum(total).tolist()
    return obj.eval_result(s, n, procs.sum)
