"""Retrain the shipped toxicity classifier weights (see src/tunelab/safety/MODEL_CARD.md).

    python scripts/train_toxicity_classifier.py [--data ../shared/data/toxigen] [--out src/tunelab/safety/weights]

Same as `tunelab safety train-classifier`, with the package's weights folder as the default output.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tunelab.safety import toxicity
from tunelab.safety.train_classifier import train

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "toxigen"))
    ap.add_argument("--out", default=str(toxicity.WEIGHTS_DIR))
    args = ap.parse_args()
    train(args.data, args.out)
