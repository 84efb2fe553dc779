"""DPO throughput: tunelab vs TRL's DPOTrainer + PEFT LoRA, side by side, same pairs, same CPU.

Both arms train SmolLM2-135M-Instruct (the registry's `default`, fp32) with LoRA r 16 / alpha 32 on
all linear layers for one epoch over the same 256 pairs of ../shared/data/hh_rlhf_harmless (the
first 256 good records: HH-RLHF dialogues split at the last assistant turn, the same chat messages
on both sides), sigmoid DPO with the same beta and learning rate (cosine, no warm-up), max_length
256 (both keep pairs whose prompt is shorter and cut answers to fit), about 8 pairs per optimizer step:
TRL as a user would run it (batch 8, its defaults otherwise: padding to the longest sequence, the
reference pass with the adapter off at every step), tunelab with its defaults (the prompt once
per pair, pairs packed padding-free, the reference pass once before step 1).

Tokens are counted the same way on both sides: the tokens of the usual DPO layout, [prompt |
chosen] + [prompt | rejected] per trained pair (no padding), over the whole run's seconds: TRL's
`trainer.train()` (its per-step reference forwards included), tunelab's reference pass plus its loop.
tunelab's own count (real tokens it fed: the prompt once) is printed as well.

    pip install trl datasets      # the peer (the `test` extra has them)
    flock /tmp/heavy.lock python benchmarks/dpo_throughput.py     # ~15-25 min on a quiet 2-core CPU

Each arm runs in its own subprocess, so the peak memory (RSS) is the arm's own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless" / "harmless-2000.jsonl.gz"
BATCH_PAIRS = 8
BETA = 0.1
LR = 5e-5  # tunelab's usual rate for DPO with LoRA (train/schedule.py)
MAX_LENGTH = 256


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pairs(n: int):
    from tunelab.data.preference import load_pairs

    return load_pairs(HH, skip_bad=True)[:n]


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def standard_tokens(n: int) -> tuple[int, int]:
    """(pairs kept at MAX_LENGTH, their tokens in the usual layout) with tunelab's encoding, which is TRL's
    (tests/train/test_preference_trl.py checks the ids)."""
    from tunelab.models.loading import load_tokenizer, resolve
    from tunelab.templates.preference import encode_pairs

    enc = encode_pairs(load_tokenizer(resolve("default")[1]), pairs(n), max_length=MAX_LENGTH)
    return len(enc), sum(2 * len(e.prompt) + len(e.chosen) + len(e.rejected) for e in enc)


def arm_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tunelab.models.loading import resolve

    torch.manual_seed(0)
    _, folder = resolve("default")
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [{"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs(args.pairs)]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    cfg = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH_PAIRS, num_train_epochs=1,
                    learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0, beta=BETA, loss_type=["sigmoid"],
                    max_length=MAX_LENGTH, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                    bf16=False, seed=42, dataloader_num_workers=0, dataset_num_proc=None)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora_config())
    counts = {"real": 0, "padded": 0, "pairs": 0}

    def count(module, a, kwargs):
        # the policy forward only (the reference forward runs without gradients)
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if module.training and torch.is_grad_enabled() and ids is not None:
            counts["real"] += int(mask.sum())
            counts["padded"] += int(ids.numel())
            counts["pairs"] += ids.shape[0] // 2

    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    losses = []

    class Losses(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer.add_callback(Losses())
    t0 = time.perf_counter()
    trainer.train()
    run_s = time.perf_counter() - t0
    return {"arm": "TRL DPOTrainer + PEFT LoRA", "pairs": counts["pairs"], "tokens": counts["real"],
            "fed_tokens": counts["padded"], "run_s": run_s, "peak_mem_mib": peak_mib(), "losses": losses,
            "steps": len(losses), "gradient_checkpointing": cfg.gradient_checkpointing,
            "threads": torch.get_num_threads()}


def arm_tunelab(args) -> dict:
    import torch

    from tunelab.train.loop import train

    work = Path(tempfile.mkdtemp())
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                            for p in pairs(args.pairs)))
    cfg = {
        "name": "bench", "model": "default", "method": "dpo",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        "preference": {"beta": BETA, "loss": "sigmoid"},
        "data": {"train": str(data), "eval": None, "max_length": MAX_LENGTH},
        "train": {"epochs": 1, "batch_tokens": args.batch_tokens, "lr": LR, "schedule": "cosine", "warmup": 0,
                  "save_every": 10_000, "eval_every": 10_000, "seed": 42},
        "out": str(work / "run"),
    }
    res = train(cfg)
    s = res.summary
    losses = [json.loads(x)["loss"] for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"arm": "tunelab (prompt once, packed pairs, cached reference)", "pairs": s["train_rows"],
            "fed_tokens": s["tokens_seen"], "run_s": s["train_s"] + s["reference_s"],
            "reference_s": s["reference_s"], "peak_mem_mib": peak_mib(), "losses": losses, "steps": s["steps"],
            "threads": torch.get_num_threads()}


def tunelab_budget(n: int) -> int:
    """A token budget of about BATCH_PAIRS mean packed pairs (at least the longest)."""
    from tunelab.models.loading import load_tokenizer, resolve
    from tunelab.templates.preference import encode_pairs

    enc = encode_pairs(load_tokenizer(resolve("default")[1]), pairs(n), max_length=MAX_LENGTH)
    lengths = [e.length for e in enc]
    return max(max(lengths), int(BATCH_PAIRS * sum(lengths) / len(lengths)))


def run_arm(name: str, argv: list[str], timeout: int, threads: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "arm.json"
    env = dict(os.environ, TUNELAB_QUIET="1", TUNELAB_NO_ENERGY="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))  # the same for both arms
    proc = subprocess.run([sys.executable, __file__, "--arm", name, "--result", str(out), *argv], env=env,
                          timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"arm {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=256, help="first N good pairs of hh_rlhf_harmless")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of both arms (this box: 2 cores)")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--batch-tokens", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        Path(args.result).write_text(json.dumps({"trl": arm_trl, "tunelab": arm_tunelab}[args.arm](args)))
        return
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError:
        sys.exit("the peer is TRL: pip install trl datasets   (test-only dependencies of tunelab)")
    n_pairs, std = standard_tokens(args.pairs)
    before = loadavg()
    peer = run_arm("trl", ["--pairs", str(args.pairs)], 7200, args.threads)
    ours = run_arm("tunelab", ["--pairs", str(args.pairs), "--batch-tokens", str(tunelab_budget(args.pairs))], 7200,
                   args.threads)
    ours["tokens"] = std  # one epoch: every kept pair once, counted in the usual layout
    print(report(peer, ours, n_pairs, std, before, loadavg()))


def report(peer: dict, ours: dict, n_pairs: int, std: int, before: str, after: str) -> str:
    lines = [f"\n{n_pairs} pairs kept at max_length={MAX_LENGTH} ({std} tokens as [prompt|chosen] + [prompt|rejected]); "
             f"beta {BETA}, lr {LR}, LoRA r16; load average before {before}, after {after}; threads "
             f"{peer['threads']} / {ours['threads']}",
             f"{'arm':54s} {'steps':>5s} {'pairs':>5s} {'tokens':>7s} {'fed':>7s} {'run s':>7s} {'tok/s':>7s} "
             f"{'peak MiB':>8s} {'final loss':>10s}"]
    for r in (peer, ours):
        lines.append(f"{r['arm']:54s} {r['steps']:5d} {r['pairs']:5d} {r['tokens']:7d} {r['fed_tokens']:7d} "
                     f"{r['run_s']:7.1f} {r['tokens'] / r['run_s']:7.1f} {r['peak_mem_mib']:8.0f} {r['losses'][-1]:10.4f}")
    lines.append(f"fed = tokens through the model: TRL's padded batches (gradient_checkpointing="
                 f"{peer['gradient_checkpointing']}), tunelab's packed pairs; tunelab's reference pass "
                 f"{ours['reference_s']:.1f} s is inside its run s")
    speed = (ours["tokens"] / ours["run_s"]) / (peer["tokens"] / peer["run_s"])
    mem = ours["peak_mem_mib"] / peer["peak_mem_mib"]
    lines.append(f"ratios: tokens/s ×{speed:.2f} (goal ≥ 3, moonshot 4), peak memory ×{mem:.2f} (goal ≤ 0.7), "
                 f"final loss {ours['losses'][-1]:.4f} vs {peer['losses'][-1]:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
