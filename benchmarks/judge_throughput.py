"""Judge throughput: does judging add overhead of its own? (issue 35's goals; docs/judge.md)

    python benchmarks/judge_throughput.py                          # default model, CPU, both sides (~10 min)
    python benchmarks/judge_throughput.py --device cuda --pairs 100 --endpoint-pairs 48 --max-new-tokens 128
    python benchmarks/judge_throughput.py --only local --pairs 20 --max-new-tokens 32

The judge prompts are tunelab's pairwise template over the built-in LLMBar Natural pairs (shipped
with tunelab; the shortest when fewer than its 100 are asked for), each pair in both orders,
greedy, at most --max-new-tokens each.

- local: the same loaded model (tunelab's LocalBackend), two ways over the same prompts, batch
  --batch-size: the engine's plain batched generation of the rendered judge prompts
  (`backend.generate`, one call for all), and the judge (`judge_both_orders`: its request keys,
  the cache lookups and writes to a fresh cache file, the context-length check, the chunked calls to
  the same engine, the verdict parsing). Goal: judge >= 90% of plain, in prompts/s.
- endpoint: `tunelab serve MODEL` started in its own process on 127.0.0.1 (a free port; or
  --endpoint openai:URL#NAME, a server already running), judged through the judge's own endpoint
  path twice, each with a fresh cache: `judge.concurrency` 8 and 1 (one request at a time).
  Goal: concurrency 8 >= 5x one at a time, in prompts/s.

Whole-run numbers: wall time from the first prompt to the last judgment, after one untimed warm-up
of a few prompts on each side; the model loads before any clock starts. Printed: prompts/s,
generated tokens, tokens/s per side, and the ratios with their goals.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
LOCAL_GOAL, ENDPOINT_GOAL = 0.90, 5.0


def judge_pairs(n: int) -> list:
    """The n shortest LLMBar Natural pairs (all 100: every pair) as the judge's Pair (question, two answers)."""
    from tunelab.evaluate.judge.labels import load_pairs
    from tunelab.evaluate.judge.pairwise import Pair

    pairs = load_pairs("builtin:llmbar-natural")
    if n > len(pairs):
        sys.exit(f"builtin:llmbar-natural has {len(pairs)} pairs; ask for at most that many")
    pairs.sort(key=lambda p: len(p.question) + len(p.answers[0]) + len(p.answers[1]))
    return [Pair(p.question, *p.answers) for p in pairs[:n]]


def make_judge(model: str, concurrency: int, max_new_tokens: int, cache_dir: str, backend=None):
    """A judge with its own fresh cache file (nothing cached: every prompt is judged)."""
    from tunelab.evaluate.judge.run import Judge, JudgeSettings

    path = tempfile.mkstemp(suffix=".sqlite", dir=cache_dir)[1]
    os.unlink(path)
    return Judge(JudgeSettings(model, concurrency=concurrency, max_new_tokens=max_new_tokens, cache_path=path),
                 backend=backend)


def run_judge(judge, pairs) -> dict:
    from tunelab.evaluate.judge.pairwise import judge_both_orders
    from tunelab.evaluate.judge.prompts import JudgeTemplate

    template = JudgeTemplate.load("pairwise", None)
    t0 = time.perf_counter()
    judged = judge_both_orders(judge, template, pairs, None)
    wall = time.perf_counter() - t0
    return {"wall": wall, "prompts": 2 * len(pairs), "tokens": judge.cost.generated_tokens,
            "unparsed": sum(v is None for j in judged for v in j.verdicts)}


def run_plain(backend, pairs, batch_size: int, max_new_tokens: int) -> dict:
    """The engine alone on the judge's prompts, rendered with the model's chat template as the judge renders
    them (before the clock): one batched generate call, greedy."""
    from tunelab.evaluate.judge.pairwise import pair_requests
    from tunelab.evaluate.judge.prompts import JudgeTemplate
    from tunelab.fewshot.context import Context
    from tunelab.templates.render import render_prompt

    requests = pair_requests(JudgeTemplate.load("pairwise", None), pairs, None)
    contexts = [Context(text=render_prompt(backend.tokenizer, r.messages), demos=[], messages=r.messages)
                for r in requests]
    t0 = time.perf_counter()
    outs = backend.generate(contexts, [None] * len(contexts), batch_size=batch_size, max_new_tokens=max_new_tokens,
                            stop=[], temperature=0.0, top_p=1.0)
    wall = time.perf_counter() - t0
    return {"wall": wall, "prompts": len(contexts), "tokens": sum(o["new_tokens"] for o in outs)}


