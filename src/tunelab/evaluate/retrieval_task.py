"""The `retrieval` task type: corpus + queries + qrels -> a ranked run -> trec_eval measures.

Files the task names (paths relative to the task YAML):
- corpus:  a data file (.jsonl/.json/.csv/.parquet) with an id field (id, _id, docid, doc_id) and
           text (text, plus title when present), or a Cranfield SMART file (`.I`/`.W` records).
- queries: the same shapes with query ids (id, _id, qid, query_id) and text (text, query).
- qrels:   TREC qrels (`qid 0 docid rel`), or Cranfield's three-column `qid docid code` (read
           with its grade mapping, see tunelab.evaluate.retrieval.cranfield).
The retriever is `bm25` (rank-bm25) or `embedding` (MiniLM, optional extra). `metrics` are
trec_eval measure names; each gets the mean over queries, stderr and a bootstrap CI over queries.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

from tunelab.errors import TunelabError

DOC_ID = ("id", "_id", "docid", "doc_id")
QUERY_ID = ("id", "_id", "qid", "query_id")
DEPTH = 1000  # trec_eval's usual run depth: MAP and recall need more than the top 100


def _is_smart(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as f:
        return f.readline().startswith(".I")


def _texts(task, key: str, id_fields: tuple, text_fields: tuple) -> dict[str, str]:
    from tunelab.data.load import load_rows
    from tunelab.evaluate.retrieval import cranfield

    spec = getattr(task, key)
    if not spec:
        raise TunelabError(f"task '{task.name}': a retrieval task needs '{key}'; add {key}: path/to/file")
    path = task.resolve(spec)
    if path.is_file() and path.suffix.lower() not in (".jsonl", ".json", ".csv", ".parquet", ".ndjson") and _is_smart(path):
        return cranfield.read_docs(path) if key == "corpus" else cranfield.read_queries(path)
    out: dict[str, str] = {}
    for row in load_rows(spec, base_dir=task.base_dir, named_in=task.source):
        idf = next((f for f in id_fields if f in row.data), None)
        texts = [str(row.data[f]) for f in text_fields if row.data.get(f)]
        if idf is None or not texts:
            raise TunelabError(f"{row.source}: a {key} record needs an id ({', '.join(id_fields)}) and text "
                               f"({', '.join(text_fields)}); it has: {', '.join(sorted(row.data))}")
        out[str(row.data[idf])] = "\n".join(texts)
    return out


def _qrels(task):
    from tunelab.evaluate.retrieval import cranfield, read_qrels

    if not task.qrels:
        raise TunelabError(f"task '{task.name}': a retrieval task needs 'qrels'; add qrels: path/to/qrels")
    path = task.resolve(task.qrels)
    if not path.is_file():
        raise TunelabError(f"{path}: qrels file not found; check 'qrels' in the task (relative to the task file)")
    first = next((ln.split() for ln in path.open(encoding="utf-8", errors="replace") if ln.strip()), [])
    return cranfield.read_qrels(path) if len(first) == 3 else read_qrels(path)


def run_retrieval(task, *, metrics_spec, limit: Optional[int] = None, out=None, t0: Optional[float] = None):
    from tunelab.evaluate import stats
    from tunelab.evaluate.retrieval import BM25Retriever, evaluate_run
    from tunelab.evaluate.retrieval.measures import GEOMETRIC, expand, is_count
    from tunelab.evaluate.results import build_results, finish_run, make_cost, signature, task_sha256

    t0 = time.perf_counter() if t0 is None else t0
    measures = [n for m in metrics_spec for n in expand(m if isinstance(m, str) else next(iter(m)))]
    docs = _texts(task, "corpus", DOC_ID, ("title", "text"))
    queries = _texts(task, "queries", QUERY_ID, ("text", "query"))
    qrels = _qrels(task)
    queries = {q: t for q, t in queries.items() if q in qrels}  # trec_eval scores judged queries only
    if limit is not None:
        queries = dict(list(queries.items())[:limit])
    if not queries:
        raise TunelabError(f"task '{task.name}': no query id appears in the qrels; check that the ids match")
    if task.retriever == "bm25":
        retriever = BM25Retriever(docs)
    else:
        from tunelab.evaluate.retrieval.embedding import EmbeddingRetriever

        retriever = EmbeddingRetriever(docs)
    run = retriever.search(queries, k=min(DEPTH, len(docs)))
    res = evaluate_run({q: qrels[q] for q in queries}, run, measures)
    qids = list(res.per_query)
    metrics, lines = {}, []
    for m in res.measures:
        values = [res.per_query[q][m] for q in qids]
        lo, hi = stats.bootstrap_ci(values, n_resamples=1000, seed=task.fewshot.seed)
        err = stats.stderr(values)
        if m in GEOMETRIC:  # per-query values are logs; exp is monotone, so the CI maps through
            lo, hi, err = math.exp(lo), math.exp(hi), None
        elif is_count(m):  # a sum over queries: no sampling error to report
            lo, hi, err = res.aggregate[m], res.aggregate[m], None
        metrics[m] = {"value": res.aggregate[m], "stderr": err, "ci95": [lo, hi],
                      "signature": f"{m}|trec_eval:pytrec_eval|retriever:{task.retriever}", "n": len(values)}
    for q in qids:
        top = sorted(run.get(q, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        lines.append({"id": q, "prompt": queries[q], "output": [d for d, _ in top], "gold": sorted(
            d for d, r in qrels[q].items() if r > 0), "metrics": dict(res.per_query[q])})
    model = {"name": task.retriever, "sha256": None, "adapter": None}  # a retriever, no language model
    sig = signature(model, task_sha256(task), template="none", shots=0, sampler="none", seed=task.fewshot.seed,
                    metric=";".join(metrics[m]["signature"] for m in res.measures))
    results = build_results(task=task.name, model=model, n=len(qids), shots=0, metrics=metrics,
                            cost=make_cost(time.perf_counter() - t0), signature=sig, predictions=lines)
    return finish_run(results, out, "eval")
