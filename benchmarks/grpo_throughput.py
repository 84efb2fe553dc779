"""GRPO throughput: tunelab vs TRL's GRPOTrainer + PEFT LoRA, side by side, same prompts, same CPU (issue 36).

Both arms train SmolLM2-135M-Instruct (the registry's `default`, fp32) with LoRA r 16 / alpha 32 on
all linear layers, on the same prompts of builtin:dates (the N = steps x prompts-per-step items whose
rendered length is nearest the median, so a token budget holds exactly P prompts' groups on
tunelab's side), rendered once by tunelab's task renderer (the chat template, as `tunelab train`
renders them) and handed to TRL as the same text. Per optimizer step: P prompts x G completions
sampled at temperature T, at most C new tokens, reward = tunelab's exact_match against the ISO
date (the same function object on both sides), group-normalised advantages, loss dapo, beta 0,
num_iterations 1, one micro-batch per step, constant learning rate, no warm-up steps.

TRL's settings that differ by default are set to tunelab's: per_device_train_batch_size P x G and
gradient_accumulation_steps 1 (so its generation batch is the step's P prompts), beta 0,
num_iterations 1, loss_type dapo, bf16 off, use_vllm off, no checkpoint saving, logging every
step, constant schedule. Left as a TRL user gets it: gradient_checkpointing (on by default in
GRPOConfig; recorded; `--trl-no-checkpointing` turns it off), HF generate on the whole generation
batch, padded training rows.

Tokens are counted the same way on both sides, from each side's own records: the completion
tokens generated (an end token included, as both sides keep it) plus the prompt + completion
tokens trained (num_iterations 1: each rollout trains once); TRL's from what its `_generate`
returns (the ids its num_input_tokens_seen counts), tunelab's from what its rollout function
returns. The same rows are trained on both sides (the same loss and gradient: tests/train/
test_grpo_trl.py); tunelab's forward feeds each group's prompt once rather than G times
(grpo_math.CompletionBatch), recorded as `fed_tokens` (its `tokens_seen`) beside the count.
Whole run: TRL's `trainer.train()`, tunelab's training loop (summary.json train_s: sampling,
rewards and training); the model loads before both clocks; no warm-up on either side (step 1 is
in both). Peak memory: each arm's own process's peak RSS.

Fallback measures (issue 36, where TRL hangs or fails; always measured, in a third process):
tunelab's rollout throughput (generated tokens / the loop's sampling seconds) against the
engine's plain generation of the same prompt texts, seeds, temperature and length on the base
model (infer.generate, the same batch size, no warm-up), goal >= 80%, and again on the base with a
fresh unmerged LoRA (the adapter's own cost, apart from the rollout path's); and its GRPO training
rate ((prompt + completion tokens) / (loop seconds - sampling seconds)) against its SFT rate
(`method: lora`, one epoch over the same rollouts as plain prompt/completion rows, same LoRA and
token budget).

    pip install trl datasets      # the peer (the `test` extra has them)
    flock /tmp/heavy.lock python benchmarks/grpo_throughput.py     # ~10-20 min on a quiet 2-core CPU
    python benchmarks/grpo_throughput.py --tiny --threads 1 --out /tmp/g   # plumbing: a tiny random model

A side that fails or runs past --timeout is recorded with its exit code and stderr tail (a hang:
every thread's stack, dumped by faulthandler just before the limit: TRL issue #3739 reports GRPO
hanging on CPU). Prints a table; writes OUT/grpo_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SPEED_GOAL, MEMORY_GOAL, ROLLOUT_GOAL = 3.0, 0.7, 0.8


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


# ---------------------------------------------------------------- the shared prompts
def grpo_cfg(args, data: str, out: str) -> dict:
    """tunelab's run config; the TRL arm reads the same numbers from args (before choose_prompts sizes the
    budget, a provisional one: only the prompts are rendered then)."""
    return {
        "name": "grpo-bench", "model": args.model, "method": "grpo",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        "data": {"train": data, "eval": None, "max_length": getattr(args, "max_length", 1024)},
        "grpo": {"weights": "lora", "num_generations": args.G, "max_completion_length": args.max_completion_length,
                 "temperature": args.temperature, "beta": 0.0, "num_iterations": 1, "loss_type": "dapo",
                 "rewards": [{"metric": "exact_match", "weight": 1.0}], "log_completions_every": 10**6},
        "train": {"max_steps": args.steps, "batch_tokens": getattr(args, "batch_tokens", 8192), "grad_accum": 1, "lr": args.lr,
                  "schedule": "constant", "warmup": 0, "save_every": 10**6, "eval_every": 10**6, "seed": 42},
        "out": out,
    }


def rendered(args, data: str):
    """(tunelab's providers for this run, the prompts as it renders them, the tokenizer): what both arms train on."""
    from tunelab.config import TrainConfig
    from tunelab.evaluate.rewards import providers
    from tunelab.models.loading import load_tokenizer, resolve

    cfg = TrainConfig.model_validate(grpo_cfg(args, data, "unused"))
    given = providers(cfg, None)
    tok = load_tokenizer(resolve(args.model)[1])
    prompts = given["prompts"](argparse.Namespace(tokenizer=tok))  # the provider reads the source's tokenizer only
    return given, prompts, tok


def choose_prompts(args, work: Path) -> dict:
    """Write the N prompts nearest the median rendered length to work/prompts.jsonl, and size the token
    budget so that one micro-batch holds exactly P prompts' groups: P x (longest + G x C) tokens (a group
    feeds its prompt once: objectives/grpo.py's group_tokens), which P + 1 of the shortest exceed."""
    from tunelab.data.load import load_rows
    from tunelab.train.objectives.grpo import group_tokens

    n, P, G, C = args.steps * args.prompts_per_step, args.prompts_per_step, args.G, args.max_completion_length
    rows = [r.data for r in load_rows(f"builtin:dates?n={max(4 * n, 64)}")]
    pool = work / "pool.jsonl"
    pool.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in rows))
    _, prompts, tok = rendered(args, str(pool))
    lengths = [len(tok(p.text, add_special_tokens=False)["input_ids"]) for p in prompts]
    mid = statistics.median(lengths)
    keep = sorted(range(len(rows)), key=lambda i: (abs(lengths[i] - mid), i))[:n]
    lo, hi = min(lengths[i] for i in keep), max(lengths[i] for i in keep)
    budget = P * group_tokens(hi, G, C)
    if (P + 1) * group_tokens(lo, G, C) <= budget:
        sys.exit(f"prompt lengths {lo}..{hi} are too spread for exactly {P} prompts per token budget; "
                 "use fewer --steps or --prompts-per-step")
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": rows[i]["prompt"], "completion": rows[i]["completion"]}) + "\n"
                            for i in sorted(keep)))
    return {"data": str(data), "batch_tokens": budget, "max_length": hi + C + 8, "prompt_tokens": [lo, hi],
            "prompts": n}