def show(name: str, side: dict) -> float:
    rate = side["prompts"] / side["wall"]
    print(f"{name:<34} {side['prompts']:>5} prompts  {side['wall']:8.2f} s  {rate:8.2f} prompts/s  "
          f"{side['tokens']:>7} tokens  {side['tokens'] / side['wall']:8.1f} tokens/s", flush=True)
    return rate


def local_side(args, cache_dir: str) -> float:
    from tunelab.infer.load import open_backend

    backend = open_backend(args.model, device=args.device)  # loaded once, before any clock
    pairs = judge_pairs(args.pairs)
    run_plain(backend, pairs[:2], args.batch_size, args.max_new_tokens)  # warm-up, untimed
    run_judge(make_judge(args.model, args.batch_size, args.max_new_tokens, cache_dir, backend), pairs[:2])
    plain = run_plain(backend, pairs, args.batch_size, args.max_new_tokens)
    judged = run_judge(make_judge(args.model, args.batch_size, args.max_new_tokens, cache_dir, backend), pairs)
    print(f"local: {args.model} on {args.device}, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
          f"{len(pairs)} pairs in both orders")
    a, b = show("engine, plain batched generation", plain), show("judge (same engine, cached, parsed)", judged)
    ratio = b / a
    print(f"ratios: local judge / plain generation = {ratio:.3f} prompts/s (goal >= {LOCAL_GOAL:.2f}); "
          f"unparsed verdicts {judged['unparsed']}", flush=True)
    return ratio


def endpoint_side(args, cache_dir: str) -> float:
    spec, proc = args.endpoint, None
    try:
        if spec is None:  # tunelab serve in its own process, so its work does not share a GIL with the judge's threads
            sys.path.insert(0, str(HERE))
            from serve_load import free_port, start_server, wait_ready

            port = free_port()
            url = f"http://127.0.0.1:{port}/v1"
            proc = start_server(args.model, port, args.server_batch_size, 64, args.device)
            wait_ready(proc, url)
            from openai import OpenAI

            with OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120) as c:
                spec = f"openai:{url}#{c.models.list().data[0].id}"
        pairs = judge_pairs(args.endpoint_pairs)
        warm = pairs[:max(1, args.concurrency // 2)]  # one round of concurrent requests, untimed
        run_judge(make_judge(spec, args.concurrency, args.max_new_tokens, cache_dir), warm)
        many = run_judge(make_judge(spec, args.concurrency, args.max_new_tokens, cache_dir), pairs)
        one = run_judge(make_judge(spec, 1, args.max_new_tokens, cache_dir), pairs)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"endpoint: {spec}, server --batch-size {args.server_batch_size}, max_new_tokens {args.max_new_tokens}, "
          f"{len(pairs)} pairs in both orders")
    a = show(f"judge, concurrency {args.concurrency}", many)
    b = show("judge, one request at a time", one)
    ratio = a / b
    print(f"ratios: endpoint concurrency {args.concurrency} / one at a time = {ratio:.2f}x prompts/s "
          f"(goal >= {ENDPOINT_GOAL:g}x)", flush=True)
    return ratio


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=["local", "endpoint"], default=None)
    ap.add_argument("--pairs", type=int, default=60, help="local side: LLMBar Natural pairs (2 prompts each)")
    ap.add_argument("--endpoint-pairs", type=int, default=24, help="endpoint side: pairs (2 prompts each)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8, help="local side: prompts per batch (judge.concurrency)")
    ap.add_argument("--concurrency", type=int, default=8, help="endpoint side: requests in flight")
    ap.add_argument("--server-batch-size", type=int, default=8, help="the server's --batch-size")
    ap.add_argument("--endpoint", default=None, help="openai:URL#NAME of a running server (default: start one)")
    args = ap.parse_args(argv)
    import torch

    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)
    ok = True
    with tempfile.TemporaryDirectory() as cache_dir:
        if args.only in (None, "local"):
            ok &= local_side(args, cache_dir) >= LOCAL_GOAL
        if args.only in (None, "endpoint"):
            ok &= endpoint_side(args, cache_dir) >= ENDPOINT_GOAL
    print("goals met" if ok else "goals NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
