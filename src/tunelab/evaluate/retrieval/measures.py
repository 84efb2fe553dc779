"""Search metrics with trec_eval's own code (pytrec_eval wraps trec_eval's C sources).

    evaluate_run(qrels, run, measures=DEFAULT_MEASURES) -> RetrievalResult
        .per_query: {qid: {measure: value}}    .aggregate: {measure: value, "num_q": n}

Measure names are trec_eval's: map, Rprec, recip_rank, ndcg, bpref, P_k, recall_k,
ndcg_cut_k, success_k (hit rate: 1 if a relevant document is in the top k), map_cut_k. For
convenience "P@10" == "P_10", "ndcg@10" == "ndcg_cut_10", "recall@100", "success@10",
"hit_rate@10" == "success_10", "mrr" == "recip_rank"; output keys are always trec_eval's names.

Conventions (trec_eval's, because its code computes them):
- documents are ranked by score descending; the run's rank column is ignored; ties in score are
  broken by docid in descending string order (form_res_rels.c, comp_sim_docno).
- relevant means rel >= 1 (trec_eval -l1); graded measures (ndcg*) use the grade as gain.
- the "all" average is the arithmetic mean over the queries present in BOTH the run and the
  qrels (trec_eval without -c). A query in the qrels with no relevant document still counts
  (it scores 0); queries only in the run or only in the qrels are left out. `complete=True`
  averages over every qrels query, counting missing ones as 0 (trec_eval -c).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytrec_eval

from tunelab.errors import TunelabError
from tunelab.evaluate.retrieval.trec import Qrels, Run

DEFAULT_MEASURES = ("map", "Rprec", "recip_rank", "P_5", "P_10", "recall_100", "ndcg",
                    "ndcg_cut_10", "bpref", "success_10")
PLAIN = ("map", "Rprec", "recip_rank", "ndcg", "bpref", "num_ret", "num_rel", "num_rel_ret")
WITH_CUTOFF = ("P", "recall", "ndcg_cut", "success", "map_cut")
_ALIASES = {"mrr": "recip_rank", "ap": "map", "r-prec": "Rprec", "rprec": "Rprec"}
_AT = {"p": "P", "precision": "P", "recall": "recall", "r": "recall", "ndcg": "ndcg_cut",
       "success": "success", "hit_rate": "success", "hits": "success", "map": "map_cut"}


def canonical(measure: str) -> str:
    """'P@10' -> 'P_10', 'hit_rate@5' -> 'success_5', 'mrr' -> 'recip_rank'; checks the name."""
    m = measure.strip()
    if m.lower() in _ALIASES:
        return _ALIASES[m.lower()]
    at = re.fullmatch(r"([A-Za-z_\-]+)@(\d+)", m)
    if at and at.group(1).lower() in _AT:
        m = f"{_AT[at.group(1).lower()]}_{int(at.group(2))}"
    if m in PLAIN:
        return m
    cut = re.fullmatch(r"(P|recall|ndcg_cut|success|map_cut)_(\d+)", m)
    if cut and int(cut.group(2)) > 0:
        return m
    known = ", ".join(PLAIN) + ", " + ", ".join(f"{f}_k" for f in WITH_CUTOFF)
    raise TunelabError(f"unknown retrieval measure '{measure}'; use trec_eval names: {known} (k > 0)")


def _pytrec_spec(measures: list[str]) -> set[str]:
    """trec_eval names -> pytrec_eval's request form: {'map', 'P.5,10', 'ndcg_cut.10'}."""
    spec: set[str] = set()
    cutoffs: dict[str, list[int]] = {}
    for m in measures:
        if m in PLAIN:
            spec.add(m)
        else:
            family, k = m.rsplit("_", 1)
            cutoffs.setdefault(family, []).append(int(k))
    for family, ks in cutoffs.items():
        spec.add(f"{family}." + ",".join(str(k) for k in sorted(set(ks))))
    return spec


@dataclass
class RetrievalResult:
    measures: list[str]
    per_query: dict[str, dict[str, float]]
    aggregate: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.aggregate)


def evaluate_run(qrels: Qrels, run: Run, measures: list[str] | tuple[str, ...] = DEFAULT_MEASURES,
                 complete: bool = False) -> RetrievalResult:
    """trec_eval measures per query and averaged (see module docstring for the conventions)."""
    names = list(dict.fromkeys(canonical(m) for m in measures))  # dedupe, keep order
    if not names:
        raise TunelabError("no retrieval measures requested")
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, _pytrec_spec(names))
    # pytrec_eval wants plain floats and drops queries without qrels, as trec_eval does.
    clean = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if docs}
    raw = evaluator.evaluate(clean)
    if not raw:
        sample_run, sample_q = sorted(run)[:3], sorted(qrels)[:3]
        raise TunelabError(f"no query is in both the run and the qrels (run has {sample_run}..., "
                           f"qrels has {sample_q}...); check that the query ids match")
    per_query = {q: {m: float(vals[m]) for m in names} for q, vals in sorted(raw.items())}
    n = len(qrels) if complete else len(per_query)
    aggregate: dict[str, float] = {}
    for m in names:
        values = [v[m] for v in per_query.values()]
        if m.startswith("num_"):
            aggregate[m] = float(sum(values))
        else:
            aggregate[m] = float(sum(values) / n)  # missing queries add 0 under complete=True
    aggregate["num_q"] = n
    return RetrievalResult(names, per_query, aggregate)
