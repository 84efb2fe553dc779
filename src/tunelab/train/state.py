"""The state of a run, in a few typed parts (the recipe, loop.py, holds one of each):

    RunSetup    what Recipe.__init__ settles before anything loads: config, folder, method, precision
    Procs       the processes (Accelerate): which one this is, and sums over all of them
    ModelFacts  what the loaded model is: names for summary.json, sizes for the cost model, kernels
    RunData     the rows, the schedule and the per-epoch batch plans
    RunClock    times, energy and peak memory of earlier launches of a resumed run
    Trainables  the prepared model, its optimizer and schedule, and the objective

The step-to-step counters that a checkpoint saves are checkpoint.ResumeState.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from tunelab.config import TrainConfig
from tunelab.train.objectives import Objective, RunMethod
from tunelab.train.packing import plan_batches


@dataclass
class RunSetup:
    cfg: TrainConfig
    run_dir: Path
    how: RunMethod  # the method on both axes: objective and weights
    precision: str  # fp32 | bf16 | fp16, what `auto` means here
    resume: bool
    resume_command: str  # the line that continues this run
    base_dir: Optional[Path] = None  # where relative data paths are looked up first
    fault: tuple[str, int] = ("", -1)  # TUNELAB_FAULT, the reliability tests' hook

    @property
    def adapter(self) -> bool:
        return self.how.adapter


@dataclass
class Procs:
    acc: Any  # accelerate.Accelerator
    world: int
    rank: int
    main: bool
    sharded: bool  # FSDP: parameters, gradients and AdamW state split over processes

    @property
    def device(self):
        return self.acc.device

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a small tensor over processes (identity with one process)."""
        if self.world == 1:
            return t
        return self.acc.reduce(t.to(self.acc.device), reduction="sum").cpu()

    def agree(self, flag: bool) -> bool:
        """True on every process if it is True on any (so all save and stop together)."""
        return bool(self.sum(torch.tensor([float(flag)]))[0] > 0)


@dataclass
class ModelFacts:
    tokenizer: Any
    base_name: str
    base_path: Any
    base_sha: Optional[str]
    attn: str  # the attention implementation training uses
    compile: bool
    n_params: int = 0
    n_trainable: int = 0
    flops_per_token: float = 0.0
    attn_dims: tuple = ()  # (layers, heads × head_dim): the cost model's attention term
    peak_flops: Optional[float] = None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


@dataclass
class RunData:
    train_ex: Sequence
    eval_ex: Sequence
    lengths: list[int]
    schedule: Any  # schedule.Schedule
    seed: int
    packing: bool
    per_step: int  # micro-batches per optimizer step: processes × grad_accum
    row_width: Optional[int] = None  # fixed row width (compiled / flex_attention), else None
    eval_plan: list = field(default_factory=list)
    total_steps: int = 0
    skipped: list[str] = field(default_factory=list)  # notes on skipped records (count, first line)
    repeat: int = 1  # optimizer steps on each step's micro-batches (GRPO's num_iterations)
    _plans: dict = field(default_factory=dict)

    @property
    def batch_tokens(self) -> int:
        return self.schedule.batch_tokens

    def plan(self, epoch: int) -> list[list[int]]:
        """The epoch's micro-batches (index lists), seeded: the same on every process and resume."""
        if epoch not in self._plans:
            self._plans[epoch] = plan_batches(self.lengths, self.batch_tokens, seed=self.seed, epoch=epoch,
                                              packing=self.packing)
        return self._plans[epoch]

    def step_batches(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        """The micro-batches of the epoch's step `step_in_epoch` (0-based); with `repeat`, each
        `per_step` group of the plan serves that many steps in a row (the last one may be short)."""
        first = (step_in_epoch // self.repeat) * self.per_step
        return self.plan(epoch)[first:first + self.per_step]

    def steps_in_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.plan(epoch)) / self.per_step) * self.repeat


@dataclass
class RunClock:
    t0: float = field(default_factory=time.perf_counter)
    wall_before: float = 0.0  # totals of earlier launches of a resumed run
    energy_before: Optional[float] = 0.0
    peak_before: float = 0.0
    meter: Any = None  # cost.EnergyMeter on the main process

    def wall_s(self) -> float:
        return time.perf_counter() - self.t0 + self.wall_before


@dataclass
class Trainables:
    model: Any  # the objective's module, prepared (DDP / FSDP)
    optimizer: Any
    scheduler: Any
    objective: Objective
