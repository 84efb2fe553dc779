"""Hand-computable tables for the text, multiple-choice and perplexity metrics, and the registry."""
from __future__ import annotations

import math

import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics import get_metric, get_metrics, known_metrics


def score(spec, prediction, references, item=None):
    return get_metric(spec).item_score(prediction, references, item or {})


# ---- registry --------------------------------------------------------------------------------
def test_unknown_metric_lists_known_names():
    with pytest.raises(TunelabError) as e:
        get_metric("exact_mach")
    msg = str(e.value)
    assert "exact_mach" in msg and "exact_match" in msg and "rougeLsum" in msg and "acc_norm" in msg


def test_unknown_option_names_option_and_allowed():
    with pytest.raises(TunelabError, match=r"unknown option 'tok'.*tokenize"):
        get_metric({"bleu": {"tok": "13a"}})


@pytest.mark.parametrize("spec", [["a", "b"], {"bleu": {}, "chrf": {}}, {"bleu": "13a"}])
def test_malformed_spec(spec):
    with pytest.raises(TunelabError):
        get_metric(spec)


def test_task_yaml_list_form_and_duplicates():
    ms = get_metrics(["exact_match", {"bleu": {"tokenize": "intl"}}, {"rouge1": None}])
    assert [m.name for m in ms] == ["exact_match", "bleu", "rouge1"]
    assert "tok:intl" in ms[1].signature()
    with pytest.raises(TunelabError, match="twice"):
        get_metrics(["f1", "f1"])


def test_every_metric_constructs_with_defaults_or_says_what_is_required():
    for name, cls in known_metrics().items():
        try:
            m = get_metric(name)
        except TunelabError as e:  # regex / json_schema need their pattern / schema
            assert "required" in str(e), name
            continue
        assert m.signature().startswith(name)


def test_signature_reflects_real_settings():
    sig = get_metric({"exact_match": {"ignore_case": True}}).signature()
    assert sig.startswith("exact_match|") and "ignore_case:yes" in sig and "ignore_punctuation:no" in sig


# ---- exact_match -----------------------------------------------------------------------------
@pytest.mark.parametrize("options,pred,refs,expected", [
    ({}, "Paris", ["Paris"], 1.0),
    ({}, " Paris\n", ["Paris"], 1.0),                       # strip is on by default
    ({"strip": False}, " Paris", ["Paris"], 0.0),
    ({}, "paris", ["Paris"], 0.0),
    ({"ignore_case": True}, "paris", ["Paris"], 1.0),
    ({"ignore_punctuation": True}, "Paris!", ["Paris."], 1.0),
    ({"ignore_articles": True, "ignore_case": True}, "The Eiffel Tower", ["eiffel tower"], 1.0),
    ({"ignore_articles": True}, "Theatre", ["atre"], 0.0),  # word boundary: 'The' in Theatre stays
    ({"normalize_numbers": True}, "1,000.0", ["1000"], 1.0),
    ({"normalize_numbers": True}, "It costs 2.50 dollars", ["It costs 2.5 dollars"], 1.0),
    ({"normalize_numbers": True, "ignore_punctuation": True}, "1,000.0", ["1000"], 1.0),  # numbers first
    ({"ignore_punctuation": True}, "1,000.0", ["1000"], 0.0),  # without: '10000' != '1000'
    ({}, "b", ["a", "b", "c"], 1.0),                        # max over references
    ({}, "d", ["a", "b", "c"], 0.0),
    ({}, "x", [], 0.0),
])
def test_exact_match(options, pred, refs, expected):
    assert score({"exact_match": options}, pred, refs) == expected


# ---- SQuAD F1 --------------------------------------------------------------------------------
@pytest.mark.parametrize("pred,refs,expected", [
    ("the cat sat", ["a cat sat"], 1.0),                   # articles dropped on both sides
    ("cat sat on mat", ["cat sat"], 2 * 1.0 * 0.5 / 1.5),  # P = 2/4, R = 2/2 -> F1 = 2/3
    ("Cat, sat!", ["cat sat"], 1.0),
    ("dog", ["cat"], 0.0),
    ("cat cat", ["cat"], 2 * 0.5 * 1.0 / 1.5),             # Counter overlap counts 'cat' once
    ("the", ["a"], 1.0),                                    # both normalise to empty
    ("the", ["cat"], 0.0),
    ("cat", ["dog", "cat sat"], 2 * 1.0 * 0.5 / 1.5),       # best reference
])
def test_squad_f1(pred, refs, expected):
    assert score("f1", pred, refs) == pytest.approx(expected)


