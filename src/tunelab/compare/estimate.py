"""`--dry-run`: each arm's token counts and an estimate of its time, without loading any weights.

Token counts are exact where the model's tokenizer is on disk: every test prompt is rendered as
the evaluation will render it (demonstrations included, with the random sampler standing in for
the others: same k, same lengths on average) and tokenized; generated tokens are the gold answers'
length plus one stop token, at most max_new_tokens. Fine-tuning tokens are the rendered training
records times the epochs. A GRPO arm's are its rollouts: prompt visits (its schedule) x G completions of
max_completion_length tokens generated, and the tokens its training feeds: each visit's prompt once and its
G completions (compare/rl.py, train/grpo_math.py).
Without a local tokenizer (endpoints) a token is taken as 4 characters.

Times divide those counts by throughputs measured on a 2-core x86 CPU with the default model
(SmolLM2-135M, fp32), scaled by 135M / the model's parameter count (from its config.json), plus
the time to load a model; docs/compare.md gives the measurement. They are rough (other load on
the machine, a GPU, batch sizes all change them) and say so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tunelab.compare import rl
from tunelab.compare.plan import Arm, Plan
from tunelab.infer.endpoint import is_endpoint
from tunelab.evaluate.task_types import task_type

# Measured on this 2-core CPU, default model, fp32: see docs/compare.md ("How --dry-run estimates").
REFERENCE_PARAMS = 134.5e6
PREFILL_TOKENS_PER_S = 850.0  # prompt tokens during evaluation: the 3-shot minus the zero-shot arm of the quickstart
DECODE_TOKENS_PER_S = 50.0  # generated tokens during evaluation (batch of 8 with KV cache)
# tokens seen per second while training: lora measured (quickstart, 213-215); full from DESIGN's
# LoRA/full ratio (215 vs 147 tokens/s dense); dora and qlora assumed as lora (not measured here)
# dpo / orpo: per token of their records, about the adapter rate (the prompt runs once per pair, the
# reference pass adds a forward); rough, like the others
# grpo: tokens fed per second of its training passes (prompt once per group), and completion tokens
# sampled per second of sampling (a step's completions in one batch, each prompt prefilled once):
# examples/compare_rl.yaml's grpo-n64 arm, 2026-12-08 (26,986 tokens in 136 s; 18,109 in 169 s)
TRAIN_TOKENS_PER_S = {"lora": 215.0, "dora": 215.0, "qlora": 215.0, "full": 147.0, "dpo": 180.0, "orpo": 215.0,
                      "grpo": 198.0}
ROLLOUT_TOKENS_PER_S = 107.0
LOAD_S = 5.0  # loading a model (and an adapter) once per arm
CHARS_PER_TOKEN = 4.0


@dataclass
class ArmEstimate:
    arm: str
    prompt_tokens: int
    generated_tokens: int
    train_tokens: int
    seconds: float
    exact_tokens: bool  # counted with the model's tokenizer (else ~4 chars per token)
    finished: bool = False
    retention_s: float = 0.0  # retention tasks and drift (prompted arms: the base model's, once per model)
    judge: Optional[object] = None  # a judge metric: the judging of its answers (compare/judge_estimate.py)
    rollout_tokens: int = 0  # GRPO: tokens generated while training (every sampled completion at its longest)


def _local_folder(model: str) -> Optional[Path]:
    """The model's HF folder when it is on disk already (nothing is pulled or converted for a dry run)."""
    from tunelab.models import registry

    if is_endpoint(model):
        return None
    key = registry.canonical(model)
    if key is not None and not Path(model).exists():
        return registry.cached_dir(key) if registry.is_cached(key) else None
    p = Path(model).expanduser()
    return p if p.is_dir() else None


def _params(folder: Optional[Path]) -> float:
    """Parameter count from config.json (embeddings + 12·L·h² for the blocks); the reference when unknown."""
    if folder is None:
        return REFERENCE_PARAMS
    try:
        c = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        h, n_layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    except (OSError, ValueError, KeyError):
        return REFERENCE_PARAMS
    return vocab * h + 12 * n_layers * h * h


class _Counter:
    def __init__(self, model: str):
        self.folder = _local_folder(model)
        self.tokenizer = None
        if self.folder is not None:
            from tunelab.models.loading import load_tokenizer

            self.tokenizer = load_tokenizer(self.folder)

    def __call__(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, round(len(text) / CHARS_PER_TOKEN))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


Counter = _Counter  # compare/judge_estimate.py counts the judge's tokens the same way


def counter(model: str) -> _Counter:
    """Tokens of a text for `model`: its tokenizer when on disk, else ~4 characters a token."""
    return _Counter(model)


def size_scale(count: _Counter) -> float:
    """The measured rates' time multiplier for the model `count` tokenizes for (its size / the reference's)."""
    return _params(count.folder) / REFERENCE_PARAMS


