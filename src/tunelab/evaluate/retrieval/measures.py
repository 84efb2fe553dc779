"""Search metrics with trec_eval's own code (pytrec_eval wraps trec_eval's C sources).

    evaluate_run(qrels, run, measures=DEFAULT_MEASURES) -> RetrievalResult
        .per_query: {qid: {measure: value}}    .aggregate: {measure: value, "num_q": n}

Measure names are trec_eval's. Besides single names (map, gm_map, Rprec, bpref, recip_rank,
ndcg, P_10, recall_100, ndcg_cut_10, success_10, iprec_at_recall_0.50, num_rel_ret, ...) a
request may name:
- a family without a cutoff, as `trec_eval -m P` does: `P` is P_5 ... P_1000 at trec_eval's
  default cutoffs; `P.5,10` names the cutoffs;
- a group: `official` is trec_eval's default output (what it prints without -m) and `all_trec`
  is everything `trec_eval -m all_trec` prints that the bundled trec_eval computes.
For convenience "P@10" == "P_10", "ndcg@10" == "ndcg_cut_10", "recall@100", "success@10",
"hit_rate@10" == "success_10", "mrr" == "recip_rank"; output keys are always trec_eval's names.

Conventions (trec_eval's, because its code computes them):
- documents are ranked by score descending; the run's rank column is ignored; ties in score are
  broken by docid in descending string order (form_res_rels.c, comp_sim_docno).
- relevant means rel >= 1 (trec_eval -l1); graded measures (ndcg*) use the grade as gain.
- the "all" value is the arithmetic mean over the queries present in BOTH the run and the
  qrels (trec_eval without -c), except: the counts (num_ret, num_rel, num_rel_ret,
  num_nonrel_judged_ret) are integer sums, and gm_map / gm_bpref are geometric means, which
  trec_eval computes as exp(mean(log(max(x, 1e-5)))). Per query, gm_* hold that log, as inside
  trec_eval (it prints no per-query gm_* values). `complete=True` averages over every qrels
  query, a query the run misses scoring 0 (its num_rel still counts), as trec_eval -c does.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pytrec_eval

from tunelab.errors import TunelabError
from tunelab.evaluate.retrieval.trec import Qrels, Run, ranked

DEFAULT_MEASURES = ("map", "Rprec", "recip_rank", "P_5", "P_10", "recall_100", "ndcg",
                    "ndcg_cut_10", "bpref", "success_10")

# trec_eval's default cutoffs (its m_*.c parameter defaults), used when a family is named bare.
_CUTS = (5, 10, 15, 20, 30, 100, 200, 500, 1000)
CUTOFF_DEFAULTS: dict[str, tuple] = {
    "P": _CUTS, "recall": _CUTS, "ndcg_cut": _CUTS, "map_cut": _CUTS, "relative_P": _CUTS,
    "success": (1, 5, 10),
    # levels, not ranks: named with two decimals, and only these levels exist in pytrec_eval
    "iprec_at_recall": tuple(f"{i / 10:.2f}" for i in range(11)),
    "Rprec_mult": tuple(f"{i / 5:.2f}" for i in range(1, 11)),
}
PLAIN = ("num_ret", "num_rel", "num_rel_ret", "map", "gm_map", "Rprec", "bpref", "recip_rank",
         "infAP", "gm_bpref", "utility", "11pt_avg", "binG", "G", "ndcg", "ndcg_rel", "Rndcg",
         "set_P", "set_relative_P", "set_recall", "set_map", "set_F", "num_nonrel_judged_ret")
COUNTS = ("num_ret", "num_rel", "num_rel_ret", "num_nonrel_judged_ret")
GEOMETRIC = ("gm_map", "gm_bpref")
MIN_GEO_MEAN = 1e-5  # trec_eval's floor before taking the log (trec_eval.h)

_OFFICIAL_ORDER = ("num_ret", "num_rel", "num_rel_ret", "map", "gm_map", "Rprec", "bpref",
                   "recip_rank", "iprec_at_recall", "P")
_ALL_TREC_ORDER = (_OFFICIAL_ORDER + ("recall", "infAP", "gm_bpref", "Rprec_mult", "utility",
                   "11pt_avg", "binG", "G", "ndcg", "ndcg_rel", "Rndcg", "ndcg_cut", "map_cut",
                   "relative_P", "success", "set_P", "set_relative_P", "set_recall", "set_map",
                   "set_F", "num_nonrel_judged_ret"))
_ALIASES = {"mrr": "recip_rank", "ap": "map", "r-prec": "Rprec", "rprec": "Rprec"}
_AT = {"p": "P", "precision": "P", "recall": "recall", "r": "recall", "ndcg": "ndcg_cut",
       "success": "success", "hit_rate": "success", "hits": "success", "map": "map_cut"}
# in trec_eval, not in the trec_eval that pytrec_eval bundles
_UNSUPPORTED = ("rbp", "rbp_resid", "unj")


def _expand_family(family: str, cuts) -> list[str]:
    return [f"{family}_{c}" for c in cuts]


def _group(order) -> list[str]:
    names: list[str] = []
    for name in order:
        names += _expand_family(name, CUTOFF_DEFAULTS[name]) if name in CUTOFF_DEFAULTS else [name]
    return names


GROUPS = {"official": _group(_OFFICIAL_ORDER), "all_trec": _group(_ALL_TREC_ORDER)}


def _unknown(measure: str) -> TunelabError:
    if measure.split("_")[0] in _UNSUPPORTED or measure in _UNSUPPORTED:
        return TunelabError(f"retrieval measure '{measure}' is not computed by the trec_eval that "
                            "pytrec_eval bundles; see docs/retrieval.md for the supported names")
    return TunelabError(f"unknown retrieval measure '{measure}'; use trec_eval names (map, gm_map, P_10, "
                        "ndcg_cut_10, iprec_at_recall_0.50, ...), a family (P, P.5,10) or a group "
                        "(official, all_trec); see docs/retrieval.md")


def expand(measure: str) -> list[str]:
    """One requested name -> trec_eval output names: 'P@10' -> ['P_10'], 'P' -> ['P_5', ...]."""
    m = measure.strip()
    if m in GROUPS:
        return list(GROUPS[m])
    if m.lower() in _ALIASES:
        return [_ALIASES[m.lower()]]
    at = re.fullmatch(r"([A-Za-z_\-]+)@(\d+)", m)
    if at and at.group(1).lower() in _AT:
        m = f"{_AT[at.group(1).lower()]}_{int(at.group(2))}"
    if m in PLAIN or m == "num_q":  # num_q is always reported; naming it is allowed
        return [m]
    if m in CUTOFF_DEFAULTS:
        return _expand_family(m, CUTOFF_DEFAULTS[m])
    dotted = re.fullmatch(r"([A-Za-z_]+)\.([\d.,]+)", m)  # trec_eval's own form: P.5,10
    if dotted and dotted.group(1) in CUTOFF_DEFAULTS:
        return [n for c in dotted.group(2).split(",") if c for n in expand(f"{dotted.group(1)}_{c}")]
    for family, defaults in CUTOFF_DEFAULTS.items():
        if m.startswith(family + "_"):
            cut = m[len(family) + 1:]
            if isinstance(defaults[0], str):  # a level: only trec_eval's fixed levels exist
                if cut in defaults:
                    return [m]
            elif cut.isdigit() and int(cut) > 0:
                return [f"{family}_{int(cut)}"]
    raise _unknown(measure)


def canonical(measure: str) -> str:
    """'P@10' -> 'P_10', 'hit_rate@5' -> 'success_5', 'mrr' -> 'recip_rank'; checks the name.

    For names that stand for several measures (a family or a group) use `expand`.
    """
    names = expand(measure)
    if len(names) != 1:
        raise TunelabError(f"'{measure}' names {len(names)} measures; name one (e.g. {names[0]})")
    return names[0]


def _pytrec_spec(measures: list[str]) -> set[str]:
    """trec_eval names -> pytrec_eval's request form: {'map', 'P.5,10', 'ndcg_cut.10'}."""
    spec: set[str] = set()
    cutoffs: dict[str, set[str]] = {}
    for m in measures:
        if m in PLAIN:
            spec.add(m)
            continue
        family = next(f for f in CUTOFF_DEFAULTS if m.startswith(f + "_"))
        if isinstance(CUTOFF_DEFAULTS[family][0], str):
            spec.add(family)  # level families come whole; the wanted levels are picked below
        else:
            cutoffs.setdefault(family, set()).add(m[len(family) + 1:])
    for family, ks in cutoffs.items():
        spec.add(f"{family}." + ",".join(sorted(ks, key=int)))
    return spec