# ---- numeric (lm-eval gsm8k) -----------------------------------------------------------------
GOLD = "Janet has 3 ducks... so 16 - 3 - 4 = 9.\n#### 1,800"


@pytest.mark.parametrize("name,pred,expected", [
    ("numeric_strict", "She earns 1800 a day.\n#### 1800", 1.0),
    ("numeric_strict", "#### 1,800", 1.0),                  # commas ignored on both sides
    ("numeric_strict", "The answer is 1800.", 0.0),         # no '#### ' -> [invalid]
    ("numeric_strict", "#### 1800\n#### 7", 1.0),           # strict takes the first match
    ("numeric_flexible", "The answer is 1800.", 1.0),       # trailing '.' dropped
    ("numeric_flexible", "The answer is $1,800", 1.0),
    ("numeric_flexible", "1800 ducks, then 12 eggs", 0.0),  # flexible takes the LAST number
    ("numeric_flexible", "no number here", 0.0),
    ("numeric_flexible", "#### 1800.00", 0.0),              # string match, as lm-eval
    ({"numeric_flexible": {"as_number": True}}, "#### 1800.00", 1.0),
    ({"numeric": {"mode": "flexible"}}, "so 1800", 1.0),
    ({"numeric": {"mode": "strict"}}, "so 1800", 0.0),
])
def test_numeric(name, pred, expected):
    assert score(name, pred, [GOLD]) == expected


def test_numeric_bad_mode():
    with pytest.raises(TunelabError, match="mode"):
        get_metric({"numeric": {"mode": "loose"}})


# ---- assertions ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,pred,refs,expected", [
    ({"contains": {"needle": "Paris"}}, "It is Paris.", [], 1.0),
    ({"contains": {"needle": "paris"}}, "It is Paris.", [], 0.0),
    ({"contains": {"needle": "paris", "ignore_case": True}}, "It is Paris.", [], 1.0),
    ("contains", "It is Paris.", ["Paris"], 1.0),           # default needle: the reference
    ({"regex": {"pattern": r"^\d{4}-\d{2}-\d{2}$"}}, "2024-01-31", [], 1.0),
    ({"regex": {"pattern": r"^yes", "flags": "i"}}, "Yes, it is", [], 1.0),
    ({"regex": {"pattern": r"^yes"}}, "Yes, it is", [], 0.0),
    ("valid_json", '{"a": [1, 2]}', [], 1.0),
    ("valid_json", "{'a': 1}", [], 0.0),
    ("valid_json", '```json\n{"a": 1}\n```', [], 0.0),
    ({"valid_json": {"strip_fences": True}}, '```json\n{"a": 1}\n```', [], 1.0),
])
def test_assertions(spec, pred, refs, expected):
    assert score(spec, pred, refs) == expected


SCHEMA = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]}


@pytest.mark.parametrize("pred,expected", [('{"age": 3}', 1.0), ('{"age": -1}', 0.0), ('{"name": "x"}', 0.0),
                                           ("not json", 0.0)])
def test_json_schema(pred, expected):
    assert score({"json_schema": {"schema": SCHEMA}}, pred, []) == expected


def test_json_schema_from_file_and_bad_schema(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"type": "array"}')
    assert score({"json_schema": {"schema": str(path)}}, "[1]", []) == 1.0
    with pytest.raises(TunelabError, match="not a valid JSON Schema"):
        get_metric({"json_schema": {"schema": {"type": "nonsense"}}})
    with pytest.raises(TunelabError, match="pattern"):
        get_metric({"regex": {"pattern": "("}})


# ---- multiple choice (lm-eval acc / acc_norm / acc_bytes) ------------------------------------
def mc(lls, choices, gold):
    return {"choice_logliks": lls, "choices": choices, "gold": gold}


