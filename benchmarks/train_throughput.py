"""Training throughput: tunelab vs the peer, side by side, same data, same hardware.

CPU (default): TRL SFTTrainer + PEFT LoRA, configured as a user would (prompt/completion data,
completion-only loss, default padding), against `tunelab.train` with its defaults (padding-free
packing, supervised-only chunked loss), on SmolLM2-135M-Instruct (the registry's `default`) and
512 rows of ../shared/data/alpaca_small/alpaca_small.json. Same effective batch (8 rows ≈ one
token budget), same LoRA (r 16, alpha 32, all linear layers), same learning rate and about the
same number of real tokens. Prints real (non-pad) tokens/s, peak memory, final loss and ratios.

    pip install trl            # the peer; not a tunelab dependency
    python benchmarks/train_throughput.py                  # ~5-8 min on a quiet 2-core CPU
    python benchmarks/train_throughput.py --trl-steps 12   # longer, less noisy
    python benchmarks/train_throughput.py --threads 1      # both arms single-threaded (busy box)

On a box shared with other jobs (load average above the core count) two OpenMP threads per
arm spend most of each small op waiting for a descheduled partner thread (~11 ms per op instead
of ~0.4 ms, measured); `--threads N` pins BOTH arms to N threads so the comparison stays fair.
The load average is printed before and after, since it moves every number.

GPU: `--device cuda --model-config llama-1b` trains a random-initialised Llama (16 layers,
hidden 2048, vocab 128256) on random token rows of uniform length 128..2048, bf16, against HF
Trainer + PEFT with default (pad-to-longest) batches, 60 optimizer steps per arm by default;
`--method full` for full fine-tuning. tunelab runs with its defaults there (flex_attention, fixed
row shapes, compiled layers) at the same real tokens per step as the peer's 8 rows.

    python benchmarks/train_throughput.py --device cuda --model-config llama-1b [--method full]
    bash benchmarks/device_run.sh      # smoke test + both methods, with timeouts, logs to $OUT

Printed per arm: steps, real tokens, tokens/s over the whole run (compilation included) and in
steady state (tunelab: after its last compiling step; the peers: after step 1), peak memory, the
final loss (and the mean of the last 3); then the ratios. `--model-config tiny` runs the same
random-model arms on a 2-layer model on any device (tests/train/test_bench_plumbing.py drives
them on CPU so the arms cannot break unseen).

Each arm runs in its own subprocess so peak memory (RSS on CPU, CUDA max allocated on GPU) is
the arm's own. Nothing is downloaded: the default model must be cached (`tunelab models pull`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_small" / "alpaca_small.json"
BATCH_ROWS = 8  # the peer's per-device batch; tunelab's token budget is set to match it
LR = 2e-4
MAX_LENGTH = 512


# ---------------------------------------------------------------- shared helpers
def peak_mib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def alpaca_rows(n: int) -> list[dict]:
    rows = json.loads(ALPACA.read_text())[:n]
    return [{"prompt": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), "completion": r["output"]}
            for r in rows]


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


# ---------------------------------------------------------------- CPU arms
def arm_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunelab.models.loading import resolve

    torch.manual_seed(0)
    _, folder = resolve("default")
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["completion"]}]} for r in alpaca_rows(args.rows)]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    cfg = SFTConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH_ROWS, gradient_accumulation_steps=1,
        max_steps=args.trl_steps, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.03,
        logging_steps=1, save_strategy="no", report_to=[], max_length=MAX_LENGTH,
        completion_only_loss=True, use_cpu=args.device == "cpu", bf16=False, seed=42, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora_config())
    counts = {"real": 0, "padded": 0, "trained": 0}

    def count(module, a, kwargs):
        # counted at the model's forward (the collator may prefetch batches that never train)
        ids, mask, labels = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs.get("labels")
        if module.training and ids is not None:
            counts["real"] += int(mask.sum()) if mask is not None else int(ids.numel())
            counts["padded"] += int(ids.numel())
            if labels is not None:
                counts["trained"] += int((labels[:, 1:] != -100).sum())

    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    losses, step_tokens, step_s, mark = [], [], [], {"t": 0.0, "real": 0}

    class Losses(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            mark["t"], mark["real"] = time.perf_counter(), counts["real"]

        def on_step_end(self, a, state, control, **kw):
            step_s.append(time.perf_counter() - mark["t"])
            step_tokens.append(counts["real"] - mark["real"])

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer.add_callback(Losses())
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    return {"arm": "TRL SFTTrainer + PEFT LoRA", "tokens": counts["real"], "padded_tokens": counts["padded"],
            "trained_tokens": counts["trained"], "train_s": train_s, "tokens_per_s": counts["real"] / train_s,
            "steady_tokens_per_s": steady_rate(step_tokens, step_s), "peak_mem_mib": peak_mib(args.device), "losses": losses, "steps": args.trl_steps,
            "gradient_checkpointing": cfg.gradient_checkpointing, "threads": torch.get_num_threads()}


def arm_tunelab(args) -> dict:
    import torch

    from tunelab.train.loop import train

    work = Path(tempfile.mkdtemp())
    data = work / "alpaca512.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(args.rows)))
    cfg = {
        "name": "bench", "model": "default", "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        "data": {"train": str(data), "eval": None, "max_length": MAX_LENGTH, "format": "prompt_completion"},
        "train": {"max_steps": args.tunelab_steps, "batch_tokens": args.batch_tokens, "lr": LR,
                  "schedule": "cosine", "warmup": 0.03, "save_every": 10_000, "eval_every": 10_000, "seed": 42},
        "out": str(work / "run"),
    }
    res = train(cfg)
    s = res.summary
    losses = [json.loads(x)["loss"] for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"arm": "tunelab (packing, per-doc attn, supervised loss)", "tokens": s["tokens_seen"],
            "padded_tokens": s["tokens_seen"], "trained_tokens": s["tokens_trained"], "train_s": s["train_s"],
            "tokens_per_s": s["tokens_per_s"], "steady_tokens_per_s": s["steady_tokens_per_s"],
            "peak_mem_mib": peak_mib(args.device), "losses": losses, "steps": s["steps"],
            "threads": torch.get_num_threads(), "row_width": s["row_width"]}


def tunelab_budget(args) -> tuple[int, float]:
    """Token budget ≈ 8 mean rows (the peer's batch), and tunelab's mean real tokens per step."""
    from tunelab.data.load import load_conversations
    from tunelab.models.loading import load_tokenizer, resolve
    from tunelab.templates import encode_all
    from tunelab.train.packing import plan_batches

    work = Path(tempfile.mkdtemp())
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(args.rows)))
    _, folder = resolve("default")
    enc = encode_all(load_tokenizer(folder), load_conversations(str(data), format="prompt_completion"),
                     max_length=MAX_LENGTH)
    lengths = [len(e.input_ids) for e in enc]
    budget = max(max(lengths), int(BATCH_ROWS * sum(lengths) / len(lengths)))
    plan = plan_batches(lengths, budget, seed=42)
    return budget, sum(lengths) / len(plan)


# ---------------------------------------------------------------- random-model arms (GPU; tiny on CPU for tests)
def random_model(name: str, device: str):
    """llama-1b: random-initialised Llama 3.2 1B shape (16 layers, hidden 2048, vocab 128256);
    tiny: tunelab's 2-layer test model (drives the plumbing in tests/benchmarks on CPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if name == "tiny":
        from tunelab.models.tiny import tiny_model

        return tiny_model().train().to(device)
    cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                      tie_word_embeddings=True, rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(cfg)


def random_rows(args) -> list[list[int]]:
    """args.gpu_rows rows of uniform length min_len..max_len, token ids below the model's vocab."""
    vocab = 512 if args.model_config == "tiny" else 128256
    r = random.Random(0)
    return [[r.randrange(3, vocab) for _ in range(r.randint(args.min_len, args.max_len))]
            for _ in range(args.gpu_rows)]


def steady_rate(tokens: list[int], seconds: list[float], skip: int = 1):
    """Real tokens/s over the steps after the first `skip` (None if there are none)."""
    t, s = sum(tokens[skip:]), sum(seconds[skip:])
    return t / s if s > 0 else None


def arm_hf(args) -> dict:
    import torch
    from peft import get_peft_model
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rows = random_rows(args)
    cuda = args.device == "cuda"
    model = random_model(args.model_config, args.device)
    if args.method == "lora":
        if cuda:
            model = model.to(torch.bfloat16)
        model = get_peft_model(model, lora_config())

    class Rows(Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return {"input_ids": rows[i]}

    def collate(features):  # what DataCollatorForLanguageModeling does: pad to the longest row
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, f in enumerate(features):
            ids[k, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[k, :len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    step_tokens, step_s, losses, seen = [], [], [], {"real": 0, "t": 0.0}

    def count(module, a, kwargs):  # at the forward: the data loader may prefetch unused batches
        if module.training and kwargs.get("attention_mask") is not None:
            seen["real"] += int(kwargs["attention_mask"].sum())

    class Steps(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            seen["real"], seen["t"] = 0, time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            step_tokens.append(seen["real"])
            step_s.append(time.perf_counter() - seen["t"])

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.gpu_batch,
                              max_steps=args.gpu_steps, learning_rate=LR, bf16=cuda, use_cpu=not cuda,
                              logging_steps=1, save_strategy="no", report_to=[], dataloader_num_workers=0, seed=42)
    trainer = Trainer(model=model, args=targs, train_dataset=Rows(), data_collator=collate, callbacks=[Steps()])
    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    return {"arm": f"HF Trainer + PEFT ({args.method})", "tokens": sum(step_tokens), "train_s": train_s,
            "tokens_per_s": sum(step_tokens) / train_s, "steady_tokens_per_s": steady_rate(step_tokens, step_s),
            "peak_mem_mib": peak_mib(args.device), "losses": losses, "steps": len(step_s)}


def arm_tunelab_random(args) -> dict:
    import torch

    from tunelab.config import load_train_config
    from tunelab.models.tiny import tiny_tokenizer
    from tunelab.templates import Encoded
    from tunelab.train.loop import Recipe
    from tunelab.train.state import ModelFacts
    from tunelab.train.packing import row_width

    rows = random_rows(args)
    # the same real tokens per step as the peer's batch of gpu_batch rows, rounded to the shape multiple
    budget = row_width(max(max(len(r) for r in rows), int(args.gpu_batch * sum(len(r) for r in rows) / len(rows))))
    model_config, device = args.model_config, args.device

    class Bench(Recipe):
        """The real recipe with an in-memory random model and rows (no files to write)."""

        def _load_base(self, device_):
            facts = ModelFacts(tiny_tokenizer(), f"{model_config}-random", Path("."), None, self.load_attn, False)
            model = random_model(model_config, device)
            # the kernel the recipe chose (flex_attention on CUDA); Recipe._setup_model checks it again
            model.set_attn_implementation(self.load_attn)
            return (model.to(torch.bfloat16) if (self.run.adapter and device == "cuda") else model), facts

        def _load_data(self, source):
            return [Encoded(r, list(r)) for r in rows], []

    work = Path(tempfile.mkdtemp())
    cfg = load_train_config({"name": "bench", "model": "unused", "method": args.method,
                             "data": {"train": "unused", "eval": None, "max_length": 4096},
                             "train": {"max_steps": args.gpu_steps, "batch_tokens": budget, "lr": LR,
                                       "save_every": 10_000, "eval_every": 10_000},
                             "out": str(work / "run")})
    recipe = Bench(cfg)
    recipe.setup()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    res = recipe.train()
    s = res.summary
    losses = [json.loads(x)["loss"] for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"arm": f"tunelab ({args.method}, {recipe.facts.attn}, compile={recipe.facts.compile})", "tokens": s["tokens_seen"],
            "train_s": s["train_s"], "tokens_per_s": s["tokens_per_s"],
            "steady_tokens_per_s": s["steady_tokens_per_s"], "peak_mem_mib": peak_mib(device), "losses": losses,
            "steps": s["steps"], "mfu": s["mfu"], "steady_mfu": s["steady_mfu"], "compiles": s["compiles"],
            "row_width": s["row_width"]}


# ---------------------------------------------------------------- driver
def run_arm(name: str, argv: list[str], timeout: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "arm.json"
    cmd = [sys.executable, __file__, "--arm", name, "--result", str(out), *argv]
    env = dict(os.environ, TUNELAB_QUIET="1", TUNELAB_NO_ENERGY="1", TOKENIZERS_PARALLELISM="false")
    if THREADS:  # the same for every arm: torch reads these at start-up
        env.update(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"arm {name} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(out.read_text())
    res["process_s"] = time.perf_counter() - t0
    return res


THREADS: int | None = None  # --threads, set by main() before any arm starts


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def tail_loss(losses: list[float], k: int = 3) -> float:
    tail = losses[-k:]
    return sum(tail) / len(tail)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model-config", default="smollm2-135m", choices=["smollm2-135m", "llama-1b", "tiny"])
    p.add_argument("--method", default="lora", choices=["lora", "full"])
    p.add_argument("--rows", type=int, default=512, help="alpaca_small rows in the data set (CPU)")
    p.add_argument("--trl-steps", type=int, default=6, help="TRL optimizer steps of 8 rows (CPU)")
    p.add_argument("--gpu-rows", type=int, default=512)
    p.add_argument("--gpu-batch", type=int, default=8)
    p.add_argument("--gpu-steps", type=int, default=60, help="optimizer steps of each arm (≥ 60 for the goals)")
    p.add_argument("--min-len", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--max-len", type=int, default=2048, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None,
                   help="torch/OpenMP threads for both arms (default: torch's own choice)")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--batch-tokens", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tunelab-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.arm:  # inside a subprocess: run one arm, write its numbers
        fn = {"trl": arm_trl, "tunelab": arm_tunelab, "hf_gpu": arm_hf, "tunelab_gpu": arm_tunelab_random}[args.arm]
        Path(args.result).write_text(json.dumps(fn(args)))
        return

    global THREADS
    THREADS = args.threads
    load_before = loadavg()
    if args.device == "cuda" or args.model_config != "smollm2-135m":
        if args.model_config == "smollm2-135m":
            sys.exit("--device cuda runs --model-config llama-1b (or tiny)")
        common = ["--device", args.device, "--model-config", args.model_config, "--gpu-rows", str(args.gpu_rows),
                  "--gpu-batch", str(args.gpu_batch), "--gpu-steps", str(args.gpu_steps), "--method", args.method,
                  "--min-len", str(args.min_len), "--max-len", str(args.max_len)]
        peer = run_arm("hf_gpu", common, 600)
        ours = run_arm("tunelab_gpu", common, 600)
    else:
        try:
            import trl  # noqa: F401
        except ImportError:
            sys.exit("the peer is TRL: pip install trl   (it is not a tunelab dependency)")
        budget, per_step = tunelab_budget(args)
        peer = run_arm("trl", ["--rows", str(args.rows), "--trl-steps", str(args.trl_steps)], 1800)
        steps = max(1, round(peer["tokens"] / per_step))  # about the same real tokens as the peer
        ours = run_arm("tunelab", ["--rows", str(args.rows), "--batch-tokens", str(budget),
                                   "--tunelab-steps", str(steps)], 1800)

    load_after = loadavg()
    print(report(peer, ours, args, load_before, load_after))


def report(peer: dict, ours: dict, args, load_before: str, load_after: str) -> str:
    """The side-by-side table and the ratios (whole run and steady state)."""
    def num(x, fmt):
        return format(x, fmt) if x is not None else "-"

    lines = [f"\nload average (1/5/15 min): before {load_before}, after {load_after}; "
             f"threads per arm: {peer.get('threads', '-')} / {ours.get('threads', '-')} (peer / tunelab)",
             f"{'arm':52s} {'steps':>5s} {'real tok':>9s} {'tok/s run':>9s} {'steady':>9s} {'peak MiB':>9s} "
             f"{'final loss':>10s} {'last3':>7s}"]
    for r in (peer, ours):
        lines.append(f"{r['arm']:52s} {r['steps']:5d} {r['tokens']:9d} {r['tokens_per_s']:9.1f} "
                     f"{num(r.get('steady_tokens_per_s'), '9.1f'):>9s} {r['peak_mem_mib']:9.0f} "
                     f"{r['losses'][-1]:10.4f} {tail_loss(r['losses']):7.4f}")
    if "padded_tokens" in peer:
        lines.append(f"peer padding: {peer['padded_tokens'] - peer['tokens']} pad tokens "
                     f"({1 - peer['tokens'] / peer['padded_tokens']:.0%} of its batches); "
                     f"gradient_checkpointing={peer.get('gradient_checkpointing')}")
    if "compiles" in ours:
        rows = f"rows padded to {ours['row_width']} tokens" if ours.get("row_width") else "rows of their own length"
        lines.append(f"tunelab: {ours['compiles']} compiled graph(s), {rows}, "
                     f"MFU whole run {num(ours.get('mfu'), '.3f')}, steady {num(ours.get('steady_mfu'), '.3f')}")
    speed = ours["tokens_per_s"] / peer["tokens_per_s"]
    steady = (ours["steady_tokens_per_s"] / peer["steady_tokens_per_s"]
              if ours.get("steady_tokens_per_s") and peer.get("steady_tokens_per_s") else None)
    mem = ours["peak_mem_mib"] / peer["peak_mem_mib"]
    goal = 3 if args.device == "cpu" else (4 if args.method == "lora" else 3)
    lines.append(f"ratios: tokens/s whole run ×{speed:.2f}, steady state ×{num(steady, '.2f')} (goal ≥ {goal}, whole run); "
                 f"peak memory ×{mem:.2f} (goal ≤ {0.7 if args.device == 'cpu' else 0.5}); "
                 f"final loss {ours['losses'][-1]:.4f} vs {peer['losses'][-1]:.4f} "
                 f"({ours['losses'][-1] / peer['losses'][-1] - 1:+.1%})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
