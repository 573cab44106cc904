"""How sure a ranking is, in leaderboard.json's `how_sure`, leaderboard.md, compare.html, the
printed leaderboard and ranks.png (issue #11, "Where it shows"; docs/compare.md "How sure:
items, seeds, judge"), on hand-made runs whose answers are known without the bootstrap."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
from compare_helpers import judged, run_cli, write_run

from evalpipe.cli import main
from evalpipe.compare.leaderboard import score_array, seed_groups
from evalpipe.compare.load import ModelScores

# Eleven items; the first ten are the ones every model has a score for (c fails item 10).
ITEMS = [{"instruction": f"Question {i}?", "input": "", "output": str(i)} for i in range(11)]
BEST = [80, 85, 75, 90, 80, 85, 75, 90, 80, 85, 80]
B = [40, 60, 50, 30, 45, 55, 40, 60, 50, 35, 0]
C = [45, 60, 50, 30, 45, 55, 40, 60, 50, 35]  # b's scores, 5 more on item 0


def three_runs(results):
    """best: far above the others, judged twice per item (the second repeat 10 points
    higher); b and c: the same scores but c's 5 more on item 0, c's last item an error."""
    best = [judged(item, "best answer", "scored", score,
                   repeats=[{"seed": 1, "state": "scored", "score": score, "raw_reply": ""},
                            {"seed": 2, "state": "scored", "score": score + 10,
                             "raw_reply": ""}])
            for item, score in zip(ITEMS, BEST)]
    write_run(results, "best", best, "gpt2-large")
    write_run(results, "b", [judged(item, "b answer", "scored", score)
                             for item, score in zip(ITEMS, B)], "gpt2")
    write_run(results, "c", [judged(item, "c answer", "scored", score)
                             for item, score in zip(ITEMS, C)]
              + [judged(ITEMS[10], "c answer", "error", None)], "gpt2-medium")


class Tables(HTMLParser):
    """compare.html's headings (h2) and the text of every table row, cell by cell."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.headings: list[str] = []
        self.rows: list[list[str]] = []
        self._in = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self.rows[-1].append("")
            self._in = "cell"
        elif tag == "h2":
            self.headings.append("")
            self._in = "h2"

    def handle_endtag(self, tag):
        if tag in ("td", "th", "h2"):
            self._in = None

    def handle_data(self, data):
        if self._in == "cell":
            self.rows[-1][-1] += data
        elif self._in == "h2":
            self.headings[-1] += data


