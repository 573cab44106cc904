"""What a pairwise comparison writes and shows: leaderboard.json's fields, exactly, with the
runs' single-mode and together scores beside the ratings, leaderboard.md, the printed table
and `evalpipe show`. The runs are the together tests' (tests/judging/together_runs.py: a
copies the reference, c has 3 of 4 words, b 2 of 4; some responses empty), judged by the
in-process mock judge, whose pairwise verdict follows the two responses' word overlap with the
reference (evalpipe/judging/backends/mock.py)."""

from __future__ import annotations

import json

from together_runs import MOCK_JUDGE, MODELS, OUT

from evalpipe.cli import main
from evalpipe.io import read_jsonl

MOCK = [argument for setting in MOCK_JUDGE for argument in ("--set", setting)]
ROW_KEYS = ["rank", "model", "run", "base_model", "bt_rating", "bt_interval",
            "bt_rating_length_controlled", "bt_interval_length_controlled",
            "win_rate_vs_anchor", "win_rate_interval", "length_flag", "games",
            "single_mean", "single_ci", "single_rank", "together_mean", "together_ci",
            "together_rank"]


def compare(mode: str, *settings: str) -> int:
    args = ["compare", *MODELS, "--mode", mode, "--resamples", "200", *MOCK]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def test_the_board_of_a_pairwise_comparison(runs, capsys):
    for model in MODELS:
        assert main(["judge", "--config", str(runs / model / "config.toml"), "--run", model,
                     *MOCK, "--set", "judge.canaries=false"]) == 0
    assert compare("together") == 0
    capsys.readouterr()
    assert compare("pairwise", "judge.anchor='c'") == 0
    out = capsys.readouterr().out
    board = json.loads((runs / OUT / "leaderboard.json").read_text())

    assert list(board) == ["name", "mode", "comparison", "mixed_judges", "runs", "items",
                           "confidence", "resamples", "seed", "models", "pairwise", "notes",
                           "pairs", "how_sure", "agreement", "positions", "modes",
                           "modes_note", "plots"]
    assert (board["name"], board["mode"], board["runs"], board["items"]) == (
        "a-vs-b-vs-c", "pairwise", ["a", "b", "c"], 10)
    assert board["plots"] == ["ratings.png"]
    assert (runs / OUT / "ratings.png").exists() and not (runs / OUT / "scores.png").exists()

    rows = board["models"]
    assert [list(row) for row in rows] == [ROW_KEYS] * 3
    # a copies the reference: it wins every question it is in; c (3 of 4 words) beats b.
    assert [(r["rank"], r["model"]) for r in rows] == [(1, "a"), (2, "c"), (3, "b")]
    by_model = {r["model"]: r for r in rows}
    c = by_model["c"]
    assert (c["bt_rating"], c["bt_interval"], c["bt_rating_length_controlled"],
            c["bt_interval_length_controlled"], c["win_rate_vs_anchor"],
            c["win_rate_interval"], c["length_flag"]) == (1000.0, [1000.0, 1000.0], 1000.0,
                                                        [1000.0, 1000.0], 0.5, [0.5, 0.5],
                                                        False)
    assert by_model["a"]["bt_rating"] > 1000 > by_model["b"]["bt_rating"]
    assert by_model["a"]["win_rate_vs_anchor"] > 0.5 > by_model["b"]["win_rate_vs_anchor"]
    for row in rows:
        low, high = row["bt_interval"]
        assert low <= row["bt_rating"] <= high
    # The same runs judged alone and together (the mock judge scores alike in both).
    assert [(r["model"], r["single_mean"], r["single_rank"], r["together_mean"],
             r["together_rank"]) for r in rows] == [("a", 90.0, 1, 90.0, 1),
                                                    ("c", 60.0, 2, 60.0, 2),
                                                    ("b", 53.6, 3, 53.6, 3)]
    assert rows[0]["single_ci"] == rows[0]["together_ci"] and len(rows[0]["single_ci"]) == 2

    # Questions: item 92 has no response from anyone, item 93 none from c.
    questions = read_jsonl(runs / OUT / "pairwise/questions.jsonl")
    empty = [q for q in questions if q["state"] == "empty"]
    assert len(questions) == 3 * 10 * 2 and len(empty) == 6 + 4
    pairwise = board["pairwise"]
    assert list(pairwise) == ["pairs", "anchor", "scale", "judge", "questions", "states",
                              "requests", "from_cache", "left_out", "fitted", "games",
                              "fitted_items", "length_coefficient",
                              "length_coefficient_interval", "position", "single_shown",
                              "together_shown"]
    assert (pairwise["pairs"], pairwise["anchor"], pairwise["questions"], pairwise["requests"],
            pairwise["from_cache"], pairwise["fitted"], pairwise["fitted_items"]) == (
        "all", "c", 60, 50, 0, 60, 10)
    assert pairwise["states"] == {"judged": 50, "empty": 10, "unparseable": 0, "error": 0}
    assert pairwise["left_out"] == {"unparseable": 0, "error": 0, "total": 0}
    assert pairwise["judge"]["backend"] == "mock"
    assert [(p["model_a"], p["model_b"], p["items"], p["flipped"]) for p in
            pairwise["position"]] == [("a", "b", 10, 0), ("a", "c", 10, 0), ("b", "c", 10, 0)]
    assert (pairwise["single_shown"], pairwise["together_shown"]) == (True, True)

    # The printed table and leaderboard.md show the ratings with their intervals.
    assert (f"compare: 3 models on 10 items, judged pairwise (anchor c = 1000) -> "
            f"{runs / OUT}/\n") in out
    assert "  2. c  rating 1000 [1000, 1000]  length-controlled 1000 [1000, 1000]  win rate " \
           "vs anchor 50%  (40 games)\n" in out
    markdown = (runs / OUT / "leaderboard.md").read_text()
    assert markdown.startswith("# Comparison a-vs-b-vs-c (pairwise)\n")
    assert ("| rank | model | BT rating | 95% CI | length-controlled | length-controlled 95% CI "
            "| length flag | win rate vs c | win rate 95% CI | games | single mean | single 95% "
            "CI | together mean | together 95% CI |") in markdown
    assert "| 2 | c | 1000 | [1000, 1000] | 1000 | [1000, 1000] | no | 50% | [50%, 50%] | 40 |" \
           " 60.00 |" in markdown
    assert "## Position effect" in markdown and "| a | b | 10 | 0 | 0% |" in markdown

    # Rerun: nothing asked (the mock judge is asked in-process: the summary says so).
    assert compare("pairwise", "judge.anchor='c'") == 0
    assert "pairwise: up to date (judged " in capsys.readouterr().out

    assert main(["show", OUT]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("comparison a-vs-b-vs-c (pairwise mode, models, 10 items)\n")
    assert "bt_rating" in shown and "win_rate_vs_anchor" in shown


def test_single_mode_scores_are_left_out_when_the_runs_were_never_judged_alone(runs, capsys):
    assert compare("pairwise") == 0
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    assert (board["pairwise"]["single_shown"], board["pairwise"]["together_shown"]) == (
        False, False)
    assert all(r["single_mean"] is None and r["together_mean"] is None
               for r in board["models"])
    assert board["pairwise"]["anchor"] == "a"
    assert "single mean" not in (runs / OUT / "leaderboard.md").read_text()


def test_a_pairwise_comparison_item_shows_the_responses_and_every_verdict(runs, capsys):
    assert compare("pairwise", "judge.anchor='c'") == 0
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    rating = {row["model"]: f"{row['bt_rating']:.1f}" for row in board["models"]}
    capsys.readouterr()
    item = read_jsonl(runs / "a/prepare/test.jsonl")[1]["id"]  # record 86
    assert main(["show", OUT, "--item", item[:6]]) == 0
    reason = "by word overlap F1 with the reference"
    assert capsys.readouterr().out == f"""\
comparison a-vs-b-vs-c (pairwise mode), item {item} (2 of 10 in the test split)

-- the data record
id: {item}
instruction: Task 86
input: (none)
output: word86a word86b word86c word86d

-- 1. a (run a): rating {rating['a']}
response:
word86a word86b word86c word86d

-- 2. c (run c): rating {rating['c']}
response:
word86a word86b word86c other

-- 3. b (run b): rating {rating['b']}
response:
nothing in common

-- the verdicts (Response A is the model named first)
a vs b: judged A>>B, a much better: {reason}
b vs a: judged B>>A, a much better: {reason}
a vs c: judged A>B, a better: {reason}
c vs a: judged B>A, a better: {reason}
b vs c: judged B>>A, c much better: {reason}
c vs b: judged A>>B, c much better: {reason}
"""
    # Item 92: no model answered; the verdict was decided without asking.
    empty = read_jsonl(runs / "a/prepare/test.jsonl")[7]["id"]
    assert main(["show", OUT, "--item", empty]) == 0
    assert "a vs b: empty A=B, tie (not asked: both responses empty)\n" in capsys.readouterr().out
