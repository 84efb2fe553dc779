"""How long, in what steps and how fast a fine-tune trains when the config leaves it to tunelab.

The rule (train.epochs, train.lr and train.batch_tokens left at auto/unset), for n training rows
of mean length L tokens:

    examples per optimizer step  B = clamp(n // 32, 4, 32)       (all n when n < 4)
    tokens per optimizer step      = B × L, at least the longest row
    epochs                         = clamp(ceil(64 × B / n), 3, 20), then lowered (never below one)
                                     so that epochs × the set's tokens stays within 3M tokens
    learning rate                  = the method's usual one: 2e-4 adapters, 2e-5 full weights; DPO / ORPO
                                     5e-5 with an adapter, 5e-7 (DPO) / 8e-6 (ORPO) full weights

So a small set gets several epochs and at least about 64 optimizer steps (n = 128, B = 4: 3 epochs
of 32 steps; n = 8: 20 epochs of 2 steps), a large one three epochs of batches of 32, and a very
large one whatever fits 3M tokens. Why these numbers: 3 epochs and batches of 8-32 with 2e-4 are the
defaults of the LoRA recipes people copy (QLoRA's and Axolotl's examples, LLaMA-Factory's 3 epochs);
at the old defaults (one epoch of 8192-token batches) 128 rows made 2 optimizer steps, and a compare
then called few-shot the winner because the fine-tune had barely started (issue 21). The token cap
keeps a CPU run of the default model under a few hours.

GRPO (an objective whose rows are prompts, `Objective.rows_are_prompts`) has its own rule, because
a visit of a prompt costs G sampled completions before any gradient:

    prompts per optimizer step   P = clamp(n // 16, 2, 8)        (all n when n < 2)
    epochs                         = min(3, 256 / n, 3M / the set's tokens), fractional below 1

So every prompt is sampled about 3 times (TRL's GRPOConfig inherits num_train_epochs = 3; a prompt
seen more often than that is mostly memorised by a small model, seen once it gives one reward
comparison), and a large set stops after about 256 prompt visits (2,048 completions at G = 8), which
keeps a run of the default model on a 2-core CPU within tens of minutes whatever n is: n = 64 gets
48 steps of 4 prompts, n = 256 one epoch of 32 steps of 8, n = 1,024 a quarter epoch (32 steps).

Values the user set win; only the keys left at auto come from the rule, and the summary says which.
On a GPU the step's tokens are split into micro-batches that fit free memory (grad_accum of them).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

MIN_EXAMPLES_PER_STEP, MAX_EXAMPLES_PER_STEP = 4, 32
TARGET_STEPS = 64  # optimizer steps a small set reaches through more epochs
MIN_EPOCHS, MAX_EPOCHS = 3, 20
TOKEN_BUDGET = 3_000_000  # tokens seen at most by an auto-length run (one epoch always runs)
# GRPO's rule (rows are prompts, each visit sampled G times): see the module docstring
RL_MIN_PROMPTS_PER_STEP, RL_MAX_PROMPTS_PER_STEP, RL_PROMPTS_PER_ONE_MORE = 2, 8, 16
RL_EPOCHS = 3  # TRL's default num_train_epochs; also the SFT rule's floor
RL_PROMPT_VISITS = 256  # prompt visits at most (x G completions): bounds a big n to minutes on a CPU
# The usual learning rate of each method is declared beside its objective (objectives/: sft.py,
# dpo.py, orpo.py); `resolve` takes the run's (objectives.RunMethod.usual_lr).


@dataclass
class Schedule:
    """The resolved loop settings of a run, and which of them the rule chose."""

    epochs: Optional[float]  # None when max_steps decides
    batch_tokens: int  # one micro-batch's token budget
    grad_accum: int
    lr: float
    examples_per_step: Optional[int] = None  # the rule's B (None when batch_tokens was set)
    auto: list[str] = field(default_factory=list)  # keys the rule filled: epochs, lr, batch_tokens, grad_accum
    unit: str = "examples"  # what a step's rows are: examples, or GRPO's prompts (each sampled G times)

    def describe(self) -> str:
        """One line for the run's log: the values, and which came from the rule."""
        what = f"lr {self.lr:g}, micro-batches of ≤ {self.batch_tokens} tokens × {self.grad_accum}"
        if self.epochs is not None:
            what = f"{self.epochs:g} epoch(s), " + what
        if self.examples_per_step:
            what += f" (about {self.examples_per_step} {self.unit} per optimizer step)"
        rule = f"; from the data size: {', '.join(self.auto)} (docs/training.md)" if self.auto else ""
        return what + rule

    def to_json(self) -> dict:
        out = asdict(self)
        del out["unit"]  # a word for the log line; the saved schedule's keys stay as they were
        return out