def test_one_clearly_best_and_two_close_runs(tmp_path):
    results = tmp_path / "results"
    three_runs(results)
    done = run_cli("compare", "best", "b", "c", "--results", str(results), "--resamples",
                   "500", "--seed", "3", "--name", "close")
    assert done.returncode == 0, done.stderr
    out = results / "compare-close"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    how_sure = board["how_sure"]
    assert [row["model"] for row in board["models"]] == ["best", "c", "b"]
    assert (how_sure["items"], how_sure["alpha"], how_sure["power"]) == (10, 0.05, 0.8)

    best, c, b = how_sure["models"]
    assert [m["model"] for m in how_sure["models"]] == ["best", "c", "b"]
    assert [m["runs"] for m in how_sure["models"]] == [["best"], ["c"], ["b"]]
    assert [m["seeds"] for m in how_sure["models"]] == [1, 1, 1]
    # best's mean over both repeats of the ten items: 82.5 + 5; c 47 + 0.5; b 46.5
    assert [m["mean"] for m in how_sure["models"]] == [87.5, 47.0, 46.5]
    assert all(len(m["ci"]) == 2 and m["ci"][0] <= m["mean"] <= m["ci"][1]
               for m in how_sure["models"])
    # best's lowest item mean (80) is above every item of b and c: first in every resample.
    assert [m["p_best"] for m in how_sure["models"]] == [1.0, 0.0, 0.0]
    # c is never below b; they tie in the resamples that miss item 0 (0.9^10 = 35% of them),
    # sharing rank 2; otherwise b is third.
    assert [m["rank_interval"] for m in how_sure["models"]] == [[1, 1], [2, 2], [2, 3]]
    assert [m["tier"] for m in how_sure["models"]] == [1, 2, 2]
    # Variance shares. best: item means are BEST + 5, population variance 26.25 over 10 items
    # -> 2.625; judge: each cell's two repeats 10 apart, variance 25 / 2 repeats, summed over
    # 10 items / 10^2 -> 1.25; one seed -> 0. b and c: one repeat, one seed: all items.
    assert best["variance_shares"] == {"items": round(2.625 / 3.875, 4), "seeds": 0.0,
                                       "judge": round(1.25 / 3.875, 4)}
    assert c["variance_shares"] == b["variance_shares"] == {"items": 1.0, "seeds": 0.0,
                                                             "judge": 0.0}

    assert [(p["a"], p["b"]) for p in how_sure["pairs"]] == [("best", "c"), ("best", "b"),
                                                             ("c", "b")]
    assert [p["p_a_better"] for p in how_sure["pairs"][:2]] == [1.0, 1.0]
    assert [p["distinguishable"] for p in how_sure["pairs"]] == [True, True, False]
    assert [p["items_needed"] for p in how_sure["pairs"]][:2] == [None, None]
    close = how_sure["pairs"][2]
    # c - b per item: 5 then nine 0s: mean 0.5, sd (n - 1) sqrt(22.5 / 9)
    sd = math.sqrt(22.5 / 9)
    assert close["mdd"] == round(2.8016 * sd / math.sqrt(10), 4) == 1.4008
    assert close["items_needed"] == math.ceil((2.8016 * sd / 0.5) ** 2) == 79
    # c above b when item 0 is drawn, a tie (half) when not: about 1 - 0.9^10 / 2 = 0.83
    assert abs(close["p_a_better"] - (1 - 0.9 ** 10 / 2)) < 0.04

    assert board["plots"] == ["scores.png", "ranks.png", "judges.png"]  # best's repeats
    assert (out / "ranks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert done.stdout.splitlines()[-1] == "  tier 1: best; tier 2: c, b"

    p_close = f"{100 * close['p_a_better']:.0f}%"
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    section = markdown.index("## How sure")
    assert markdown[section + 2].startswith(
        "From one paired bootstrap (500 resamples, seed 3) over the 10 items every model has "
        "a score for")
    assert markdown[section + 4:section + 14] == [
        "| model | runs | P(best) | rank interval | tier | uncertainty from items / seeds / "
        "judge |",
        "|---|---|---|---|---|---|",
        "| best | best | 100% | [1, 1] | 1 | 68% / 0% / 32% |",
        "| c | c | 0% | [2, 2] | 2 | 100% / 0% / 0% |",
        "| b | b | 0% | [2, 3] | 2 | 100% / 0% / 0% |",
        "",
        "| a | b | P(a > b) | MDD | verdict |",
        "|---|---|---|---|---|",
        f"| best | c | 100% | {how_sure['pairs'][0]['mdd']:.2f} | distinguishable |",
        f"| best | b | 100% | {how_sure['pairs'][1]['mdd']:.2f} | distinguishable |",
    ]
    assert markdown[section + 14] == (
        f"| c | b | {p_close} | 1.40 | not distinguishable with 10 items (needs about 79) |")

    page = Tables()
    page.feed((out / "compare.html").read_text(encoding="utf-8"))
    assert "How sure" in page.headings
    assert ["b", "b", "0%", "[2, 3]", "2", "100% / 0% / 0%"] in page.rows
    assert ["c", "b", p_close, "1.40",
            "not distinguishable with 10 items (needs about 79)"] in page.rows
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert 'data-file="ranks.png"' in html


def test_two_runs_with_the_same_scores_share_first_place(tmp_path, capsys):
    results = tmp_path / "results"
    for run, response in (("x", "Bonjour"), ("y", "Salut")):
        write_run(results, run, [judged(item, response, "scored", score)
                                 for item, score in zip(ITEMS[:4], (40, 60, 50, 70))], "gpt2")
    assert main(["compare", "x", "y", "--results", str(results), "--resamples", "50"]) == 0
    board = json.loads((results / "compare-x-vs-y/leaderboard.json").read_text(
        encoding="utf-8"))
    models, pairs = board["how_sure"]["models"], board["how_sure"]["pairs"]
    # Tied in every resample: a shared first place, split; rank 1 for both (a tie shares the
    # better rank), one tier.
    assert [(m["model"], m["p_best"], m["rank_interval"], m["tier"]) for m in models] == [
        ("x", 0.5, [1, 1], 1), ("y", 0.5, [1, 1], 1)]
    assert pairs == [{"a": "x", "b": "y", "p_a_better": 0.5, "mdd": 0.0,
                      "distinguishable": False, "items_needed": None}]
    markdown = (results / "compare-x-vs-y/leaderboard.md").read_text(encoding="utf-8")
    # A difference of 0: no number of items tells them apart, so no "needs about".
    assert "| x | y | 50% | 0.00 | not distinguishable with 4 items |" in markdown
    assert capsys.readouterr().out.splitlines()[-1] == "  tier 1: x, y"


def test_no_item_scored_by_every_model_is_a_one_line_error(tmp_path):
    results = tmp_path / "results"
    write_run(results, "x", [judged(item, "Bonjour", *(("error", None) if i < 2 else
                                                      ("scored", 50)))
                             for i, item in enumerate(ITEMS[:4])], "gpt2")
    write_run(results, "y", [judged(item, "Salut", *(("unparseable", None) if i >= 2 else
                                                     ("scored", 50)))
                             for i, item in enumerate(ITEMS[:4])], "gpt2")
    done = run_cli("compare", "x", "y", "--results", str(results), "--resamples", "20")
    assert done.returncode == 1
    assert done.stderr == ("evalpipe: error: how sure the ranking is cannot be computed: none "
                           "of the 4 items has a score from every model (unparseable and error "
                           "items have none)\n")


def test_a_judge_comparison_has_no_how_sure(tmp_path):
    results = tmp_path / "results"
    for run, score in (("x", 40), ("y", 60)):
        write_run(results, run, [judged(item, "Bonjour", "scored", score)
                                 for item in ITEMS[:4]], "gpt2")
    assert main(["compare", "x", "y", "--results", str(results), "--resamples", "20"]) == 0
    out = results / "compare-x-vs-y"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert board["how_sure"] is None
    assert "ranks.png" not in board["plots"] and not (out / "ranks.png").exists()
    assert "## How sure" not in (out / "leaderboard.md").read_text(encoding="utf-8")


def test_runs_that_are_seeds_of_one_model_are_grouped():
    assert seed_groups([("m", "m--seed1"), ("n", "n"), ("m", "m--seed2")]) == {
        "m": [0, 2], "n": [1]}
    with pytest.raises(ValueError, match="model 'm' has seed 's' twice"):
        seed_groups([("m", "s"), ("m", "s")])

    def run(name, scores, states=None):
        states = states or ["scored"] * len(scores)
        return ModelScores(label=name, run=name, records=[
            judged(item, "r", state, score)
            for item, score, state in zip(ITEMS, scores, states)])

    runs = [run("m1", [10, 20, 30]), run("n", [1, 2, 3], ["scored", "unparseable", "empty"]),
            run("m2", [40, 50, 60])]
    runs[2].records[2]["state"], runs[2].records[2]["score"] = "error", None
    array, kept = score_array(runs, {"m": [0, 2], "n": [1]})
    # Item 1: n has no score (unparseable), so it is left out for every model; item 2: m has
    # one from its first seed, n's empty response counts.
    assert kept == [0, 2]
    assert array.shape == (2, 2, 2, 1)
    np.testing.assert_array_equal(array[0, :, :, 0], [[10, 30], [40, np.nan]])
    np.testing.assert_array_equal(array[1, :, :, 0], [[1, 3], [np.nan, np.nan]])
