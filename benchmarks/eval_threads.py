"""Evaluation beside a busy process: torch's default thread count against the free-core rule
(models/threads.py; issue 26 case 10).

Four runs of `tunelab eval MODEL --task builtin:dates --limit N`, each in a fresh process: alone
and beside one busy Python loop, with OMP_NUM_THREADS set to every core (what torch does by
default) and unset (the rule picks). Prints the evaluation's own wall time (results.json cost).

Not a test: run it by hand, under the lock that keeps other heavy jobs off, e.g.
    flock /tmp/heavy.lock python benchmarks/eval_threads.py --limit 40
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_eval(model: str, limit: int, threads: str | None, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["TUNELAB_QUIET"] = "1"
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    subprocess.run([sys.executable, "-m", "tunelab", "eval", model, "--task", "builtin:dates", "--limit", str(limit),
                    "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "results.json").read_text())["cost"]["wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=40)
    args = ap.parse_args()
    cores = str(len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as tmp:
        # One untimed run first, so that the first timed run does not pay for reading the
        # weights from disk and warming the page cache alone.
        run_eval(args.model, args.limit, None, Path(tmp) / "warm-up")
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for label, threads in ((f"torch default ({cores} threads)", cores), ("free-core rule", None)):
                    wall = run_eval(args.model, args.limit, threads, Path(tmp) / f"{busy}-{threads}")
                    print(f"{'beside a busy process' if busy else 'alone':22s} {label:26s} {wall:7.1f} s", flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()


if __name__ == "__main__":
    main()