def test_acc_vs_acc_norm():
    # -6 on 'cat' beats -10 on 'elephant' (acc), but per character -2.0 < -1.25 (acc_norm).
    item = mc([-6.0, -10.0], ["cat", "elephant"], 1)
    assert score("acc", "", [], item) == 0.0
    assert score("acc_norm", "", [], item) == 1.0


def test_acc_norm_length_excludes_the_delimiter():
    # Per character of the choice text: 'a' -1.1/1 = -1.1 < 'abc' -3.0/3 = -1.0 -> picks 'abc'.
    # Had the length included the ' ' delimiter: -1.1/2 = -0.55 > -3.0/4 = -0.75 -> 'a'.
    item = mc([-1.1, -3.0], ["a", "abc"], 1)
    assert score("acc_norm", "", [], item) == 1.0


def test_acc_bytes_uses_utf8_length():
    # 'éé' is 2 characters but 4 bytes: chars -2.4/2 = -1.2 < -1.0 ('abc') -> acc_norm picks 1;
    # bytes -2.4/4 = -0.6 > -1.0 -> acc_bytes picks 0.
    item = mc([-2.4, -3.0], ["éé", "abc"], 0)
    assert score("acc_norm", "", [], item) == 0.0
    assert score("acc_bytes", "", [], item) == 1.0


def test_acc_ties_go_to_first_and_multiple_golds():
    assert score("acc", "", [], mc([-1.0, -1.0], ["a", "b"], 0)) == 1.0
    assert score("acc", "", [], mc([-1.0, -1.0], ["a", "b"], 1)) == 0.0
    assert score("acc", "", [], mc([-5.0, -1.0, -2.0], ["a", "b", "c"], [1, 2])) == 1.0


@pytest.mark.parametrize("item,match", [
    ({"choices": ["a"], "gold": 0}, "choice_logliks"),
    (mc([-1.0], ["a", "b"], 0), "one log-likelihood per choice"),
    (mc([-1.0, -2.0], ["a", "b"], 2), "out of range"),
])
def test_mc_bad_items(item, match):
    with pytest.raises(TunelabError, match=match):
        score("acc", "", [], item)


# ---- perplexity family -----------------------------------------------------------------------
DOCS = [{"loglik": -10.0, "n_tokens": 5, "n_words": 4, "n_bytes": 20},
        {"loglik": -30.0, "n_tokens": 5, "n_words": 6, "n_bytes": 40}]


@pytest.mark.parametrize("name,expected", [
    ("token_perplexity", math.exp(40 / 10)),               # exp(total NLL / total tokens)
    ("word_perplexity", math.exp(40 / 10)),
    ("byte_perplexity", math.exp(40 / 60)),
    ("bits_per_byte", 40 / 60 / math.log(2)),
])
def test_perplexity_aggregates_over_totals(name, expected):
    r = get_metric(name).compute(["", ""], None, DOCS)
    assert r.value == pytest.approx(expected)
    # not the mean of per-document values: exp(2) and exp(6) average to something else
    if name == "token_perplexity":
        assert r.item_values == pytest.approx([math.exp(2), math.exp(6)])
        assert r.value != pytest.approx((math.exp(2) + math.exp(6)) / 2)


def test_perplexity_needs_fields():
    with pytest.raises(TunelabError, match="n_words"):
        get_metric("word_perplexity").compute([""], None, [{"loglik": -1.0}])


def test_count_units_matches_lm_eval_rules():
    from tunelab.evaluate.metrics.perplexity import count_units

    assert count_units("héllo  world\nbye") == {"n_words": 3, "n_bytes": 17}


# ---- results ---------------------------------------------------------------------------------
def test_result_has_value_stderr_ci_signature():
    r = get_metric("exact_match").compute(["a", "b", "c", "d"], [["a"], ["x"], ["c"], ["d"]])
    assert r.value == 0.75 and r.n == 4 and r.item_values == [1.0, 0.0, 1.0, 1.0]
    assert r.stderr == pytest.approx(0.5 / 2)              # std(ddof=1) = 0.5, / sqrt(4)
    assert r.ci95[0] <= r.value <= r.ci95[1]
    assert str(r).startswith("exact_match|strip:yes") and str(r).endswith("= 0.75")
    assert set(r.to_json()) >= {"value", "stderr", "ci95"}
    with pytest.raises(TunelabError, match="no items"):
        get_metric("exact_match").compute([], [])
