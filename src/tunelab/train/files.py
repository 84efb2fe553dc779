"""What a training run folder holds, file by file and key by key.

docs/run-folder.md is generated from these tables (scripts/gen_docs.py), and the golden tests
check that a run written by today's code has exactly these files and keys, so the page cannot
drift from what the trainer writes. The file names themselves are constants in tunelab.paths and
tunelab.train.checkpoint; this module only says what each one means.
"""
from __future__ import annotations

import json
from pathlib import Path

from tunelab import paths
from tunelab.train import checkpoint as ckpt

# The run folder, `out` of the train config (default runs/NAME/).
RUN_FOLDER = {
    paths.CONFIG_FILE: "the resolved config (file + overrides + defaults); after a --resume it holds the "
                       "settings in force now",
    paths.METRICS_FILE: "one JSON object per logged optimizer step (keys below)",
    paths.SUMMARY_FILE: "whole-run numbers, written when the run ends (keys below)",
    f"{paths.CHECKPOINTS_DIR}/step-N/": "everything a --resume needs (files below); the newest "
                                        "`train.keep_checkpoints` and the best are kept",
    f"{paths.ADAPTER_DIR}/": "lora, dora, qlora: the final adapter, a PEFT folder plus the tokenizer and "
                             "tunelab_adapter.json (base model name, path and sha256, method)",
    f"{paths.MODEL_DIR}/": "full: the final model, a Hugging Face folder (safetensors) with its tokenizer",
    paths.REFERENCE_FILE: "method: dpo only: the reference model's summed log-probabilities of each pair's chosen "
                          "and rejected answer ({train: [[c, r] or null, ...], eval: [...]}; null: not computed "
                          "yet), each computed once, when its batch is first used (full weights: all before step 1), "
                          "written with every checkpoint and read back by --resume",
    paths.COMPLETIONS_FILE: "method: grpo only: every grpo.log_completions_every steps (and step 1), the completions "
                            "of the step's first two prompts: {step, prompt, completion, reward, rewards {name: "
                            "value}, advantage, truncated}",
    paths.ROLLOUTS_FILE: "method: grpo only: the current generation batch (completions, rewards, advantages and, "
                         "with num_iterations > 1 or beta > 0, their kept log-probabilities), written with every "
                         "checkpoint so a --resume between two uses of one batch trains on the same completions",
    paths.GRPO_TOTALS_FILE: "method: grpo only: the run's totals for summary.json (generated completions and "
                            "tokens, seconds, rewards at the start) at each checkpoint's step, so a --resume "
                            "continues them",
    paths.RESUME_LOG_FILE: "one line per --resume: `time`, `from_step` and `changed` {key: {from, to}}",
    paths.REPORT_FILE: "the run's HTML report; `tunelab train` writes it, `tunelab report DIR` rebuilds it",
    paths.LOG_FILE: "`tunelab train` only: log lines at INFO and above, tunelab's and other libraries' (the "
                    "terminal shows them with --verbose)",
}

CHECKPOINT_FILES = {
    f"{paths.ADAPTER_DIR}/ or {paths.MODEL_DIR}/": "the trainable weights at this step, loadable on their own",
    ckpt.OPTIMIZER_FILE: "AdamW state (read back with torch.load(weights_only=True))",
    ckpt.SCHEDULER_FILE: "learning-rate scheduler state",
    ckpt.RNG_FILE: "Python, NumPy, torch (and CUDA) random states of every process",
    ckpt.STATE_FILE: "step, epoch and position in it, token and FLOP counters, best eval loss",
    paths.CONFIG_FILE: "the config the checkpoint was written under; --resume compares against it",
    ckpt.TEMPLATE_FILE: "the chat template the training data was rendered with",
}

