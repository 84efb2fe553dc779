"""GPU smoke test for the training engine: a few steps each of LoRA, DoRA, QLoRA and full on CUDA.

Self-contained (a small random Llama and generated rows, written to a temp folder; no network),
bounded (well under 3 minutes on an H100, most of it the first flex_attention compile), prints
numbers and exits non-zero on the first failure.

Checks:
1. packed-row isolation on CUDA with flex_attention: the loss of a packed row equals the
   documents run one by one (bf16 tolerance), and a row without the document mask differs;
2. `tunelab.train` with method lora, dora, qlora (bitsandbytes 4-bit base) and full, bf16
   autocast, fused AdamW, compiled layers (train.compile: auto): loss goes down, the run folder is
   complete, the compilation count stays small (fixed shapes), and whole-run and steady-state
   tokens/s, MFU and peak memory are printed. QLoRA needs bitsandbytes; without it that method
   FAILS (benchmarks/device_run.sh installs a carried wheel first).

    python benchmarks/gpu_smoke.py
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this smoke test needs a GPU")
        return 2
    os.environ.setdefault("TUNELAB_QUIET", "1")
    os.environ.setdefault("TUNELAB_NO_ENERGY", "1")
    os.environ.setdefault("TUNELAB_HOME", tempfile.mkdtemp())
    from tunelab.models.tiny import save_tiny, tiny_model
    from tunelab.train.loss import PackedCausalLM
    from tunelab.train.packing import collate, model_inputs

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    work = Path(tempfile.mkdtemp())

    # ---- 1. isolation with flex_attention on CUDA
    model = tiny_model(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4, intermediate_size=512)
    model = model.to("cuda", torch.bfloat16)
    model.set_attn_implementation("flex_attention")

    class Ex:
        def __init__(self, ids):
            self.input_ids, self.labels = ids, [-100] * 4 + ids[4:]

    r = random.Random(0)
    docs = [Ex([r.randrange(3, 512) for _ in range(r.randint(20, 300))]) for _ in range(6)]
    lm = PackedCausalLM(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        b = collate(docs).to("cuda")
        s, n = lm(**model_inputs(b, "flex_attention"), targets=b.targets)
        packed = float(s) / n
        alone_s, alone_n = 0.0, 0
        for d in docs:
            bd = collate([d]).to("cuda")
            sd, nd = lm(**model_inputs(bd, "flex_attention"), targets=bd.targets)
            alone_s, alone_n = alone_s + float(sd), alone_n + nd
        model.set_attn_implementation("sdpa")
        leak_s, _ = lm(b.input_ids, b.position_ids, torch.ones_like(b.input_ids), b.targets)
    alone, leaky = alone_s / alone_n, float(leak_s) / n
    print(f"isolation: packed {packed:.5f}  one-by-one {alone:.5f}  no-mask {leaky:.5f}  "
          f"({time.perf_counter() - t0:.1f}s incl. compile)")
    if abs(packed - alone) > 2e-2 or abs(packed - leaky) < 1e-3:
        print("FAIL: packed documents are not isolated under flex_attention")
        return 1

    # ---- 2. short runs through tunelab.train
    from tunelab.train.loop import train

    base = save_tiny(work / "base", hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4,
                     intermediate_size=512)
    data = work / "data.jsonl"
    with open(data, "w") as f:
        for _ in range(400):
            a, b_ = r.randint(0, 999), r.randint(0, 999)
            f.write(json.dumps({"prompt": f"What is {a} plus {b_}?", "completion": f"The answer is {a + b_}."}) + "\n")
    ok = True
    for method, lr in (("lora", 2e-3), ("dora", 2e-3), ("qlora", 2e-3), ("full", 3e-4)):
        if method == "qlora":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                print("FAIL: qlora needs bitsandbytes (pip install bitsandbytes, or carry its wheel)")
                ok = False
                continue
        t0 = time.perf_counter()
        res = train({"name": method, "model": str(base), "method": method, "data": {"train": str(data), "eval": 0.05},
                     "train": {"max_steps": 30, "batch_tokens": 2048, "lr": lr, "eval_every": 15, "save_every": 15},
                     "out": str(work / "runs" / method)})
        rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
        s = res.summary
        first, last = rows[0]["loss"], sum(x["loss"] for x in rows[-5:]) / 5
        steady = s["steady_tokens_per_s"]
        print(f"{method:5s} loss {first:.3f} -> {last:.3f}  {s['tokens_per_s']:,.0f} tok/s run, "
              f"{'-' if steady is None else f'{steady:,.0f}'} steady  "
              f"mfu {s['mfu'] if s['mfu'] is None else round(s['mfu'], 4)}  peak {s['peak_mem_mib']:.0f} MiB  "
              f"compiles {s['compiles']}  rows {s['row_width']}  precision {s['precision']}  "
              f"({time.perf_counter() - t0:.1f}s)")
        if not (last < first and res.weights_dir.is_dir() and (res.run_dir / "summary.json").is_file()):
            print(f"FAIL: {method} did not train")
            ok = False
        if s["compiles"] > 8:  # one shape per run: a few graphs (train / eval modes), not one per step
            print(f"FAIL: {method} compiled {s['compiles']} graphs; shapes are not fixed")
            ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
