"""Retrain the shipped toxicity classifier and run its evaluation protocol (MODEL_CARD.md).

    python scripts/train_toxicity_classifier.py [--data ../shared/data/toxigen] [--out src/tunelab/safety/weights]
        [--cache /tmp/tunelab-tox-emb] [--no-peer] [--no-logo]

Writes the weights and metrics.json (every number in the model card) into --out. The peer,
alt-profanity-check (`pip install 'tunelab[bench]'`), scores the same items when it is installed;
it is a benchmark dependency only and loads its own packaged model with joblib, here and nowhere
in tunelab's runtime. --cache keeps MiniLM embeddings in a .npy so reruns skip the encoder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from tunelab.safety import toxicity
from tunelab.safety.train_classifier import train

ROOT = Path(__file__).resolve().parents[1]


class EmbeddingCache:
    """MiniLM embeddings keyed by sha1 of the text, kept as DIR/minilm_int8.npy + DIR/minilm_int8.json.

    The protocol refits dozens of heads on the same ~35k texts; embedding them takes minutes on
    2 cores, so development reruns reuse the vectors.
    """

    def __init__(self, folder: Path):
        self.npy, self.keys_file = folder / "minilm_int8.npy", folder / "minilm_int8.json"
        self.rows: dict[str, int] = {}
        self.vecs = np.zeros((0, 384), dtype=np.float32)
        if self.npy.is_file() and self.keys_file.is_file():
            keys = json.loads(self.keys_file.read_text())
            vecs = np.load(self.npy, allow_pickle=False)
            if len(keys) == len(vecs):
                self.rows, self.vecs = {k: i for i, k in enumerate(keys)}, vecs

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if self.key(t) not in self.rows})
        if missing:
            new = toxicity.toxicity_embed(missing)
            for t in missing:
                self.rows[self.key(t)] = len(self.rows)
            self.vecs = np.concatenate([self.vecs, new])
            self.npy.parent.mkdir(parents=True, exist_ok=True)
            np.save(self.npy, self.vecs, allow_pickle=False)
            self.keys_file.write_text(json.dumps(sorted(self.rows, key=self.rows.get)))
        if not texts:
            return self.vecs[:0]
        return self.vecs[[self.rows[self.key(t)] for t in texts]]


def profanity_check_peer():
    """alt-profanity-check's predict_prob, or None when the bench extra is not installed."""
    try:
        from profanity_check import predict_prob
    except ImportError:
        return None
    return lambda texts: np.asarray(predict_prob(list(texts)), dtype=np.float64)


CARD = ROOT / "src" / "tunelab" / "safety" / "MODEL_CARD.md"
BEGIN, END = "<!-- results:begin (written by scripts/train_toxicity_classifier.py) -->", "<!-- results:end -->"


def _ci(e: dict) -> str:
    lo, hi = e["auroc_ci95"]
    return "n/a" if e["auroc"] != e["auroc"] else f"{e['auroc']:.3f} [{lo:.2f}, {hi:.2f}]"


