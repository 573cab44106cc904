"""Every statistic of evalpipe/stats/describe.py against numbers worked out by hand on small tables."""

import math

import numpy as np
import pytest

from evalpipe import stats

# -- mean, median, sd ---------------------------------------------------------------------------

def test_mean_and_median_by_hand():
    assert stats.mean([1, 2, 3, 4]) == 2.5
    assert stats.median([1, 2, 3, 4]) == 2.5  # even count: mean of the middle two
    assert stats.median([30, 10, 20]) == 20.0
    assert stats.mean([0, 0, 90]) == 30.0


def test_sd_is_the_sample_sd():
    # mean 5; squared deviations 9+1+1+1+0+0+4+16 = 32; sample: 32/7, population would be 32/8
    assert stats.sd([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(32 / 7))
    assert stats.sd([70, 90]) == pytest.approx(math.sqrt(200))


def test_a_single_item():
    assert stats.mean([42]) == 42.0
    assert stats.median([42]) == 42.0
    assert stats.sd([42]) is None  # no sample spread from one item
    assert stats.bootstrap_ci([42], resamples=1000, seed=1) == [42.0, 42.0]


def test_no_items():
    assert stats.mean([]) is None
    assert stats.median([]) is None
    assert stats.sd([]) is None
    assert stats.bootstrap_ci([], resamples=1000, seed=1) is None


# -- bootstrap ----------------------------------------------------------------------------------

def test_bootstrap_ci_is_reproducible_with_the_seed_and_contains_the_mean():
    scores = [0, 10, 35, 60, 60, 80, 85, 90, 100, 45]
    first = stats.bootstrap_ci(scores, resamples=2000, seed=123)
    assert first == stats.bootstrap_ci(scores, resamples=2000, seed=123)
    assert first != stats.bootstrap_ci(scores, resamples=2000, seed=124)
    low, high = first
    assert low < stats.mean(scores) < high
    assert 0 <= low and high <= 100


def test_bootstrap_ci_is_the_documented_percentile_bootstrap():
    """default_rng(seed).integers(0, n, size=(resamples, n)) picks the resamples; the interval
    is the 2.5% and 97.5% quantiles of their means."""
    scores = np.array([20.0, 40.0, 90.0])
    indices = np.random.default_rng(5).integers(0, 3, size=(50, 3))
    means = scores[indices].mean(axis=1)
    expected = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
    assert stats.bootstrap_ci(list(scores), resamples=50, seed=5) == expected


def test_bootstrap_ci_narrows_with_lower_confidence():
    scores = [0, 20, 40, 60, 80, 100]
    low99, high99 = stats.bootstrap_ci(scores, resamples=2000, seed=3, confidence=0.99)
    low50, high50 = stats.bootstrap_ci(scores, resamples=2000, seed=3, confidence=0.5)
    assert low99 < low50 < 50 < high50 < high99


def test_bootstrap_ci_of_a_constant_column():
    assert stats.bootstrap_ci([70, 70, 70, 70], resamples=1000, seed=9) == [70.0, 70.0]


def test_bootstrap_ci_rejects_nonsense_settings():
    with pytest.raises(ValueError, match="confidence must lie between 0 and 1, got 95"):
        stats.bootstrap_ci([1, 2], resamples=10, seed=0, confidence=95)
    with pytest.raises(ValueError, match="resamples must be at least 1, got 0"):
        stats.bootstrap_ci([1, 2], resamples=0, seed=0)


# -- the book's average -------------------------------------------------------------------------

def test_book_average_counts_empty_as_zero_and_drops_failures():
    states = ["scored", "empty", "unparseable", "error", "scored"]
    scores = [80, 0, None, None, 50]
    assert stats.book_average(states, scores) == pytest.approx(130 / 3)


def test_book_average_uses_the_state_not_the_score_of_an_empty_response():
    assert stats.book_average(["empty", "scored"], [None, 60]) == 30.0


def test_book_average_of_all_failures_is_none():
    assert stats.book_average(["error", "unparseable"], [None, None]) is None
    assert stats.book_average([], []) is None


def test_book_average_rejects_an_unknown_state():
    with pytest.raises(ValueError, match="unknown state 'skipped'"):
        stats.book_average(["skipped"], [None])


# -- token F1 (SQuAD) ---------------------------------------------------------------------------

def test_normalize_answer_as_squad():
    assert stats.normalize_answer("The  Cat, an apple & A dog!") == "cat apple dog"
    assert stats.normalize_answer("Theater anatomy") == "theater anatomy"  # whole words only
    assert stats.normalize_answer("Don't") == "dont"


def test_token_f1_by_hand():
    # "cat sat" against "cat sat on mat": precision 2/2, recall 2/4
    assert stats.token_f1("The cat sat.", "a cat sat on the mat") == pytest.approx(2 / 3)
    # multiset overlap: one cat and one dog in common of three tokens each
    assert stats.token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    # "sky is blue" against "blue sky": precision 2/3, recall 1
    assert stats.token_f1("the sky is blue", "blue sky") == pytest.approx(0.8)
    assert stats.token_f1("Paris.", "paris") == 1.0
    assert stats.token_f1("London", "Paris") == 0.0


def test_token_f1_of_empty_answers():
    assert stats.token_f1("", "") == 1.0
    assert stats.token_f1("The.", "a") == 1.0  # both empty once normalized
    assert stats.token_f1("", "cat") == 0.0
    assert stats.token_f1("cat", "the") == 0.0
    assert stats.token_f1(None, "cat") == 0.0  # a missing response is empty


# -- Spearman -----------------------------------------------------------------------------------

def test_spearman_by_hand():
    # d = ranks of x minus ranks of y = [-1, 1, -1, 1, 0]; rho = 1 - 6*4/(5*24) = 0.8
    assert stats.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert stats.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_spearman_with_ties_uses_average_ranks():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; Pearson of ranks = 4.5 / sqrt(4.5 * 5)
    assert stats.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))