def _round_half_away(x: float) -> int:
    """C's lround: halves go away from zero (Python's round() goes to the even neighbour)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def interpolated_precision(docs: dict[str, float], judged: dict[str, int]) -> list[float]:
    """Interpolated precision at recall 0.0, 0.1, ..., 1.0 for one query, as trec_eval 10.0.

    Written here because the trec_eval inside pytrec_eval predates trec_eval 10.0's change to
    these cutoffs (commit 2a9e214, 2023: lround(level * num_rel) replaced adding 0.9 and
    truncating), which moves iprec_at_recall_* and 11pt_avg in the fourth decimal. The walk is
    trec_eval's: from the last retrieved document up, keep the best precision seen so far and
    hand it to every recall level whose cutoff (in relevant documents) is reached there.
    """
    rels = [judged.get(d, 0) >= 1 for d, _ in ranked(docs)]
    num_rel = sum(1 for r in judged.values() if r >= 1)
    num_ret, num_rel_ret = len(rels), sum(rels)
    levels = [i / 10 for i in range(11)]
    cutoffs = [_round_half_away(level * num_rel) for level in levels]
    values = [0.0] * len(levels)
    cut = len(levels) - 1
    while cut >= 0 and cutoffs[cut] > num_rel_ret:  # levels this run never reaches stay 0
        cut -= 1
    best = num_rel_ret / num_ret if num_ret else 0.0
    rel_so_far = num_rel_ret
    for rank in range(num_ret, 0, -1):
        if rel_so_far == 0:
            break
        best = max(best, rel_so_far / rank)
        if rels[rank - 1]:
            while cut >= 0 and rel_so_far == cutoffs[cut]:
                values[cut] = best
                cut -= 1
            rel_so_far -= 1
    while cut >= 0:
        values[cut] = best
        cut -= 1
    return values


def is_count(measure: str) -> bool:
    return measure in COUNTS


def combine(measure: str, values: list[float], n: int | None = None) -> float | int:
    """trec_eval's "all" value from per-query values: sum, geometric or arithmetic mean over n."""
    n = len(values) if n is None else n
    if measure in COUNTS:
        return int(round(sum(values)))
    if n == 0:
        return 0.0
    mean = sum(values) / n
    return math.exp(mean) if measure in GEOMETRIC else mean


