"""Paired statistics (evalpipe/stats/paired.py) against values worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalpipe.stats.paired import (
    agreement,
    compare_pair,
    correlations,
    mean_difference,
    paired_bootstrap_ci,
    quadratic_kappa,
    score_bins,
    wilcoxon_signed_rank,
    win_shares,
)

# -- mean difference and wins --------------------------------------------------------------------

def test_mean_difference_and_win_shares_count_ties():
    a = [80, 50, 70, 60]
    b = [70, 50, 90, 60]
    # differences 10, 0, -20, 0 -> mean -10/4
    assert mean_difference(a, b) == -2.5
    assert win_shares(a, b) == {"a": 1, "b": 1, "ties": 2,
                                "a_share": 0.25, "b_share": 0.25, "tie_share": 0.5}


def test_no_items_give_none_everywhere():
    assert mean_difference([], []) is None
    assert paired_bootstrap_ci([], [], resamples=100, seed=1) is None
    assert wilcoxon_signed_rank([], []) == {"statistic": None, "p_value": None, "nonzero": 0}
    assert win_shares([], []) == {"a": 0, "b": 0, "ties": 0,
                                  "a_share": None, "b_share": None, "tie_share": None}
    assert agreement([], []) == {"items": 0, "pearson": None, "spearman": None,
                                 "kendall": None, "mean_abs_difference": None,
                                 "kappa_quadratic": None}


def test_lists_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="lists of one length, got 3 and 2"):
        mean_difference([1, 2, 3], [1, 2])


# -- paired bootstrap ------------------------------------------------------------------------------

def test_paired_bootstrap_is_seeded_and_contains_the_observed_difference():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 101, size=40).tolist()
    b = [max(0, min(100, x - 8 + int(noise))) for x, noise in zip(a, rng.integers(-15, 16, 40))]
    observed = mean_difference(a, b)
    first = paired_bootstrap_ci(a, b, resamples=500, seed=7)
    assert first == paired_bootstrap_ci(a, b, resamples=500, seed=7)
    assert first != paired_bootstrap_ci(a, b, resamples=500, seed=8)
    low, high = first
    assert low < observed < high
    assert 0 < low  # b is a worse by about 8 points on every item: the interval excludes 0


def test_paired_bootstrap_resamples_items_not_lists():
    # b is a shifted by exactly 5 on every item. Resampling items keeps each pair together,
    # so every resample has mean difference -5: the interval is [-5, -5]. Resampling each list
    # on its own would give a wide interval around -5.
    a = [10, 90, 40, 75, 0, 55]
    b = [x + 5 for x in a]
    assert paired_bootstrap_ci(a, b, resamples=200, seed=3) == [-5.0, -5.0]


def test_paired_bootstrap_of_one_item_is_that_difference():
    assert paired_bootstrap_ci([70], [40], resamples=100, seed=1) == [30.0, 30.0]


# -- Wilcoxon signed-rank -------------------------------------------------------------------------

def test_wilcoxon_exact_without_ties():
    # differences 1..5, all positive: W- = 0. Of the 2^5 = 32 equally likely sign patterns only
    # "all +" and "all -" are as extreme, so the two-sided p = 2/32.
    result = wilcoxon_signed_rank([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    assert result == {"statistic": 0.0, "p_value": 2 / 32, "nonzero": 5}


def test_wilcoxon_with_tied_ranks_and_zero_differences():
    # differences 2, 3, -1, 1, 0, 0: the zeros are dropped; |d| = 2, 3, 1, 1 get ranks
    # 3, 4, 1.5, 1.5; W+ = 3 + 4 + 1.5 = 8.5, W- = 1.5. Over the 16 sign patterns the rank sums
    # of the positive side are 0, 1.5, 1.5, 3, 3, 4, 4.5, 4.5, 5.5, 5.5, 6, 7, 7, 8.5, 8.5, 10:
    # 3 of 16 are >= 8.5, so the two-sided p = 2 * 3/16.
    a = [52, 63, 49, 51, 70, 0]
    b = [50, 60, 50, 50, 70, 0]
    assert wilcoxon_signed_rank(a, b) == {"statistic": 1.5, "p_value": 6 / 16, "nonzero": 4}


def test_wilcoxon_normal_approximation_with_tie_correction():
    # 14 differences of size 10 (10 positive, 4 negative): all ranks tie at 7.5, W+ = 75,
    # W- = 30. Too many items for the exact permutation with ties, so scipy uses the normal
    # approximation: mean n(n+1)/4 = 52.5, variance (n(n+1)(2n+1) - (t^3 - t)/2) / 24 with
    # t = 14, no continuity correction.
    a = [60] * 10 + [40] * 4
    b = [50] * 14
    variance = (14 * 15 * 29 - (14**3 - 14) / 2) / 24
    z = (75 - 52.5) / math.sqrt(variance)
    result = wilcoxon_signed_rank(a, b)
    assert result["statistic"] == 30.0
    assert result["nonzero"] == 14
    assert result["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)), abs=1e-12)


def test_wilcoxon_degenerate_inputs():
    # identical lists: nothing to rank -> statistic 0, p 1 (documented), no warning or nan
    assert wilcoxon_signed_rank([30, 40, 50], [30, 40, 50]) == {
        "statistic": 0.0, "p_value": 1.0, "nonzero": 0}
    # one item that differs: the exact test cannot reject
    assert wilcoxon_signed_rank([80], [20]) == {"statistic": 0.0, "p_value": 1.0, "nonzero": 1}


# -- correlations ----------------------------------------------------------------------------------

def test_correlations_with_ties():
    x = [1, 2, 2, 3]
    y = [1, 1, 2, 3]
    result = correlations(x, y)
    # Pearson: deviations x (-1, 0, 0, 1), y (-0.75, -0.75, 0.25, 1.25): cov sum 2,
    # sums of squares 2 and 2.75 -> 2 / sqrt(5.5)
    assert result["pearson"] == pytest.approx(2 / math.sqrt(5.5), abs=1e-12)
    # Spearman: average ranks x (1, 2.5, 2.5, 4), y (1.5, 1.5, 3, 4): cov sum 3.75, sums of
    # squares 4.5 and 4.5 -> 3.75 / 4.5
    assert result["spearman"] == pytest.approx(3.75 / 4.5, abs=1e-12)
    # Kendall tau-b: of 6 pairs 4 concordant, 0 discordant, 1 tied in x only, 1 tied in y only:
    # 4 / sqrt((6 - 1) * (6 - 1))
    assert result["kendall"] == pytest.approx(0.8, abs=1e-12)


def test_correlations_are_none_when_undefined():
    none = {"pearson": None, "spearman": None, "kendall": None}
    assert correlations([1, 2], [3, 4]) == none  # two points always lie on a line
    assert correlations([5, 5, 5], [1, 2, 3]) == none  # constant
    assert correlations([1, 2, 3], [7, 7, 7]) == none
    assert correlations([], []) == none


def test_perfectly_reversed_ranks():
    assert correlations([1, 2, 3, 4], [40, 30, 20, 10]) == {
        "pearson": pytest.approx(-1.0), "spearman": pytest.approx(-1.0),
        "kendall": pytest.approx(-1.0)}


# -- kappa ------------------------------------------------------------------------------------------

def test_score_bins_by_tens_with_100_in_the_top_bin():
    assert score_bins([0, 9, 10, 19.5, 89, 90, 99, 100]).tolist() == [0, 0, 1, 1, 8, 9, 9, 9]
    with pytest.raises(ValueError, match="0..100"):
        score_bins([101])


def test_quadratic_kappa_on_a_small_table():
    # bins a = 0, 1, 2, 2 and b = 0, 2, 2, 1. Observed: (0,0), (1,2), (2,2), (2,1) -> weighted
    # disagreement (0 + 1 + 0 + 1) / 4 = 0.5. Margins of both: bin 0 1/4, bin 1 1/4, bin 2 1/2;
    # expected weighted disagreement: 2 * (1/4*1/4*1 + 1/4*1/2*4 + 1/4*1/2*1) = 1.375.
    # kappa = 1 - 0.5 / 1.375 = 7/11.
    a = [5, 15, 25, 28]
    b = [3, 29, 20, 11]
    assert quadratic_kappa(a, b) == pytest.approx(7 / 11, abs=1e-12)


def test_quadratic_kappa_degenerate_cases():
    assert quadratic_kappa([0, 50, 100], [5, 55, 95]) == 1.0  # same bins everywhere
    assert quadratic_kappa([40, 40, 40], [0, 50, 100]) == 0.0  # one side constant: chance
    # both sides in bin 0 on every item: 0/0, not a number
    assert quadratic_kappa([0, 5, 9], [9, 1, 3]) is None
    assert quadratic_kappa([70], [20]) == 0.0  # one item in different bins


def test_agreement_reports_every_measure():
    a = [10, 20, 20, 30]
    b = [10, 10, 20, 30]
    result = agreement(a, b)
    assert result["items"] == 4
    assert result["mean_abs_difference"] == 2.5  # |0| + |10| + |0| + |0| over 4
    assert result["pearson"] == pytest.approx(2 / math.sqrt(5.5), abs=1e-12)
    assert result["spearman"] == pytest.approx(3.75 / 4.5, abs=1e-12)
    assert result["kendall"] == pytest.approx(0.8, abs=1e-12)
    # bins a 1, 2, 2, 3; b 1, 1, 2, 3. Observed weighted disagreement 1/4. Margins a: 1/4,
    # 1/2, 1/4 over bins 1..3; b: 1/2, 1/4, 1/4. Expected: sum over i != j of a_i b_j (i-j)^2
    # = 1/4*1/4*1 + 1/4*1/4*4 + 1/2*1/2*1 + 1/2*1/4*1 + 1/4*1/2*4 + 1/4*1/4*1 = 1.25
    assert result["kappa_quadratic"] == pytest.approx(1 - 0.25 / 1.25, abs=1e-12)


def test_agreement_of_one_item_and_of_constant_scores():
    assert agreement([50], [50]) == {"items": 1, "pearson": None, "spearman": None,
                                     "kendall": None, "mean_abs_difference": 0.0,
                                     "kappa_quadratic": None}
    constant = agreement([80, 80, 80], [70, 80, 90])
    assert constant["pearson"] is None and constant["kendall"] is None
    assert constant["mean_abs_difference"] == pytest.approx(20 / 3)
    assert constant["kappa_quadratic"] == 0.0


def test_compare_pair_puts_it_together():
    result = compare_pair([80, 50, 70, 60], [70, 50, 90, 60], resamples=300, seed=5)
    assert result["items"] == 4
    assert result["mean_a"] == 65.0 and result["mean_b"] == 67.5
    assert result["mean_difference"] == -2.5
    assert result["ci"] == paired_bootstrap_ci([80, 50, 70, 60], [70, 50, 90, 60], 300, 5)
    assert result["wilcoxon"]["nonzero"] == 2
    assert result["wins"]["tie_share"] == 0.5


@pytest.mark.parametrize("a, b", [([80, 50, 70, 60, 95], [70, 50, 90, 60, 40]), ([], []),
                                  ([30], [30])])
def test_compare_pair_says_what_the_single_functions_say(a, b):
    result = compare_pair(a, b, resamples=200, seed=3, confidence=0.9)
    assert result["mean_difference"] == mean_difference(a, b)
    assert result["ci"] == paired_bootstrap_ci(a, b, 200, 3, 0.9)
    assert result["wilcoxon"] == wilcoxon_signed_rank(a, b)
    assert result["wins"] == win_shares(a, b)


def test_compare_pair_refuses_lists_of_different_lengths():
    with pytest.raises(ValueError, match="lists of one length, got 2 and 1"):
        compare_pair([1, 2], [1], resamples=10, seed=0)
