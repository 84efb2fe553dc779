"""`tunelab safety scan` throughput: 10,000 short texts, tunelab's classifier vs alt-profanity-check.

    flock /tmp/heavy.lock timeout 900 python benchmarks/safety_scan.py [--n 10000] [--backend auto]

The texts are real short texts from the shared data folder, cycled to --n: Davidson tweets,
dialogsum summaries and alpaca_small outputs (first 60 words), in a fixed order. Each side runs
whole: tunelab runs `tunelab.safety.scan.scan` on a JSONL file (reading, loading the classifier
from its files, MiniLM included, scoring, writing the output), the peer (alt-profanity-check,
`pip install 'tunelab[bench]'`) imports and calls predict_prob on the same texts. Wall clock and
CPU time per side, texts/s, and the ratio are printed, plus the load conditions (1-minute load
average, cores). Goal: tunelab's whole run <= 60 s for 10,000 texts on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def short_texts(n: int) -> list[str]:
    pools = []
    with (DATA / "davidson_hate_offensive" / "labeled_data.csv").open(encoding="utf-8", newline="") as f:
        pools.append([r["tweet"] for r in csv.DictReader(f)])
    for rel, key in (("dialogsum/dialogsum.dev.jsonl", "summary"),):
        pools.append([json.loads(line)[key] for line in (DATA / rel).read_text(encoding="utf-8").splitlines()])
    alpaca = json.loads((DATA / "alpaca_small" / "alpaca_small.json").read_text(encoding="utf-8"))
    pools.append([" ".join(r["output"].split()[:60]) for r in alpaca if r["output"].strip()])
    out, i = [], 0
    while len(out) < n:  # interleave the sources so any prefix mixes them
        for p in pools:
            if len(out) < n:
                out.append(p[i % len(p)])
        i += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    texts = short_texts(args.n)
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} texts, mean {words:.1f} words; cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f} before the runs")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.jsonl"
        src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)),
                       encoding="utf-8")
        t, c = time.perf_counter(), time.process_time()
        from tunelab.safety.scan import scan
        from tunelab.safety.toxicity import ToxicityClassifier

        clf = ToxicityClassifier(args.backend)
        summary = scan(src, field="text", out=Path(tmp) / "scored.jsonl", classifier=clf)
        results["tunelab"] = (time.perf_counter() - t, time.process_time() - c)
        print(f"tunelab scan ({clf.signature}): toxic_fraction {summary['toxic_fraction']:.4f} "
              f"at {summary['threshold']}")
        try:
            t, c = time.perf_counter(), time.process_time()
            from profanity_check import predict_prob

            peer = predict_prob(texts)
            results["alt-profanity-check"] = (time.perf_counter() - t, time.process_time() - c)
            print(f"alt-profanity-check: fraction >= 0.5 {float((peer >= 0.5).mean()):.4f}")
        except ImportError:
            print("alt-profanity-check not installed (pip install 'tunelab[bench]'): no peer run")
    for name, (wall, cpu) in results.items():
        print(f"{name:20s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  {len(texts) / wall:8.1f} texts/s")
    if len(results) == 2:
        print(f"ratio tunelab / peer wall time: {results['tunelab'][0] / results['alt-profanity-check'][0]:.1f}x")
    print(f"load average {os.getloadavg()[0]:.2f} after the runs")
    ok = results["tunelab"][0] <= 60.0 * len(texts) / 10000
    print(f"goal (<= 60 s per 10,000 texts): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
