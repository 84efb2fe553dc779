"""Data preparation at scale: first encoding, cached start and peak memory (issue 12).

Rows are Alpaca records from ../shared/data/alpaca_small, varied (a row number woven into the
instruction and output) so that no two rows are equal. Each size runs in a fresh subprocess, so
peak RSS is that size's own. Per size it prints:
- new: `templates.cache.prepare` into an empty cache (streamed chunks, batch tokenisation), then
  again (a cache hit: hash the file, memory-map the entry);
- old (--old sizes): `load_conversations` + `encode_all`, the per-record path, as before/after.

Not a test: run it by hand on a quiet machine, e.g.
    flock /tmp/heavy.lock timeout 1200 python benchmarks/data_prepare.py --sizes 10000 100000 1000000 --old 10000 100000
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

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_small" / "alpaca_small.json"


def make_rows(n: int, path: Path) -> None:
    base = json.loads(SHARED.read_text())
    with path.open("w") as f:
        for i in range(n):
            r = base[i % len(base)]
            f.write(json.dumps({"instruction": f"{r['instruction']} (case {i})", "input": r.get("input", ""),
                                "output": f"{r['output']} [{i}]"}) + "\n")


def _cpu_s() -> float:
    """CPU seconds of this process, every thread (user + system): cpu / wall = cores kept busy."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(mode: str, n: int, model: str) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    from tunelab.models.loading import load_tokenizer, resolve

    tok = load_tokenizer(resolve(model)[1])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / f"rows{n}.jsonl"
        make_rows(n, data)
        os.environ["TUNELAB_HOME"] = str(Path(tmp) / "home")
        out = {"mode": mode, "rows": n}
        t0, cpu0 = time.perf_counter(), _cpu_s()
        if mode == "old":
            from tunelab.data.load import load_conversations
            from tunelab.templates import encode_all

            enc = encode_all(tok, load_conversations(data), max_length=1024)
            out["kept"] = len(enc)
        else:
            from tunelab.templates.cache import prepare

            enc = prepare(data, tok, max_length=1024).trainable()
            out["kept"] = len(enc)
            out["wall_s"], out["cpu_s"] = time.perf_counter() - t0, _cpu_s() - cpu0
            t1 = time.perf_counter()
            hit = prepare(data, tok, max_length=1024).trainable()
            out["hit_s"] = time.perf_counter() - t1
            assert hit.hit and len(hit) == len(enc)
        out.setdefault("wall_s", time.perf_counter() - t0)
        out.setdefault("cpu_s", _cpu_s() - cpu0)
        out["rows_per_s"] = n / out["wall_s"]
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--old", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--model", default="default")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "N"))
    a = ap.parse_args()
    if a.child:
        return child(a.child[0], int(a.child[1]), a.model)
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    jobs = [("old", n) for n in a.old] + [("new", n) for n in a.sizes]
    results = []
    for mode, n in jobs:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, str(n), "--model", a.model],
                              capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode or not line:
            print(f"{mode} {n}: failed\n{proc.stderr[-2000:]}")
            continue
        results.append(json.loads(line[-1]))
        r = results[-1]
        print(f"{r['mode']:>4} {r['rows']:>9,} rows: {r['wall_s']:7.1f} s  {r['rows_per_s']:8.0f} rows/s  "
              f"cores {r['cpu_s'] / r['wall_s']:4.2f}  cache hit {r.get('hit_s', float('nan')):6.2f} s  "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    new = {r["rows"]: r for r in results if r["mode"] == "new"}
    old = {r["rows"]: r for r in results if r["mode"] == "old"}
    for n in sorted(set(new) & set(old)):
        print(f"speed-up at {n:,} rows: {old[n]['wall_s'] / new[n]['wall_s']:.1f}x (whole run, old/new)")
    if 100_000 in new and 1_000_000 in new:
        print(f"peak RSS 1M / 100k: {new[1_000_000]['peak_rss_mb'] / new[100_000]['peak_rss_mb']:.2f} (goal <= 1.5)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