def render_results(m: dict) -> str:
    """The model card's results section, from metrics.json (so the card cannot drift from it)."""
    names = list(m["models"])
    peer = m.get("peer")
    lines = [f"Seed {m['seed']}; whole run {m['wall_s']} s. AUROC with a 95% bootstrap interval "
             "(positives and negatives resampled separately, 1,000 draws).", ""]
    logo = m.get("leave_one_group_out")
    if logo:
        lines += ["### Leave-one-group-out over ToxiGen (the recipe without any row about the group, "
                  "tested on the group's statements)", "",
                  "| group | hate / neutral | " + " | ".join(f"{n} AUROC" for n in names)
                  + (" | alt-profanity-check AUROC" if peer else "") + " | ensemble recall @ its threshold |",
                  "|---|---|" + "---|" * (len(names) + (1 if peer else 0)) + "---|"]
        best = names[-1]
        for g, r in logo.items():
            if g in ("macro_auroc", "min_auroc"):
                continue
            cells = [_ci(r[n]) for n in names] + ([_ci(r["peer"])] if peer else [])
            lines.append(f"| {g} | {r['n_hate']} / {r['n_neutral']} | " + " | ".join(cells)
                         + f" | {r[best]['recall']:.2f} @ {r[best]['threshold']:.2f} |")
        fmt = lambda d, n: "-" if d.get(n) is None else f"{d[n]:.3f}"
        lines.append("| **macro mean** (groups with both classes) | | " + " | ".join(
            f"**{fmt(logo['macro_auroc'], n)}**" for n in names) + (f" | **{fmt(logo['macro_auroc'], 'peer')}**" if peer else "") + " | |")
        lines.append("| lowest group | | " + " | ".join(fmt(logo["min_auroc"], n) for n in names)
                     + (f" | {fmt(logo['min_auroc'], 'peer')}" if peer else "") + " | |")
        lines.append("")
    lines += ["### Davidson held-out split, everyday text, calibration", "",
              "| model | Davidson (hate or offensive) vs neither | Davidson hate vs rest | threshold | "
              "Davidson F1 toxic | Davidson neither FPR | everyday FPR (n) | alpaca_small | dialogsum | "
              "val ECE before / after Platt | Davidson test ECE |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(n, m["models"][n]) for n in names] + ([("alt-profanity-check", peer)] if peer else [])
    for n, e in rows:
        d, ev = e["davidson"], e["everyday"]
        dial = [v for k, v in ev.items() if k.startswith("dialogsum")]
        dial_fpr = sum(v["fpr"] * v["n"] for v in dial) / max(1, sum(v["n"] for v in dial))
        ece = (f"{e['val_ece_before_platt']:.3f} / {e['val_ece']:.3f}" if "val_ece" in e else "-")
        lines.append(f"| {n} | {_ci(d['toxic_vs_neither'])} | {_ci(d['hate_vs_rest'])} | {d['threshold']:.2f} | "
                     f"{d['f1_toxic']:.3f} | {d['neither_fpr']:.3f} | {ev['all']['fpr']:.4f} ({ev['all']['n']}) | "
                     f"{ev.get('alpaca_small outputs', {}).get('fpr', float('nan')):.4f} | {dial_fpr:.4f} | {ece} | "
                     f"{d['ece']:.3f} |")
    d = next(iter(m["models"].values()))["davidson"]
    lines += ["", f"Davidson test split: {d['n']} distinct tweets ({d['n_hate']} hate, {d['n_offensive']} "
              "offensive, " f"{d['n_neither']} neither)."]
    data = m["data"]
    lines += ["", "### Data hashes (sha256 of the input files; the splits' texts hashed per split)", "",
              "| file | sha256 |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in data["file_sha256"].items()]
    lines += [f"| split `{k}` (sorted texts, JSON) | `{v}` |" for k, v in data["split_sha256"].items()]
    lines += ["", "Rows per pool and split: " + "; ".join(
        f"{p} {c['train']} / {c['val']} / {c['test']}" for p, c in data["rows_by_pool_and_split"].items())
        + " (train / val / test)."]
    return "\n".join(lines) + "\n"


def update_card(metrics: dict) -> None:
    text = CARD.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        CARD.write_text(head + BEGIN + "\n" + render_results(metrics) + END + rest.split(END, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "toxigen"))
    ap.add_argument("--out", default=str(toxicity.WEIGHTS_DIR))
    ap.add_argument("--cache", default=None, help="folder for cached MiniLM embeddings (development)")
    ap.add_argument("--no-peer", action="store_true", help="skip alt-profanity-check")
    ap.add_argument("--no-logo", action="store_true", help="skip leave-one-group-out (quick iterations)")
    ap.add_argument("--card-only", action="store_true",
                    help="only rewrite the model card's results from --out/metrics.json")
    args = ap.parse_args()
    if args.card_only:
        update_card(json.loads((Path(args.out) / "metrics.json").read_text(encoding="utf-8")))
        raise SystemExit(0)
    import torch

    torch.manual_seed(0)
    peer = None if args.no_peer else profanity_check_peer()
    if peer is None and not args.no_peer:
        print("alt-profanity-check is not installed (pip install 'tunelab[bench]'): no peer numbers")
    metrics = train(args.data, args.out, embed=EmbeddingCache(Path(args.cache)) if args.cache else None,
                    peer=peer, logo=not args.no_logo)
    if Path(args.out).resolve() == toxicity.WEIGHTS_DIR.resolve():
        update_card(metrics)
        print(f"results written into {CARD}")
    else:
        print(render_results(metrics))
