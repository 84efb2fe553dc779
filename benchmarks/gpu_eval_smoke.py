"""GPU smoke test for evaluation: packed scoring through flex_attention and generation on CUDA.

Self-contained (a small random Llama and generated items; no network), bounded (a minute or two
on an H100, most of it the first flex_attention compile), prints numbers, exits non-zero on the
first failed check.

Checks, in fp32 so the two attention paths can be compared tightly:
1. multiple choice with a shared few-shot prefix and contexts that share tokens (the token tree):
   rows run through flex_attention (loglik.FLEX_DEVICES, the CUDA default) give the scores of the
   per-segment sdpa path and of one sequence per choice (1e-3), and the same choices;
2. perplexity windows: the same;
3. flex_attention's compiled graphs stay few over rows of many widths (no compile per row);
4. greedy generation with continuous batching equals each prompt generated alone.
Then, in bf16 (the CUDA default), the whole-call time of flex rows against per-segment sdpa rows.

    python benchmarks/gpu_eval_smoke.py                 # needs CUDA
    python benchmarks/gpu_eval_smoke.py --device cpu    # this script's plumbing (eager flex), seconds
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

MAX_COMPILES = 8  # a dynamic-shape graph after the first recompile, not one per row width


def _items(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    """BBQ-shaped requests: five demonstrations, then passages asked about twice, one extended."""
    demos = "".join(f"Question: what comes after {i}?\nAnswer: {i + 1}\n\n" for i in range(5))
    words = "the a river town friend doctor nurse came late early with without rain sun old young".split()
    out = []
    for i in range(n):
        passage = " ".join(rng.choice(words) for _ in range(20 + i % 7)) + ". "
        more = " ".join(rng.choice(words) for _ in range(12)) + ". " if i % 3 == 0 else ""
        for question in ("Who was late?", "Who was early?"):
            choices = [" " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(3)]
            out.append((f"{demos}{passage}{more}Question: {question}\nAnswer:", choices))
    return out


def _scores(loglik, model, tok, requests, flex_devices, batch_size=8):
    saved = loglik.FLEX_DEVICES
    loglik.FLEX_DEVICES = flex_devices
    try:
        return loglik.score_choices(model, tok, requests, batch_size=batch_size)
    finally:
        loglik.FLEX_DEVICES = saved


def _max_gap(a, b) -> tuple[float, int]:
    """(largest |log-likelihood difference|, items whose chosen answer differs)."""
    gap = max(abs(x - y) for p, q in zip(a, b) for (x, _), (y, _) in zip(p, q))
    pick = lambda s: max(range(len(s)), key=lambda j: s[j][0])  # noqa: E731
    return gap, sum(pick(p) != pick(q) for p, q in zip(a, b))


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--items", type=int, default=48, help="passages (each asked twice)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu to check this script's plumbing")
        return 2
    os.environ.setdefault("TUNELAB_QUIET", "1")
    os.environ.setdefault("TUNELAB_HOME", tempfile.mkdtemp())
    import warnings

    # on a CPU flex runs eagerly on purpose (the plumbing check); CUDA compiles it
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    from tunelab.infer import loglik
    from tunelab.infer.generate import generate
    from tunelab.models.tiny import tiny_model_and_tokenizer
    from tunelab.train.cost import compile_count

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device: {name}  torch {torch.__version__}")
    model, tok = tiny_model_and_tokenizer(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4,
                                          intermediate_size=512)
    model = model.to(dev, torch.float32).eval()
    rng = random.Random(0)
    requests = _items(rng, args.items)
    ok = True

    # ---- 1. multiple choice: flex rows = per-segment rows = one sequence per choice
    compiles = compile_count()
    t = time.perf_counter()
    flex = _scores(loglik, model, tok, requests, (dev.type,))
    t_first = time.perf_counter() - t
    spans = _scores(loglik, model, tok, requests, ())
    gap, differ = _max_gap(flex, spans)
    ref = [loglik.score_reference(model, tok, c, k) for c, k in requests[:8]]
    gap_ref, _ = _max_gap(flex[:8], ref)
    print(f"multiple choice: {len(requests)} items, flex vs per-segment max |dll| {gap:.1e}, differ {differ}; "
          f"vs one sequence per choice {gap_ref:.1e}  (first call {t_first:.1f}s incl. compile)")
    if gap > 1e-3 or differ or gap_ref > 1e-3:
        print("FAIL: flex_attention rows do not score like the per-segment path")
        ok = False

    # ---- 2. perplexity windows
    texts = [" ".join(rng.choice("abcdefgh") * rng.randint(1, 5) for _ in range(rng.randint(20, 400)))
             for _ in range(12)]
    saved = loglik.FLEX_DEVICES
    try:
        loglik.FLEX_DEVICES = (dev.type,)
        p_flex = loglik.rolling_loglik(model, tok, texts, batch_size=4, max_seq_len=256)
        loglik.FLEX_DEVICES = ()
        p_spans = loglik.rolling_loglik(model, tok, texts, batch_size=4, max_seq_len=256)
    finally:
        loglik.FLEX_DEVICES = saved
    p_gap = max(abs(a - b) for (a, _), (b, _) in zip(p_flex, p_spans))
    print(f"perplexity: {len(texts)} texts, flex vs per-segment max |dll| {p_gap:.1e}")
    if p_gap > 1e-2 or [n for _, n in p_flex] != [n for _, n in p_spans]:
        print("FAIL: flex_attention perplexity differs")
        ok = False

    # ---- 3. compiled graphs over rows of many widths
    built = compile_count() - compiles
    print(f"compiled graphs during scoring: {built}")
    if built > MAX_COMPILES:
        print(f"FAIL: {built} graphs: flex_attention recompiles per row")
        ok = False

    # ---- 4. greedy generation, continuous batching = alone
    prompts = [c[-60:] for c, _ in requests[:12]]
    together = generate(model, tok, prompts, max_new_tokens=12, batch_size=4)
    alone = [generate(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts[:4]]
    same = all(a.text == b.text for a, b in zip(together, alone))
    print(f"generation: {len(prompts)} prompts, batched = alone on the first 4: {same}")
    if not same:
        print("FAIL: batched greedy generation differs from generating alone")
        ok = False

    # ---- timing in the device's default precision (bf16 on CUDA)
    if dev.type == "cuda":
        model = model.to(torch.bfloat16)
        for label, devices in (("flex", (dev.type,)), ("per-segment sdpa", ())):
            _scores(loglik, model, tok, requests[:8], devices)  # warm-up (compile)
            torch.cuda.synchronize()
            t = time.perf_counter()
            _scores(loglik, model, tok, requests, devices, batch_size=64)
            torch.cuda.synchronize()
            print(f"bf16 scoring, {label}: {len(requests) / (time.perf_counter() - t):.1f} items/s (whole call)")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
