"""Cranfield (SMART format) reader and a BM25 sanity check on the real collection.

Expected range: an untuned, unstemmed BM25 lands around MAP 0.27-0.29 here (k=1000; see the
report); the PV211 course (Masaryk University) asks student systems for at least 0.22 MAP on
Cranfield, and tuned, stemmed systems report around 0.4. We assert 0.20 <= MAP <= 0.45.
"""
from __future__ import annotations

import pytest

from tunelab.evaluate.retrieval import BM25Retriever, evaluate_run
from tunelab.evaluate.retrieval.cranfield import load_cranfield, read_qrels


@pytest.fixture(scope="module")
def cran(shared_data):
    return load_cranfield(shared_data / "cranfield")


def test_reader_counts_and_numbering(cran):
    docs, queries, qrels = cran
    assert len(docs) == 1400 and len(queries) == 225 and len(qrels) == 225
    assert sum(len(v) for v in qrels.values()) == 1837
    assert docs["1"].startswith("experimental investigation of the aerodynamics")
    # the 3rd query has .I 004 in cran.qry but is query "3" in cranqrel
    assert queries["3"].startswith("what problems of heat conduction in composite slabs")


def test_grade_mapping(shared_data):
    graded = read_qrels(shared_data / "cranfield" / "cranqrel")
    raw = read_qrels(shared_data / "cranfield" / "cranqrel", grades="raw")
    assert graded["1"]["184"] == 3 and raw["1"]["184"] == 2    # code 2 -> gain 5 - 2
    assert graded["1"]["486"] == 0 and raw["1"]["486"] == -1   # -1: judged not relevant
    assert {g for q in graded.values() for g in q.values()} == {0, 1, 2, 3, 4}


def test_bm25_map_in_a_sane_range(cran):
    docs, queries, qrels = cran
    run = BM25Retriever(docs).search(queries, k=1000)
    agg = evaluate_run(qrels, run, ["map", "P_10", "ndcg_cut_10", "recall_100"]).aggregate
    assert agg["num_q"] == 225
    assert 0.20 <= agg["map"] <= 0.45, agg
    assert 0.15 <= agg["P_10"] <= 0.40 and agg["recall_100"] > 0.5
