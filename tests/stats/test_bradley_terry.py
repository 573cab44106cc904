"""Bradley-Terry ratings from pairwise verdicts (evalpipe/stats/bradley_terry.py).

First hand-made verdict sets whose games and ratings are worked out in the comments, then
simulated judges whose truth is known. A simulated judge sees two models' true strengths s
(log-odds), optionally a length preference (gamma times the normalised length difference of the
two responses) and a preference for the response shown first, adds logistic noise and cuts the
result into verdicts. With cut points at 0 only (no ties, no strong verdicts) the chance that
the first shown wins is exactly logistic(s_first - s_second + ...): the Bradley-Terry model
itself, so the fitted log-odds estimate s and the intervals can be checked for coverage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.stats.bradley_terry import (
    VERDICTS,
    Game,
    Question,
    fit_ratings,
    games,
    position_effect,
)

ELO = 400 / math.log(10)  # rating points per unit of log-odds


def q(item, first, second, verdict, first_tokens=10, second_tokens=10):
    return Question(str(item), first, second, verdict, first_tokens, second_tokens)


def by_model(result):
    return {row["model"]: row for row in result["models"]}


# -- verdicts to games -----------------------------------------------------------------------------

def test_verdicts_are_the_five_of_the_prompt():
    assert VERDICTS == ("A>>B", "A>B", "A=B", "B>A", "B>>A")


def test_two_orders_naming_one_winner_are_two_games_and_a_strong_verdict_weighs_three():
    # item 1: a shown first and strongly preferred; then b shown first and a (Response B) preferred.
    # a's response has 30 tokens, b's 10: length difference (30 - 10) / 40 = 0.5 from a's side.
    questions = [q(1, "a", "b", "A>>B", 30, 10), q(1, "b", "a", "B>A", 10, 30)]
    assert games(questions) == [Game("1", "a", "b", 1.0, 3, 0.5), Game("1", "a", "b", 1.0, 1, 0.5)]


def test_the_games_are_named_by_sorted_models_whichever_was_shown_first():
    # b wins both orders; the rows still say a vs b with a's score 0 and a's length first
    questions = [q(1, "b", "a", "A>B", 10, 30), q(1, "a", "b", "B>>A", 30, 10)]
    assert games(questions) == [Game("1", "a", "b", 0.0, 3, 0.5), Game("1", "a", "b", 0.0, 1, 0.5)]


def test_a_verdict_that_flips_with_the_order_is_two_ties_of_weight_one():
    # a wins when shown first (strongly), b wins when shown first: the judge followed the position
    questions = [q(1, "a", "b", "A>>B"), q(1, "b", "a", "A>B")]
    assert games(questions) == [Game("1", "a", "b", 0.5, 1, 0.0), Game("1", "a", "b", 0.5, 1, 0.0)]


def test_a_tie_and_a_win_do_not_flip():
    # only one order names a winner: both games stand, the strong one weighing three
    questions = [q(1, "a", "b", "A=B"), q(1, "b", "a", "B>>A")]
    assert games(questions) == [Game("1", "a", "b", 0.5, 1, 0.0), Game("1", "a", "b", 1.0, 3, 0.0)]


def test_a_question_whose_other_order_is_missing_is_a_game_of_its_own():
    questions = [q(2, "b", "a", "A>B", 5, 15), q(1, "a", "b", "B>A", 0, 0)]
    # sorted by item; both token counts 0 give length difference 0
    assert games(questions) == [Game("1", "a", "b", 0.0, 1, 0.0), Game("2", "a", "b", 0.0, 1, 0.5)]


# -- exact ratings ---------------------------------------------------------------------------------

def three_wins_one_loss():
    # item 1: a wins in both orders (2 wins); item 2: a wins, one order asked; item 3: b wins.
    # a's score 3 of 4: p = 3/4, log-odds ln 3. The ridge (1e-9) moves the log-odds by
    # 1e-9 * ln 3 / (4 * 3/4 * 1/4) = 1.5e-9, 2.5e-7 rating points: inside the 1e-6 asserted.
    return [q(1, "a", "b", "A>B"), q(1, "b", "a", "B>A"), q(2, "a", "b", "A>B"),
            q(3, "b", "a", "A>B")]


def test_three_wins_and_one_loss_are_log_odds_ln_3():
    result = fit_ratings(three_wins_one_loss(), anchor="b", resamples=50)
    rows = by_model(result)
    assert result["anchor"] == "b"
    assert result["games"] == 4 and result["items"] == 3
    assert abs(rows["a"]["bt_rating"] - (1000 + 400 * math.log10(3))) < 1e-6
    assert rows["b"]["bt_rating"] == 1000.0
    assert abs(rows["a"]["win_rate_vs_anchor"] - 0.75) < 1e-8
    assert rows["b"]["win_rate_vs_anchor"] == 0.5
    # all lengths equal: the length column is all zeros, its coefficient 0, the controlled
    # ratings the raw ones
    assert result["length_coefficient"] == 0.0
    assert abs(rows["a"]["bt_rating_length_controlled"] - rows["a"]["bt_rating"]) < 1e-9
    assert [row["model"] for row in result["models"]] == ["a", "b"]
    assert rows["a"]["games"] == rows["b"]["games"] == 4


def test_the_default_anchor_is_the_first_model_in_sorted_order():
    result = fit_ratings(three_wins_one_loss(), resamples=50)
    rows = by_model(result)
    assert result["anchor"] == "a"
    assert rows["a"]["bt_rating"] == 1000.0 and rows["a"]["bt_interval"] == [1000.0, 1000.0]
    assert rows["a"]["bt_interval_length_controlled"] == [1000.0, 1000.0]
    assert rows["a"]["win_rate_interval"] == [0.5, 0.5]
    assert rows["a"]["length_flag"] is False
    assert abs(rows["b"]["bt_rating"] - (1000 - 400 * math.log10(3))) < 1e-6
    assert abs(rows["b"]["win_rate_vs_anchor"] - 0.25) < 1e-8


def test_a_strong_win_weighs_three_games():
    # a strongly wins item 1 (one order asked), b wins item 2 plainly: 3 against 1, ln 3 again
    questions = [q(1, "a", "b", "A>>B"), q(2, "b", "a", "A>B")]
    rows = by_model(fit_ratings(questions, anchor="b", resamples=20))
    assert abs(rows["a"]["bt_rating"] - (1000 + 400 * math.log10(3))) < 1e-6


def test_a_tie_is_half_a_win():
    # a tie and a strong win for a: a's score 0.5 + 3 of weight 4, p = 7/8, log-odds ln 7
    questions = [q(1, "a", "b", "A=B"), q(1, "b", "a", "B>>A")]
    rows = by_model(fit_ratings(questions, anchor="b", resamples=20))
    assert abs(rows["a"]["bt_rating"] - (1000 + 400 * math.log10(7))) < 1e-6


def test_flipped_verdicts_are_an_even_game():
    # without the flip rule, a would have 3 wins to 1 (ln 3); as two ties a and b are equal
    questions = [q(1, "a", "b", "A>>B"), q(1, "b", "a", "A>B"),
                 q(2, "a", "b", "A>B"), q(2, "b", "a", "B>A")]
    rows = by_model(fit_ratings(questions, anchor="b", resamples=20))
    # item 1: two ties (1 of 2), item 2: two wins for a: 3 of 4 -> ln 3
    assert abs(rows["a"]["bt_rating"] - (1000 + 400 * math.log10(3))) < 1e-6


def test_a_model_that_wins_every_game_gets_the_large_finite_rating_the_ridge_allows():
    # 10 wins, no loss: no finite maximum-likelihood rating. With the ridge the log-odds beta
    # solves 10 * logistic(-beta) = 1e-9 * beta (about 20.03); every resample is the same.
    questions = [q(item, "a", "b", "A>B") for item in range(10)]
    low, high = 1.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        if 10 / (1 + math.exp(middle)) > 1e-9 * middle:
            low = middle
        else:
            high = middle
    rows = by_model(fit_ratings(questions, anchor="b", resamples=100))
    assert abs(rows["a"]["bt_rating"] - (1000 + ELO * low)) < 1e-6
    assert rows["a"]["bt_interval"] == pytest.approx([rows["a"]["bt_rating"]] * 2, abs=1e-6)
    assert rows["a"]["length_flag"] is False


def test_newton_halves_a_step_that_would_overshoot():
    # one game row, 3 wins of 4, started at log-odds 10: the plain Newton step from there is
    # about +5500 and would diverge; halving walks back to ln 3
    from evalpipe.stats.bradley_terry import _newton
    beta = _newton(np.array([[1.0]]), np.array([[4.0]]), np.array([[3.0]]), np.array([10.0]))
    assert abs(beta[0, 0] - math.log(3)) < 1e-8


# -- simulated judges ------------------------------------------------------------------------------

def logistic(x):
    return 1 / (1 + np.exp(-x))


def simulate(strengths, items, seed, *, pairs=None, cuts=(0.0,), lengths=None, length_bias=0.0,
             first_bias=0.0):
    """Questions in both orders for every pair (or the given pairs) and item. `cuts`: (0,) gives
    only A>B / B>A (exactly Bradley-Terry); (t, s) gives a tie band |d| <= t and strong verdicts
    beyond s. `lengths[model][item]`: token counts (default 100 for all)."""
    rng = np.random.default_rng(seed)
    names = sorted(strengths)
    pairs = pairs or [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    questions = []
    for item in range(items):
        for a, b in pairs:
            for first, second in ((a, b), (b, a)):
                first_len = lengths[first][item] if lengths else 100
                second_len = lengths[second][item] if lengths else 100
                diff = (first_len - second_len) / (first_len + second_len)
                d = (strengths[first] - strengths[second] + length_bias * diff + first_bias
                     + rng.logistic())
                if len(cuts) == 1:
                    verdict = "A>B" if d > cuts[0] else "B>A"
                else:
                    tie, strong = cuts
                    verdict = ("A>>B" if d > strong else "A>B" if d > tie else
                               "A=B" if d >= -tie else "B>A" if d >= -strong else "B>>A")
                questions.append(Question(f"item-{item:03d}", first, second, verdict,
                                          int(first_len), int(second_len)))
    return questions


def test_the_fitted_order_is_the_true_order_with_ties_and_strong_verdicts():
    strengths = {"a": 0.0, "b": 0.6, "c": 1.2, "d": -0.6}
    result = fit_ratings(simulate(strengths, 110, seed=1, cuts=(0.5, 2.5)), resamples=300)
    assert [row["model"] for row in result["models"]] == ["c", "b", "a", "d"]
    for row in result["models"]:
        low, high = row["bt_interval"]
        assert low <= row["bt_rating"] <= high


def test_95_percent_intervals_cover_the_true_ratings():
    # 20 simulated comparisons of 3 models on 60 items; the truth of model m on the scale is
    # 1000 + ELO * (s_m - s_a). Expect 95% of 40 non-anchor intervals to cover: at least 34
    # (the chance of fewer than 34 of 40 at 95% is about 1.4%; the seeds are fixed).
    strengths = {"a": 0.0, "b": 0.5, "c": -0.4}
    covered = total = 0
    for seed in range(20):
        result = fit_ratings(simulate(strengths, 60, seed=100 + seed), resamples=400, seed=seed)
        for row in result["models"]:
            if row["model"] == "a":
                continue
            truth = 1000 + ELO * strengths[row["model"]]
            low, high = row["bt_interval"]
            covered += low <= truth <= high
            total += 1
    assert total == 40
    assert covered >= 34


def test_the_length_coefficient_of_a_pure_bradley_terry_judge_is_covered():
    rng = np.random.default_rng(5)
    lengths = {m: rng.integers(20, 400, size=110) for m in "abc"}
    strengths = {"a": 0.0, "b": 0.5, "c": 1.0}
    result = fit_ratings(simulate(strengths, 110, seed=6, lengths=lengths, length_bias=2.0),
                         resamples=400)
    low, high = result["length_coefficient_interval"]
    assert low < 2.0 < high
    assert low > 0.5


def test_adding_a_fourth_model_moves_the_first_three_by_less_than_half_their_interval():
    strengths = {"a": 0.0, "b": 0.7, "c": -0.5}
    three = simulate(strengths, 110, seed=11)
    fourth = simulate({**strengths, "d": 0.3}, 110, seed=12,
                      pairs=[("a", "d"), ("b", "d"), ("c", "d")])
    before = by_model(fit_ratings(three, resamples=500))
    after = by_model(fit_ratings(three + fourth, resamples=500))
    assert set(after) == {"a", "b", "c", "d"}
    for model in "bc":
        low, high = before[model]["bt_interval"]
        moved = abs(after[model]["bt_rating"] - before[model]["bt_rating"])
        assert moved < (high - low) / 2, (model, moved, low, high)
    assert after["a"]["bt_rating"] == before["a"]["bt_rating"] == 1000.0


def length_biased():
    # true strengths a > b > c, but c writes the longest answers and a the shortest, and the
    # judge weighs the normalised length difference by 3 log-odds
    rng = np.random.default_rng(21)
    means = {"a": 60, "b": 120, "c": 240}
    lengths = {m: np.maximum(1, rng.lognormal(math.log(mean), 0.5, size=110)).astype(int)
               for m, mean in means.items()}
    strengths = {"a": 0.8, "b": 0.4, "c": 0.0}
    return simulate(strengths, 110, seed=22, lengths=lengths, length_bias=3.0)


def test_length_control_corrects_a_judge_that_prefers_longer_answers():
    result = fit_ratings(length_biased(), resamples=500)
    rows = by_model(result)
    raw_order = [row["model"] for row in result["models"]]
    controlled_order = sorted(rows, key=lambda m: -rows[m]["bt_rating_length_controlled"])
    assert raw_order == ["c", "b", "a"]
    assert controlled_order == ["a", "b", "c"]
    low, high = result["length_coefficient_interval"]
    assert low < 3.0 < high
    # the anchor a is 1000 in both fits; b and c move by more than their intervals
    assert {m: rows[m]["length_flag"] for m in rows} == {"a": False, "b": True, "c": True}


def test_the_flag_is_set_when_only_the_controlled_rating_leaves_the_raw_interval():
    # a milder length preference (0.6): c's controlled rating falls below its raw interval,
    # while its raw rating stays inside the wider controlled interval; flagged all the same
    rng = np.random.default_rng(32)
    means = {"a": 60, "b": 120, "c": 240}
    lengths = {m: np.maximum(1, rng.lognormal(math.log(mean), 0.5, size=110)).astype(int)
               for m, mean in means.items()}
    questions = simulate({"a": 0.8, "b": 0.4, "c": 0.0}, 110, seed=42, lengths=lengths,
                         length_bias=0.6)
    c = by_model(fit_ratings(questions, resamples=500))["c"]
    low = c["bt_interval"][0]
    controlled_low, controlled_high = c["bt_interval_length_controlled"]
    assert c["bt_rating_length_controlled"] < low
    assert controlled_low <= c["bt_rating"] <= controlled_high
    assert c["length_flag"] is True


def test_a_judge_without_length_preference_flags_no_model():
    strengths = {"a": 0.0, "b": 0.5, "c": 1.0}
    rng = np.random.default_rng(3)
    lengths = {m: rng.integers(20, 400, size=110) for m in "abc"}
    result = fit_ratings(simulate(strengths, 110, seed=4, lengths=lengths), resamples=400)
    assert [row["length_flag"] for row in result["models"]] == [False, False, False]
    low, high = result["length_coefficient_interval"]
    assert low < 0 < high


# -- position effect -------------------------------------------------------------------------------

def test_a_judge_that_always_prefers_the_first_shown_flips_every_item():
    questions = [q(item, first, second, "A>B")
                 for item in range(5)
                 for a, b in [("a", "b"), ("a", "c"), ("b", "c")]
                 for first, second in ((a, b), (b, a))]
    assert position_effect(questions) == [
        {"model_a": a, "model_b": b, "items": 5, "flipped": 5, "share": 1.0,
         "first_shown_wins": 1.0}
        for a, b in [("a", "b"), ("a", "c"), ("b", "c")]]
    # every game a tie: all models equal
    result = fit_ratings(questions, resamples=50)
    assert [row["bt_rating"] for row in result["models"]] == [1000.0, 1000.0, 1000.0]
    assert result["position"] == position_effect(questions)


def test_a_consistent_judge_flips_nothing_and_wins_half_its_questions_in_each_place():
    # the judge always prefers the alphabetically earlier model, wherever it is shown
    questions = []
    for item in range(4):
        questions += [q(item, "a", "b", "A>>B"), q(item, "b", "a", "B>A")]
    questions.append(q(9, "a", "b", "A=B"))  # one order only: not counted in items, undecided
    assert position_effect(questions) == [{"model_a": "a", "model_b": "b", "items": 4,
                                           "flipped": 0, "share": 0.0, "first_shown_wins": 0.5}]


def test_a_simulated_first_position_preference_is_measured():
    # equal models, a preference of 1 log-odds for the first shown: the first shown wins with
    # chance logistic(1) = 0.73
    questions = simulate({"a": 0.0, "b": 0.0}, 400, seed=8, first_bias=1.0)
    (pair,) = position_effect(questions)
    assert abs(pair["first_shown_wins"] - logistic(1.0)) < 0.04
    # flipped: both orders won by the first shown, chance 0.73^2 + 0.27^2 = 0.61
    assert abs(pair["share"] - (logistic(1.0) ** 2 + logistic(-1.0) ** 2)) < 0.06


# -- determinism, speed, errors --------------------------------------------------------------------

def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_intervals():
    questions = simulate({"a": 0.0, "b": 0.4, "c": 0.9}, 40, seed=2, cuts=(0.5, 2.5))
    first = json.dumps(fit_ratings(questions, resamples=200, seed=7))
    assert first == json.dumps(fit_ratings(questions, resamples=200, seed=7))
    other = fit_ratings(questions, resamples=200, seed=8)
    assert json.dumps(other) != first
    assert [row["bt_rating"] for row in other["models"]] == \
        [row["bt_rating"] for row in json.loads(first)["models"]]


def test_questions_may_come_as_any_iterable():
    assert fit_ratings(iter(three_wins_one_loss()), resamples=20) == \
        fit_ratings(three_wins_one_loss(), resamples=20)


def test_the_result_is_json_ready_and_complete():
    result = fit_ratings(three_wins_one_loss(), resamples=20)
    assert json.loads(json.dumps(result)) == result
    assert list(result) == ["anchor", "scale", "games", "items", "length_coefficient",
                            "length_coefficient_interval", "models", "position"]
    assert result["scale"] == "elo: 1000 + 400*log10-odds; anchor = 1000"
    assert list(result["models"][0]) == [
        "model", "bt_rating", "bt_interval", "bt_rating_length_controlled",
        "bt_interval_length_controlled", "win_rate_vs_anchor", "win_rate_interval",
        "length_flag", "games"]


def test_an_empty_list_is_refused():
    with pytest.raises(EvalpipeError, match=r"^no pairwise verdicts to rate$"):
        fit_ratings([])


def test_an_unknown_verdict_is_refused_naming_the_item():
    with pytest.raises(EvalpipeError) as caught:
        games([q(1, "a", "b", "A>B"), q(7, "a", "b", "A>>>B")])
    assert str(caught.value) == ("item 7: unknown verdict 'A>>>B' for a vs b; "
                                 "expected one of A>>B, A>B, A=B, B>A, B>>A")


def test_a_model_paired_with_itself_is_refused():
    with pytest.raises(EvalpipeError) as caught:
        fit_ratings([q(1, "a", "b", "A>B"), q(3, "a", "a", "A=B")])
    assert str(caught.value) == "item 3: model a is paired with itself"


def test_a_question_asked_twice_in_one_order_is_refused():
    with pytest.raises(EvalpipeError) as caught:
        games([q(1, "a", "b", "A>B"), q(1, "a", "b", "B>A")])
    assert str(caught.value) == "item 1: a vs b (a shown first) is asked twice"


def test_negative_token_counts_are_refused():
    with pytest.raises(EvalpipeError) as caught:
        games([q(4, "a", "b", "A>B", 3, -1)])
    assert str(caught.value) == "item 4: b's response has -1 tokens"


def test_an_anchor_in_no_game_is_refused():
    with pytest.raises(EvalpipeError) as caught:
        fit_ratings(three_wins_one_loss(), anchor="z")
    assert str(caught.value) == "anchor model 'z' appears in no game; the models are a, b"


def test_models_never_compared_across_groups_are_refused_naming_the_groups():
    questions = [q(1, "a", "b", "A>B"), q(1, "c", "d", "A>B"), q(2, "e", "d", "B>A")]
    with pytest.raises(EvalpipeError) as caught:
        fit_ratings(questions)
    assert str(caught.value) == ("the models fall into groups never compared with each other, "
                                 "so they cannot be put on one scale: {a, b} and {c, d, e}")
