"""`evalpipe compare` and a run whose judge failed its canaries (docs/judge.md, "Canaries"): the
run is flagged in leaderboard.json, named in a note at the top of leaderboard.md and of the
printed leaderboard, and marked in every Markdown table and printed line that shows it."""

from __future__ import annotations

import json
from pathlib import Path

from compare_helpers import ITEMS, judged, run_cli, write_run

from evalpipe.io import write_jsonl

WHY = ("good canaries 40 on average, bad ones 80: the lowest good canary, 30, is not above the "
       "highest bad one, 90")
NOTE = f"Run b: the judge failed its canaries ({WHY}); its scores are not meaningful."


def canaries(results: Path, run: str, good: list, bad: list) -> None:
    write_jsonl(results / run / "judge/canaries.jsonl",
                [{"canary": "good", "item_id": "x", "state": "scored", "score": s} for s in good]
                + [{"canary": "bad", "item_id": "x", "state": "scored", "score": s} for s in bad])


def two_runs(results: Path, b_repeats: bool = False) -> None:
    """a passes its canaries, b fails them (good 30, 50; bad 70, 90), c has none."""
    write_run(results, "a", [judged(item, "Bonjour", "scored", 80) for item in ITEMS], "gpt2")
    repeats = [{"seed": 1, "state": "scored", "score": 40, "raw_reply": "40"},
               {"seed": 2, "state": "scored", "score": 50, "raw_reply": "50"}]
    write_run(results, "b", [judged(item, "Salut", "scored", 40,
                                    repeats=repeats if b_repeats else None)
                             for item in ITEMS], "gpt2")
    write_run(results, "c", [judged(item, "Hallo", "scored", 60) for item in ITEMS], "gpt2")
    canaries(results, "a", [100, 90], [0, 10])
    canaries(results, "b", [30, 50], [70, 90])


def test_a_run_whose_judge_failed_its_canaries_is_flagged_everywhere(tmp_path):
    results = tmp_path / "results"
    two_runs(results)
    done = run_cli("compare", "a", "b", "c", "--results", str(results), "--resamples", "50")
    assert done.returncode == 0, done.stderr
    out = results / "compare-a-vs-b-vs-c"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert [(r["model"], r["canaries_failed"], r["canaries_why"]) for r in board["models"]] == [
        ("a", False, None), ("c", False, None), ("b", True, WHY)]

    # Printed: the note first, then the run marked in its line.
    lines = done.stdout.splitlines()
    assert lines[1:] == [
        f"  {NOTE}",
        "  1. a                    mean 80.00 [80.00, 80.00]  (4 of 4 items scored)",
        "  2. c                    mean 60.00 [60.00, 60.00]  (4 of 4 items scored)",
        "  3. b (canaries failed)  mean 40.00 [40.00, 40.00]  (4 of 4 items scored)",
        "  tier 1: a; tier 2: c; tier 3: b (canaries failed)",
    ]

    # leaderboard.md: the note in bold before any number, the run marked in every table.
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    assert markdown[:4] == ["# Comparison a-vs-b-vs-c", "", f"**{NOTE}**", ""]
    rows = [line for line in markdown if line.startswith("| ")]
    assert rows[1].startswith("| 1 | a | imported from responses.json |")
    assert rows[3].startswith("| 3 | b (canaries failed) | imported from responses.json |")
    pairs = [line.split(" | ")[:2] for line in rows[5:8]]
    assert pairs == [["| a", "c"], ["| a", "b (canaries failed)"],
                     ["| c", "b (canaries failed)"]]
    assert sum("(canaries failed)" in line for line in markdown) == 3  # nowhere else


def test_the_repeats_of_a_failed_run_are_marked_in_the_agreement_table(tmp_path):
    results = tmp_path / "results"
    two_runs(results, b_repeats=True)
    done = run_cli("compare", "b", "--results", str(results), "--resamples", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == f"  {NOTE}"
    markdown = (results / "compare-b/leaderboard.md").read_text(encoding="utf-8")
    assert ("| b repeat 1 (canaries failed) | b repeat 2 (canaries failed) | seed 1 vs 2 | 4 |"
            in markdown)


def test_a_judge_comparison_names_the_failed_judge_too(tmp_path):
    """The same responses judged by two runs: no ranking, but the failed judge is named."""
    results = tmp_path / "results"
    write_run(results, "x", [judged(item, "Bonjour", "scored", 80) for item in ITEMS], "gpt2")
    write_run(results, "b", [judged(item, "Bonjour", "scored", 40) for item in ITEMS], "gpt2")
    canaries(results, "b", [30, 50], [70, 90])
    done = run_cli("compare", "x", "b", "--results", str(results), "--resamples", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        f"  {NOTE}",
        "  x                    mean 80.00 [80.00, 80.00]  (4 of 4 items scored)",
        "  b (canaries failed)  mean 40.00 [40.00, 40.00]  (4 of 4 items scored)",
    ]
    markdown = (results / "compare-x-vs-b/leaderboard.md").read_text(encoding="utf-8")
    assert f"\n**{NOTE}**\n" in markdown
    assert "| x | b (canaries failed) | nothing: the same judge settings twice | 4 |" in markdown
