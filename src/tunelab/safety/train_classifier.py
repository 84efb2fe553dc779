"""Train the toxicity classifier (v3) and run its evaluation protocol (see MODEL_CARD.md).

Recipe (one function, `fit_recipe`, used for the shipped model and for every evaluation fold):
- Rows: deduplicated ToxiGen statements of all groups, deduplicated Davidson tweets (toxic = hate
  or offensive), everyday background text, and not-toxic fragments of background text and of
  ToxiGen neutral statements (toxicity_data.py). Each row is in `train`, `val` or `test` by a
  seeded hash of its text (Davidson: 70 / 10 / 20; ToxiGen and background: 80 / 20 / -);
  a fragment follows its parent.
- Two linear heads, each a weighted L2 logistic regression: on MiniLM sentence embeddings
  (384 dims) and on hashed word/char n-grams (N_BUCKETS); C is chosen per head by 3-fold
  cross-validation inside the training rows, where ToxiGen rows are folded *by group*, so the
  choice rewards generalising to groups the fold did not see. Pools carry fixed shares of the loss
  (POOL_WEIGHTS), so 25k tweets do not drown 440 ToxiGen statements.
- Ensemble: a 2-input logistic regression on the heads' out-of-fold logits (stacking).
- Calibration: Platt scaling of each model on the validation rows, folded into its weights.
- Default threshold: the best pool-weighted F1 on the validation rows among thresholds that flag
  at most MAX_EVERYDAY_FPR of the everyday validation rows (held-out background text).

Protocol: leave-one-group-out over every ToxiGen group (the recipe without any row about group g,
tested on g's statements), the Davidson test split, everyday text never used in training
(alpaca_small outputs, dialogsum summaries), ECE, and the same items scored by an optional peer.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tunelab.safety import classifier_fit as cf
from tunelab.safety import toxicity as tox
from tunelab.safety import toxicity_data as td
from tunelab.safety.classifier_fit import auroc, f1_at  # noqa: F401 (re-exported for tests)
from tunelab.safety.toxicity_data import load_toxigen, split_statements  # noqa: F401 (re-exported)

SEED = 20240611
N_BACKGROUND = 3000
FRAGMENTS_PER_BACKGROUND = 1
FRAGMENTS_PER_NEUTRAL = 4
VAL_FRACTION = 0.2  # ToxiGen and background rows held out for calibration and the threshold
DAVIDSON_SPLIT = (0.2, 0.1)  # test, validation fractions
POOL_WEIGHTS = {"toxigen_hate": 0.25, "davidson_toxic": 0.25, "toxigen_neutral": 0.15,
                "davidson_neither": 0.15, "background": 0.10, "fragment": 0.10}
C_GRID = (0.1, 1.0, 10.0)  # inverse L2 strength (loss sum + |w|^2 / 2C)
INNER_FOLDS = 3
N_BUCKETS = 1 << 17  # 131,072 float32 = 512 KB; 25k tweets need far more than v2's 16k buckets
MAX_EVERYDAY_FPR = 0.01
HEADS = ("minilm", "ngram")
METRICS_FILE = "metrics.json"


# ---------------------------------------------------------------- data


def build_corpus(root: str | Path, toxigen_dir: str | Path, seed: int = SEED,
                 groups: Sequence[str] = td.TOXIGEN_GROUPS, n_background: int = N_BACKGROUND,
                 davidson: bool = True) -> tuple[td.Corpus, np.ndarray]:
    """All rows of the recipe and their split ("train" / "val" / "test")."""
    corpus = load_toxigen(toxigen_dir, groups)
    dav = td.load_davidson(Path(root) / td.DAVIDSON_FILE) if davidson else td.Corpus()
    for i in range(len(dav)):
        corpus.add(dav.texts[i], dav.labels[i], "davidson", dav.groups[i])
    for t in td.load_background(root, n_background, seed):
        corpus.add(t, 0, "background")
    n_whole = len(corpus)
    split = []
    for text, src in zip(corpus.texts, corpus.sources):
        h = td.split_hash(text, seed)
        if src == "davidson":
            split.append("test" if h < DAVIDSON_SPLIT[0] else "val" if h < sum(DAVIDSON_SPLIT) else "train")
        else:
            split.append("val" if h < VAL_FRACTION else "train")
    bg = [i for i in range(n_whole) if corpus.sources[i] == "background"]
    neutral = [i for i in range(n_whole) if corpus.sources[i] == "toxigen" and corpus.labels[i] == 0]
    td.add_fragments(corpus, bg, FRAGMENTS_PER_BACKGROUND, seed + 1)
    td.add_fragments(corpus, neutral, FRAGMENTS_PER_NEUTRAL, seed + 2)
    split += [split[corpus.parents[i]] for i in range(n_whole, len(corpus))]
    return corpus, np.array(split)


def pools_of(corpus: td.Corpus) -> np.ndarray:
    y, src, _ = corpus.arrays()
    return np.select([src == "fragment", src == "background", (src == "toxigen") & (y == 1),
                      src == "toxigen", (src == "davidson") & (y == 1)],
                     ["fragment", "background", "toxigen_hate", "toxigen_neutral", "davidson_toxic"],
                     "davidson_neither")


def pool_weights(pools: np.ndarray) -> np.ndarray:
    """Per-row weights giving each pool present its POOL_WEIGHTS share; mean weight 1."""
    present = {p: POOL_WEIGHTS[p] for p in POOL_WEIGHTS if (pools == p).any()}
    total = sum(present.values())
    w = np.zeros(len(pools))
    for p, share in present.items():
        w[pools == p] = share / total * len(pools) / (pools == p).sum()
    return w


def inner_folds(corpus: td.Corpus, rows: np.ndarray, seed: int) -> np.ndarray:
    """Fold id per row in `rows`: ToxiGen rows by group (so C is chosen for unseen groups),
    others by a seeded hash; fragments with their parents."""
    idx = np.flatnonzero(rows)
    groups = sorted({corpus.groups[corpus.parents[i]] for i in idx if corpus.sources[corpus.parents[i]] == "toxigen"})
    fold_of_group = {g: k % INNER_FOLDS for k, g in enumerate(groups)}
    out = []
    for i in idx:
        p = corpus.parents[i]
        if corpus.sources[p] == "toxigen":
            out.append(fold_of_group[corpus.groups[p]])
        else:
            out.append(int(td.split_hash(corpus.texts[p], seed + 3) * INNER_FOLDS))
    return np.array(out)


# ---------------------------------------------------------------- the recipe


def features(corpus_texts: Sequence[str], embed: Callable | None, heads: Sequence[str]) -> dict:
    out = {}
    if "minilm" in heads:
        out["minilm"] = (embed or tox.toxicity_embed)(list(corpus_texts)).astype(np.float64)  # (N, 384)
    if "ngram" in heads:
        out["ngram"] = cf.SparseRows.from_texts(corpus_texts, N_BUCKETS)
    return out


def fit_recipe(X: dict, corpus: td.Corpus, split: np.ndarray, keep: np.ndarray, seed: int = SEED,
               log: Callable[[str], None] = lambda s: None) -> dict:
    """Fit every head, the ensemble, Platt scaling and the threshold on the rows in `keep`.

    Returns {model name: {"weight", "bias", "C", "platt", "threshold", ...}} where each model's
    logit is linear in its features (the ensemble's in the two heads' raw logits).
    """
    y = np.array(corpus.labels, dtype=np.float64)
    pools = pools_of(corpus)
    tr, va = keep & (split == "train"), keep & (split == "val")
    sw_tr, sw_va = pool_weights(pools[tr]), pool_weights(pools[va])
    folds = inner_folds(corpus, tr, seed)
    models, oof, raw_val = {}, {}, {}
    for h in X:
        C, oof[h], losses = cf.choose_C(cf.take(X[h], tr), y[tr], sw_tr, folds, C_GRID)
        w, b = cf.fit_logreg(cf.take(X[h], tr), y[tr], C, sw_tr)
        raw_val[h] = cf.linear(cf.take(X[h], va), w, b)
        models[h] = {"weight": w, "bias": b, "C": C, "cv_logloss": losses}
        log(f"  {h}: C={C} (cv log-loss {', '.join(f'{c}: {v:.4f}' for c, v in losses.items())})")
    if len(X) == 2:
        Z = np.c_[oof["minilm"], oof["ngram"]]  # (N_train, 2) out-of-fold logits of the heads
        mix, mb = cf.fit_logreg(Z, y[tr], C=1e6, sample_weight=sw_tr)
        models["ensemble"] = {"weight": mix, "bias": mb}
        raw_val["ensemble"] = np.c_[raw_val["minilm"], raw_val["ngram"]] @ mix.astype(np.float64) + mb
    everyday = np.isin(pools[va], ("background", "fragment"))
    for name in models:  # heads first: the ensemble is re-expressed in their calibrated logits
        m = models[name]
        a, c = cf.platt(raw_val[name], y[va], sw_va)
        if name == "ensemble":
            # mix was fitted on raw head logits z = (z_cal - c_h) / a_h; rewrite it over z_cal
            (a0, c0), (a1, c1) = models["minilm"]["platt"], models["ngram"]["platt"]
            mix = m["weight"].astype(np.float64)
            m["bias"] = m["bias"] - mix[0] * c0 / a0 - mix[1] * c1 / a1
            m["weight"] = np.array([mix[0] / a0, mix[1] / a1])
        m["platt"] = [a, c]
        m["weight"] = (m["weight"].astype(np.float64) * a).astype(np.float32)  # still one linear layer
        m["bias"] = a * m["bias"] + c
        p_raw, p_cal = cf.sigmoid(raw_val[name]), cf.sigmoid(a * raw_val[name] + c)
        m["threshold"], m["threshold_stats"] = cf.choose_threshold(p_cal, y[va], sw_va, everyday, MAX_EVERYDAY_FPR)
        m["val_ece_before_platt"] = cf.ece(p_raw, y[va])
        m["val_ece"] = cf.ece(p_cal, y[va])
        m["val_auroc"] = auroc(p_cal, y[va])
    return models


def model_logits(models: dict, name: str, X: dict, rows) -> np.ndarray:
    """Calibrated logits of one fitted model on the given rows (as ToxicityClassifier.logits)."""
    if name != "ensemble":
        return cf.linear(cf.take(X[name], rows), models[name]["weight"], models[name]["bias"])
    z = np.c_[model_logits(models, "minilm", X, rows), model_logits(models, "ngram", X, rows)]  # (N, 2)
    return z @ models["ensemble"]["weight"].astype(np.float64) + models["ensemble"]["bias"]


# ---------------------------------------------------------------- protocol


def _auroc_entry(p, y) -> dict:
    lo, hi = cf.bootstrap_auroc_ci(p, y)
    return {"auroc": auroc(p, y), "auroc_ci95": [lo, hi]}


def leave_one_group_out(X: dict, corpus: td.Corpus, split: np.ndarray, names: Sequence[str],
                        peer_scores: np.ndarray | None, seed: int, log: Callable) -> dict:
    """Per ToxiGen group g: the recipe without any row about g, tested on g's statements."""
    y, src, _ = corpus.arrays()
    out = {}
    for g in sorted({corpus.groups[i] for i in range(len(corpus)) if src[i] == "toxigen"}):
        about_g = np.array([g in s for s in corpus.group_sets])
        test = about_g & (src == "toxigen")
        t0 = time.perf_counter()
        models = fit_recipe(X, corpus, split, ~about_g, seed)
        row = {"n_hate": int(y[test].sum()), "n_neutral": int((y[test] == 0).sum())}
        for name in names:
            p = cf.sigmoid(model_logits(models, name, X, test))
            t = models[name]["threshold"]
            row[name] = {**_auroc_entry(p, y[test]), "threshold": t,
                         "recall": float((p[y[test] == 1] >= t).mean()),
                         "neutral_fpr": float((p[y[test] == 0] >= t).mean()) if (y[test] == 0).any() else None}
        if peer_scores is not None:
            p = peer_scores[test]
            row["peer"] = {**_auroc_entry(p, y[test]), "recall": float((p[y[test] == 1] >= 0.5).mean()),
                           "neutral_fpr": float((p[y[test] == 0] >= 0.5).mean()) if (y[test] == 0).any() else None}
        out[g] = row
        log(f"  LOGO {g:20s} n={row['n_hate']}/{row['n_neutral']}  "
            + "  ".join(f"{k} {row[k]['auroc']:.3f}" for k in (*names, "peer") if k in row)
            + f"  ({time.perf_counter() - t0:.0f} s)")
    for name in (*names, "peer"):
        vals = [r[name]["auroc"] for r in out.values() if name in r and not np.isnan(r[name]["auroc"])]
        out.setdefault("macro_auroc", {})[name] = float(np.mean(vals)) if vals else None
        out.setdefault("min_auroc", {})[name] = float(np.min(vals)) if vals else None
    return out


