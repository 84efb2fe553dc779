"""tunelab's search metrics against trec_eval's own output on the Cranfield collection.

Reference: trec_eval 10.0 (usnistgov/trec_eval @ f425365, built from source with `make`),
run as `trec_eval -m all_trec cran.qrels bm25.run` and `trec_eval -c -m official cran.qrels
bm25_part.run` on the files this test writes (Cranfield qrels with Cleverdon grades, the
BM25 top-100 run; bm25_part drops queries 1-25). trec_eval prints four decimals and integer
counts; the numbers below are carried over from its output unchanged. rbp, rbp_resid and unj_*
are in trec_eval 10.0's all_trec but not in the trec_eval that pytrec_eval bundles.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.retrieval import BM25Retriever, evaluate_run, read_qrels, read_run, write_qrels, write_run
from tunelab.evaluate.retrieval.measures import GROUPS

CRANFIELD = Path(__file__).resolve().parents[3] / "shared" / "data" / "cranfield"
pytestmark = pytest.mark.skipif(not CRANFIELD.is_dir(), reason="../shared/data/cranfield is absent")

ALL_TREC = {"num_q": "225", "num_ret": "22500", "num_rel": "1612", "num_rel_ret": "1045", "map": "0.2621", "gm_map": "0.1027", "Rprec": "0.2687", "bpref": "0.2259", "recip_rank": "0.4973", "iprec_at_recall_0.00": "0.5405", "iprec_at_recall_0.10": "0.5363", "iprec_at_recall_0.20": "0.4759", "iprec_at_recall_0.30": "0.4123", "iprec_at_recall_0.40": "0.3560", "iprec_at_recall_0.50": "0.2841", "iprec_at_recall_0.60": "0.2567", "iprec_at_recall_0.70": "0.1982", "iprec_at_recall_0.80": "0.1499", "iprec_at_recall_0.90": "0.1028", "iprec_at_recall_1.00": "0.0801", "P_5": "0.3058", "P_10": "0.2191", "P_15": "0.1724", "P_20": "0.1429", "P_30": "0.1110", "P_100": "0.0464", "P_200": "0.0232", "P_500": "0.0093", "P_1000": "0.0046", "recall_5": "0.2700", "recall_10": "0.3709", "recall_15": "0.4271", "recall_20": "0.4623", "recall_30": "0.5211", "recall_100": "0.6865", "recall_200": "0.6865", "recall_500": "0.6865", "recall_1000": "0.6865", "infAP": "0.2621", "gm_bpref": "0.0016", "Rprec_mult_0.20": "0.3043", "Rprec_mult_0.40": "0.3302", "Rprec_mult_0.60": "0.3114", "Rprec_mult_0.80": "0.2824", "Rprec_mult_1.00": "0.2687", "Rprec_mult_1.20": "0.2504", "Rprec_mult_1.40": "0.2369", "Rprec_mult_1.60": "0.2176", "Rprec_mult_1.80": "0.2041", "Rprec_mult_2.00": "0.1989", "utility": "-90.7111", "11pt_avg": "0.3084", "binG": "0.2931", "G": "0.2528", "ndcg": "0.4395", "ndcg_rel": "0.3981", "Rndcg": "0.3254", "ndcg_cut_5": "0.3148", "ndcg_cut_10": "0.3370", "ndcg_cut_15": "0.3563", "ndcg_cut_20": "0.3691", "ndcg_cut_30": "0.3906", "ndcg_cut_100": "0.4395", "ndcg_cut_200": "0.4395", "ndcg_cut_500": "0.4395", "ndcg_cut_1000": "0.4395", "map_cut_5": "0.1766", "map_cut_10": "0.2142", "map_cut_15": "0.2291", "map_cut_20": "0.2373", "map_cut_30": "0.2474", "map_cut_100": "0.2621", "map_cut_200": "0.2621", "map_cut_500": "0.2621", "map_cut_1000": "0.2621", "relative_P_5": "0.3664", "relative_P_10": "0.3921", "relative_P_15": "0.4317", "relative_P_20": "0.4644", "relative_P_30": "0.5215", "relative_P_100": "0.6865", "relative_P_200": "0.6865", "relative_P_500": "0.6865", "relative_P_1000": "0.6865", "success_1": "0.2800", "success_5": "0.7600", "success_10": "0.8533", "set_P": "0.0464", "set_relative_P": "0.6865", "set_recall": "0.6865", "set_map": "0.0348", "set_F": "0.0846", "num_nonrel_judged_ret": "198", }
COMPLETE_OFFICIAL = {"num_q": "225", "num_ret": "20000", "num_rel": "1612", "num_rel_ret": "937", "map": "0.2298", "gm_map": "0.0367", "Rprec": "0.2333", "bpref": "0.1986", "recip_rank": "0.4331", "iprec_at_recall_0.00": "0.4732", "iprec_at_recall_0.10": "0.4703", "iprec_at_recall_0.20": "0.4219", "iprec_at_recall_0.30": "0.3597", "iprec_at_recall_0.40": "0.3104", "iprec_at_recall_0.50": "0.2475", "iprec_at_recall_0.60": "0.2234", "iprec_at_recall_0.70": "0.1704", "iprec_at_recall_0.80": "0.1323", "iprec_at_recall_0.90": "0.0907", "iprec_at_recall_1.00": "0.0699", "P_5": "0.2711", "P_10": "0.1969", "P_15": "0.1544", "P_20": "0.1284", "P_30": "0.0994", "P_100": "0.0416", "P_200": "0.0208", "P_500": "0.0083", "P_1000": "0.0042", }


@pytest.fixture(scope="module")
def cranfield_files(tmp_path_factory):
    from tunelab.evaluate.retrieval.cranfield import load_cranfield

    folder = tmp_path_factory.mktemp("cranfield")
    docs, queries, qrels = load_cranfield(CRANFIELD)
    run = BM25Retriever(docs).search(queries, k=100)
    write_qrels(qrels, folder / "cran.qrels")
    write_run(run, folder / "bm25.run")
    write_run({q: d for q, d in run.items() if int(q) > 25}, folder / "bm25_part.run")
    return folder


def _as_printed(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def test_all_trec_matches_trec_eval(cranfield_files):
    res = evaluate_run(read_qrels(cranfield_files / "cran.qrels"), read_run(cranfield_files / "bm25.run"),
                       ["all_trec"])
    ours = {m: _as_printed(v) for m, v in res.aggregate.items()}
    assert ours == ALL_TREC
    assert isinstance(res.aggregate["num_rel_ret"], int) and isinstance(res.aggregate["num_q"], int)


def test_official_default_set_with_complete_matches_trec_eval_c(cranfield_files):
    res = evaluate_run(read_qrels(cranfield_files / "cran.qrels"), read_run(cranfield_files / "bm25_part.run"),
                       ["official"], complete=True)
    assert list(res.aggregate) == list(COMPLETE_OFFICIAL)     # trec_eval's order, num_q first
    assert {m: _as_printed(v) for m, v in res.aggregate.items()} == COMPLETE_OFFICIAL
    assert GROUPS["official"] == [m for m in COMPLETE_OFFICIAL if m != "num_q"]


def test_unsupported_trec_measure_says_so():
    with pytest.raises(TunelabError, match="not computed by the trec_eval that pytrec_eval bundles"):
        evaluate_run({"1": {"d": 1}}, {"1": {"d": 1.0}}, ["rbp"])