# ---------------------------------------------------------------- the arms (each in its own process)
def trl_config(args):
    """GRPOConfig with tunelab's settings where TRL's defaults differ (the module docstring lists them)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.prompts_per_step * args.G,
        gradient_accumulation_steps=1, num_generations=args.G, max_completion_length=args.max_completion_length,
        temperature=args.temperature, top_p=1.0, beta=0.0, num_iterations=1, loss_type="dapo", scale_rewards="group",
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_steps=args.steps,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False, use_vllm=False, seed=42,
        gradient_checkpointing=not args.trl_no_checkpointing, dataloader_num_workers=0)


def arm_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from tunelab.models.loading import resolve

    torch.manual_seed(0)
    given, prompts, _ = rendered(args, args.data)
    reward = given["rewards"][0]  # tunelab's exact_match, the function the other arm calls

    def exact_match(prompts, completions, gold, **kw):
        return [reward.fn(c, {"gold": g}) for c, g in zip(completions, gold)]

    folder = resolve(args.model)[1]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    cfg = trl_config(args)
    trainer = GRPOTrainer(model=model, reward_funcs=[exact_match], args=cfg, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p.text, "gold": p.item["gold"]} for p in prompts]),
                          peft_config=lora_config())
    counts = {"generated": 0, "prompt": 0, "completions": 0, "per_step": []}
    generate = trainer._generate

    def counted(batch_prompts):  # what TRL generated: the ids its num_input_tokens_seen counts
        out = generate(batch_prompts)
        prompt_ids, completion_ids = out[0], out[1]
        counts["per_step"].append(len(completion_ids) // args.G)
        counts["completions"] += len(completion_ids)
        counts["prompt"] += sum(len(p) for p in prompt_ids)
        counts["generated"] += sum(len(c) for c in completion_ids)
        return out

    trainer._generate = counted
    logged = []

    class Logs(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                logged.append({k: logs[k] for k in ("reward", "num_tokens") if k in logs})

    trainer.add_callback(Logs())
    t0 = time.perf_counter()
    trainer.train()
    run_s = time.perf_counter() - t0
    return {"arm": "TRL GRPOTrainer + PEFT LoRA", "steps": trainer.state.global_step,
            "prompts": counts["completions"] // args.G, "completions": counts["completions"],
            "generated_tokens": counts["generated"], "trained_tokens": counts["prompt"] + counts["generated"],
            "prompt_tokens": counts["prompt"], "run_s": run_s, "peak_mem_mib": peak_mib(),
            "rewards": [r["reward"] for r in logged],
            "trl_num_tokens": logged[-1].get("num_tokens") if logged else None, "prompts_per_step": counts["per_step"],
            "gradient_checkpointing": bool(cfg.gradient_checkpointing),
            "threads": torch.get_num_threads()}


def arm_tunelab(args) -> dict:
    import torch

    from tunelab.train.loop import train

    given, _, _ = rendered(args, args.data)
    sample = given["rollout"]
    record = {"generated": 0, "prompt": 0, "completions": 0, "fed": 0, "per_step": [], "rollouts": [], "s": 0.0}

    def rollout(model, tokenizer, texts, seeds, sampling):  # tunelab's rollout function, counted and timed
        t0 = time.perf_counter()
        outs = sample(model, tokenizer, texts, seeds, sampling)
        record["s"] += time.perf_counter() - t0
        record["per_step"].append(len(outs) // args.G)
        record["completions"] += len(outs)
        record["prompt"] += sum(len(o.prompt_ids) for o in outs)
        record["generated"] += sum(len(o.completion_ids) for o in outs)
        # what the training forward feeds: each group's prompt once, each completion but its last token
        record["fed"] += sum(len(o.prompt_ids) for o in outs[::args.G]) + sum(len(o.completion_ids) - 1 for o in outs)
        record["rollouts"] += [{"text": t, "seed": s, "completion": o.text} for t, s, o in zip(texts, seeds, outs)]
        return outs

    work = Path(tempfile.mkdtemp())
    res = train(grpo_cfg(args, args.data, str(work / "run")), providers={**given, "rollout": rollout})
    s = res.summary
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    Path(args.rollouts).write_text(json.dumps(record["rollouts"]))
    return {"arm": "tunelab (engine rollouts on the live adapter)", "steps": s["steps"],
            "prompts": record["completions"] // args.G, "completions": record["completions"],
            "generated_tokens": record["generated"], "trained_tokens": record["prompt"] + record["generated"],
            "prompt_tokens": record["prompt"], "run_s": s["train_s"], "generate_s": record["s"],
            "step_generate_s": sum(r["generate_s"] for r in rows),
            "tokens_seen": s["tokens_seen"], "fed_tokens": record["fed"], "peak_mem_mib": peak_mib(), "rewards": [r["reward"] for r in rows],
            "prompts_per_step": record["per_step"],
            "threads": torch.get_num_threads()}


def plain_generation(model, tokenizer, done: list, args) -> tuple[int, float]:
    """(tokens generated, seconds): the engine's batched generation of the rollouts' prompt texts, with their
    seeds, one call per step as the rollout function gets them, the rollout function's batch size."""
    from tunelab.infer.generate import generate
    from tunelab.infer.rollout import batch_size

    step, generated, t0 = args.prompts_per_step * args.G, 0, time.perf_counter()
    for k in range(0, len(done), step):
        chunk = done[k:k + step]
        texts = [r["text"] for r in chunk]
        gens = generate(model, tokenizer, texts, seeds=[r["seed"] for r in chunk],
                        max_new_tokens=args.max_completion_length, temperature=args.temperature, top_p=1.0,
                        batch_size=batch_size(tokenizer, texts, args.max_completion_length))  # as the rollouts
        generated += sum(len(g.ids) for g in gens)
    return generated, time.perf_counter() - t0


