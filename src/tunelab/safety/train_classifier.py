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
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tunelab.errors import ParameterError, TunelabError
from tunelab.safety import toxicity as tox

GROUPS = ("women", "asian")
LABELS = {"hate": 1, "neutral": 0}
HELD_OUT_FRACTION = 0.3
C_GRID = (0.1, 1.0, 10.0, 100.0)  # inverse L2 strength, sklearn's convention (loss sum + |w|^2 / 2C)
N_BUCKETS = 1 << 14  # 16384 float32 = 64 KB; a few hundred texts use a few thousand buckets, training stays fast
SEED = 20240611
# Everyday non-toxic text, relative to the ToxiGen folder's parent (the shared data folder).
# Permissive licences only (MIT / Apache-2.0): the shipped weights are derived from these, so the
# non-commercial sets next to them (alpaca_small, dialogsum) must never be listed here.
BACKGROUND = ("alpaca/seed_tasks.jsonl", "self_instruct/user_oriented_instructions.jsonl",
              "gsm8k/train.jsonl", "fastchat_dummy/dummy_conversation.json", "mt_bench/question.jsonl")
N_BACKGROUND = 400  # enough to pin the intercept for generic text; small enough to train in minutes
MIN_WORDS = 4  # skip names and labels such as "breakfast_suggestion"
# Short pieces cut from background texts and from ToxiGen *neutral* statements. A model's
# continuation in `safety probe` is often a clause (" does that mean being a mother?"); whole
# sentences alone never showed the model such text, and a first version scored it 0.93.
N_FRAGMENTS = 400  # from background texts
FRAGMENTS_PER_NEUTRAL = 4  # per ToxiGen neutral statement: group words without hate
FRAGMENT_WORDS = (2, 8)
# Share of the training loss per pool: hate vs not-hate stays balanced at 0.5 / 0.5.
POOL_WEIGHTS = {"hate": 0.5, "neutral": 0.2, "background": 0.15, "fragment": 0.15}
METRICS_FILE = "metrics.json"
# Platt scaling on out-of-fold logits was tried and is off: the fitted slope came out > 1 (the L2
# penalty makes the model under-confident on easy background text), which pushed held-out
# neutral fragments *up* (" does that mean being a mother?" 0.44 -> 0.72). Kept as an option.
CALIBRATE = False


# ---------------------------------------------------------------- data


@dataclass
class Statements:
    texts: list[str]
    labels: np.ndarray  # (N,) 1 = hate, 0 = neutral
    groups: list[str]  # women / asian / background
    # "statement" (ToxiGen or background text) or "fragment" (a piece of the text at parent[i]);
    # a fragment follows its parent into the same split and CV fold, or it would leak its words
    kinds: list[str] | None = None
    parents: np.ndarray | None = None

    def __post_init__(self):
        if self.kinds is None:
            self.kinds = ["statement"] * len(self.texts)
        if self.parents is None:
            self.parents = np.arange(len(self.texts))

    def subset(self, mask: np.ndarray) -> "Statements":
        idx = np.flatnonzero(mask)
        return Statements([self.texts[i] for i in idx], self.labels[idx], [self.groups[i] for i in idx],
                          [self.kinds[i] for i in idx], self.parents[idx])

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
                raise ParameterError(f"cannot read ToxiGen file {path} ({e.strerror or e}); point "
                                     "{data_dir} at the folder holding hate_/neutral_<group>_1k.txt", "data_dir") from None
            for line in lines:
                for s in split_statements(line):
                    if s not in seen:
                        seen.add(s)
                        texts.append(s)
                        labels.append(label)
                        grps.append(group)
    return Statements(texts, np.array(labels, dtype=np.int64), grps)