def _eval_tokens(plan: Plan, arm: Arm, count: _Counter, rows, templates, pool) -> tuple[int, int]:
    k = arm.k or 0
    sampler = "random" if arm.sampler in (None, "similar") else arm.sampler
    return _task_tokens(plan.task, count, rows, templates, pool, k=k, sampler=sampler)


def _task_tokens(task, count: _Counter, rows, templates, pool=(), *, k: int = 0, sampler: str = "random") -> tuple[int, int]:
    """(prompt, generated) tokens of evaluating `rows` of a task, prompts rendered as evaluation renders them."""
    from tunelab.fewshot import ContextBuilder

    builder = ContextBuilder(task, templates, list(pool), k=k, sampler=sampler, seed=task.fewshot.seed,
                             pool_is_eval=False, tokenizer=count.tokenizer)
    tt = task_type(task)
    prompt = generated = 0
    for row in rows:
        p, g = tt.estimate_tokens(task, count, row, templates, builder)
        prompt, generated = prompt + p, generated + g
    return prompt, generated


def _record_tokens(count: _Counter, records: list[dict]) -> list[int]:
    # the record's JSON: its text plus about a chat template's worth of markup
    return [count(json.dumps(r, ensure_ascii=False)) for r in records]


def _train_tokens(plan: Plan, arm: Arm, count: _Counter, setting: Optional[dict] = None) -> int:
    """Tokens the arm's fine-tune will see: the subset (as rendered) and any replay rows, times the
    epochs of its schedule (train/schedule.py), or max_steps steps of the schedule's step size."""
    from tunelab.compare.render import subset_records
    from tunelab.config import TrainConfig
    from tunelab.train import schedule
    from tunelab.train.objectives import resolve
    from tunelab.train.replay import replay_count

    if rl.is_rl(arm):  # its rollouts: the prompts and completions it trains on
        return _rollouts(plan, arm, count, setting).train_tokens
    cfg = TrainConfig.model_validate(plan.train_config(arm, setting))
    lengths = _record_tokens(count, subset_records(plan.task, plan.source, plan.subset(arm.n), plan.rendering))
    if cfg.replay is not None:
        from tunelab.data.load import load_rows

        sample = _record_tokens(count, [r.data for r in load_rows(cfg.replay.data)[:64]])
        mean = sum(sample) / max(len(sample), 1)
        lengths += [round(mean)] * replay_count(len(lengths), cfg.replay.ratio)
    s = schedule.resolve(cfg.train, resolve(cfg).usual_lr, lengths)
    if cfg.train.max_steps:
        return min(int(cfg.train.max_steps * s.batch_tokens * s.grad_accum), int(sum(lengths) * 1000))
    return int(sum(lengths) * s.epochs)


@dataclass
class Rollouts:
    """A GRPO arm's sampling while it trains: completions, their generated tokens, and its training tokens."""

    completions: int
    generated_tokens: int
    train_tokens: int

    def seconds(self) -> float:
        return self.generated_tokens / ROLLOUT_TOKENS_PER_S + self.train_tokens / TRAIN_TOKENS_PER_S["grpo"]


def _rollouts(plan: Plan, arm: Arm, count: _Counter, setting: Optional[dict] = None) -> Rollouts:
    """A GRPO arm's counts: prompt visits from its schedule (train/schedule.py's prompt rule, or max_steps)
    times G completions of max_completion_length tokens each (an upper bound: most stop earlier), trained
    on num_iterations times as one packed group: the prompt once, the G completions after it."""
    import math

    from tunelab.config import TrainConfig
    from tunelab.train import schedule
    from tunelab.train.objectives import resolve
    from tunelab.train.objectives.grpo import group_tokens
    from tunelab.train.packing import plan_batches

    cfg = TrainConfig.model_validate(plan.train_config(arm, setting))
    g, rows = cfg.grpo, plan.subset(arm.n)
    templates = task_type(plan.task).templates(plan.task, plan.source)
    prompts = [_task_tokens(plan.task, count, [row], templates)[0] for row in rows]
    lengths = [group_tokens(p, g.num_generations, g.max_completion_length) for p in prompts]
    s = schedule.resolve(cfg.train, resolve(cfg).usual_lr, lengths, prompts=True)
    batches = math.ceil(len(plan_batches(lengths, s.batch_tokens, seed=cfg.train.seed)) / s.grad_accum)
    if cfg.train.max_steps:  # one generation batch per num_iterations steps, of about n / batches prompts
        visits = math.ceil(cfg.train.max_steps / g.num_iterations) * len(rows) / batches
    else:
        visits = len(rows) * s.epochs
    completions = round(visits * g.num_generations)
    mean_group = sum(lengths) / max(len(lengths), 1)
    return Rollouts(completions, completions * g.max_completion_length, round(visits * mean_group * g.num_iterations))