def examples_per_step(n: int) -> int:
    """B: 4 to 32 examples per optimizer step, about n / 32 (so an epoch has ~32 steps while n <= 1024)."""
    if n < MIN_EXAMPLES_PER_STEP:
        return max(n, 1)
    return min(MAX_EXAMPLES_PER_STEP, max(MIN_EXAMPLES_PER_STEP, n // 32))


def prompts_per_step(n: int) -> int:
    """P: GRPO prompts per optimizer step, 2 to 8, about n / 16 (each sampled G times)."""
    if n < RL_MIN_PROMPTS_PER_STEP:
        return max(n, 1)
    return min(RL_MAX_PROMPTS_PER_STEP, max(RL_MIN_PROMPTS_PER_STEP, n // RL_PROMPTS_PER_ONE_MORE))


def prompt_epochs(n: int, total_tokens: int) -> float:
    """GRPO's epochs: RL_EPOCHS visits of every prompt, fewer (a fraction of one) past RL_PROMPT_VISITS
    visits or TOKEN_BUDGET tokens; at least 0.001 (the run's total_steps keeps one step)."""
    epochs = min(float(RL_EPOCHS), RL_PROMPT_VISITS / max(n, 1), TOKEN_BUDGET / max(total_tokens, 1))
    return max(0.001, math.floor(epochs * 1000) / 1000)


def auto_epochs(n: int, per_step: int, total_tokens: int) -> float:
    """Enough epochs for about TARGET_STEPS steps (3 to 20), capped by TOKEN_BUDGET tokens (≥ 1 epoch)."""
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS * per_step / max(n, 1))))
    if total_tokens * epochs > TOKEN_BUDGET:
        epochs = max(1, TOKEN_BUDGET // max(total_tokens, 1))
    return float(epochs)


def resolve(loop, usual_lr: float, lengths: list[int], *, world: int = 1,
            memory_budget: Optional[int] = None, prompts: bool = False) -> Schedule:
    """The Schedule of a run from its loop config (TrainLoopConfig) and its training rows' token lengths.

    `usual_lr`: the rate `lr: auto` takes (the method's, objectives.RunMethod.usual_lr).

    `memory_budget`: the micro-batch token budget that fits free GPU memory (None on CPU: one
    micro-batch per process holds the whole step).

    `prompts`: the rows are GRPO prompts (Objective.rows_are_prompts): the prompt rule above.
    """
    n, total = len(lengths), int(sum(lengths))
    longest = max(lengths, default=1)
    auto: list[str] = []
    lr = loop.lr
    if lr == "auto":
        lr, _ = usual_lr, auto.append("lr")
    per_step = None
    grad_accum = loop.grad_accum
    if loop.batch_tokens is not None:
        batch_tokens = loop.batch_tokens
    else:
        per_step = prompts_per_step(n) if prompts else examples_per_step(n)
        mean = total / max(n, 1)
        # the step's tokens are shared by the processes; each takes its micro-batches of them
        step_tokens = max(longest, math.ceil(per_step * mean / world))
        batch_tokens = step_tokens
        auto.append("batch_tokens")
        if memory_budget is not None and memory_budget < step_tokens:
            batch_tokens = max(longest, memory_budget)
            if grad_accum == 1:  # the user left it alone: as many micro-batches as the step needs
                grad_accum = math.ceil(step_tokens / batch_tokens)
                auto.append("grad_accum")
    epochs: Optional[float]
    if loop.max_steps:
        epochs = None
    elif loop.epochs == "auto" and prompts:
        epochs = prompt_epochs(n, total)
        auto.append("epochs")
    elif loop.epochs == "auto":
        # B for the step count: the rule's own, or what a set batch_tokens holds
        b = per_step or max(1, round(batch_tokens * grad_accum * world / max(total / max(n, 1), 1)))
        epochs = auto_epochs(n, b, total)
        auto.append("epochs")
    else:
        epochs = float(loop.epochs)
    return Schedule(epochs, int(batch_tokens), int(grad_accum), float(lr), per_step, auto,
                    "prompts" if prompts else "examples")


SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}  # transformers' names


def optimizer(module, loop, lr: float, total: int, *, fused: bool):
    """(AdamW over the module's trainable parameters, its learning-rate schedule over `total` steps)."""
    import torch
    from transformers import get_scheduler

    params = [p for p in module.parameters() if p.requires_grad]
    # no weight decay on vectors (norms, biases, DoRA magnitudes): the usual AdamW practice
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": loop.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    # fused: one kernel for all parameters, CUDA only
    adamw = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)
    warmup = int(round(loop.warmup * total)) if loop.warmup < 1 else int(loop.warmup)
    return adamw, get_scheduler(SCHEDULES[loop.schedule], adamw, num_warmup_steps=warmup, num_training_steps=total)


__all__ = ["Schedule", "resolve", "optimizer", "examples_per_step", "auto_epochs", "prompts_per_step", "prompt_epochs",
           "TOKEN_BUDGET"]


def total_steps(epochs: float, steps_in_epoch, max_steps: Optional[int] = None) -> int:
    """Optimizer steps of the whole run: max_steps, or every whole epoch's steps plus the started
    fraction of the next (`steps_in_epoch(e)`: each epoch's plan is deterministic, so this is known
    before training)."""
    if max_steps:
        return max_steps
    whole, frac = int(epochs), epochs - int(epochs)
    return sum(steps_in_epoch(e) for e in range(whole)) + (math.ceil(frac * steps_in_epoch(whole)) if frac else 0)
