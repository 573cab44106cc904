"""`evalpipe compare`: the consistency check, the leaderboard of three small hand-made runs, and
judge agreement, through the real command line on judge/scores.jsonl files written here.

Every expected number is worked out by hand in the comments; bootstrap intervals are checked
against evalpipe.stats.bootstrap_ci on the values that must have gone in (which numbers, which
seed), since their exact value is that function's business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evalpipe.cli import main
from evalpipe.config import RunConfig
from evalpipe.io import write_json, write_jsonl
from evalpipe.records import content_id
from evalpipe.stats import bootstrap_ci

ITEMS = [
    {"instruction": "Rewrite the sentence in the passive voice, please.",
     "input": "The cat chased the mouse.", "output": "The mouse was chased by the cat."},
    {"instruction": "What is 2+2?", "input": "", "output": "4"},
    {"instruction": "Name a <b>bold</b> tag & its use.", "input": "", "output": "<b>"},
    {"instruction": "Translate 'hello' to French.", "input": "", "output": "Bonjour"},
]


def judged(item: dict, response: str | None, state: str, score: int | None, *,
           judge_model: str = "llama3", repeats: list[dict] | None = None) -> dict:
    """A judge/scores.jsonl record with every field of docs/records.md."""
    record = {
        "id": content_id(item), **item,
        "response": response, "prompt_tokens": 20,
        "response_tokens": len((response or "").split()), "stop_reason": "eos", "seconds": 0.1,
        "state": state, "score": score,
        "reason": "Checked against the reference." if state == "scored" else None,
        "raw_reply": None if state in ("empty", "error") else str(score),
        "error": "timed out after 3 retries" if state == "error" else None,
        "judge_backend": "ollama", "judge_model": judge_model, "judge_digest": "sha256:0a1b",
        "judge_template": "book", "prompt_sha256": "0" * 64, "judge_seconds": 0.5,
        "cached": False,
    }
    if repeats is not None:
        record["repeats"] = repeats
    return record


def write_run(results: Path, name: str, records: list[dict], base: str,
              losses: tuple[float, float] | None = None) -> None:
    config = RunConfig()
    config.model.base = base
    if losses is None:  # responses imported: no fine-tuning in this run
        config.generate.from_file = "responses.json"
    (results / name).mkdir(parents=True, exist_ok=True)
    (results / name / "config.toml").write_text(config.to_toml(), encoding="utf-8")
    write_jsonl(results / name / "judge/scores.jsonl", records)
    if losses is not None:
        write_json(results / name / "finetune/summary.json", {
            "base_model": f"resolved:{base}", "base_sha256": "f" * 64,
            "base_test_loss": losses[0], "base_val_loss": losses[0] + 0.1,
            "finetuned_test_loss": losses[1], "final_val_loss": losses[1] + 0.1,
            "best_val_loss": losses[1] + 0.05, "steps": 10, "tokens_seen": 5000, "epochs": 2.0,
            "stopped_early": False, "train_seconds": 12.5, "parameters": 1000})


def three_runs(results: Path) -> None:
    # a: scores 90, 100, 10, 80 -> mean 70 over 4; token F1 1, 1, 0, 1 -> 0.75
    write_run(results, "a", [
        judged(ITEMS[0], "The mouse was chased by the cat.", "scored", 90),
        judged(ITEMS[1], "4", "scored", 100),
        judged(ITEMS[2], "<script>alert('x')</script>", "scored", 10),
        judged(ITEMS[3], "Bonjour", "scored", 80),
    ], base="gpt2-medium", losses=(3.5, 0.6))
    # b: 60, empty (0), 70, unparseable -> mean 130/3 over 3; token F1: "cat chased mouse" vs
    # "mouse was chased by cat" -> 3 common, P 1, R 3/5 -> 0.75; then 0, 1, 0 -> 1.75/4
    write_run(results, "b", [
        judged(ITEMS[0], "The cat chased the mouse.", "scored", 60),
        judged(ITEMS[1], "", "empty", 0),
        judged(ITEMS[2], "<b>", "scored", 70),
        judged(ITEMS[3], "Salut", "unparseable", None),
    ], base="gpt2", losses=(3.6, 0.9))
    # c: 60, 90, 50, error -> mean 200/3 over 3; token F1: "mouse chased" -> 2 common, P 1,
    # R 2/5 -> 4/7; "Four" vs "4" -> 0; 1; "Bonjour" -> 1 -> (4/7 + 2)/4
    write_run(results, "c", [
        judged(ITEMS[0], "Mouse chased.", "scored", 60),
        judged(ITEMS[1], "Four", "scored", 90),
        judged(ITEMS[2], "<b>", "scored", 50),
        judged(ITEMS[3], "Bonjour", "error", None),
    ], base="models/my-gpt2.safetensors", losses=(3.7, 0.7))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalpipe", *args], capture_output=True,
                          text=True, timeout=120)


def ci4(values: list[float], resamples: int, seed: int) -> list[float]:
    return [round(x, 4) for x in bootstrap_ci(values, resamples, seed, 0.95)]


class PageParser(HTMLParser):
    """Collects from compare.html: each response card (item, model, state, score, response
    text), the tags opened, the images, and all text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cards: list[dict] = []
        self.tags: list[str] = []
        self.images: list[dict] = []
        self.text: list[str] = []
        self._item = None
        self._card = None
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section" and "item" in attrs.get("class", ""):
            self._item = int(attrs["data-index"])
        elif tag == "div" and "data-model" in attrs:
            self._card = {"item": self._item, "model": attrs["data-model"],
                          "state": attrs["data-state"], "score": attrs["data-score"],
                          "response": ""}
            self.cards.append(self._card)
        elif tag == "pre" and self._card is not None:
            self._in_pre = True
        elif tag == "img":
            self.images.append(attrs)

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False
        elif tag == "div" and self._card is not None and not self._in_pre:
            self._card = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in_pre and self._card is not None:
            self._card["response"] += data