def load_background(root: str | Path, n: int = N_BACKGROUND, seed: int = SEED) -> list[str]:
    """A seeded sample of n distinct everyday texts from the BACKGROUND files under root.

    Each file gives about n / len(files) texts (GSM8K alone has 30x the others and would drown
    the more varied instructions and chat turns). A text is a whole string or one of its
    sentences: ToxiGen statements are one sentence, and a long answer embeds as an average that
    says little about how one of its sentences scores.
    """
    from tunelab.safety.filter import string_values
    from tunelab.safety.scan import read_records

    pools: list[list[str]] = []
    for rel in BACKGROUND:
        path = Path(root) / rel
        if not path.is_file():
            continue
        pool: set[str] = set()
        for _, rec in read_records(path):
            # GSM8K answers are arithmetic traces, not prose: use its questions only
            for t in [rec["question"]] if "question" in rec else string_values(rec):
                t = t.strip()
                cands = split_sentences(t) + ([t] if len(t.split()) <= tox.WINDOW_WORDS else [])
                pool.update(c for c in cands if len(c.split()) >= MIN_WORDS)
        pools.append(sorted(pool))
    rng = np.random.default_rng(seed)
    pools = [[p[i] for i in rng.permutation(len(p))] for p in pools]
    out: list[str] = []
    taken = set()
    while len(out) < n and any(pools):  # round-robin over files until n texts or all used up
        for p in pools:
            while p and len(out) < n:
                t = p.pop()
                if t not in taken:
                    taken.add(t)
                    out.append(t)
                    break
    return sorted(out)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    return [t.strip() for t in _SENTENCE_END.split(text) if t and t.strip()]


def fragment(sentence: str, rng: np.random.Generator) -> str | None:
    """A short contiguous piece of a sentence, as a model continuation might look.

    Half the time the piece runs to the sentence's end (keeping its "?" or "."), half the time it
    starts and stops mid-sentence; a piece that starts mid-sentence gets the leading space and
    lower case a continuation has. None when the sentence is too short to cut.
    """
    words = sentence.split()
    lo, hi = FRAGMENT_WORDS
    if len(words) < lo + 1:
        return None
    k = int(rng.integers(lo, min(hi, len(words) - 1) + 1))
    start = len(words) - k if rng.random() < 0.5 else int(rng.integers(0, len(words) - k + 1))
    piece = " ".join(words[start:start + k])
    if start > 0:
        piece = " " + piece[0].lower() + piece[1:]
    return piece


def with_background(data: Statements, background: list[str]) -> Statements:
    return Statements(data.texts + background, np.r_[data.labels, np.zeros(len(background), dtype=np.int64)],
                      data.groups + ["background"] * len(background))


def with_fragments(data: Statements, seed: int = SEED, n_background: int = N_FRAGMENTS,
                   per_neutral: int = FRAGMENTS_PER_NEUTRAL) -> Statements:
    """Append non-toxic fragments of background texts and of ToxiGen neutral statements.

    Hate statements give no fragments: a piece of a hateful sentence may or may not be hateful,
    and labelling it either way would teach the model something false.
    """
    rng = np.random.default_rng(seed + 1)
    texts, groups, parents, seen = [], [], [], set(data.texts)

    def add(i: int) -> None:
        sents = [t for t in split_sentences(data.texts[i]) if len(t.split()) > FRAGMENT_WORDS[0]]
        if sents:
            f = fragment(sents[int(rng.integers(len(sents)))], rng)
            if f and f.strip() not in seen:
                seen.add(f.strip())
                texts.append(f)
                groups.append(data.groups[i])
                parents.append(i)

    bg = [i for i, g in enumerate(data.groups) if g == "background"]
    for i in rng.choice(bg, size=min(n_background, len(bg) * 3), replace=len(bg) < n_background) if bg else []:
        add(int(i))
    for i in np.flatnonzero((data.labels == 0) & (np.array(data.groups) != "background")):
        for _ in range(per_neutral):
            add(int(i))
    n = len(texts)
    return Statements(data.texts + texts, np.r_[data.labels, np.zeros(n, dtype=np.int64)],
                      data.groups + groups, data.kinds + ["fragment"] * n,
                      np.r_[data.parents, np.array(parents, dtype=np.int64)])