# One line of metrics.jsonl. `eval_loss` appears on evaluation steps only.
METRICS_KEYS = {
    "step": "optimizer step, from 1",
    "epoch": "epochs done, fractional",
    "loss": "mean cross-entropy per supervised token of the step",
    "lr": "learning rate the step was taken with",
    "grad_norm": "gradient norm before clipping",
    "tokens": "real (non-padding) tokens of the step",
    "tokens_per_s": "this step's tokens / its seconds",
    "mfu": "model FLOPs utilisation of the step (null on CPU and unknown GPUs)",
    "mem_mib": "memory in use after the step, MiB (GPU: allocated; CPU: the process's resident memory)",
    "run_tokens_per_s": "the whole run so far, compilation and evaluation included",
    "run_mfu": "the same for MFU",
    "steady_tokens_per_s": "steps after the last one that compiled anything (null until there is one)",
    "steady_mfu": "the same for MFU",
    "steady_from_step": "first step of the steady state",
    "compiles": "graphs torch.compile has built so far",
    "eval_loss": "held-out loss (evaluation steps only)",
    "supervised_per_process": "supervised tokens of the step on each process, in rank order (several processes only)",
}
# method: grpo adds these to each line (TRL's names; `rewards/NAME/...` once per reward)
GRPO_METRICS_KEYS = {
    "reward": "mean weighted reward of the step's completions",
    "reward_std": "their standard deviation",
    "rewards/NAME/mean": "mean of one reward (NAME: the metric or module:function), before its weight",
    "rewards/NAME/std": "its standard deviation",
    "frac_reward_zero_std": "share of prompt groups whose rewards are all equal (advantage 0: no learning signal; "
                            "a warning follows when it stays >= 0.8 for 8 generation batches)",
    "kl": "mean per-token KL (k3) to the reference (grpo.beta > 0 only)",
    "entropy": "mean per-token entropy of the policy on the completions",
    "clip_ratio/low_mean": "share of tokens whose ratio was clipped below (1 - epsilon, negative advantage)",
    "clip_ratio/high_mean": "share clipped above (1 + epsilon_high, positive advantage)",
    "clip_ratio/region_mean": "share clipped either way",
    "clip_ratio/low_min": "lowest per-completion share of low-clipped tokens",
    "clip_ratio/high_max": "highest per-completion share of high-clipped tokens",
    "completions/mean_length": "completion tokens, mean over the batch",
    "completions/min_length": "the shortest completion's tokens",
    "completions/max_length": "the longest completion's tokens",
    "completions/clipped_ratio": "share of completions cut at grpo.max_completion_length",
    "sample_s": "seconds the generation batch took to sample and score (logged with each of its uses)",
    "generate_s": "seconds this step spent sampling (0 when it reused a batch)",
    "optimize_s": "seconds of this step's forward and backward passes",
    "generation_use": "which use of its generation batch the step is (num_iterations > 1 only)",
    # a judge_score reward adds these: numbers of the generation batch, logged with each of its uses
    "judge_unparsed": "judge_score reward only: completions whose judgment held no readable rating; each got "
                      "its group's mean judge reward (advantage 0 from the judge: docs/judge.md)",
    "judge_calls": "judge_score reward only: judgments the judge model made for the batch (one batched call)",
    "judge_cached": "judge_score reward only: judgments read back from the cache instead (a resumed run's redone "
                    "step)",
    "judge_tokens": "judge_score reward only: the judge's prompt plus generated tokens",
    "judge_s": "judge_score reward only: seconds the batch's judging took",
}

# keys a line has only sometimes: evaluation steps, runs on several processes
METRICS_OPTIONAL = {"eval_loss", "supervised_per_process"}

