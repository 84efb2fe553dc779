"""Serving load: `tunelab serve` under 8 concurrent chat clients vs the same requests one at a time.

    python benchmarks/serve_load.py                       # 200 requests, 8 clients, default model, CPU
    python benchmarks/serve_load.py --requests 40 --max-tokens 32

Both sides answer the same chat requests (the first N instructions of ../shared/data/alpaca_small,
rendered with the model's chat template), greedy, with the same max_tokens, stopping at the same
EOS tokens, on the same device and dtype:

- server: `tunelab serve MODEL` in its own process on 127.0.0.1 (a free port), driven by CLIENTS
  threads with the official `openai` client, each sending its next request when the last one
  returns (closed loop), so at most CLIENTS requests are in flight. Requests that fail count as
  errors (the client does not retry). The whole run is bounded by --time-limit.
- one at a time: this process loads the same model and runs `model.generate` on each prompt in
  turn, as a script without a server would.

Printed for each side: requests/s, p50/p95 latency, generated tokens and tokens/s, errors, and
the ratio of the two throughputs; then how many answers are identical (batched float arithmetic
may flip a near-tie, so a few can differ, which also moves the token totals a little).
Whole-run numbers: wall time from the first request to the last answer, warm-up excluded.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "alpaca_small" / "alpaca_small.json"


def load_requests(path: Path, n: int) -> list[list[dict]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for r in rows[:n]:
        text = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        out.append([{"role": "user", "content": text}])
    if len(out) < n:
        sys.exit(f"{path}: only {len(out)} rows, {n} requests asked for; lower --requests")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, batch_size: int, queue_size: int, device: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tunelab", "serve", model, "--port", str(port), "--batch-size", str(batch_size),
           "--queue-size", str(queue_size), "--device", device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, env=env)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 300) -> None:
    from openai import OpenAI

    deadline = time.monotonic() + timeout
    with OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=5) as c:
        while True:
            if proc.poll() is not None:
                sys.exit(f"the server exited with status {proc.returncode} before it was ready")
            try:
                c.models.list()
                return
            except Exception:
                if time.monotonic() > deadline:
                    sys.exit("the server did not answer within the start-up timeout")
                time.sleep(0.5)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_server_side(url: str, model: str, requests: list[list[dict]], clients: int, max_tokens: int,
                    time_limit: float) -> dict:
    from openai import OpenAI

    results: list = [None] * len(requests)  # (latency_s, text, completion_tokens) or an error string
    lock, cursor = threading.Lock(), [0]
    deadline = time.monotonic() + time_limit

    def client_loop() -> None:
        with OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=max(1.0, time_limit)) as c:
            while time.monotonic() < deadline:
                with lock:
                    i = cursor[0]
                    cursor[0] += 1
                if i >= len(requests):
                    return
                t = time.perf_counter()
                try:
                    r = c.chat.completions.create(model=model, messages=requests[i], max_tokens=max_tokens,
                                                  temperature=0, seed=0)
                    results[i] = (time.perf_counter() - t, r.choices[0].message.content, r.usage.completion_tokens)
                except Exception as e:  # an error is a result too: it is counted, not retried
                    results[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {"wall": wall, "results": results}


def run_generate_side(lm, requests: list[list[dict]], max_tokens: int, eos: list[int], time_limit: float) -> dict:
    import torch

    from tunelab.templates import encode_prompt

    tok, model = lm.tokenizer, lm.model
    results: list = [None] * len(requests)
    deadline = time.monotonic() + time_limit
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i, messages in enumerate(requests):
            if time.monotonic() > deadline:
                break
            t = time.perf_counter()
            ids = torch.tensor([encode_prompt(tok, messages)], device=model.device)  # (1, T)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)
            new = out[0, ids.shape[1]:]  # the generated ids, the EOS token included as the server counts it
            results[i] = (time.perf_counter() - t, tok.decode(new, skip_special_tokens=True), int(new.numel()))
    return {"wall": time.perf_counter() - t0, "results": results}


def summarize(name: str, side: dict) -> dict:
    ok = [r for r in side["results"] if isinstance(r, tuple)]
    errors = [r for r in side["results"] if isinstance(r, str)]
    missing = sum(r is None for r in side["results"])
    lat = [r[0] for r in ok]
    tokens = sum(r[2] for r in ok)
    s = {"name": name, "done": len(ok), "errors": len(errors), "missing": missing, "wall": side["wall"],
         "rps": len(ok) / side["wall"], "p50": percentile(lat, 0.5) if lat else float("nan"),
         "p95": percentile(lat, 0.95) if lat else float("nan"), "tokens": tokens, "tps": tokens / side["wall"]}
    print(f"{name:<22} {s['done']:>4} ok {s['errors']:>3} errors {missing:>3} not run   {s['rps']:6.2f} req/s   "
          f"p50 {s['p50']:6.2f} s  p95 {s['p95']:6.2f} s   {tokens:>6} tokens  {s['tps']:7.1f} tokens/s   "
          f"({s['wall']:.1f} s wall)", flush=True)
    for e in errors[:3]:
        print(f"  error: {e}")
    return s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8, help="the server's --batch-size")
    ap.add_argument("--queue-size", type=int, default=64, help="the server's --queue-size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--time-limit", type=float, default=900, help="seconds each side may run at most")
    args = ap.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"{args.data}: instruction data not found (expected ../shared/data/alpaca_small/alpaca_small.json)")
    requests = load_requests(args.data, args.requests)

    import torch

    from tunelab.models.loading import load_model
    from tunelab.serve.engine import ServedModel

    print(f"{args.requests} chat requests, {args.clients} concurrent clients, max_tokens {args.max_tokens}, greedy; "
          f"server --batch-size {args.batch_size}; device {args.device}; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    # --- server side: its own process, so its Python work does not share a GIL with the clients
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    proc = start_server(args.model, port, args.batch_size, args.queue_size, args.device)
    try:
        wait_ready(proc, url)
        from openai import OpenAI

        with OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120) as c:
            name = c.models.list().data[0].id
        run_server_side(url, name, requests[: args.clients], args.clients, args.max_tokens, 300)  # warm-up, untimed
        served_side = run_server_side(url, name, requests, args.clients, args.max_tokens, args.time_limit)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    # --- one at a time: model.generate in this process, same model, dtype, prompts and EOS set
    lm = load_model(args.model, device=args.device)
    eos = sorted(ServedModel(lm).eos)  # the server stops at these; generate must stop at the same ones
    run_generate_side(lm, requests[:2], args.max_tokens, eos, 300)  # warm-up, untimed
    plain_side = run_generate_side(lm, requests, args.max_tokens, eos, args.time_limit)

    print(f"model {lm.name} ({next(lm.model.parameters()).dtype}), EOS ids {eos}")
    a = summarize(f"server ({args.clients} clients)", served_side)
    b = summarize("model.generate, 1 by 1", plain_side)
    pairs = [(x, y) for x, y in zip(served_side["results"], plain_side["results"])
             if isinstance(x, tuple) and isinstance(y, tuple)]
    same = sum(x[1] == y[1] for x, y in pairs)
    same_len = sum(x[2] == y[2] for x, y in pairs)
    print(f"identical answers {same}/{len(pairs)}, same generated-token count {same_len}/{len(pairs)}")
    print(f"throughput ratio server / one-at-a-time: {a['rps'] / b['rps']:.2f}x requests/s, "
          f"{a['tps'] / b['tps']:.2f}x tokens/s (goal: >= 3x, 0 errors; errors: {a['errors']})")


if __name__ == "__main__":
    main()
