"""`evalpipe compare`: the leaderboard of three small hand-made runs (leaderboard.json, the
printed summary, leaderboard.md and compare.html), runs without fine-tuning, and the bootstrap
settings taken from the first run, through the real command line on judge/scores.jsonl files
written here.

Every expected number is worked out by hand in the comments; bootstrap intervals are checked
against evalpipe.stats.bootstrap_ci on the values that must have gone in (which numbers, which
seed), since their exact value is that function's business.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from compare_helpers import ITEMS, judged, run_cli, write_run

from evalpipe.cli import main
from evalpipe.config import RunConfig
from evalpipe.stats import bootstrap_ci


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
         "judge": judge, "canaries_failed": False, "canaries_why": None},
        {"rank": 2, "model": "c", "run": "c", "base_model": "models/my-gpt2.safetensors",
         "base_test_loss": 3.7, "finetuned_test_loss": 0.7, "items": 4,
         "states": {"scored": 3, "empty": 0, "unparseable": 0, "error": 1}, "counted": 3,
         "mean": 66.6667, "ci": ci4([60, 90, 50], 500, 9),
         "overlap_mean": round((4 / 7 + 2) / 4, 4), "judge": judge,
         "canaries_failed": False, "canaries_why": None},
        {"rank": 3, "model": "b", "run": "b", "base_model": "gpt2",
         "base_test_loss": 3.6, "finetuned_test_loss": 0.9, "items": 4,
         "states": {"scored": 2, "empty": 1, "unparseable": 1, "error": 0}, "counted": 3,
         "mean": 43.3333, "ci": ci4([60, 0, 70], 500, 9), "overlap_mean": 0.4375,
         "judge": judge, "canaries_failed": False, "canaries_why": None},
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
    assert board["plots"] == ["scores.png", "ranks.png", "loss-vs-score.png"]

    for plot in ("scores.png", "ranks.png", "loss-vs-score.png"):
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
        "  tier 1: a, c, b",  # 3 items every model has a score for tell none apart
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
                      # most divided first: item 1's counted scores are 100 apart (100, 90,
                      # 0), item 2's 60, item 0's 30, item 3 has one score only (spread 0)
                      for item in (1, 2, 0, 3)
                      for model in ("a", "c", "b")]  # leaderboard order
    assert page.cards == expected_cards
    # The response "<script>..." and the instruction's "<b>bold</b>" are text, not tags: the
    # only script is the page's own, and the instruction reads as written.
    assert page.tags.count("script") == 1
    assert "Name a <b>bold</b> tag & its use." in "".join(page.text)
    assert [image["data-file"] for image in page.images] == ["scores.png", "ranks.png",
                                                             "loss-vs-score.png"]
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
    assert board["plots"] == ["scores.png", "ranks.png"]
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "| 1 | y | imported from responses.json | n/a | n/a | 60.00 | [60.00, 60.00] |" in markdown
    assert ("Not computed: it needs at least 3 models with a fine-tuned test loss and a mean "
            "score, not all equal; 0 have both.") in markdown


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
