"""Pairwise mode (`evalpipe compare --mode pairwise`): what is asked, cached, recorded and
fitted, driven through the command line against the stand-in Ollama server (real HTTP, the
real `ollama` client; tests/standins.py) with judges of fixed preferences
(tests/judging/pairwise_runs.py)."""

from __future__ import annotations

import json
from collections import Counter

from pairwise_runs import (
    ITEMS,
    STRENGTHS,
    N,
    board_of,
    compare,
    first_shown_judge,
    out_of,
    preference_judge,
    ratings,
    shown,
)
from standins import OllamaStandIn

from evalpipe.io import read_jsonl
from evalpipe.judging.prompts import pairwise_schema


def asked(bodies: list[dict]) -> Counter:
    """(record, model A, model B) -> how many times the stand-in was asked it."""
    return Counter((int(shown(b)[0].split()[0][len("word"):-1]), shown(b)[1], shown(b)[2])
                   for b in bodies)


def test_every_pair_in_both_orders_then_only_new_pairs(pairwise_runs, capsys):
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url) == 0
        first = list(standin.requests)
        # 3 pairs x 30 items x 2 orders, each question once.
        assert len(first) == 3 * N * 2
        assert set(asked(first).values()) == {1}
        assert set(asked(first)) == {(i, x, y) for i in ITEMS for x in "abc" for y in "abc"
                                     if x != y}
        for body in first:
            assert body["format"] == pairwise_schema()
            assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
        out = capsys.readouterr().out
        assert (f"pairwise: {N} items x 3 models (all pairs, both orders): {3 * N * 2} "
                f"questions: {3 * N * 2} judged, 0 empty, 0 unparseable, 0 error; "
                f"{3 * N * 2} requests, 0 from the judgment cache\n") in out

        # The same comparison again: up to date, nothing asked.
        assert compare(standin.url) == 0
        assert len(standin.requests) == len(first)
        assert "pairwise: up to date (judged " in capsys.readouterr().out

        # A fourth model: exactly its 3 new pairs x 30 items x 2 orders.
        assert compare(standin.url, runs=("a", "b", "c", "d")) == 0
        added = standin.requests[len(first):]
        assert len(added) == 3 * N * 2
        assert all("d" in key[1:] for key in asked(added))
        assert set(asked(added).values()) == {1}
        assert (f"{4 * 3 // 2 * N * 2} questions: {6 * N * 2} judged, 0 empty, 0 unparseable, "
                f"0 error; {6 * N * 2} requests, {3 * N * 2} from the judgment cache\n"
                ) in capsys.readouterr().out


def test_anchor_mode_asks_each_model_with_the_anchor(pairwise_runs, capsys):
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url, "judge.pairs='anchor'", "judge.anchor='b'",
                       runs=("a", "b", "c", "d")) == 0
        bodies = list(standin.requests)
    assert len(bodies) == 3 * N * 2  # (k - 1) x n x 2
    assert {key[1:] for key in asked(bodies)} == {("b", "a"), ("a", "b"), ("b", "c"),
                                                  ("c", "b"), ("b", "d"), ("d", "b")}
    board = board_of(pairwise_runs, ("a", "b", "c", "d"))
    assert board["pairwise"]["anchor"] == "b" and board["pairwise"]["pairs"] == "anchor"
    assert ratings(board)["b"] == 1000


def test_questions_are_recorded_one_per_order(pairwise_runs):
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url) == 0
    records = read_jsonl(out_of(pairwise_runs) / "pairwise/questions.jsonl")
    assert len(records) == 3 * N * 2
    assert [(r["index"], r["first"], r["second"]) for r in records[:6]] == [
        (0, "a", "b"), (0, "b", "a"), (0, "a", "c"), (0, "c", "a"), (0, "b", "c"),
        (0, "c", "b")]
    first = records[0]
    assert set(first) == {"index", "id", "first", "second", "state", "verdict", "reason",
                          "problem", "raw_reply", "error", "first_tokens", "second_tokens",
                          "prompt_sha256", "judge_seconds", "cached"}
    assert first["state"] == "judged" and first["verdict"] in ("A>>B", "A>B", "A=B", "B>A",
                                                               "B>>A")
    assert json.loads(first["raw_reply"])["verdict"] == first["verdict"]
    assert first["first_tokens"] > 8 and first["second_tokens"] > 8  # GPT-2 tokens
    assert first["reason"] == "stand-in" and first["cached"] is False


def test_fitted_order_matches_the_true_strengths(pairwise_runs):
    runs = ("a", "b", "c", "d")
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url, runs=runs) == 0
    board = board_of(pairwise_runs, runs)
    truth = sorted(runs, key=lambda m: -STRENGTHS[m])
    assert [row["model"] for row in board["models"]] == truth
    assert [row["rank"] for row in board["models"]] == [1, 2, 3, 4]
    assert ratings(board)["a"] == 1000  # the first run named is the anchor by default


def test_adding_a_model_barely_moves_the_others(pairwise_runs):
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url) == 0
        assert compare(standin.url, runs=("a", "b", "c", "d")) == 0
    before = {row["model"]: row for row in board_of(pairwise_runs)["models"]}
    after = ratings(board_of(pairwise_runs, ("a", "b", "c", "d")))
    for model in ("b", "c"):  # a is the anchor: 1000 in both
        low, high = before[model]["bt_interval"]
        assert abs(after[model] - before[model]["bt_rating"]) < (high - low) / 2, model


def test_a_judge_that_favours_response_a_shows_in_the_position_effect(pairwise_runs):
    with OllamaStandIn(first_shown_judge) as standin:
        assert compare(standin.url) == 0
    board = board_of(pairwise_runs)
    position = board["pairwise"]["position"]
    assert [(p["model_a"], p["model_b"]) for p in position] == [("a", "b"), ("a", "c"),
                                                                 ("b", "c")]
    for pair in position:
        assert (pair["items"], pair["flipped"], pair["share"], pair["first_shown_wins"]) == (
            N, N, 1.0, 1.0)
    # Every verdict flipped: all ties, every model at 1000.
    assert set(ratings(board).values()) == {1000}