# -- the leaderboard of three runs ---------------------------------------------------------------

def test_leaderboard_of_three_runs(tmp_path):
    results = tmp_path / "results"
    three_runs(results)
    done = run_cli("compare", "a", "b", "c", "--results", str(results), "--resamples", "500",
                   "--seed", "9")
    assert done.returncode == 0, done.stderr
    out = results / "compare-a-vs-b-vs-c"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))

    judge = {"backend": "ollama", "model": "llama3", "digest": "sha256:0a1b",
             "template": "book", "mode": "single", "structured": None, "options": None}
    assert board["name"] == "a-vs-b-vs-c"
    assert board["runs"] == ["a", "b", "c"]
    assert (board["items"], board["resamples"], board["seed"], board["confidence"]) == \
        (4, 500, 9, 0.95)
    assert board["models"] == [
        {"rank": 1, "model": "a", "run": "a", "base_model": "gpt2-medium",
         "base_test_loss": 3.5, "finetuned_test_loss": 0.6, "items": 4,
         "states": {"scored": 4, "empty": 0, "unparseable": 0, "error": 0}, "counted": 4,
         "mean": 70.0, "ci": ci4([90, 100, 10, 80], 500, 9), "overlap_mean": 0.75,
         "judge": judge},
        {"rank": 2, "model": "c", "run": "c", "base_model": "models/my-gpt2.safetensors",
         "base_test_loss": 3.7, "finetuned_test_loss": 0.7, "items": 4,
         "states": {"scored": 3, "empty": 0, "unparseable": 0, "error": 1}, "counted": 3,
         "mean": 66.6667, "ci": ci4([60, 90, 50], 500, 9),
         "overlap_mean": round((4 / 7 + 2) / 4, 4), "judge": judge},
        {"rank": 3, "model": "b", "run": "b", "base_model": "gpt2",
         "base_test_loss": 3.6, "finetuned_test_loss": 0.9, "items": 4,
         "states": {"scored": 2, "empty": 1, "unparseable": 1, "error": 0}, "counted": 3,
         "mean": 43.3333, "ci": ci4([60, 0, 70], 500, 9), "overlap_mean": 0.4375,
         "judge": judge},
    ]
    # Pairs in rank order, on the items both have a score for (items 0-2: c's item 3 is an
    # error, b's unparseable).
    # a - c: 30, 10, -40 -> mean 0; |d| ranks 2, 1, 3: W+ 3, W- 3; of the 8 sign patterns
    #   5 have W+ >= 3 and 5 have W+ <= 3 -> p = min(1, 2 * 5/8) = 1
    # a - b: 30, 100, -60 -> mean 70/3; ranks 1, 3, 2: W+ 4, W- 2; 3 of 8 have W+ >= 4 -> 0.75
    # c - b: 0, 90, -20 -> mean 70/3; the zero dropped: ranks 2, 1: W+ 2, W- 1; 2 of 4 have
    #   W+ >= 2 -> p 1
    assert board["pairs"] == [
        {"a": "a", "b": "c", "items": 3, "mean_a": 66.6667, "mean_b": 66.6667,
         "mean_difference": 0.0, "ci": ci4([30, 10, -40], 500, 9),
         "wilcoxon": {"statistic": 3.0, "p_value": 1.0, "nonzero": 3},
         "wins": {"a": 2, "b": 1, "ties": 0, "a_share": 0.6667, "b_share": 0.3333,
                  "tie_share": 0.0}},
        {"a": "a", "b": "b", "items": 3, "mean_a": 66.6667, "mean_b": 43.3333,
         "mean_difference": 23.3333, "ci": ci4([30, 100, -60], 500, 9),
         "wilcoxon": {"statistic": 2.0, "p_value": 0.75, "nonzero": 3},
         "wins": {"a": 2, "b": 1, "ties": 0, "a_share": 0.6667, "b_share": 0.3333,
                  "tie_share": 0.0}},
        {"a": "c", "b": "b", "items": 3, "mean_a": 66.6667, "mean_b": 43.3333,
         "mean_difference": 23.3333, "ci": ci4([0, 90, -20], 500, 9),
         "wilcoxon": {"statistic": 1.0, "p_value": 1.0, "nonzero": 2},
         "wins": {"a": 1, "b": 1, "ties": 1, "a_share": 0.3333, "b_share": 0.3333,
                  "tie_share": 0.3333}},
    ]
    # losses 0.6, 0.7, 0.9 against means 70, 66.7, 43.3: perfectly reversed order
    assert board["loss_correlation"] == {"models": 3, "spearman": -1.0, "kendall": -1.0}
    assert board["agreement"] == []  # no two runs hold the same responses, no repeats
    assert board["plots"] == ["scores.png", "loss-vs-score.png"]

    for plot in ("scores.png", "loss-vs-score.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "judges.png").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    # The command's own summary on stdout
    a_ci, c_ci, b_ci = (row["ci"] for row in board["models"])
    assert done.stdout.splitlines() == [
        f"compare: 3 models on 4 items -> {out}/",
        f"  1. a  mean 70.00 [{a_ci[0]:.2f}, {a_ci[1]:.2f}]  (4 of 4 items scored)",
        f"  2. c  mean 66.67 [{c_ci[0]:.2f}, {c_ci[1]:.2f}]  (3 of 4 items scored)",
        f"  3. b  mean 43.33 [{b_ci[0]:.2f}, {b_ci[1]:.2f}]  (3 of 4 items scored)",
    ]

    markdown = (out / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    assert markdown[0] == "# Comparison a-vs-b-vs-c"
    assert markdown[2].startswith("3 runs on the same 4 test items.")
    assert "(500 resamples, seed 9)" in markdown[2]

    def md_ci(ci):
        return f"[{ci[0]:.2f}, {ci[1]:.2f}]"

    pair_ci = [md_ci(pair["ci"]) for pair in board["pairs"]]
    for line in [
        "| rank | model | base model | base test loss | fine-tuned test loss | mean score | "
        "95% CI | scored | empty | unparseable | error | overlap (token F1) | judge |",
        f"| 1 | a | gpt2-medium | 3.500 | 0.600 | 70.00 | {md_ci(a_ci)} | 4 | 0 | 0 | 0 | "
        "0.750 | llama3 (book, single) |",
        f"| 2 | c | models/my-gpt2.safetensors | 3.700 | 0.700 | 66.67 | {md_ci(c_ci)} | "
        "3 | 0 | 0 | 1 | 0.643 | llama3 (book, single) |",
        f"| 3 | b | gpt2 | 3.600 | 0.900 | 43.33 | {md_ci(b_ci)} | 2 | 1 | 1 | 0 | 0.438 | "
        "llama3 (book, single) |",
        "| a | b | items | mean a | mean b | a - b | 95% paired CI | Wilcoxon p | a wins | "
        "b wins | ties |",
        f"| a | c | 3 | 66.67 | 66.67 | 0.00 | {pair_ci[0]} | 1.0000 | 67% | 33% | 0% |",
        f"| a | b | 3 | 66.67 | 43.33 | 23.33 | {pair_ci[1]} | 0.7500 | 67% | 33% | 0% |",
        f"| c | b | 3 | 66.67 | 43.33 | 23.33 | {pair_ci[2]} | 1.0000 | 33% | 33% | 33% |",
        "Over 3 models: Spearman -1.000, Kendall -1.000 (a lower loss going with a higher "
        "score gives a negative value).",
        "No two runs hold the same responses and no run has judge repeats: there is no second "
        "judgment to compare with.",
        "![scores.png](scores.png)",
        "![loss-vs-score.png](loss-vs-score.png)",
    ]:
        assert line in markdown

    page = PageParser()
    page.feed((out / "compare.html").read_text(encoding="utf-8"))
    responses = {"a": ["The mouse was chased by the cat.", "4", "<script>alert('x')</script>",
                       "Bonjour"],
                 "b": ["The cat chased the mouse.", "", "<b>", "Salut"],
                 "c": ["Mouse chased.", "Four", "<b>", "Bonjour"]}
    states = {"a": ["scored"] * 4, "b": ["scored", "empty", "scored", "unparseable"],
              "c": ["scored", "scored", "scored", "error"]}
    scores = {"a": ["90", "100", "10", "80"], "b": ["60", "0", "70", ""],
              "c": ["60", "90", "50", ""]}
    expected_cards = [{"item": item, "model": model, "state": states[model][item],
                       "score": scores[model][item], "response": responses[model][item]}
                      for item in range(4) for model in ("a", "c", "b")]  # leaderboard order
    assert page.cards == expected_cards
    # The response "<script>..." and the instruction's "<b>bold</b>" are text, not tags: the
    # only script is the page's own, and the instruction reads as written.
    assert page.tags.count("script") == 1
    assert "Name a <b>bold</b> tag & its use." in "".join(page.text)
    assert [image["data-file"] for image in page.images] == ["scores.png", "loss-vs-score.png"]
    assert all(image["src"].startswith("data:image/png;base64,") for image in page.images)


def test_runs_without_fine_tuning_and_a_name_of_ones_own(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "x", [judged(item, "Bonjour", "scored", 40) for item in ITEMS],
              base="gpt2")
    write_run(results, "y", [judged(item, "Salut", "scored", 60) for item in ITEMS],
              base="gpt2-large")
    assert main(["compare", "x", "y", "--results", str(results), "--name", "mine",
                 "--resamples", "50"]) == 0
    out = results / "compare-mine"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert [row["model"] for row in board["models"]] == ["y", "x"]
    assert [row["finetuned_test_loss"] for row in board["models"]] == [None, None]
    # every item: y 60, x 40 -> difference 20 everywhere, y wins all, CI [20, 20]
    assert board["pairs"][0]["mean_difference"] == 20.0
    assert board["pairs"][0]["ci"] == [20.0, 20.0]
    assert board["pairs"][0]["wins"]["a_share"] == 1.0
    assert board["loss_correlation"] == {"models": 0, "spearman": None, "kendall": None}
    assert (board["comparison"], board["mixed_judges"], board["agreement"]) == ("models", None, [])
    assert board["plots"] == ["scores.png"]
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "| 1 | y | imported from responses.json | n/a | n/a | 60.00 | [60.00, 60.00] |" in markdown
    assert ("Not computed: it needs at least 3 models with a fine-tuned test loss and a mean "
            "score, not all equal; 0 have both.") in markdown


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


# -- one judge per ranking ----------------------------------------------------------------------

JUDGE_COMPARISON_TEXT = (
    "Every run holds the same responses to every item: this compares the judges (see Judge "
    "agreement), not models, so no ranking is made.")


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
    assert [line.split("  mean")[0] for line in printed[2:]] == ["  1. b", "  2. a"]
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


# -- the consistency check ----------------------------------------------------------------------

def _changed(index: int, field: str, value: str) -> list[dict]:
    items = [dict(item) for item in ITEMS]
    items[index][field] = value
    return items


def _ids(items: list[dict]) -> list[str]:
    return [content_id(item) for item in items]


@pytest.mark.parametrize("other_items, expected", [
    (_changed(0, "instruction", "Rewrite the sentence in the active voice, please."),
     "runs a and b differ at item 0 (ids {a0} and {b0}), field instruction: "
     "'Rewrite the sentence in the passive voic...' against "
     "'Rewrite the sentence in the active voice...'"),
    (_changed(0, "input", "The dog chased the mouse."),
     "runs a and b differ at item 0 (ids {a0} and {b0}), field input: "
     "'The cat chased the mouse.' against 'The dog chased the mouse.'"),
    (_changed(1, "input", "in words"),
     "runs a and b differ at item 1 (ids {a1} and {b1}), field input: '' against 'in words'"),
    (_changed(3, "output", "Salut"),
     "runs a and b differ at item 3 (ids {a3} and {b3}), field output: 'Bonjour' against "
     "'Salut'"),
    ([ITEMS[0], ITEMS[2], ITEMS[1], ITEMS[3]],
     "runs a and b hold the same items in another order; the first difference is at item 1 "
     "(ids {a1} and {b1}), field instruction: 'What is 2+2?' against "
     "'Name a <b>bold</b> tag & its use.'"),
    (ITEMS[:3], "runs a and b do not share a test split: a has 4 items, b has 3"),
])
def test_runs_on_different_test_items_are_refused(tmp_path, capsys, other_items, expected):
    results = tmp_path / "results"
    write_run(results, "a", [judged(item, "Bonjour", "scored", 50) for item in ITEMS], "gpt2")
    write_run(results, "b", [judged(item, "Bonjour", "scored", 50) for item in other_items],
              "gpt2")
    ids = {f"a{i}": id_ for i, id_ in enumerate(_ids(ITEMS))}
    ids.update({f"b{i}": id_ for i, id_ in enumerate(_ids(other_items))})
    assert main(["compare", "a", "b", "--results", str(results)]) == 1
    assert capsys.readouterr().err == f"evalpipe: error: {expected.format(**ids)}\n"
    assert not (results / "compare-a-vs-b").exists()


def test_the_first_difference_is_named_against_the_first_run(tmp_path, capsys):
    results = tmp_path / "results"
    for name, items in (("a", ITEMS), ("b", ITEMS), ("c", _changed(2, "output", "<i>"))):
        write_run(results, name, [judged(item, "x", "scored", 50) for item in items], "gpt2")
    assert main(["compare", "a", "b", "c", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: runs a and c differ at item 2 (ids {content_id(ITEMS[2])} and "
        f"{content_id(_changed(2, 'output', '<i>')[2])}), field output: '<b>' against '<i>'\n")


def test_a_run_without_scores_names_the_file_and_the_command(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "a", [judged(item, "x", "scored", 50) for item in ITEMS], "gpt2")
    assert main(["compare", "a", "missing", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: run missing: {results}/missing/judge/scores.jsonl not found; "
        "make it with 'make evaluate RUN=missing'\n")


def test_bad_records_and_arguments_are_one_line_errors(tmp_path, capsys):
    results = tmp_path / "results"
    records = [judged(item, "x", "scored", 50) for item in ITEMS]
    write_run(results, "a", records, "gpt2")
    records[1]["score"] = 150
    write_run(results, "b", records, "gpt2")
    assert main(["compare", "a", "b", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: {results}/b/judge/scores.jsonl: record 1 (id {content_id(ITEMS[1])})"
        ": field 'score' must be an integer 0..100 for state 'scored', got 150\n")

    assert main(["compare", "a", "a", "--results", str(results)]) == 1
    assert capsys.readouterr().err == "evalpipe: error: run a is named twice\n"
    assert main(["compare", "a", "--results", str(results), "--name", "../up"]) == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: --name '../up': a comparison name must be a plain folder name\n")


def test_runs_compare_cannot_read_yet_are_refused(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "a", [judged(item, "x", "scored", 50) for item in ITEMS], "gpt2")
    write_run(results, "empty", [], "gpt2")
    assert main(["compare", "a", "empty", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: run empty: {results}/empty/judge/scores.jsonl holds no records\n")

    write_run(results, "together", [judged(item, "x", "scored", 50) for item in ITEMS], "gpt2")
    config = RunConfig()
    config.judge.mode = "together"
    (results / "together/config.toml").write_text(config.to_toml(), encoding="utf-8")
    assert main(["compare", "a", "together", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: run together: judged with judge.mode = 'together'; a run's own "
        "judgment is single-mode; to judge runs together, use 'evalpipe compare RUN RUN ... "
        "--mode together'\n")

    assert main(["compare", "a", "--results", str(results), "--resamples", "0"]) == 1
    assert capsys.readouterr().err == "evalpipe: error: --resamples must be at least 1, got 0\n"
    assert main(["compare", "a", "--results", str(results), "--seed", "-1"]) == 1
    assert capsys.readouterr().err == "evalpipe: error: --seed must be 0 or more, got -1\n"


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


def test_the_bootstrap_defaults_to_the_first_runs_aggregate_settings(tmp_path):
    """A model's interval in the leaderboard is the one its own report gives."""
    from evalpipe import stats

    results = tmp_path / "results"
    write_run(results, "x", [judged(item, "Bonjour", "scored", 10 * i)
                             for i, item in enumerate(ITEMS)], base="gpt2")
    config = RunConfig()
    config.aggregate.bootstrap_resamples, config.aggregate.seed = 300, 7
    config.generate.from_file = "elsewhere/responses.json"
    (results / "x/config.toml").write_text(config.to_toml(), encoding="utf-8")
    assert main(["compare", "x", "--results", str(results)]) == 0
    board = json.loads((results / "compare-x/leaderboard.json").read_text(encoding="utf-8"))
    assert (board["resamples"], board["seed"]) == (300, 7)
    low, high = stats.bootstrap_ci([10.0 * i for i in range(len(ITEMS))], 300, 7, 0.95)
    assert board["models"][0]["ci"] == [round(low, 4), round(high, 4)]
    assert board["models"][0]["base_model"] == "imported from responses.json"


def test_the_confidence_level_is_the_first_runs_too(tmp_path):
    """aggregate.confidence = 0.9 gives 90% intervals, named so in every header."""
    from evalpipe import stats

    results = tmp_path / "results"
    for name, step in (("x", 10), ("y", 20)):  # responses of their own: two models
        write_run(results, name, [judged(item, f"Bonjour {name}", "scored", step * i)
                                  for i, item in enumerate(ITEMS)], base="gpt2")
    config = RunConfig()
    config.aggregate.bootstrap_resamples, config.aggregate.seed = 300, 7
    config.aggregate.confidence = 0.9
    config.generate.from_file = "elsewhere/responses.json"
    (results / "x/config.toml").write_text(config.to_toml(), encoding="utf-8")
    assert main(["compare", "x", "y", "--results", str(results)]) == 0
    out = results / "compare-x-vs-y"
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert (board["resamples"], board["seed"], board["confidence"]) == (300, 7, 0.9)
    rows = {row["model"]: row for row in board["models"]}
    for name, step in (("x", 10), ("y", 20)):
        low, high = stats.bootstrap_ci([step * i for i in range(len(ITEMS))], 300, 7, 0.9)
        assert rows[name]["ci"] == [round(low, 4), round(high, 4)]
    # y - x per item: 0, 10, 20, 30
    low, high = stats.bootstrap_ci([0, 10, 20, 30], 300, 7, 0.9)
    assert board["pairs"][0]["ci"] == [round(low, 4), round(high, 4)]
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "with a 90% percentile bootstrap CI (300 resamples, seed 7)" in markdown
    assert "| mean score | 90% CI | scored |" in markdown
    assert "| a - b | 90% paired CI |" in markdown
    assert "95%" not in markdown


def test_a_runs_files_get_the_aggregate_stages_checks(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "a", [judged(item, "x", "scored", 50) for item in ITEMS], "gpt2",
              losses=(3.5, 0.6))
    finetune_path = results / "a/finetune/summary.json"
    finetune = json.loads(finetune_path.read_text(encoding="utf-8"))
    write_json(finetune_path, {**finetune, "finetuned_test_loss": "0.6"})
    assert main(["compare", "a", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: {finetune_path}: key 'finetuned_test_loss' must be a number, "
        "got '0.6'\n")
    del finetune["steps"]
    write_json(finetune_path, finetune)
    assert main(["compare", "a", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: {finetune_path}: key 'steps' is missing\n")
    finetune_path.unlink()

    judge_summary_path = results / "a/judge/summary.json"
    write_json(judge_summary_path, {"judge": "llama3", "template": "book", "structured": False,
                                    "options": {}, "repeats": 1})
    assert main(["compare", "a", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: {judge_summary_path}: key 'judge' must be an object (backend, "
        "model, digest)\n")
    judge_summary_path.unlink()

    config_path = results / "a/config.toml"
    config_path.write_text(config_path.read_text(encoding="utf-8").replace(
        "[aggregate]\n", "[aggregate]\nseeds = 1\n"), encoding="utf-8")
    assert main(["compare", "a", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: {config_path}: unknown key aggregate.seeds (known: "
        "bootstrap_resamples, seed, confidence)\n")
