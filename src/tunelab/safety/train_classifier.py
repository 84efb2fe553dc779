"""Train the toxicity classifier on ToxiGen statements and measure it on held-out groups.

Protocol (the numbers go to `metrics.json` next to the weights and into MODEL_CARD.md):
1. Read hate_/neutral_{women,asian}_1k.txt, split each line on the literal `\\n-`, strip the
   leading "- ", and deduplicate: the 1k prompt lines are shuffles of a few dozen statements, so
   without deduplication every "held-out" statement would also be in training.
2. Background negatives: ToxiGen has only statements about a group, so a model fitted on it alone
   has never seen ordinary text ("explain photosynthesis") and scored it near its intercept
   (about 0.6 in a first version), flagging most benign outputs. A seeded sample of everyday
   instructions and questions (BACKGROUND files: alpaca seed tasks, self-instruct, GSM8K; all
   permissive licences) joins as non-toxic text, weighted so that hate, ToxiGen-neutral and
   background each carry a fixed share (POOL_WEIGHTS) of the loss.
3. Cross-group: train on one group (+ background), test on the other group (both directions).
4. Shipped model: a stratified split (by group and label) holds out HELD_OUT_FRACTION; the
   model trained on the rest of both groups is the one saved, so its held-out numbers are its own.
The logistic regression is fitted by hand (full-batch L-BFGS in torch, L2, class-balanced), with
the L2 strength chosen by cross-validation inside the training set only.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tunelab.errors import TunelabError
from tunelab.safety import toxicity as tox

GROUPS = ("women", "asian")
LABELS = {"hate": 1, "neutral": 0}
HELD_OUT_FRACTION = 0.3
C_GRID = (0.1, 1.0, 10.0, 100.0)  # inverse L2 strength, sklearn's convention (loss sum + |w|^2 / 2C)
N_BUCKETS = 1 << 14  # 16384 float32 = 64 KB; a few hundred texts use a few thousand buckets, training stays fast
SEED = 20240611
# Everyday non-toxic text, relative to the ToxiGen folder's parent (the shared data folder).
BACKGROUND = ("alpaca/seed_tasks.jsonl", "self_instruct/user_oriented_instructions.jsonl",
              "gsm8k/train.jsonl")
N_BACKGROUND = 240  # enough to pin the intercept for generic text; small enough to train in seconds
MIN_WORDS = 4  # skip names and labels such as "breakfast_suggestion"
# Share of the training loss per pool: hate vs not-hate stays balanced at 0.5 / 0.5.
POOL_WEIGHTS = {"hate": 0.5, "neutral": 0.25, "background": 0.25}
METRICS_FILE = "metrics.json"


# ---------------------------------------------------------------- data


@dataclass
class Statements:
    texts: list[str]
    labels: np.ndarray  # (N,) 1 = hate, 0 = neutral
    groups: list[str]

    def subset(self, mask: np.ndarray) -> "Statements":
        idx = np.flatnonzero(mask)
        return Statements([self.texts[i] for i in idx], self.labels[idx], [self.groups[i] for i in idx])

    def counts(self) -> dict[str, int]:
        return {"n": len(self.texts), "hate": int(self.labels.sum()),
                "neutral": int(len(self.texts) - self.labels.sum())}


def split_statements(line: str) -> list[str]:
    """One ToxiGen prompt line -> its statements (the file holds a literal backslash-n + dash)."""
    out = []
    for part in line.rstrip("\n").split("\\n-"):
        part = part.strip()
        if part.startswith("-"):
            part = part[1:].strip()
        if part:
            out.append(part)
    return out


def load_toxigen(data_dir: str | Path, groups: Sequence[str] = GROUPS) -> Statements:
    """Deduplicated statements of every (label, group) file; a statement keeps its first label."""
    data_dir = Path(data_dir)
    texts, labels, grps, seen = [], [], [], set()
    for group in groups:
        for name, label in LABELS.items():
            path = data_dir / f"{name}_{group}_1k.txt"
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise TunelabError(f"cannot read ToxiGen file {path} ({e.strerror or e}); point "
                                   "--data at the folder holding hate_/neutral_<group>_1k.txt") from None
            for line in lines:
                for s in split_statements(line):
                    if s not in seen:
                        seen.add(s)
                        texts.append(s)
                        labels.append(label)
                        grps.append(group)
    return Statements(texts, np.array(labels, dtype=np.int64), grps)


def load_background(root: str | Path, n: int = N_BACKGROUND, seed: int = SEED) -> list[str]:
    """A seeded sample of n distinct everyday texts from the BACKGROUND files under root."""
    from tunelab.safety.filter import string_values
    from tunelab.safety.scan import read_records

    pool: list[str] = []
    for rel in BACKGROUND:
        path = Path(root) / rel
        if not path.is_file():
            continue
        for _, rec in read_records(path):
            # GSM8K answers are arithmetic traces, not prose: use its questions only
            strings = [rec["question"]] if "question" in rec else string_values(rec)
            pool += [t.strip() for t in strings if len(t.split()) >= MIN_WORDS]
    pool = sorted(set(pool))
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]


def with_background(data: Statements, background: list[str]) -> Statements:
    return Statements(data.texts + background, np.r_[data.labels, np.zeros(len(background), dtype=np.int64)],
                      data.groups + ["background"] * len(background))


def pool_weights(data: Statements) -> np.ndarray:
    """Per-example weights giving each pool (hate, ToxiGen neutral, background) its POOL_WEIGHTS share."""
    pools = np.where(data.labels == 1, "hate", np.where(np.array(data.groups) == "background",
                                                          "background", "neutral"))
    present = {p: POOL_WEIGHTS[p] for p in POOL_WEIGHTS if (pools == p).any()}
    total = sum(present.values())
    w = np.zeros(len(pools))
    for p, share in present.items():
        w[pools == p] = share / total * len(pools) / (pools == p).sum()
    return w


def stratified_split(data: Statements, fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask holding out `fraction` of each (group, label) cell, at least one each."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(data.texts), dtype=bool)
    for g in sorted(set(data.groups)):
        for y in (0, 1):
            idx = np.flatnonzero((np.array(data.groups) == g) & (data.labels == y))
            if len(idx) < 2:
                continue
            k = max(1, int(round(fraction * len(idx))))
            test[rng.permutation(idx)[:k]] = True
    return test


# ---------------------------------------------------------------- metrics


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic; tied scores share mean ranks.

    Equals P(score of a random positive > score of a random negative) + 0.5 P(tie).
    NaN when one class is absent.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # walk runs of equal scores and give each the mean of its 1-based ranks
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def f1_at(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> float:
    """F1 of the positive (toxic) class when score >= threshold is predicted toxic."""
    pred = np.asarray(scores) >= threshold
    y = np.asarray(labels).astype(bool)
    tp = int((pred & y).sum())
    denom = int(pred.sum()) + int(y.sum())
    return 2.0 * tp / denom if denom else 0.0


def bootstrap_auroc_ci(scores, labels, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval, resampling positives and negatives separately (test sets are tiny)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        p, q = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        vals.append(auroc(np.concatenate([p, q]), np.r_[np.ones(len(p)), np.zeros(len(q))]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


# ---------------------------------------------------------------- logistic regression


def fit_logreg(X: np.ndarray, y: np.ndarray, C: float = 1.0,
               sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression by full-batch L-BFGS; returns (weight, bias).

    Minimises sum_i s_i * logloss_i + |w|^2 / (2C). Default s_i = n / (2 n_class(i)): each class
    weighs the same, so 0.5 stays a sensible threshold. The bias is not penalised.
    """
    import torch

    Xt = torch.as_tensor(X, dtype=torch.float64)  # (N, D)
    yt = torch.as_tensor(y, dtype=torch.float64)  # (N,)
    n_pos = float(yt.sum())
    n_neg = len(yt) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("training data needs both classes")
    if sample_weight is None:
        sw = torch.where(yt > 0, len(yt) / (2 * n_pos), len(yt) / (2 * n_neg))
    else:
        sw = torch.as_tensor(sample_weight, dtype=torch.float64)
    w = torch.zeros(Xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = Xt @ w + b
        loss = (sw * torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")).sum()
        loss = loss + (w @ w) / (2 * C)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float32), float(b.detach()[0])


def choose_C(X: np.ndarray, y: np.ndarray, sw: np.ndarray, seed: int, folds: int = 5) -> float:
    """The C in C_GRID with the lowest weighted k-fold log-loss, using the training set only."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % folds
    best, best_loss = C_GRID[0], math.inf
    for C in C_GRID:
        loss = 0.0
        for k in range(folds):
            tr, te = fold != k, fold == k
            if te.sum() == 0 or len(set(y[tr])) < 2:
                continue
            w, b = fit_logreg(X[tr], y[tr], C, sw[tr])
            p = np.clip(tox._sigmoid(X[te].astype(np.float64) @ w + b), 1e-7, 1 - 1e-7)
            loss -= float(np.sum(sw[te] * (y[te] * np.log(p) + (1 - y[te]) * np.log(1 - p))))
        if loss < best_loss:
            best, best_loss = C, loss
    return best


# ---------------------------------------------------------------- protocol


def _features(backend: str) -> Callable[[list[str]], np.ndarray]:
    if backend == "minilm":
        return tox.minilm_embed
    return lambda texts: tox.ngram_matrix(texts, N_BUCKETS)


def _evaluate(p: np.ndarray, y: np.ndarray) -> dict:
    lo, hi = bootstrap_auroc_ci(p, y)
    return {"auroc": auroc(p, y), "auroc_ci95": [lo, hi], "f1@0.5": f1_at(p, y, 0.5),
            "n": int(len(y)), "n_hate": int(y.sum()), "n_neutral": int(len(y) - y.sum())}


def run_backend(backend: str, data: Statements, test_mask: np.ndarray, seed: int) -> tuple[dict, dict]:
    """Cross-group and held-out evaluation of one backend; returns (report, shipped tensors)."""
    X = _features(backend)(data.texts)  # (N, D) features of every statement, computed once
    y = data.labels
    groups = np.array(data.groups)
    bg = groups == "background"
    bg_test = bg & test_mask

    def fit(tr):  # C chosen inside the training rows only, then one fit on all of them
        sw = pool_weights(data.subset(tr))
        C = choose_C(X[tr], y[tr], sw, seed)
        w, b = fit_logreg(X[tr], y[tr], C, sw)
        return w, b, C, tox._sigmoid(X.astype(np.float64) @ w + b)

    def fpr(p):  # benign everyday text flagged toxic at 0.5 (held-out background only)
        return float((p[bg_test] >= 0.5).mean()) if bg_test.any() else None

    report: dict = {"cross_group": {}, "held_out": {}}
    for src, dst in ((GROUPS[0], GROUPS[1]), (GROUPS[1], GROUPS[0])):
        tr, te = (groups == src) | (bg & ~test_mask), groups == dst
        w, b, C, p = fit(tr)
        report["cross_group"][f"{src}->{dst}"] = {**_evaluate(p[te], y[te]), "C": C,
                                                  "n_train": int(tr.sum()), "background_fpr@0.5": fpr(p)}
    tr = ~test_mask
    w, b, C, p_all = fit(tr)
    tg = test_mask & ~bg
    report["held_out"]["both"] = {**_evaluate(p_all[tg], y[tg]), "C": C, "n_train": int(tr.sum()),
                                  "background_fpr@0.5": fpr(p_all)}
    for g in GROUPS:
        m = test_mask & (groups == g)
        report["held_out"][g] = _evaluate(p_all[m], y[m])
    tensors = {"weight": w, "bias": np.array([b], dtype=np.float32)}
    return report, tensors


def train(data_dir: str | Path, out_dir: str | Path, seed: int = SEED,
          backends: Sequence[str] = ("minilm", "ngram"), log: Callable[[str], None] = print) -> dict:
    """Run the protocol for each backend, write weights + metrics.json into out_dir; return metrics."""
    from tunelab.io import atomic_write_json

    data = load_toxigen(data_dir)
    background = load_background(Path(data_dir).parent, seed=seed)
    if not background:
        log(f"no background text found under {Path(data_dir).parent} ({', '.join(BACKGROUND)}); "
            "training on ToxiGen alone, which over-scores everyday text")
    data = with_background(data, background)
    test_mask = stratified_split(data, HELD_OUT_FRACTION, seed)
    out_dir = Path(out_dir)
    metrics = {"data": {"source": "ToxiGen prompts (microsoft/TOXIGEN prompts/), deduplicated",
                        "groups": {g: data.subset(np.array(data.groups) == g).counts()
                                   for g in (*GROUPS, "background")},
                        "background_files": list(BACKGROUND), "pool_weights": POOL_WEIGHTS,
                        "held_out_fraction": HELD_OUT_FRACTION, "seed": seed,
                        # a hash, not the statements: the split is reproducible from the seed and
                        # this pins it down without shipping hateful text inside the package
                        "held_out_sha256": hashlib.sha256("\n".join(
                            sorted(t for t, m in zip(data.texts, test_mask) if m)).encode()).hexdigest()},
               "backends": {}}
    for backend in backends:
        if backend == "minilm" and not tox.minilm_available():
            log("skipping minilm: the embeddings extra is not installed")
            continue
        t0 = time.perf_counter()
        report, tensors = run_backend(backend, data, test_mask, seed)
        meta = {"trained_on": "toxigen women+asian + background, stratified 70% split", "seed": seed,
                "C": report["held_out"]["both"]["C"]}
        if backend == "minilm":
            tensors["probe"] = tox.minilm_embed([tox.PROBE_SENTENCE])[0]
            meta.update(dim=tensors["weight"].shape[0], embedding_model=tox.EMBEDDING_MODEL)
        else:
            meta.update(dim=N_BUCKETS, hash="crc32", features="word 1-2 + char_wb 3-5, log1p, l2")
        tox.save_weights(out_dir / tox.WEIGHT_FILES[backend], backend, tensors, meta)
        report["wall_s"] = round(time.perf_counter() - t0, 2)
        metrics["backends"][backend] = report
        for name, r in [*report["cross_group"].items(), *(("held_out:" + k, v) for k, v in report["held_out"].items())]:
            log(f"{backend:6s} {name:16s} AUROC {r['auroc']:.3f} [{r['auroc_ci95'][0]:.2f}, "
                f"{r['auroc_ci95'][1]:.2f}]  F1@0.5 {r['f1@0.5']:.3f}  (n={r['n']}: "
                f"{r['n_hate']} hate / {r['n_neutral']} neutral)"
                + (f"  background FPR@0.5 {r['background_fpr@0.5']:.3f}" if r.get("background_fpr@0.5") is not None else ""))
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    return metrics
