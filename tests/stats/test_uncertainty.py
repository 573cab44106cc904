"""How sure (evalpipe/stats/uncertainty.py): hand-made arrays with values worked out in the
comments, then calibration on simulated data whose truth is known.

The simulations draw scores as model mean + item difficulty (shared by the models of one
simulated comparison) + model-by-item effect + seed effect + seed-by-item effect + judge noise,
on the 0-100 scale (sds 20, 10, 2, 8, 6: items dominate, as on the book's 110 items). The truth
an interval should cover is the model mean: the expected score over items, seeds and repeats.
Many simulated comparisons go through one call as "models" of one array (a model's resample
only depends on its own scores and the shared item draw), which keeps the file fast."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from evalpipe.stats.uncertainty import (
    check_scores,
    distinguishability,
    expanded_tail,
    how_sure,
    item_means,
    items_needed,
    minimum_detectable_difference,
    model_means,
    p_best,
    paired_differences,
    percentile_interval,
    rank_intervals,
    resampled_means,
    tiers,
    variance_shares,
)

NAN = np.nan


def additive(base, items, seeds, repeats):
    """scores[s, i, r] = base + items[i] + seeds[s] + repeats[r] for one model."""
    return (base + np.asarray(items, float)[None, :, None] + np.asarray(seeds, float)[:, None, None]
            + np.asarray(repeats, float)[None, None, :])


# -- means with missing scores ---------------------------------------------------------------

def test_missing_scores_are_averaged_over_level_by_level():
    scores = np.array([[[[10, 20], [40, NAN]],      # seed 0: item 0 cell 15, item 1 cell 40
                        [[30, 30], [NAN, NAN]]]])   # seed 1: item 0 cell 30, item 1 absent
    # item 0: (15 + 30) / 2 = 22.5; item 1: only seed 0 has it: 40; model: (22.5 + 40) / 2
    assert item_means(scores).tolist() == [[22.5, 40.0]]
    assert model_means(scores).tolist() == [31.25]


def test_a_model_without_a_score_on_an_item_is_refused_by_name():
    scores = np.full((2, 1, 3, 1), 50.0)
    scores[1, 0, 2, 0] = NAN
    with pytest.raises(ValueError, match=r"model 'b' has no score on item 2 \(of 1 such items\)"):
        check_scores(scores, ["a", "b"])
    with pytest.raises(ValueError, match="2 models of scores against 3 names"):
        check_scores(scores, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"shaped \(models, seeds, items, repeats\)"):
        check_scores(scores[0], ["a"])
    with pytest.raises(ValueError, match="scores have no items"):
        check_scores(np.zeros((1, 1, 0, 1)), ["a"])
    with pytest.raises(ValueError, match="scores have no models"):
        check_scores(np.zeros((0, 1, 3, 1)), [])


# -- variance shares ---------------------------------------------------------------------------

def test_variance_shares_of_a_constructed_array():
    # 50 + item (+10, -10) + seed (+2, -2) + repeat (+1, -1):
    # items: item means 60, 40 -> var 100, / 2 items = 50
    # seeds: seed means 52, 48 -> var 4, / 2 seeds = 2
    # judge: every cell's repeats c+1, c-1 -> var 1, / 2 repeats = 0.5; per item the two cells
    #        sum to 1, / (2 items * 2 cells)^2 = 1/16; two items: 0.125
    shares = variance_shares(additive(50, [10, -10], [2, -2], [1, -1]))
    total = 50 + 2 + 0.125
    assert shares == pytest.approx({"items": 50 / total, "seeds": 2 / total,
                                    "judge": 0.125 / total}, abs=1e-12)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_variance_shares_edge_cases():
    assert variance_shares(np.full((2, 3, 2), 70.0)) is None  # nothing varies
    # one seed and one repeat: everything is in the items
    assert variance_shares(additive(50, [10, -10, 0], [0], [0])) == {
        "items": 1.0, "seeds": 0.0, "judge": 0.0}
    # a missing repeat: the cell of seed 0, item 0 keeps its one score 63 (var 0); the other
    # cells (c+1, c-1) -> var 1 / 2 = 0.5 each; item 0: (0 + 0.5) / 2^2, item 1: (0.5 + 0.5) / 4
    # -> (0.125 + 0.25) / 2 items^2 = 0.09375. Cells 63, 58 (item 0), 42, 38 (item 1): item
    # means 60.5, 40 -> var 105.0625, / 2 = 52.53125; seed means 52.5, 48 -> var 5.0625, / 2 =
    # 2.53125.
    scores = additive(50, [10, -10], [2, -2], [1, -1])
    scores[0, 0, 1] = NAN
    shares = variance_shares(scores)
    total = 52.53125 + 2.53125 + 0.09375
    assert shares == pytest.approx({"items": 52.53125 / total, "seeds": 2.53125 / total,
                                    "judge": 0.09375 / total}, abs=1e-12)


def test_the_bootstrap_draws_items_and_seeds_and_on_request_repeats():
    # Additive scores (no interaction), so the levels add up. Items: var([0, 6, 12, 18]) / 4 =
    # 45 / 4; seeds: var([-3, 3]) / 2 = 4.5. Judge on its own (variance_shares): each cell's
    # var([-8, 8]) / 2 = 32, per item 2 cells / 2^2 = 16, 4 items / 4^2 = 4.
    scores = additive(50, [0, 6, 12, 18], [-3, 3], [-8, 8])[None]
    assert variance_shares(scores[0]) == pytest.approx(
        {"items": 11.25 / 19.75, "seeds": 4.5 / 19.75, "judge": 4 / 19.75})
    # By default the judge is in the cell means only, and here -8 and +8 cancel in every cell.
    assert resampled_means(scores, 40_000, seed=3)[:, 0].var() == pytest.approx(
        45 / 4 + 4.5, rel=0.03)
    flat_seeds = additive(50, [0, 6, 12, 18], [0, 0], [-8, 8])[None]
    assert resampled_means(flat_seeds, 40_000, seed=3)[:, 0].var() == pytest.approx(
        45 / 4, rel=0.03)
    # Drawing the repeats too: a cell drawn w times as an item and v times as a seed weighs
    # w v and its repeats are drawn once, so the judge adds 4 E[w^2] E[v^2] = 4 (2 - 1/4)
    # (2 - 1/2) = 10.5 (the overcount the module docstring describes).
    assert resampled_means(scores, 40_000, seed=3, resample_repeats=True)[:, 0].var() == \
        pytest.approx(45 / 4 + 4.5 + 10.5, rel=0.03)
    assert resampled_means(flat_seeds, 40_000, seed=3, resample_repeats=True)[:, 0].var() == \
        pytest.approx(45 / 4 + 10.5, rel=0.03)


def test_judge_noise_reaches_the_default_bootstrap_through_the_cells():
    # One seed, item means 50 + the mean of two repeats 50 +- 10 in a pattern that does not
    # cancel: items (60, 40), (40, 40), (60, 60), (40, 60) -> item means 50, 40, 60, 50: var 50,
    # / 4 items = 12.5
    scores = np.array([[[[60, 40], [40, 40], [60, 60], [40, 60]]]], dtype=float)
    assert resampled_means(scores, 40_000, seed=5)[:, 0].var() == pytest.approx(12.5, rel=0.03)


def test_resampling_is_paired_over_items_and_deterministic():
    rng = np.random.default_rng(0)
    a = rng.normal(50, 20, size=(1, 1, 30, 1))
    scores = np.concatenate([a, a + 5])  # b = a + 5 on every item: the difference never moves
    means = resampled_means(scores, 500, seed=9)
    assert np.allclose(means[:, 1] - means[:, 0], 5.0)
    assert means[:, 0].std() > 1  # while each mean does
    assert np.array_equal(means, resampled_means(scores, 500, seed=9))
    assert not np.array_equal(means, resampled_means(scores, 500, seed=10))


# -- ranks and tiers -----------------------------------------------------------------------------

def test_rank_intervals_p_best_and_tiers_of_a_deterministic_case():
    # every resample: a 80 > b 60 = c 60 > d 10 (b and c tie: both rank 2)
    means = np.tile([80.0, 60.0, 60.0, 10.0], (100, 1))
    assert p_best(means).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert rank_intervals(means, 0.95) == [[1, 1], [2, 2], [2, 2], [4, 4]]
    assert tiers([[1, 1], [2, 2], [2, 2], [4, 4]]) == [1, 2, 2, 3]


def test_identical_models_split_p_best_equally():
    scores = np.tile(np.arange(12.0).reshape(1, 1, 12, 1), (3, 2, 1, 2))
    result = how_sure(scores, ["a", "b", "c"], resamples=50, seed=1)
    assert [row["p_best"] for row in result["models"]] == pytest.approx([1 / 3] * 3)
    assert [row["rank_interval"] for row in result["models"]] == [[1, 1]] * 3
    assert [pair["p_a_better"] for pair in result["pairs"]] == [0.5] * 3


def test_rank_interval_leaves_at_most_the_tails_out():
    # model 0 ranks 1 in 96 resamples and 2 in 4: 4% worse than 1 is more than the 2.5% tail,
    # so the interval is [1, 2]; at 3 of 100 (3%) still [1, 2]; at 2 of 100 [1, 1]
    for worse, expected in [(4, [1, 2]), (3, [1, 2]), (2, [1, 1])]:
        means = np.tile([2.0, 1.0], (100, 1))
        means[:worse] = [1.0, 2.0]
        assert rank_intervals(means, 0.95)[0] == expected


@pytest.mark.parametrize("intervals, expected", [
    ([[1, 1], [2, 3], [2, 4], [4, 5], [6, 6]], [1, 2, 2, 2, 3]),  # [2,3]-[2,4]-[4,5] chain
    ([[1, 2], [1, 2], [3, 4], [3, 4]], [1, 1, 2, 2]),
    ([[3, 4], [1, 2], [2, 3]], [1, 1, 1]),  # order of the input does not matter
    ([[1, 3], [2, 2], [4, 4]], [1, 1, 2]),  # a wide interval swallows the one inside it
])
def test_tiers_are_connected_components_of_overlapping_intervals(intervals, expected):
    assert tiers(intervals) == expected


# -- minimum detectable difference ---------------------------------------------------------

def test_minimum_detectable_difference_and_items_needed_of_known_sd():
    z_sum = 1.959963984540054 + 0.8416212335729143
    assert minimum_detectable_difference(10.0, 100) == pytest.approx(z_sum * 10 / 10)
    assert minimum_detectable_difference(10.0, 100, alpha=0.01, power=0.9) == pytest.approx(
        (2.5758293035489004 + 1.2815515655446004) * 10 / 10)
    # (2.8016 * 10 / 2)^2 = 196.2 -> 197 items; a zero difference: no number of items
    assert items_needed(10.0, 2.0) == math.ceil((z_sum * 5) ** 2) == 197
    assert items_needed(10.0, -2.0) == 197
    assert items_needed(10.0, 0.0) is None
    with pytest.raises(ValueError, match="alpha and power must lie between 0 and 1"):
        minimum_detectable_difference(10.0, 100, power=1.0)


def test_distinguishability_marks_differences_below_the_mdd():
    z_sum = 1.959963984540054 + 0.8416212335729143
    # differences 1, 3 (x5 each): mean 2, sd sqrt(10 / 9 * 1) -> mdd z_sum * sd / sqrt(10)
    differences = np.array([1.0, 3.0] * 5)
    sd = math.sqrt(10 / 9)
    result = distinguishability(differences)
    assert result["sd_diff"] == pytest.approx(sd)
    assert result["mdd"] == pytest.approx(z_sum * sd / math.sqrt(10))
    assert result["distinguishable"] is True and result["items_needed"] is None
    # differences -1, 2: mean 0.5, sd sqrt(10/9 * 2.25) = 1.58: mdd 1.40 > 0.5: needs
    # ceil((2.8016 * 1.5811 / 0.5)^2) = 79 items
    close = distinguishability(np.array([-1.0, 2.0] * 5))
    assert close["distinguishable"] is False
    assert close["items_needed"] == math.ceil((z_sum * math.sqrt(2.5) / 0.5) ** 2) == 79
    assert distinguishability(np.array([4.0])) == {"items": 1, "sd_diff": None, "mdd": None,
                                                   "distinguishable": None,
                                                   "items_needed": None}
    assert distinguishability(np.zeros(5))["distinguishable"] is False  # identical models


def test_paired_differences_average_over_seeds_and_repeats_first():
    # a: seed 0 cells 65, 35; seed 1 cells 80, 50 (its missing repeat left out): item means
    # 72.5, 42.5. b: 50 and 40 everywhere.
    a = np.array([[[60, 70], [30, 40]], [[80, 80], [NAN, 50]]])
    b = np.array([[[50, 50], [40, 40]], [[50, 50], [40, 40]]])
    assert paired_differences(np.stack([a, b]), 0, 1).tolist() == [22.5, 2.5]


# -- everything together ---------------------------------------------------------------------

def test_how_sure_reports_every_model_and_pair():
    # a = b + 10 on every item, one seed and one repeat (seeds and repeats are drawn for each
    # model on its own; items for both at once): the difference is 10 in every resample
    rng = np.random.default_rng(4)
    b = rng.normal(50, 15, size=(1, 20, 1))
    result = how_sure(np.stack([b + 10, b]), ["a", "b"], resamples=300, seed=2)
    assert result["items"] == 20 and result["resamples"] == 300
    assert [row["model"] for row in result["models"]] == ["a", "b"]
    row_a, row_b = result["models"]
    assert row_a["mean"] == pytest.approx(row_b["mean"] + 10)
    boot = resampled_means(np.stack([b + 10, b]), 300, seed=2)  # the same resamples
    assert row_a["ci"] == pytest.approx(percentile_interval(boot[:, 0], 0.95, 20).tolist())
    assert row_a["ci"][0] < row_a["mean"] < row_a["ci"][1]
    assert (row_a["p_best"], row_a["rank_interval"], row_a["tier"]) == (1.0, [1, 1], 1)
    assert (row_b["p_best"], row_b["rank_interval"], row_b["tier"]) == (0.0, [2, 2], 2)
    assert sum(row_a["variance_shares"].values()) == pytest.approx(1.0)
    pair = result["pairs"][0]
    assert (pair["a"], pair["b"]) == ("a", "b")
    assert pair["difference"] == pytest.approx(10) and pair["p_a_better"] == 1.0
    assert pair["ci"] == pytest.approx([10, 10])
    assert pair["sd_diff"] == pytest.approx(0) and pair["mdd"] == pytest.approx(0)
    assert pair["distinguishable"] is True and pair["items_needed"] is None


def test_expanded_tail_widens_by_the_item_count():
    # 40 items: sqrt(40/39) * t_{0.975, 39} = 2.0484 -> tail 0.0203 each side
    widened = math.sqrt(40 / 39) * student_t.ppf(0.975, 39)
    assert expanded_tail(0.95, 40) == pytest.approx(1 - 0.5 * (1 + math.erf(widened / 2**0.5)))
    assert expanded_tail(0.95, 40) == pytest.approx(0.02026, abs=1e-5)
    assert expanded_tail(0.95, 1) == pytest.approx(0.025)
    values = np.arange(1001.0)[:, None]
    assert percentile_interval(values, 0.95)[:, 0].tolist() == pytest.approx([25, 975])


# -- calibration on simulated data -----------------------------------------------------------

ITEM_SD, MODEL_ITEM_SD, SEED_SD, SEED_ITEM_SD, JUDGE_SD = 20, 10, 2, 8, 6


def simulate(rng, comparisons, means, seeds, items, repeats, seed_sd=SEED_SD):
    """`comparisons` independent comparisons of len(means) models: (comparisons, models,
    seeds, items, repeats). Items are fresh draws from the item population in every
    comparison, so the truth for model m is means[m]."""
    k = len(means)
    return (np.asarray(means, float)[None, :, None, None, None]
            + rng.normal(0, ITEM_SD, (comparisons, 1, 1, items, 1))
            + rng.normal(0, MODEL_ITEM_SD, (comparisons, k, 1, items, 1))
            + rng.normal(0, seed_sd, (comparisons, k, seeds, 1, 1))
            + rng.normal(0, SEED_ITEM_SD, (comparisons, k, seeds, items, 1))
            + rng.normal(0, JUDGE_SD, (comparisons, k, seeds, items, repeats)))


@pytest.mark.parametrize("resample_repeats", [False, True])
def test_95_percent_intervals_cover_the_truth_95_percent_of_the_time(resample_repeats):
    # 1,000 comparisons of two models (3 seeds, 40 items, 2 repeats), 200 resamples each: the
    # interval's ends are noisier than with 2,000 but not biased much, and coverage only needs
    # them on average. Run in groups of 50 comparisons per call (one item draw per resample is
    # shared within a group, so groups keep the runs apart). 2,000 model intervals and 1,000
    # difference intervals; a binomial sd of coverage is 0.5 and 0.7 points.
    rng = np.random.default_rng(2026)
    means, seeds, items, repeats, group = np.array([60.0, 57.0]), 3, 40, 2, 50
    model_covered, difference_covered = [], []
    for call in range(20):
        scores = simulate(rng, group, means, seeds, items, repeats)
        boot = resampled_means(scores.reshape(-1, seeds, items, repeats), 200, seed=call,
                               resample_repeats=resample_repeats)
        boot = boot.reshape(200, group, 2)
        low, high = percentile_interval(boot, 0.95, items)
        model_covered.append((low <= means) & (means <= high))
        low, high = percentile_interval(boot[..., 0] - boot[..., 1], 0.95, items)
        difference_covered.append((low <= 3.0) & (3.0 <= high))
    assert 0.93 <= np.mean(model_covered) <= 0.97
    assert 0.93 <= np.mean(difference_covered) <= 0.97


def test_p_best_is_sure_of_a_clear_winner_and_even_among_equals():
    # 200 comparisons of 4 models, 3 seeds, 40 items, 2 repeats, 200 resamples each.
    rng = np.random.default_rng(7)
    seeds, items, repeats, group, k = 3, 40, 2, 50, 4

    def p_best_per_comparison(means):
        shares = []
        for call in range(4):
            scores = simulate(rng, group, means, seeds, items, repeats)
            boot = resampled_means(scores.reshape(-1, seeds, items, repeats), 200, seed=call)
            boot = boot.reshape(200, group, k)
            shares += [p_best(boot[:, c]) for c in range(group)]
        return np.array(shares)  # (comparisons, models)

    # A clear winner: 20 points above three equal models. The sd of a difference of two models'
    # means is sqrt(2 (10^2 / 40 + 2^2 / 3 + 8^2 / 120 + 6^2 / 240)) = 3.0 here: 20 is 6.7 sds.
    clear = p_best_per_comparison([80.0, 60.0, 60.0, 60.0])
    assert clear[:, 0].min() >= 0.95
    # Four identical models: by symmetry each one's P(best), averaged over comparisons, is 1/4.
    # One comparison's P(best) of a model spreads widely (sd about 0.25), so over 200 the
    # average has an sd of about 0.02: 0.25 +- 0.06 is 3 of them. And a false sure winner is
    # rare: P(best) >= 0.95 for some model in at most 5% of the comparisons.
    even = p_best_per_comparison([60.0] * k)
    assert np.allclose(even.sum(axis=1), 1.0)
    assert np.abs(even.mean(axis=0) - 1 / k).max() <= 0.06
    assert (even.max(axis=1) >= 0.95).mean() <= 0.05


def test_a_true_difference_of_one_mdd_is_detected_80_percent_of_the_time():
    # 2,000 comparisons of two models on 110 items, 3 seeds, 2 repeats, no seed main effect (a
    # seed's shift of every item would move all paired differences together, which a test over
    # items does not see; the MDD is about items). The sd of a per-item paired difference of
    # means over seeds and repeats is sqrt(2 (10^2 + 8^2 / 3 + 6^2 / 6)) = 15.36; the true
    # difference is the MDD of that sd. A two-sided paired t-test at 0.05 on the per-item
    # differences then rejects in about 80% (79.7% with t quantiles); a binomial sd is 0.9
    # points.
    rng = np.random.default_rng(11)
    seeds, items, repeats, comparisons = 3, 110, 2, 2000
    sd_diff = math.sqrt(2 * (MODEL_ITEM_SD**2 + SEED_ITEM_SD**2 / seeds
                             + JUDGE_SD**2 / (seeds * repeats)))
    mdd = minimum_detectable_difference(sd_diff, items)
    scores = simulate(rng, comparisons, [60.0 + mdd, 60.0], seeds, items, repeats, seed_sd=0)
    differences = np.array([paired_differences(pair, 0, 1) for pair in scores])
    t_statistic = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / math.sqrt(items))
    rejected = np.abs(t_statistic) > student_t.ppf(0.975, items - 1)
    assert 0.75 <= rejected.mean() <= 0.85
    # and the estimated sd the pairs report is the true one on average
    assert np.mean([distinguishability(d)["sd_diff"] for d in differences[:200]]) == \
        pytest.approx(sd_diff, rel=0.03)