def _missing_query(measures: list[str], judged: dict[str, int]) -> dict[str, float]:
    """What trec_eval -c scores for a qrels query the run did not answer."""
    row = {m: 0.0 for m in measures}
    for m in measures:
        if m == "num_rel":
            row[m] = float(sum(1 for r in judged.values() if r >= 1))
        elif m in GEOMETRIC:
            row[m] = math.log(MIN_GEO_MEAN)
    return row


@dataclass
class RetrievalResult:
    measures: list[str]
    per_query: dict[str, dict[str, float]]
    aggregate: dict[str, float | int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.aggregate)


def evaluate_run(qrels: Qrels, run: Run, measures: list[str] | tuple[str, ...] = DEFAULT_MEASURES,
                 complete: bool = False) -> RetrievalResult:
    """trec_eval measures per query and averaged (see module docstring for the conventions)."""
    names = list(dict.fromkeys(n for m in measures for n in expand(m)))  # dedupe, keep order
    if not names:
        raise TunelabError("no retrieval measures requested")
    names = [n for n in names if n != "num_q"]  # num_q is always reported
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, _pytrec_spec(names or ["num_ret"]))
    # pytrec_eval wants plain floats and drops queries without qrels, as trec_eval does.
    clean = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if docs}
    raw = evaluator.evaluate(clean)
    if not raw:
        sample_run, sample_q = sorted(run)[:3], sorted(qrels)[:3]
        raise TunelabError(f"no query is in both the run and the qrels (run has {sample_run}..., "
                           f"qrels has {sample_q}...); check that the query ids match")
    per_query = {q: {m: float(vals[m]) for m in names} for q, vals in sorted(raw.items())}
    if any(m.startswith("iprec_at_recall_") or m == "11pt_avg" for m in names):
        for q, row in per_query.items():
            iprec = interpolated_precision(clean[q], qrels[q])
            for level, value in zip(CUTOFF_DEFAULTS["iprec_at_recall"], iprec):
                if f"iprec_at_recall_{level}" in row:
                    row[f"iprec_at_recall_{level}"] = value
            if "11pt_avg" in row:
                row["11pt_avg"] = sum(iprec) / len(iprec)
    rows = list(per_query.values())
    if complete:
        rows += [_missing_query(names, qrels[q]) for q in sorted(qrels) if q not in per_query]
    n = len(rows)
    aggregate: dict[str, float | int] = {"num_q": n}
    for m in names:
        aggregate[m] = combine(m, [r[m] for r in rows], n)
    return RetrievalResult(names, per_query, aggregate)