def arm_parts(args) -> dict:
    """The fallback measures: the engine's plain generation of the rollouts' prompts (the base model, as
    `tunelab eval` runs it; then with a fresh unmerged LoRA, as the rollouts run, to tell the adapter's cost
    from the rollout path's), and tunelab's SFT rate on the rollouts as prompt/completion rows."""
    import torch
    from peft import get_peft_model

    from tunelab.infer.load import open_backend
    from tunelab.train.loop import train

    done = json.loads(Path(args.rollouts).read_text())
    backend = open_backend(args.model, device="cpu")
    model, tok = backend.lm.model, backend.tokenizer
    generated, plain_s = plain_generation(model, tok, done, args)
    with_lora, lora_s = plain_generation(get_peft_model(model, lora_config()), tok, done, args)
    del backend, model
    work = Path(tempfile.mkdtemp())  # the rollouts as SFT rows: the rendered prompt as it is, the completion trained
    (work / "sft.jsonl").write_text("".join(json.dumps({"prompt": r["text"], "completion": r["completion"]}) + "\n"
                                            for r in done))
    cfg = grpo_cfg(args, str(work / "sft.jsonl"), str(work / "sft"))
    cfg.update(method="lora", name="sft-bench")
    cfg["data"]["format"] = "plain"
    cfg["train"].pop("max_steps")
    cfg["train"]["epochs"] = 1  # every rollout once, packed into the GRPO run's token budget
    cfg.pop("grpo")
    s = train(cfg).summary
    return {"plain_generated_tokens": generated, "plain_s": plain_s, "plain_lora_generated_tokens": with_lora,
            "plain_lora_s": lora_s, "sft_tokens": s["tokens_seen"],
            "sft_s": s["train_s"], "sft_steps": s["steps"], "threads": torch.get_num_threads()}