SUMMARY_KEYS = {
    "wall_s": "seconds of the whole run, every launch added up",
    "train_s": "seconds inside the training loop",
    "reference_s": "method: dpo: seconds of this launch's reference forwards, not counted in train_s (with an "
                   "adapter each batch's reference is computed when the batch is first used; with full weights all "
                   "come before step 1; 0 when a --resume read them all back; null for other methods)",
    "tokens_seen": "real tokens through the model",
    "tokens_trained": "supervised tokens (with train_on: completion, fewer than seen)",
    "tokens_per_s": "tokens_seen / train_s",
    "flops": "estimated training FLOPs (docs/training.md, Accounting)",
    "mfu": "whole-run MFU (null on CPU and unknown GPUs)",
    "steady_tokens_per_s": "tokens/s after the last compilation",
    "steady_mfu": "MFU after the last compilation",
    "steady_from_step": "where the steady state starts",
    "compiles": "graphs torch.compile built",
    "batch_tokens": "the micro-batch token budget used (also when sized automatically)",
    "schedule": "the loop's resolved settings {epochs, batch_tokens, grad_accum, lr, examples_per_step, auto}: "
                "`auto` lists those the automatic schedule chose from the data size (train/schedule.py)",
    "row_width": "fixed packed-row width (null when rows are not padded to one width)",
    "threads": "CPU threads used (null on a GPU)",
    "peak_mem_mib": "peak memory per process (MiB), the max over launches",
    "energy_wh": "energy measured by codecarbon (null where it cannot measure)",
    "best_checkpoint": "checkpoints/step-N with the lowest eval loss (null without evaluation)",
    "best_eval_loss": "its eval loss",
    "final_loss": "training loss of the last logged step",
    "final_eval_loss": "the last eval loss",
    "steps": "optimizer steps done",
    "stopped": "completed or early_stopping",
    "method": "the config's method: full, lora, dora, qlora, dpo, orpo or grpo (train/objectives/)",
    "model": "base model name",
    "trainable_params": "parameters trained",
    "total_params": "parameters of the model",
    "train_rows": "training examples after preparation",
    "eval_rows": "held-out examples",
    "skipped": "with data.skip_bad: {count, notes}: how many records of the data files were skipped, and per "
               "file a note with the count and the first skipped record's line (null when none was)",
    "reference_pairs": "method: dpo: training pairs whose reference log-probabilities are known (kept in "
                       "reference_logps.json); fewer than train_rows when the run stopped within its first epoch",
    "device": "cpu, cuda:0, ...",
    "processes": "processes of the run (DDP / FSDP)",
    "sharding": "fsdp2 when parameters were sharded over the processes, null otherwise",
    "precision": "fp32, bf16 or fp16",
}

# method: grpo adds these to summary.json (train/rollouts.py Totals), counted over the whole run,
# every launch of a resumed one included, whatever train.log_every thins from metrics.jsonl
GRPO_SUMMARY_KEYS = {
    "generations": "generation batches sampled (one per grpo.num_iterations optimizer steps)",
    "completions_generated": "completions sampled: prompts × grpo.num_generations, over every generation batch",
    "generated_tokens": "completion tokens sampled (the end token included)",
    "generated_tokens_per_s": "generated_tokens / generate_s",
    "generate_s": "seconds spent generating (sampling, scoring, the kept log-probabilities): the sum of metrics.jsonl's generate_s",
    "optimize_s": "seconds of the forward and backward passes: the sum of metrics.jsonl's optimize_s",
    "reward_start": "mean reward of the first reward_window generation batches",
    "reward_end": "mean reward of the last reward_window generation batches",
    "reward_window": "generation batches averaged for reward_start and reward_end: 5, fewer when the run has "
                     "under 10 (the two windows never overlap)",
    "frac_reward_zero_std": "share of all the run's prompt groups whose rewards were all equal (no learning signal)",
    "completions_clipped_ratio": "share of all completions cut at grpo.max_completion_length",
    "judge": "with a judge_score reward only: this launch's judge cost {calls, cached, prompt_tokens, "
             "generated_tokens, tokens, wall_s} and unparsed (completions whose judgment held no readable rating)",
}


def read_metrics_rows(path: Path) -> list[dict]:
    """metrics.jsonl rows; a torn last line of a killed run is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows
