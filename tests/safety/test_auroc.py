"""AUROC, F1, ECE and the ToxiGen line splitting, checked against hand-computed values."""
import math

import pytest

from tunelab.safety.train_classifier import auroc, f1_at, split_statements


@pytest.mark.parametrize("scores, labels, expected", [
    # perfect separation / perfectly wrong
    ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),
    ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),
    # pos {0.35, 0.8} vs neg {0.1, 0.4}: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    # ties count one half: pos {0.5, 0.7}, neg {0.5, 0.2}: (0.5 vs 0.5 = 0.5) + 1 + 1 + 1 = 3.5 / 4
    ([0.5, 0.2, 0.5, 0.7], [0, 0, 1, 1], 0.875),
    # all scores equal: chance
    ([0.3, 0.3, 0.3], [1, 0, 0], 0.5),
    # 3 pos / 2 neg with a tie across classes: pos {0.9, 0.6, 0.3}, neg {0.6, 0.1}
    # 0.9 beats both (2), 0.6 ties 0.6 (0.5) and beats 0.1 (1), 0.3 beats 0.1 (1) -> 4.5 / 6
    ([0.9, 0.6, 0.3, 0.6, 0.1], [1, 1, 1, 0, 0], 0.75),
])
def test_auroc_hand_computed(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_one_class_is_nan():
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_f1_at_threshold():
    # predicted toxic: 0.5, 0.9 (>= 0.5); labels: 1 at 0.9 and 0.2 -> tp 1, fp 1, fn 1 -> F1 = 2/4
    assert f1_at([0.5, 0.9, 0.2, 0.1], [0, 1, 1, 0], 0.5) == pytest.approx(0.5)
    assert f1_at([0.1, 0.2], [0, 0]) == 0.0


def test_split_statements_literal_backslash_n():
    line = "- women are x\\n- she is y\\n- keep z!\\n-\n"
    assert split_statements(line) == ["women are x", "she is y", "keep z!"]
    # the last statement of a prompt carries the bare separator; it must not become a new statement
    assert split_statements("- a b c\\n- d e f\\n-") == ["a b c", "d e f"]


def test_f1_weighted():
    # tp weight 3, fp weight 1, fn weight 1 -> 2*3 / (4 + 4) = 0.75
    assert f1_at([0.9, 0.9, 0.1], [1, 0, 1], 0.5, weights=[3, 1, 1]) == pytest.approx(0.75)