def arm_hang(args) -> dict:
    """An arm that never ends (tests/train/test_grpo_bench_plumbing.py): what a hung side leaves as evidence."""
    while True:
        time.sleep(1)


ARMS = {"trl": arm_trl, "tunelab": arm_tunelab, "parts": arm_parts, "hang": arm_hang}


# ---------------------------------------------------------------- the parent: runs the arms, reports
def run_arm(name: str, spec: dict, timeout: int, threads: int, work: Path) -> dict:
    """One arm in its own process (its own peak RSS), with a hard limit; a failure or a hang is kept as evidence."""
    import signal

    result, log = work / f"{name}.json", work / f"{name}.log"
    # the stacks are dumped a little before the kill (20 s, or a quarter of a short limit)
    (work / f"{name}.spec.json").write_text(json.dumps({**spec, "hang_dump_s": timeout - min(20, timeout / 4)}))
    env = dict(os.environ, TUNELAB_QUIET="1", TUNELAB_NO_ENERGY="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))  # the same for every arm
    t0, failure = time.perf_counter(), None
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--arm", name, "--spec", str(work / f"{name}.spec.json"),
                                 "--result", str(result)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout)
            failure = None if rc == 0 and result.is_file() else f"exit code {rc}"
        except subprocess.TimeoutExpired:
            failure = f"no result after the {timeout} s limit (killed)"
        finally:  # a hang, or Ctrl-C here: the arm's process group goes, nothing it started survives it
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.perf_counter() - t0
    if failure:
        print(f"arm {name} FAILED: {failure}; its log: {log}", flush=True)
        return {"arm": name, "ok": False, "failure": failure, "process_s": wall,
                "stderr_tail": log.read_text(errors="replace")[-6000:]}
    return {**json.loads(result.read_text()), "ok": True, "process_s": wall}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def rate(r: dict) -> float:
    return (r["generated_tokens"] + r["trained_tokens"]) / r["run_s"]


