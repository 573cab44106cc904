"""`evalpipe compare` and judges: agreement wherever the same responses were judged twice (two
runs, or the repeats inside one run), runs holding the same responses as a comparison of
judges, and one judge per ranking (--allow-mixed-judges), through the real command line.

Every expected number is worked out by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from compare_helpers import ITEMS, judged, run_cli, write_run

from evalpipe.cli import main

JUDGE_COMPARISON_TEXT = (
    "Every run holds the same responses to every item: this compares the judges (see Judge "
    "agreement), not models, so no ranking is made.")


# -- judge agreement ----------------------------------------------------------------------------

def test_agreement_between_two_judges_and_between_repeats(tmp_path):
    results = tmp_path / "results"
    responses = ["The mouse was chased by the cat.", "4", "<b>", "Bonjour"]
    llama_scores = [90, 100, 10, 80]
    repeat_scores = [85, 100, 30, None]  # the second repeat's reply for item 3 was unparseable
    write_run(results, "llama", [
        judged(item, response, "scored", score, repeats=[
            {"seed": 123, "state": "scored", "score": score, "raw_reply": str(score)},
            {"seed": 124, "state": "scored" if again is not None else "unparseable",
             "score": again, "raw_reply": str(again)}])
        for item, response, score, again in zip(ITEMS, responses, llama_scores, repeat_scores)
    ], base="gpt2-medium", losses=(3.5, 0.6))
    write_run(results, "qwen", [
        judged(item, response, "scored", score, judge_model="qwen2.5")
        for item, response, score in zip(ITEMS, responses, [80, 100, 20, 60])
    ], base="gpt2-medium", losses=(3.5, 0.6))

    done = run_cli("compare", "llama", "qwen", "--results", str(results), "--resamples", "100")
    assert done.returncode == 0, done.stderr
    out = results / "compare-llama-vs-qwen"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    # The same responses judged twice: a comparison of judges, not of models. Each judge's mean
    # is shown in the order named, with no rank and no pairs; different judges are its point,
    # so nothing is refused and nothing is "mixed".
    assert (board["comparison"], board["mixed_judges"], board["pairs"]) == ("judges", None, [])
    assert [(row["rank"], row["model"], row["mean"]) for row in board["models"]] == [
        (None, "llama", 70.0), (None, "qwen", 65.0)]
    assert done.stdout.splitlines()[0] == (
        f"compare: judge comparison of 2 runs holding the same responses to 4 items, "
        f"no ranking -> {out}/")
    assert [line.split(" mean")[0].rstrip() for line in done.stdout.splitlines()[1:]] == [
        "  llama", "  qwen"]
    # llama 90, 100, 10, 80 against qwen 80, 100, 20, 60:
    # mean |d| (10 + 0 + 10 + 20) / 4 = 10.
    # Pearson: deviations 20, 30, -60, 10 and 15, 35, -45, -5: 4000 / sqrt(5000 * 3500).
    # Both rank the items alike: Spearman and Kendall 1.
    # Bins 9, 9, 1, 8 and 8, 9, 2, 6: observed weighted disagreement (1 + 0 + 1 + 4) / 4 = 1.5;
    # expected: sum over bins i of llama (1, 8, 9, 9) and j of qwen (2, 6, 8, 9) of (i - j)^2,
    # over 16: (139 + 41 + 59 + 59) / 16 = 18.625 -> kappa 1 - 1.5 / 18.625.
    # Repeats: items 0-2 (item 3's second repeat has no score): 90, 100, 10 against 85, 100, 30:
    # mean |d| 25/3; Pearson: deviations 23.33, 33.33, -56.67 and 13.33, 28.33, -41.67;
    # bins 9, 9, 1 and 8, 9, 3: observed (1 + 0 + 4) / 3 = 5/3; expected
    # ((1 + 0 + 36) + (1 + 0 + 36) + (49 + 64 + 4)) / 9 = 191/9 -> kappa 1 - 15/191.
    pearson_repeats = (23.3333 * 13.3333 + 33.3333 * 28.3333 + 56.6667 * 41.6667) / (
        (23.3333**2 + 33.3333**2 + 56.6667**2) ** 0.5 * (13.3333**2 + 28.3333**2
                                                          + 41.6667**2) ** 0.5)
    assert board["agreement"] == [
        {"kind": "runs", "a": "llama", "b": "qwen", "differs": ["model llama3 vs qwen2.5"],
         "items": 4, "pearson": round(4000 / (5000 * 3500) ** 0.5, 4), "spearman": 1.0,
         "kendall": 1.0, "mean_abs_difference": 10.0,
         "kappa_quadratic": round(1 - 1.5 / 18.625, 4)},
        {"kind": "repeats", "a": "llama repeat 1", "b": "llama repeat 2",
         "differs": ["seed 123 vs 124"], "items": 3,
         "pearson": pytest.approx(pearson_repeats, abs=1e-4), "spearman": 1.0, "kendall": 1.0,
         "mean_abs_difference": round(25 / 3, 4), "kappa_quadratic": round(1 - 15 / 191, 4)},
    ]
    assert (out / "judges.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert ("| llama | qwen | model llama3 vs qwen2.5 | 4 | 0.956 | 1.000 | 1.000 | 10.00 | "
            "0.919 |") in markdown
    assert ("| llama repeat 1 | llama repeat 2 | seed 123 vs 124 | 3 | 0.995 | 1.000 | 1.000 | "
            "8.33 | 0.921 |") in markdown
    lines = markdown.splitlines()
    assert lines[0] == "# Judge comparison llama-vs-qwen"
    assert lines[2] == JUDGE_COMPARISON_TEXT
    assert "## Leaderboard" not in lines and "## Pairs" not in lines
    assert "## Scores by judge" in lines
    assert "| n/a | llama | gpt2-medium |" in markdown
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "<h1>Comparison" not in page and "<h2>Leaderboard</h2>" not in page
    assert "<h1>Judge comparison llama-vs-qwen</h1>" in page
    assert f"<p>{JUDGE_COMPARISON_TEXT}</p>" in page


def test_the_same_judge_twice_is_a_judge_comparison_too(tmp_path):
    """Identical responses with identical judge settings: the judge's determinism, not two
    models; no ranking either."""
    results = tmp_path / "results"
    write_run(results, "x", [judged(item, "Bonjour", "scored", 40) for item in ITEMS], "gpt2")
    write_run(results, "y", [judged(item, "Bonjour", "scored", 60) for item in ITEMS], "gpt2")
    assert main(["compare", "x", "y", "--results", str(results), "--resamples", "50"]) == 0
    board = json.loads((results / "compare-x-vs-y/leaderboard.json").read_text(
        encoding="utf-8"))
    assert (board["comparison"], board["pairs"]) == ("judges", [])
    assert [row["rank"] for row in board["models"]] == [None, None]
    assert board["agreement"][0]["differs"] == ["nothing: the same judge settings twice"]
    assert board["plots"] == ["scores.png", "judges.png"]


def test_one_run_alone_shows_its_repeats(tmp_path):
    results = tmp_path / "results"
    write_run(results, "solo", [
        judged(item, "x", "scored", 50, repeats=[
            {"seed": 7, "state": "scored", "score": 50, "raw_reply": "50"},
            {"seed": 8, "state": "scored", "score": 50, "raw_reply": "50"},
            {"seed": 9, "state": "error", "score": None, "raw_reply": None}])
        for item in ITEMS], "gpt2")
    assert main(["compare", "solo", "--results", str(results), "--resamples", "20"]) == 0
    out = results / "compare-solo"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert board["pairs"] == []
    # repeats 1 and 2 agree exactly but never vary: correlations and kappa undefined;
    # repeat 3 never gave a score, so it has no item in common with the others
    assert board["agreement"] == [
        {"kind": "repeats", "a": "solo repeat 1", "b": "solo repeat 2",
         "differs": ["seed 7 vs 8"], "items": 4, "pearson": None, "spearman": None,
         "kendall": None, "mean_abs_difference": 0.0, "kappa_quadratic": None},
        {"kind": "repeats", "a": "solo repeat 1", "b": "solo repeat 3",
         "differs": ["seed 7 vs 9"], "items": 0, "pearson": None, "spearman": None,
         "kendall": None, "mean_abs_difference": None, "kappa_quadratic": None},
        {"kind": "repeats", "a": "solo repeat 2", "b": "solo repeat 3",
         "differs": ["seed 8 vs 9"], "items": 0, "pearson": None, "spearman": None,
         "kendall": None, "mean_abs_difference": None, "kappa_quadratic": None},
    ]
    assert "Only one model: no pairs." in (out / "leaderboard.md").read_text(encoding="utf-8")


# -- one judge per ranking ----------------------------------------------------------------------

def test_runs_judged_by_different_judges_are_not_ranked_unless_allowed(
        run_env, instruction_data, book_responses, gpt2_tokenizer, capsys):
    """Two runs judged by stand-in Ollama servers whose llama3 has another digest (pulled
    anew): their scales need not match, so a ranking of the two is refused, or, when asked
    for, marked mixed in every output."""
    from standins import OllamaStandIn

    smoke = Path(__file__).resolve().parents[2] / "configs" / "smoke.toml"
    book = json.loads(book_responses.read_text(encoding="utf-8"))
    perfect = run_env / "perfect.json"  # other responses: the references themselves
    perfect.write_text(json.dumps([{**r, "model_response": r["output"]} for r in book]),
                       encoding="utf-8")
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    for run, responses, digest in (("a", book_responses, old), ("b", perfect, new)):
        with OllamaStandIn(models={"llama3:latest": digest}) as judge:
            assert main(["evaluate", "--config", str(smoke), "--run", run,
                         "--set", f"data.source={instruction_data}",
                         "--set", f"generate.from_file={responses}",
                         "--set", f"judge.host={judge.url}", "--set", "judge.canaries=false"]) == 0
    capsys.readouterr()

    difference = f"digest {old} vs {new}"
    assert main(["compare", "a", "b"]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: runs a and b were judged differently ({difference}); a ranking "
        "needs one judge for every run: judge them alike, or give --allow-mixed-judges\n")
    assert not (run_env / "results/compare-a-vs-b").exists()

    assert main(["compare", "a", "b", "--allow-mixed-judges"]) == 0
    out = run_env / "results/compare-a-vs-b"
    printed = capsys.readouterr().out.splitlines()
    note = (f"Mixed judges: runs a and b were judged differently ({difference}). This ranking "
            "sets scores of different judges side by side (--allow-mixed-judges): a difference "
            "between two models may come from their judges.")
    assert printed[:2] == [f"compare: 2 models on 110 items -> {out}/", f"  {note}"]
    assert [line.split("  mean")[0] for line in printed[2:]] == ["  1. b", "  2. a",
                                                                 "  tier 1: b; tier 2: a"]
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert (board["comparison"], board["mixed_judges"]) == (
        "models", [{"a": "a", "b": "b", "differs": [difference]}])
    assert [row["judge"]["digest"] for row in board["models"]] == [new, old]
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    assert markdown[:5] == ["# Comparison a-vs-b", "", f"**{note}**", "", markdown[4]]
    assert markdown[4].startswith("2 runs on the same 110 test items.")
    assert f"<p class=\"mixed\"><b>{note}</b></p>" in (out / "compare.html").read_text(
        encoding="utf-8")

    # One judge for both: an ordinary ranking, nothing said about judges.
    with OllamaStandIn(models={"llama3:latest": old}) as judge:
        assert main(["judge", "--config", str(smoke), "--run", "b",
                     "--set", f"data.source={instruction_data}",
                     "--set", f"generate.from_file={perfect}",
                     "--set", f"judge.host={judge.url}", "--set", "judge.canaries=false",
                     "--force"]) == 0
    capsys.readouterr()
    assert main(["compare", "a", "b"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"compare: 2 models on 110 items -> {out}/"
    assert printed[1].startswith("  1. b  mean 100.00")
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert board["mixed_judges"] is None
    assert "Mixed judges" not in (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "Mixed judges" not in (out / "compare.html").read_text(encoding="utf-8")