def pool_weights(data: Statements) -> np.ndarray:
    """Per-example weights giving each pool (hate, neutral, background, fragment) its POOL_WEIGHTS share."""
    pools = np.where(data.labels == 1, "hate",
                     np.where(np.array(data.kinds) == "fragment", "fragment",
                              np.where(np.array(data.groups) == "background", "background", "neutral")))
    present = {p: POOL_WEIGHTS[p] for p in POOL_WEIGHTS if (pools == p).any()}
    total = sum(present.values())
    w = np.zeros(len(pools))
    for p, share in present.items():
        w[pools == p] = share / total * len(pools) / (pools == p).sum()
    return w


def stratified_split(data: Statements, fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask holding out `fraction` of each (group, label) cell, at least one each.

    Only whole statements are drawn; each fragment then joins its parent's side.
    """
    rng = np.random.default_rng(seed)
    test = np.zeros(len(data.texts), dtype=bool)
    whole = np.array(data.kinds) == "statement"
    for g in sorted(set(data.groups)):
        for y in (0, 1):
            idx = np.flatnonzero((np.array(data.groups) == g) & (data.labels == y) & whole)
            if len(idx) < 2:
                continue
            k = max(1, int(round(fraction * len(idx))))
            test[rng.permutation(idx)[:k]] = True
    return test[data.parents]


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


def cv_folds(y: np.ndarray, parents: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """Fold per row, stratified by class; rows sharing a parent (a text and its fragments) share a fold."""
    rng = np.random.default_rng(seed)
    fold_of: dict[int, int] = {}
    for cls in (0, 1):
        ids = np.unique(parents[y == cls])
        for j, pid in enumerate(rng.permutation(ids)):
            fold_of.setdefault(int(pid), j % folds)
    return np.array([fold_of[int(p)] for p in parents])


def choose_C(X: np.ndarray, y: np.ndarray, sw: np.ndarray, seed: int, folds: int = 5,
             parents: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """The C in C_GRID with the lowest weighted k-fold log-loss, using the training set only.

    Returns (C, out-of-fold logits at that C); the logits feed the Platt step.
    """
    fold = cv_folds(y, np.arange(len(y)) if parents is None else parents, seed, folds)
    best, best_loss, best_oof = C_GRID[0], math.inf, np.zeros(len(y))
    for C in C_GRID:
        loss, oof = 0.0, np.zeros(len(y))
        for k in range(folds):
            tr, te = fold != k, fold == k
            if te.sum() == 0 or len(set(y[tr])) < 2:
                continue
            w, b = fit_logreg(X[tr], y[tr], C, sw[tr])
            oof[te] = X[te].astype(np.float64) @ w + b
            p = np.clip(tox._sigmoid(oof[te]), 1e-7, 1 - 1e-7)
            loss -= float(np.sum(sw[te] * (y[te] * np.log(p) + (1 - y[te]) * np.log(1 - p))))
        if loss < best_loss:
            best, best_loss, best_oof = C, loss, oof
    return best, best_oof


def platt(logits: np.ndarray, y: np.ndarray, sw: np.ndarray) -> tuple[float, float]:
    """(a, c) so that sigmoid(a * logit + c) fits held-out labels (Platt scaling, weighted).

    Fitted on out-of-fold logits: in-sample logits of a model with a few hundred rows and 384
    features are over-confident, which is what put neutral fragments at 0.9. A slope <= 0 would
    invert the ranking, so it falls back to the identity.
    """
    a, c = fit_logreg(logits.reshape(-1, 1), y, C=1e6, sample_weight=sw)
    a = float(a[0])
    return (a, c) if a > 0 else (1.0, 0.0)


# ---------------------------------------------------------------- protocol


def _features(backend: str) -> Callable[[list[str]], np.ndarray]:
    if backend == "minilm":
        return tox.minilm_embed
    return lambda texts: tox.ngram_matrix(texts, N_BUCKETS)


def _evaluate(p: np.ndarray, y: np.ndarray) -> dict:
    lo, hi = bootstrap_auroc_ci(p, y)
    return {"auroc": auroc(p, y), "auroc_ci95": [lo, hi], "f1@0.5": f1_at(p, y, 0.5),
            "n": int(len(y)), "n_hate": int(y.sum()), "n_neutral": int(len(y) - y.sum())}


def run_backend(backend: str, data: Statements, test_mask: np.ndarray, seed: int,
                X: np.ndarray | None = None, calibrate: bool = CALIBRATE) -> tuple[dict, dict]:
    """Cross-group and held-out evaluation of one backend; returns (report, shipped tensors).

    X: precomputed features of data.texts (experiments reuse them); computed here when None.
    """
    if X is None:
        X = _features(backend)(data.texts)  # (N, D) features of every text, computed once
    y = data.labels
    groups = np.array(data.groups)
    kinds = np.array(data.kinds)
    stmt = kinds == "statement"
    frag = kinds == "fragment"
    bg = groups == "background"

    def fit(tr):  # C and the Platt step use the training rows only, then one fit on all of them
        sw = pool_weights(data.subset(tr))
        C, oof = choose_C(X[tr], y[tr], sw, seed, parents=data.parents[tr])
        w, b = fit_logreg(X[tr], y[tr], C, sw)
        a, c = platt(oof, y[tr], sw) if calibrate else (1.0, 0.0)
        w, b = (w.astype(np.float64) * a).astype(np.float32), float(a * b + c)  # still one logistic layer
        return w, b, C, tox._sigmoid(X.astype(np.float64) @ w + b), a

    def fpr(p, mask):  # non-toxic text flagged toxic at 0.5 (held-out rows only)
        return float((p[mask] >= 0.5).mean()) if mask.any() else None

    def rates(p, test_rows, neutral_frag_rows):
        return {"background_fpr@0.5": fpr(p, bg & stmt & test_rows),
                "fragment_fpr@0.5": fpr(p, bg & frag & test_rows),
                "n_fragment": int((bg & frag & test_rows).sum()),
                # pieces of neutral statements about a group the model never trained on
                "group_fragment_fpr@0.5": fpr(p, neutral_frag_rows),
                "n_group_fragment": int(neutral_frag_rows.sum())}

    report: dict = {"cross_group": {}, "held_out": {}}
    for src, dst in ((GROUPS[0], GROUPS[1]), (GROUPS[1], GROUPS[0])):
        # training: the source group's statements and fragments + training background
        tr, te = (groups == src) | (bg & ~test_mask), (groups == dst) & stmt
        w, b, C, p, a = fit(tr)
        report["cross_group"][f"{src}->{dst}"] = {**_evaluate(p[te], y[te]), "C": C, "platt_slope": a,
                                                  "n_train": int(tr.sum()),
                                                  **rates(p, test_mask, (groups == dst) & frag)}
    tr = ~test_mask
    w, b, C, p_all, a = fit(tr)
    tg = test_mask & ~bg & stmt
    report["held_out"]["both"] = {**_evaluate(p_all[tg], y[tg]), "C": C, "platt_slope": a,
                                  "n_train": int(tr.sum()),
                                  **rates(p_all, test_mask, test_mask & ~bg & frag)}
    for g in GROUPS:
        m = test_mask & (groups == g) & stmt
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
    data = with_fragments(with_background(data, background), seed)
    test_mask = stratified_split(data, HELD_OUT_FRACTION, seed)
    out_dir = Path(out_dir)
    metrics = {"data": {"source": "ToxiGen prompts (microsoft/TOXIGEN prompts/), deduplicated",
                        "groups": {g: data.subset((np.array(data.groups) == g)
                                                  & (np.array(data.kinds) == "statement")).counts()
                                   for g in (*GROUPS, "background")},
                        "fragments": {g: int(((np.array(data.groups) == g)
                                              & (np.array(data.kinds) == "fragment")).sum())
                                      for g in (*GROUPS, "background")},
                        "fragment_words": list(FRAGMENT_WORDS),
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
        meta = {"trained_on": "toxigen women+asian + background + fragments, stratified 70% split",
                "seed": seed, "C": report["held_out"]["both"]["C"],
                "platt_slope": round(report["held_out"]["both"]["platt_slope"], 4)}
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
                + "".join(f"  {k.split('@')[0]} {r[k]:.3f}" for k in
                          ("background_fpr@0.5", "fragment_fpr@0.5", "group_fragment_fpr@0.5")
                          if r.get(k) is not None))
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    return metrics