def test_spearman_is_none_when_undefined():
    assert stats.spearman([1, 2], [2, 1]) is None  # fewer than 3 pairs
    assert stats.spearman([], []) is None
    assert stats.spearman([5, 5, 5], [1, 2, 3]) is None  # constant column
    assert stats.spearman([1, 2, 3], [0, 0, 0]) is None


def test_spearman_rejects_columns_of_different_lengths():
    with pytest.raises(ValueError, match="3 values against 2"):
        stats.spearman([1, 2, 3], [1, 2])


# -- self-consistency and canaries ----------------------------------------------------------------

def test_self_consistency_by_hand():
    result = stats.self_consistency([
        [80, 80],  # sd 0
        [70, 90],  # sd sqrt(200)
        [50, None],  # one score only: not compared
        [60, 60, 90],  # mean 70, squared deviations 100+100+400, sd sqrt(600/2)
    ])
    sds = [0.0, math.sqrt(200), math.sqrt(300)]
    assert result == {"items_compared": 3, "mean_sd": pytest.approx(sum(sds) / 3),
                      "max_sd": pytest.approx(math.sqrt(300)), "share_differ": 2 / 3}


def test_self_consistency_without_two_scores_anywhere_is_none():
    assert stats.self_consistency([[50], [None, 40], []]) is None


def test_canary_summary_by_hand():
    canaries = [{"canary": "good", "state": "scored", "score": 90},
                {"canary": "good", "state": "scored", "score": 100},
                {"canary": "good", "state": "error", "score": None},
                {"canary": "bad", "state": "scored", "score": 10},
                {"canary": "bad", "state": "scored", "score": 30}]
    assert stats.canary_summary(canaries) == {
        "good": {"count": 3, "scored": 2, "mean": 95.0, "min": 90, "max": 100},
        "bad": {"count": 2, "scored": 2, "mean": 20.0, "min": 10, "max": 30},
        "separated": True, "failed": False, "why": None,
    }


def test_canaries_not_separated_and_missing():
    mixed = [{"canary": "good", "state": "scored", "score": 40},
             {"canary": "bad", "state": "scored", "score": 40}]
    assert stats.canary_summary(mixed)["separated"] is False
    no_bad_score = [{"canary": "good", "state": "scored", "score": 90},
                    {"canary": "bad", "state": "unparseable", "score": None}]
    summary = stats.canary_summary(no_bad_score)
    assert summary["separated"] is None
    assert summary["bad"] == {"count": 1, "scored": 0, "mean": None, "min": None, "max": None}
    # No canaries (judge.canaries = false): nothing to show, and nothing failed.
    assert stats.canary_summary([]) == {"good": None, "bad": None, "separated": None,
                                        "failed": False, "why": None}


def canary(kind, state, score=None):
    return {"canary": kind, "state": state, "score": score}


def test_a_judge_fails_its_canaries_when_a_good_one_is_not_above_every_bad_one():
    # The case: the small in-process judge scored the empty-looking replies higher.
    fooled = [canary("good", "scored", s) for s in (20, 30, 40, 50, 58)] + [
        canary("bad", "scored", s) for s in (80, 70, 60, 50, 38)]
    why = ("good canaries 39.6 on average, bad ones 59.6: the lowest good canary, 20, is not "
           "above the highest bad one, 80")
    assert stats.canary_failure(fooled) == why
    summary = stats.canary_summary(fooled)
    assert (summary["separated"], summary["failed"], summary["why"]) == (False, True, why)
    # A tie is no separation either.
    tie = [canary("good", "scored", 90), canary("good", "scored", 50),
           canary("bad", "scored", 50), canary("bad", "scored", 0)]
    assert stats.canary_failure(tie) == (
        "good canaries 70 on average, bad ones 25: the lowest good canary, 50, is not above "
        "the highest bad one, 50")


def test_only_scored_canaries_are_compared():
    # An unparseable bad canary and a good one in error are left out; the rest separate.
    passed = [canary("good", "scored", 60), canary("good", "error"),
              canary("bad", "scored", 10), canary("bad", "unparseable")]
    assert stats.canary_failure(passed) is None
    assert stats.canary_summary(passed)["failed"] is False
    # An empty canary carries the rule's 0, not a judgment: left out too.
    assert stats.canary_failure([canary("good", "scored", 60), canary("bad", "scored", 5),
                                 canary("good", "empty", 0)]) is None


def test_a_kind_without_any_scored_canary_fails():
    no_bad = [canary("good", "scored", 90), canary("bad", "unparseable"),
              canary("bad", "unparseable"), canary("bad", "error")]
    assert stats.canary_failure(no_bad) == (
        "no bad canary was scored (2 unparseable, 1 error), so nothing shows that the judge "
        "tells a good answer from a bad one")
    neither = [canary("good", "error"), canary("bad", "error")]
    assert stats.canary_failure(neither) == (
        "no good canary was scored (1 error), no bad canary was scored (1 error), so nothing "
        "shows that the judge tells a good answer from a bad one")
    assert stats.canary_summary(neither)["failed"] is True


def test_no_canaries_no_failure():
    assert stats.canary_failure([]) is None


def test_the_warning_sentence():
    assert stats.canary_warning("why") == (
        "the judge failed its canaries (why); its scores are not meaningful")