def davidson_metrics(p: np.ndarray, classes: np.ndarray, threshold: float) -> dict:
    toxic = classes != "neither"
    return {"n": int(len(p)), "n_hate": int((classes == "hate").sum()),
            "n_offensive": int((classes == "offensive").sum()), "n_neither": int((classes == "neither").sum()),
            "toxic_vs_neither": _auroc_entry(p, toxic), "hate_vs_rest": _auroc_entry(p, classes == "hate"),
            "threshold": threshold, "f1_toxic": f1_at(p, toxic, threshold),
            "neither_fpr": float((p[~toxic] >= threshold).mean()), "ece": cf.ece(p, toxic)}


def everyday_metrics(scores: dict[str, np.ndarray], threshold: float) -> dict:
    out = {name: {"n": int(len(p)), "fpr": float((p >= threshold).mean()), "mean": float(p.mean())}
           for name, p in scores.items()}
    allp = np.concatenate(list(scores.values())) if scores else np.zeros(0)
    out["all"] = {"n": int(len(allp)), "fpr": float((allp >= threshold).mean()) if len(allp) else None}
    return out


@dataclass
class TrainSettings:
    """How `train` fits and checks the shipped classifier; every field is also a keyword of `train`."""

    seed: int = SEED
    """Seeds the corpus split, the sampling of background text and the fits."""
    embed: Callable | None = None
    """A caching embedder for development runs; None: the MiniLM head embeds afresh."""
    peer: Callable[[list[str]], np.ndarray] | None = None
    """A scorer of the same items for comparison (the training script passes alt-profanity-check)."""
    logo: bool = True
    """Also run leave-one-group-out (the protocol's slowest part)."""
    heads: Sequence[str] = HEADS
    """The heads to fit; minilm is left out when its model is not available."""
    n_background: int = N_BACKGROUND
    """Everyday background texts added as non-toxic rows."""
    log: Callable[[str], None] = print


