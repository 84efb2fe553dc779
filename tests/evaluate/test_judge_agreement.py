"""Judge agreement from recorded verdicts: the published numbers, reproduced to their printed precision.

- LLMBar (Zeng et al. 2024): every `result.json` beside its `statistics.json` (GPT-4 and ChatGPT,
  Vanilla_NoRules and Metrics_Reference, on LLMBar/ and Processed/): counts of right verdicts per
  order, averaged, right in both, same in both orders, and the three kappas. Upstream's kappas are
  not Cohen's kappa of verdict and label: its evaluate.py maps a winner to int only when it is
  '0' or '1', so a '2' verdict becomes 0 while the label stays 2; `_upstream_kappas` applies that
  same mapping to show the recorded kappas come from these verdicts, and tunelab's own kappa (the
  combined verdict against the label) is tested on hand-made pairs below. Upstream's `equal` counts
  two null verdicts as the same; tunelab's order consistency does not (17 pairs over the 28 files).
- PandaLM test set: PandaLM-7B accuracy 66.77 and F1 57.43 (majority of the 3 annotators; macro F1
  over the three classes).
- Auto-J pairwise: agreement 54.96 (right in both orders) and consistency 83.41.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.judge.agreement import agreement, kappa_stat
from tunelab.evaluate.judge.labels import LabelledPair, Verdicts, load_pairs
from tunelab.evaluate.judge.recorded import load_verdicts


def _measures(pairs, verdicts) -> dict:
    return {m.name: m for m in agreement(pairs, verdicts, n_resamples=200)}


def _count(text: str) -> int:  # "92 / 100 = 92.0%" -> 92
    return int(re.match(r"(\d+) / \d+", text).group(1))


def _upstream_kappas(verdicts: Verdicts, pairs) -> tuple[float, float, float]:
    # LLMBar's evaluate.py: int(winner) only for '0'/'1', anything else (a '2', a null) becomes 0
    def quirk(vs):
        return np.array([1 if v == 1 else 0 for v in vs])

    first, second = quirk(verdicts.first), quirk(verdicts.second)
    gold = np.array([p.gold for p in pairs])
    whole = np.arange(len(pairs))[None, :]
    return (float(kappa_stat(first, gold)(whole)[0]), float(kappa_stat(second, gold)(whole)[0]),
            float(kappa_stat(first, second)(whole)[0]))


def test_every_llmbar_result_reproduces_its_statistics(shared_data):
    results = sorted((shared_data / "llmbar").glob("**/evaluators/*/*/result.json"))
    assert len(results) == 28  # the README's 32 names 4 statistics-only folders; 28 result.json files
    for path in results:
        stats = json.loads((path.parent / "statistics.json").read_text())
        pairs = load_pairs(path.parents[3] / "dataset.json")
        v = load_verdicts(path, pairs)
        m = _measures(pairs, v)
        n = len(pairs)
        assert round(m["accuracy as given"].value * n) == _count(stats["correct_False"]), path
        assert round(m["accuracy swapped"].value * n) == _count(stats["correct_True"]), path
        assert round(m["right in both orders"].value * n) == _count(stats["correct_both"]), path
        # upstream's `equal` also counts a pair whose two verdicts were both unparsed (null == null);
        # tunelab's order consistency does not (two unreadable texts agree on nothing)
        both_null = sum(a is None and b is None for a, b in zip(v.first, v.second))
        assert round(m["order consistency"].value * n) + both_null == _count(stats["equal"]), path
        assert f"{m['accuracy'].value * 100}%" == stats["correct_average"] or \
            m["accuracy"].value * 100 == pytest.approx(float(stats["correct_average"].rstrip("%")), abs=1e-9), path
        k_false, k_true, k_agree = _upstream_kappas(v, pairs)
        assert k_false == pytest.approx(stats["kappa_False"], abs=1e-12), path
        assert k_true == pytest.approx(stats["kappa_True"], abs=1e-12), path
        assert k_agree == pytest.approx(stats["kappa_agreement"], abs=1e-12), path


def test_llmbar_gpt4_vanilla_natural_is_93_5(shared_data):
    base = shared_data / "llmbar" / "LLMBar" / "Natural"
    pairs = load_pairs(base / "dataset.json")
    m = _measures(pairs, load_verdicts(base / "evaluators/GPT-4/Vanilla_NoRules/result.json", pairs))
    assert f"{m['accuracy'].value * 100:.1f}" == "93.5"
    lo, hi = m["accuracy"].ci95
    assert lo < 0.935 < hi and hi - lo < 0.15


def test_pandalm_7b_accuracy_and_f1(shared_data):
    base = shared_data / "pandalm_testset"
    pairs = load_pairs(base / "testset-v1.json")
    assert [sum(p.gold == k for p in pairs) for k in (0, 1, 2)] == [105, 422, 472]  # the README's majority counts
    m = _measures(pairs, load_verdicts(base / "pandalm-7b-testset-v1.json", pairs))
    assert f"{m['accuracy'].value * 100:.2f}" == "66.77"
    assert f"{m['macro F1'].value * 100:.2f}" == "57.43"
    assert "order consistency" not in m  # one order only
    gpt = _measures(pairs, load_verdicts(base / "gpt-3.5-turbo-testset-v1.json", pairs))
    assert gpt["unparsed"].value == 25  # 'garbage' verdicts: counted, and wrong, never dropped


def test_autoj_agreement_and_consistency(shared_data):
    base = shared_data / "autoj_pairwise"
    pairs = load_pairs(base / "testdata_pairwise.jsonl")
    v = load_verdicts(base / "pairwise_example_output.jsonl", pairs, swapped=base / "pairwise_exchange_example_output.jsonl")
    m = _measures(pairs, v)
    assert f"{m['right in both orders'].value * 100:.2f}" == "54.96"
    assert f"{m['order consistency'].value * 100:.2f}" == "83.41"


def _pair(gold, a="short", b="a longer answer"):
    return LabelledPair("x", "q", (a, b), gold)


def test_measures_on_hand_made_pairs():
    pairs = [_pair(1), _pair(2), _pair(1), _pair(0)]
    # pair 1: right both orders; 2: flips (-> tie); 3: wrong both; 4: tie label, verdicts 1 then unparsed
    v = Verdicts([1, 2, 2, 1], [1, 1, 2, None])
    m = _measures(pairs, v)
    assert m["accuracy"].value == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["right in both orders"].value == 0.25
    assert m["order consistency"].value == 0.5
    assert m["agreement with ties"].value == 0.25  # combined: 1, tie, 2, unparsed
    assert m["agreement without ties"].value == 0.5 and m["agreement without ties"].n == 2
    assert m["unparsed"].value == 1
    # decisive verdicts on pairs of different lengths: 7; answer 2 is the longer one; picks of 2: 3
    assert m["prefers longer"].value == pytest.approx(3 / 7)
    # kappa of combined [1, 0, 2, -1] vs gold [1, 2, 1, 0]: observed 1/4, chance 1/4 * 2/4 + 1/4 * 1/4 * 2
    assert m["Cohen's kappa"].value == pytest.approx(0.0)
    both = _measures(pairs[:3], Verdicts([1, 2, 2], [1, 2, 2]))  # combined [1, 2, 2] vs gold [1, 2, 1]
    assert both["Cohen's kappa"].value == pytest.approx((2 / 3 - (1 / 3 * 2 / 3 + 2 / 3 * 1 / 3)) / (1 - 4 / 9))


def test_perfect_judge_has_kappa_one_and_a_point_ci():
    pairs = [_pair(g) for g in (1, 2, 1, 2, 0, 1)]
    m = _measures(pairs, Verdicts([p.gold for p in pairs], [p.gold for p in pairs]))
    assert m["Cohen's kappa"].value == pytest.approx(1.0) and m["accuracy"].ci95 == (1.0, 1.0)


def test_unknown_shape_names_the_expected_fields(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"question": "q", "a": "x", "b": "y", "winner": 1}\n')
    with pytest.raises(TunelabError, match=r"unknown human-label shape.*input, output_1, output_2, label.*annotator1"):
        load_pairs(f)


def test_bad_inputs_are_one_line(tmp_path):
    f = tmp_path / "pairs.json"
    f.write_text('[{"input": "q", "output_1": "a", "output_2": "b", "label": 3}]')
    with pytest.raises(TunelabError, match="record 1: label 3 is not one of 1, 2"):
        load_pairs(f)
    good = tmp_path / "good.json"
    good.write_text('[{"input": "q", "output_1": "a", "output_2": "b", "label": 1}]')
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text('{"output": 0}\n{"output": 1}\n')
    with pytest.raises(TunelabError, match="2 verdicts for 1 pairs"):
        load_verdicts(verdicts, load_pairs(good))
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"score": 3}\n')
    with pytest.raises(TunelabError, match="unknown verdict shape"):
        load_verdicts(odd, load_pairs(good))
    with pytest.raises(TunelabError, match="no such file"):
        load_pairs(tmp_path / "missing.json")


def test_builtin_llmbar_natural_ships():
    pairs = load_pairs("builtin:llmbar-natural")
    assert len(pairs) == 100 and {p.gold for p in pairs} == {1, 2}
    with pytest.raises(TunelabError, match="unknown built-in check set 'nope'"):
        load_pairs("builtin:nope")


def _cli(capsys, *args):
    from tunelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_reproduces_from_recorded_verdicts(shared_data, capsys):
    base = shared_data / "llmbar" / "LLMBar" / "Natural"
    code, out, _ = _cli(capsys, "judge", "agreement", "--data", str(base / "dataset.json"), "--json",
                        "--verdicts", str(base / "evaluators/GPT-4/Vanilla_NoRules/result.json"))
    assert code == 0
    m = json.loads(out)
    assert m["accuracy"]["value"] == 0.935 and m["order consistency"]["value"] == 0.97
    assert len(m["accuracy"]["ci95"]) == 2 and m["unparsed"]["value"] == 0


def test_cli_bad_input_is_one_line(capsys, tmp_path):
    code, _, err = _cli(capsys, "judge", "agreement", "--data", "builtin:llmbar-natural")
    assert code == 2 and "give --verdicts FILE" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "judge", "agreement", "--data", "builtin:llmbar-natural", "--verdicts", str(tmp_path / "v.json"))
    assert code == 2 and "no such file; give a verdicts file" in err


def test_hh_rlhf_harmless_pairs_alternate_the_chosen_position(shared_data):
    with pytest.warns(UserWarning, match=r"skipped 8 bad pair\(s\); first: .*:87: the chosen answer is empty"):
        pairs = load_pairs(shared_data / "hh_rlhf_harmless" / "harmless-2000.jsonl.gz")
    assert len(pairs) == 1992 and sum(p.gold == 1 for p in pairs) == 996
    assert pairs[0].question.startswith("User: ") and "\n\nAssistant: " in pairs[0].question
    # a judge that always prefers the first answer shown is at chance, in either order
    m = _measures(pairs, Verdicts([1] * len(pairs), [2] * len(pairs)))
    assert m["accuracy"].value == 0.5 and m["order consistency"].value == 0.0
