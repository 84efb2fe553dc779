"""stderr, bootstrap CI and the paired bootstrap: properties that must hold, with numbers we can check."""
from __future__ import annotations

import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.stats import bootstrap_ci, bootstrap_replicates, paired_bootstrap, stderr


def test_stderr_is_sample_std_over_sqrt_n():
    # values 1, 2, 3, 4: mean 2.5, sample variance 5/3 -> stderr sqrt(5/3)/2
    assert stderr([1, 2, 3, 4]) == pytest.approx(np.sqrt(5 / 3) / 2)
    assert stderr([1.0]) is None
    with pytest.raises(TunelabError, match="n = 0"):
        stderr([])


def test_ci_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.binomial(1, 0.6, size=50).astype(float)
    large = rng.binomial(1, 0.6, size=5000).astype(float)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5              # width ~ 1/sqrt(n): 10x narrower
    # a 95% bootstrap interval of a mean is about +-1.96 standard errors
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 * stderr(large), rel=0.15)


def test_seeded_reproducibility():
    values = np.random.default_rng(1).normal(size=200)
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, seed=5) != bootstrap_ci(values, seed=6)


def test_constant_values_give_a_point_interval():
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)


def test_statistic_over_index_matrix():
    # a ratio estimator (like perplexity): sum(x) / sum(w) per resample row
    x, w = np.arange(1.0, 11.0), np.full(10, 2.0)
    reps = bootstrap_replicates(None, 300, 1, statistic=lambda idx: x[idx].sum(1) / w[idx].sum(1), n=10)
    assert reps.shape == (300,)
    lo, hi = bootstrap_ci(None, 300, 1, statistic=lambda idx: x[idx].sum(1) / w[idx].sum(1), n=10)
    assert lo <= x.sum() / w.sum() <= hi


def test_paired_clear_difference_has_small_p():
    rng = np.random.default_rng(2)
    a = rng.binomial(1, 0.4, size=400).astype(float)
    b = np.where(rng.random(400) < 0.3, 1.0, a)           # b fixes 30% of items: clearly better
    r = paired_bootstrap(a, b)
    assert r.delta == pytest.approx(b.mean() - a.mean())
    assert r.delta > 0 and r.ci95[0] > 0 and r.p_value < 0.01


def test_paired_no_real_difference_has_large_p():
    rng = np.random.default_rng(3)
    a = rng.binomial(1, 0.5, size=400).astype(float)
    b = a.copy()
    # B fixes 11 items and breaks 9: delta = 2/400, well inside the noise of 20 changed items
    # (paired stderr ~ sqrt(20)/400 = 0.011), so the test must not call it significant.
    b[rng.choice(np.flatnonzero(a == 0), 11, replace=False)] = 1.0
    b[rng.choice(np.flatnonzero(a == 1), 9, replace=False)] = 0.0
    r = paired_bootstrap(a, b)
    assert r.delta == pytest.approx(2 / 400)
    assert r.ci95[0] < 0 < r.ci95[1] and r.p_value > 0.3
    same = paired_bootstrap(a, a)
    assert same.delta == 0 and same.p_value == 1.0


def test_paired_is_seeded_and_checks_lengths():
    a, b = [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]
    assert paired_bootstrap(a, b, seed=9) == paired_bootstrap(a, b, seed=9)
    with pytest.raises(TunelabError, match="same items"):
        paired_bootstrap([1.0, 0.0], [1.0])


def test_corpus_statistic_sums_the_drawn_items_in_chunks():
    """A ratio of sums per resample, as the perplexity family and sacrebleu's scores are computed; with
    3,000 items the 1,000 resamples are summed in two chunks, which must not change a number."""
    from tunelab.evaluate.stats import corpus_statistic

    rng = np.random.default_rng(4)
    stats = np.stack([rng.normal(-50, 10, 3000), rng.integers(5, 40, 3000)], axis=1)
    idx = rng.integers(0, 3000, size=(1000, 3000))
    got = corpus_statistic(stats, lambda t: t[:, 0] / t[:, 1])(idx)
    want = stats[idx, 0].sum(axis=1) / stats[idx, 1].sum(axis=1)
    assert got == pytest.approx(want, rel=1e-12)


def test_sacrebleu_rule_counts_resampled_gaps_beyond_twice_the_observed_one():
    """p_rule "sacrebleu": with d = |delta*|, p = (1 + #{d - mean(d) > |delta|}) / (1 + B)."""
    from tunelab.evaluate.stats import PairedOptions

    rng = np.random.default_rng(5)
    a = rng.normal(0, 1, 80)
    b = a + rng.normal(0.1, 1, 80)
    r = paired_bootstrap(a, b, options=PairedOptions(n_resamples=500, seed=3, p_rule="sacrebleu"))
    idx = np.random.default_rng(3).integers(0, 80, size=(500, 80))
    d = np.abs(b[idx].mean(axis=1) - a[idx].mean(axis=1))
    assert r.p_value == (1 + np.sum(d - d.mean() > abs(b.mean() - a.mean()))) / 501