def _tune_cost(plan: Plan, arm: Arm, count: _Counter, templates) -> tuple[int, float, float]:
    """A tuned arm's sweep: training tokens of every setting, the extra model loads (a training run and a
    validation scoring per setting beyond the first) in seconds, and the seconds of validation scoring."""
    from tunelab.compare.tune import VAL_LOSS, ranked_by, settings

    grid = settings(arm.tune)
    tokens = sum(_train_tokens(plan, arm, count, s) for s in grid)
    seconds, loads = 0.0, LOAD_S * (len(grid) - 1)
    if ranked_by(plan)[0] != VAL_LOSS and task_type(plan.task).dry_run_counts:
        p, g = _task_tokens(plan.task, count, plan.validation(arm.tune.val), templates)
        seconds = len(grid) * (p / PREFILL_TOKENS_PER_S + g / DECODE_TOKENS_PER_S)
        loads += LOAD_S * len(grid)
    return tokens, loads, seconds


def _retention_seconds(plan: Plan, arm: Arm, count: _Counter, shared: set) -> float:
    """Retention tasks and drift for this arm: its own for a fine-tune, the base model's once for prompted arms."""
    from tunelab.compare import retention
    from tunelab.evaluate.runner import load_task_rows

    if not retention.scored(arm) or (not arm.fine_tuned and arm.model in shared):
        return 0.0
    if not arm.fine_tuned:
        shared.add(arm.model)
    seconds = 0.0
    for rt in plan.retention:
        tt = task_type(rt.task)
        rows = load_task_rows(rt.task) if tt.dry_run_counts else []
        rows = rows[:rt.limit] if rt.limit else rows
        templates = tt.templates(rt.task, rt.where)
        p, g = _task_tokens(rt.task, count, rows, templates)
        seconds += p / PREFILL_TOKENS_PER_S + g / DECODE_TOKENS_PER_S
    if plan.drift is not None and arm.fine_tuned:
        prompt = sum(count(p) for _, p in plan.drift.prompts)
        answers = plan.drift.max_new_tokens * len(plan.drift.prompts)
        if arm.model not in shared:  # the base model's answers, once per model
            seconds += answers / DECODE_TOKENS_PER_S
            shared.add(arm.model)
        seconds += 2 * (prompt + answers) / PREFILL_TOKENS_PER_S  # two forward passes: base and fine-tune
    return seconds


def estimate(plan: Plan) -> list[ArmEstimate]:
    from tunelab.compare.run import is_finished
    from tunelab.evaluate.runner import load_task_rows

    task = plan.task
    tt = task_type(task)
    rows = load_task_rows(task) if tt.dry_run_counts else []
    if plan.config.limit is not None:
        rows = rows[:plan.config.limit]
    templates = tt.templates(task, plan.source)
    counters: dict[str, _Counter] = {}
    shared: set = set()
    out = []
    for arm in plan.arms:
        count = counters.setdefault(arm.model, _Counter(arm.model))
        pool = plan.pool if (arm.k or 0) > 0 else []
        p, g = _eval_tokens(plan, arm, count, rows, templates, pool) if rows else (0, 0)
        t = _train_tokens(plan, arm, count) if arm.fine_tuned and arm.tune is None else 0
        scale = _params(count.folder) / REFERENCE_PARAMS
        seconds = LOAD_S * (2 if arm.fine_tuned else 1) + scale * (p / PREFILL_TOKENS_PER_S + g / DECODE_TOKENS_PER_S)
        if arm.fine_tuned and arm.tune is not None:
            t, load_s, tune_s = _tune_cost(plan, arm, count, templates)
            seconds += load_s + scale * tune_s
        sampled = 0
        if arm.fine_tuned and rl.is_rl(arm):  # sampling and training, each setting of a sweep
            from tunelab.compare.checks import settings

            runs = [_rollouts(plan, arm, count, st) for st in (settings(arm.tune) if arm.tune else [None])]
            sampled = sum(r.generated_tokens for r in runs)
            seconds += scale * sum(r.seconds() for r in runs)
        elif arm.fine_tuned:
            seconds += scale * t / TRAIN_TOKENS_PER_S[arm.method]
        if is_endpoint(arm.model):
            seconds = p / PREFILL_TOKENS_PER_S + g / DECODE_TOKENS_PER_S  # unknown server: the local rates
        scale_r = scale if not is_endpoint(arm.model) else 1.0
        ret = scale_r * _retention_seconds(plan, arm, count, shared)
        out.append(ArmEstimate(arm.id, p, g, t, round(seconds, 1), count.tokenizer is not None,
                               finished=is_finished(plan, arm), retention_s=round(ret, 1), rollout_tokens=sampled))
    return out