@dataclass
class _HeldOut:
    """The texts every shipped model (and the peer) is checked on after the fit."""

    davidson: list[str]  # Davidson's test tweets
    classes: np.ndarray  # their classes, as davidson_metrics takes them
    everyday: dict[str, list[str]]  # everyday text by source: false positives


def train(data_dir: str | Path, out_dir: str | Path, settings: TrainSettings | None = None, **keywords) -> dict:
    """Fit the shipped models on all groups, write weights + metrics.json to out_dir, and run the
    protocol. data_dir: the ToxiGen folder; its parent is the shared data root (Davidson,
    background and everyday text). Settings come as a TrainSettings, as its fields' keywords
    (`logo=False`), or both (the keywords override)."""
    from tunelab.io import atomic_write_json

    o = replace(settings or TrainSettings(), **keywords)
    t_start = time.perf_counter()
    toxigen_dir = Path(data_dir)
    root = toxigen_dir.parent
    heads = [h for h in o.heads if h != "minilm" or tox.minilm_available()]
    corpus, split = build_corpus(root, toxigen_dir, o.seed, n_background=o.n_background)
    y, src, grp = corpus.arrays()
    o.log(f"{len(corpus)} rows: " + ", ".join(f"{p} {int((pools_of(corpus) == p).sum())}" for p in POOL_WEIGHTS))
    X = features(corpus.texts, o.embed, heads)
    names = [*heads, *(["ensemble"] if len(heads) == 2 else [])]
    o.log("fitting the shipped models (all groups)")
    models = fit_recipe(X, corpus, split, np.ones(len(corpus), dtype=bool), o.seed, o.log)
    out_dir = Path(out_dir)
    saved = save_models(models, names, out_dir, o.seed, o.embed)

    dav_test = (src == "davidson") & (split == "test")
    held = _HeldOut([corpus.texts[i] for i in np.flatnonzero(dav_test)], grp[dav_test], td.load_everyday_eval(root))
    metrics: dict = {"version": 3, "seed": o.seed, "data": data_summary(corpus, split, root, toxigen_dir),
                     "models": {}, "peer": None}
    for name in names:
        clf = tox.ToxicityClassifier(name, out_dir, embed=o.embed)
        metrics["models"][name] = _model_entry(name, clf, models[name], held, o.log)
    peer_scores = None
    if o.peer is not None:
        peer_scores = np.full(len(corpus), np.nan)
        scored = (src == "toxigen") | dav_test
        peer_scores[scored] = o.peer([corpus.texts[i] for i in np.flatnonzero(scored)])
        metrics["peer"] = _peer_entry(o.peer, peer_scores[dav_test], held, o.log)
    if o.logo:
        o.log("leave-one-group-out")
        metrics["leave_one_group_out"] = leave_one_group_out(X, corpus, split, names, peer_scores, o.seed, o.log)
    metrics["weights"] = saved
    metrics["wall_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def _model_entry(name: str, clf, m: dict, held: _HeldOut, log: Callable[[str], None]) -> dict:
    """metrics.json's entry of one shipped model: its fit's numbers and its held-out checks."""
    entry = {k: m[k] for k in ("threshold", "threshold_stats", "val_ece_before_platt", "val_ece",
                               "val_auroc", "platt") if k in m}
    entry["C"] = m.get("C")
    entry["signature"] = clf.signature
    entry["davidson"] = davidson_metrics(np.array(clf.score(held.davidson)), held.classes, clf.threshold)
    entry["everyday"] = everyday_metrics({k: np.array(clf.score(v)) for k, v in held.everyday.items()},
                                         clf.threshold)
    log(f"{name:8s} Davidson AUROC toxic {entry['davidson']['toxic_vs_neither']['auroc']:.3f} "
        f"hate {entry['davidson']['hate_vs_rest']['auroc']:.3f}; everyday FPR "
        f"{entry['everyday']['all']['fpr']:.4f} @ {clf.threshold:.3f}; val ECE {m['val_ece']:.4f}")
    return entry


def _peer_entry(peer, davidson_scores: np.ndarray, held: _HeldOut, log: Callable[[str], None]) -> dict:
    """metrics.json's `peer`: the peer scorer's held-out checks, at its own threshold 0.5."""
    entry = {"davidson": davidson_metrics(davidson_scores, held.classes, 0.5),
             "everyday": everyday_metrics({k: np.asarray(peer(v)) for k, v in held.everyday.items()}, 0.5)}
    log(f"peer     Davidson AUROC toxic {entry['davidson']['toxic_vs_neither']['auroc']:.3f} "
        f"hate {entry['davidson']['hate_vs_rest']['auroc']:.3f}; everyday FPR "
        f"{entry['everyday']['all']['fpr']:.4f} @ 0.5")
    return entry


def data_summary(corpus: td.Corpus, split: np.ndarray, root: Path, toxigen_dir: Path) -> dict:
    y, src, grp = corpus.arrays()
    pools = pools_of(corpus)
    toxigen = {g: {"hate": int(((grp == g) & (src == "toxigen") & (y == 1)).sum()),
                   "neutral": int(((grp == g) & (src == "toxigen") & (y == 0)).sum())}
               for g in sorted(set(grp[src == "toxigen"]))}
    return {"toxigen_distinct_statements": toxigen,
            "davidson_distinct_tweets": {c: int(((src == "davidson") & (grp == c)).sum())
                                         for c in td.DAVIDSON_CLASSES.values()},
            "rows_by_pool_and_split": {p: {s: int(((pools == p) & (split == s)).sum()) for s in ("train", "val", "test")}
                                       for p in POOL_WEIGHTS},
            "pool_weights": POOL_WEIGHTS, "background_files": list(td.BACKGROUND),
            "everyday_eval_files": {k: v[0] for k, v in td.EVERYDAY_EVAL.items()},
            "file_sha256": td.data_hashes(root, toxigen_dir),
            # hashes, not texts: the splits are reproducible from the seed, and the package does
            # not ship hateful statements
            "split_sha256": {s: td.texts_sha256([t for t, k in zip(corpus.texts, split) if k == s])
                             for s in ("train", "val", "test")}}


def save_models(models: dict, names: Sequence[str], out_dir: Path, seed: int, embed: Callable | None = None) -> dict:
    """One safetensors file per model; returns {file name: tensor sha256}."""
    saved = {}
    for name in names:
        m = models[name]
        tensors = {"weight": m["weight"], "bias": np.array([m["bias"]], dtype=np.float32)}
        meta = {"seed": seed, "threshold": f"{m['threshold']:.4f}", "platt": json.dumps(m["platt"]),
                "trained_on": "toxigen (12 groups) + davidson train split + background + fragments"}
        if name == "minilm":
            tensors["probe"] = (embed or tox.toxicity_embed)([tox.PROBE_SENTENCE])[0]
            meta.update(dim=384, embedding_model=tox.EMBEDDING_MODEL, C=m["C"])
        elif name == "ngram":
            meta.update(dim=N_BUCKETS, hash="crc32", features="word 1-2 + char_wb 3-5, log1p, l2", C=m["C"])
        else:
            meta.update(dim=2, inputs="minilm,ngram raw logits")
        path = tox.save_weights(out_dir / tox.WEIGHT_FILES[name], name, tensors, meta)
        saved[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return saved
