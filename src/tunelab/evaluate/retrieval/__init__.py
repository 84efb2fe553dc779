"""Search evaluation: TREC files, trec_eval measures, BM25 and embedding retrievers, Cranfield.

    from tunelab.evaluate.retrieval import read_qrels, read_run, evaluate_run, BM25Retriever
    run = BM25Retriever(docs).search(queries, k=100)        # {qid: {docid: score}}
    result = evaluate_run(qrels, run, ["map", "P_10", "ndcg_cut_10"])
    result.aggregate   # {"map": ..., "P_10": ..., "ndcg_cut_10": ..., "num_q": n}
The embedding retriever lives in `tunelab.evaluate.retrieval.embedding` (optional extra).
"""
from tunelab.evaluate.retrieval.bm25 import BM25Retriever, tokenize
from tunelab.evaluate.retrieval.measures import DEFAULT_MEASURES, RetrievalResult, canonical, evaluate_run
from tunelab.evaluate.retrieval.trec import read_qrels, read_run, write_qrels, write_run

__all__ = ["BM25Retriever", "tokenize", "DEFAULT_MEASURES", "RetrievalResult", "canonical",
           "evaluate_run", "read_qrels", "read_run", "write_qrels", "write_run"]