def ratios(peer: dict, ours: dict, parts: dict) -> dict:
    out = {}
    if peer["ok"] and ours["ok"]:
        out["tokens_per_s"] = rate(ours) / rate(peer)
        out["peak_memory"] = ours["peak_mem_mib"] / peer["peak_mem_mib"]
        out["same_prompt_tokens"] = ours["prompt_tokens"] == peer["prompt_tokens"]
        out["trl_count_is_its_num_tokens"] = peer["trl_num_tokens"] == peer["trained_tokens"]
    if ours["ok"] and parts.get("ok"):
        out["rollout_vs_plain_generation"] = (ours["generated_tokens"] / ours["generate_s"]) / (
            parts["plain_generated_tokens"] / parts["plain_s"])
        out["rollout_vs_plain_generation_with_lora"] = (ours["generated_tokens"] / ours["generate_s"]) / (
            parts["plain_lora_generated_tokens"] / parts["plain_lora_s"])
        out["grpo_training_vs_sft"] = (ours["trained_tokens"] / (ours["run_s"] - ours["generate_s"])) / (
            parts["sft_tokens"] / parts["sft_s"])
    return out


def report(res: dict) -> str:
    s, r = res["settings"], res["ratios"]
    lines = [f"\n{s['prompts']} prompts of builtin:dates ({s['prompt_tokens'][0]}-{s['prompt_tokens'][1]} tokens), "
             f"{s['steps']} steps x {s['prompts_per_step']} prompts x G {s['G']}, at most {s['max_completion_length']} "
             f"new tokens, temperature {s['temperature']}, lr {s['lr']}, LoRA r16; model {s['model']}; load average "
             f"before {res['load_before']}, after {res['load_after']}",
             f"{'arm':48s} {'steps':>5s} {'prompts':>7s} {'generated':>9s} {'trained':>8s} {'run s':>7s} "
             f"{'tok/s':>7s} {'peak MiB':>8s} {'reward first/last':>17s}"]
    for a in (res["trl"], res["tunelab"]):
        if not a["ok"]:
            lines.append(f"{a['arm']:48s} FAILED: {a['failure']} (stderr tail in the JSON)")
            continue
        rw = a["rewards"] or [float("nan")]
        lines.append(f"{a['arm']:48s} {a['steps']:5d} {a['prompts']:7d} {a['generated_tokens']:9d} "
                     f"{a['trained_tokens']:8d} {a['run_s']:7.1f} {rate(a):7.1f} {a['peak_mem_mib']:8.0f} "
                     f"{rw[0]:8.3f}/{rw[-1]:.3f}")
    lines.append("tokens = completion tokens generated + prompt and completion tokens trained, from each side's "
                 f"own records; TRL gradient_checkpointing={res['trl'].get('gradient_checkpointing')}")
    if res["tunelab"]["ok"]:
        o = res["tunelab"]
        lines.append(f"tunelab's training forward fed {o['fed_tokens']} tokens for the {o['trained_tokens']} trained "
                     "(each group's prompt once)")
    if "tokens_per_s" in r:
        lines.append(f"ratios: tokens/s x{r['tokens_per_s']:.2f} (goal >= {SPEED_GOAL:g}), peak memory "
                     f"x{r['peak_memory']:.2f} (goal <= {MEMORY_GOAL:g}); same prompt tokens on both sides: "
                     f"{r['same_prompt_tokens']}")
    if "rollout_vs_plain_generation" in r:
        p, o = res["parts"], res["tunelab"]
        lines.append(f"fallback: rollouts {o['generated_tokens'] / o['generate_s']:.1f} tok/s vs the engine's plain "
                     f"generation {p['plain_generated_tokens'] / p['plain_s']:.1f} tok/s = "
                     f"{r['rollout_vs_plain_generation']:.2f} (goal >= {ROLLOUT_GOAL:g}; with an unmerged LoRA "
                     f"{p['plain_lora_generated_tokens'] / p['plain_lora_s']:.1f} tok/s = "
                     f"{r['rollout_vs_plain_generation_with_lora']:.2f}); GRPO training "
                     f"{o['trained_tokens'] / (o['run_s'] - o['generate_s']):.1f} tok/s vs SFT "
                     f"{p['sft_tokens'] / p['sft_s']:.1f} tok/s = {r['grpo_training_vs_sft']:.2f}")
    return "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="registry name or Hugging Face folder (default: default)")
    p.add_argument("--tiny", action="store_true", help="plumbing: a tiny random model and tiny sizes (seconds)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per side (default 16; --tiny 2)")
    p.add_argument("--prompts-per-step", type=int, default=None, help="prompts per step, P (default 4; --tiny 2)")
    p.add_argument("--G", type=int, default=None, help="completions per prompt, num_generations (default 8; --tiny 4)")
    p.add_argument("--max-completion-length", type=int, default=None, help="C (default 16; --tiny 6)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5, help="both sides (tunelab's LoRA GRPO rate)")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of every arm (this box: 2 cores)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per arm before it is killed as hung")
    p.add_argument("--trl-no-checkpointing", action="store_true", help="TRL without its default gradient checkpointing")
    p.add_argument("--skip-trl", action="store_true", help="tunelab and the fallback measures only")
    p.add_argument("--out", default="runs/grpo-throughput", help="folder for grpo_throughput.json and the arms' logs")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    small = {"steps": 2, "prompts_per_step": 2, "G": 4, "max_completion_length": 6}
    big = {"steps": 16, "prompts_per_step": 4, "G": 8, "max_completion_length": 16}
    for k, v in (small if args.tiny else big).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def child(args) -> None:
    import faulthandler

    spec = argparse.Namespace(**json.loads(Path(args.spec).read_text()))
    faulthandler.dump_traceback_later(spec.hang_dump_s, exit=False)  # a hang leaves every thread's stack in the log
    Path(args.result).write_text(json.dumps(ARMS[args.arm](spec)))


def main(argv=None) -> int:
    args = parse(argv)
    if args.arm:
        child(args)
        return 0
    from importlib.metadata import PackageNotFoundError, version

    try:  # the version only: the arms import TRL in their own processes
        trl_version, _ = version("trl"), version("datasets")
    except PackageNotFoundError:
        sys.exit("the peer is TRL: pip install trl datasets   (test-only dependencies of tunelab)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny and args.model is None:
        from tunelab.models.tiny import save_tiny

        args.model = str(save_tiny(out / "tiny-llama"))
    args.model = args.model or "default"
    chosen = choose_prompts(args, out)
    args.batch_tokens, args.max_length = chosen["batch_tokens"], chosen["max_length"]
    spec = {k: v for k, v in vars(args).items() if k not in ("arm", "spec", "result")}
    spec.update(data=chosen["data"], rollouts=str(out / "rollouts.json"))
    res = {"settings": {**spec, **chosen}, "load_before": loadavg(), "trl_version": trl_version}
    skipped = {"arm": "TRL GRPOTrainer + PEFT LoRA", "ok": False, "failure": "skipped (--skip-trl)"}
    res["trl"] = skipped if args.skip_trl else run_arm("trl", spec, args.timeout, args.threads, out)
    res["tunelab"] = run_arm("tunelab", spec, args.timeout, args.threads, out)
    res["parts"] = run_arm("parts", spec, args.timeout, args.threads, out) if res["tunelab"]["ok"] else {"ok": False}
    res["load_after"] = loadavg()
    res["ratios"] = ratios(res["trl"], res["tunelab"], res["parts"])
    res["goals"] = {"tokens_per_s": SPEED_GOAL, "peak_memory": MEMORY_GOAL, "rollout_vs_plain_generation": ROLLOUT_GOAL}
    (out / "grpo_throughput.json").write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))
    print(f"wrote {out / 'grpo_throughput.json'}")
    return 0 if res["tunelab"]["ok"] and res["parts"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
