"""Together mode (`evalpipe compare --mode together`): every model's response to an item in one
prompt, judged and mapped back to each model, driven through the command line against the
stand-in judge servers (real HTTP on 127.0.0.1, through the real `ollama` and `openai` clients;
tests/standins.py) or the in-process mock judge where the HTTP is not the point. The runs:
see tests/judging/together_runs.py."""

from __future__ import annotations

import json
import random
import re
from html.parser import HTMLParser

from standins import (
    OllamaStandIn,
    OpenAIStandIn,
    StandInFailure,
    parse_together_prompt,
    prompt_of,
    together_entries,
    together_judge,
)
from together_runs import (
    EMPTY,
    ITEMS,
    JUDGE_FIELDS,
    MOCK_JUDGE,
    MODELS,
    OUT,
    compare,
    expected_score,
    model_scores,
    passes,
    reference_item,
    response_of,
    shown,
)

from evalpipe.cli import main
from evalpipe.io import read_jsonl
from evalpipe.judging.prompts import together_schema

# -- judging together ------------------------------------------------------------------------------

def test_shuffles_are_recorded_and_undone(runs, capsys):
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
        bodies = list(standin.requests)
    out = capsys.readouterr().out
    assert ("together: 10 items x 3 models, 1 pass: 26 scored, 4 empty, 0 unparseable, "
            "0 error; 9 requests, 0 from the judgment cache\n") in out
    assert f"compare: 3 models on 10 items, judged together -> {runs / OUT}/\n" in out

    # One record per item: the order shown is the models with a response, sorted by name and
    # shuffled by random.Random(123 + index); the rest are listed as empty.
    items = passes(runs)
    assert [(r["index"], r["pass"]) for r in items] == [(n, 1) for n in range(10)]
    orders = {}
    for index, (i, record) in enumerate(zip(ITEMS, items)):
        order = random.Random(123 + index).sample(shown(i), len(shown(i)))
        assert record["shuffle_seed"] == 123 + index
        assert record["order"] == order
        assert record["empty"] == [m for m in MODELS if i in EMPTY[m]]
        orders[i] = order
    assert any(order != sorted(order) for order in orders.values())  # really shuffled
    assert items[7]["state"] == "empty" and items[7]["order"] == [] and \
        items[7]["raw_reply"] is None  # item 92: nothing to show, nothing asked

    # Each request showed the item's responses in that order, with a schema for that many.
    assert sorted(reference_item(body) for body in bodies) == [i for i in ITEMS if i != 92]
    for body in bodies:
        i = reference_item(body)
        _, responses = parse_together_prompt(prompt_of(body))
        assert responses == [response_of(m, i) for m in orders[i]]
        assert body["format"] == together_schema("book", len(orders[i]))
        assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}

    # Every model gets the score of its own response, wherever it was shown.
    responses = read_jsonl(runs / "a/generate/responses.jsonl")
    for model in MODELS:
        by_item = model_scores(runs, model)
        assert list(by_item) == ITEMS
        for i, record in by_item.items():
            assert list(record) == list(responses[0]) + JUDGE_FIELDS + [
                "position", "shuffle_seed", "mode"]
            assert record["response"] == response_of(model, i)
            assert record["score"] == expected_score(model, i)
            assert record["shuffle_seed"] == 123 + ITEMS.index(i)
            assert record["mode"] == "together"
            if i in EMPTY[model]:
                assert {k: record[k] for k in ("state", "position", "raw_reply", "reason",
                                               "prompt_sha256", "cached")} == {
                    "state": "empty", "position": None, "raw_reply": None, "reason": None,
                    "prompt_sha256": None, "cached": False}
            else:
                item = items[ITEMS.index(i)]
                assert record["state"] == "scored"
                assert record["position"] == orders[i].index(model) + 1
                assert record["raw_reply"] == item["raw_reply"]
                assert record["prompt_sha256"] == item["prompt_sha256"]
                assert record["reason"].startswith("word overlap F1 with the reference is ")
                assert record["judge_model"] == "llama3:latest"
                assert record["judge_template"] == "book"

    # The leaderboard is made from these scores.
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    assert board["mode"] == "together"
    # a: 9 x 100 + 0 -> 90; c: 8 x 75 + 0 + 0 -> 60; b: 8 x 67 + 0 + 0 -> 53.6
    assert [(r["model"], r["mean"], r["counted"], r["states"]) for r in board["models"]] == [
        ("a", 90.0, 10, {"scored": 9, "empty": 1, "unparseable": 0, "error": 0}),
        ("c", 60.0, 10, {"scored": 8, "empty": 2, "unparseable": 0, "error": 0}),
        ("b", 53.6, 10, {"scored": 9, "empty": 1, "unparseable": 0, "error": 0}),
    ]
    assert board["models"][0]["judge"]["mode"] == "together"
    assert board["models"][0]["judge"]["structured"] is True
    assert board["positions"]["swap"] is False
    assert board["positions"]["rows"][0]["second"] is None
    assert board["modes"] is None  # the runs were never judged on their own


def misbehaving(body: dict):
    """The together judge, except that it loses track on four items: it leaves out the last
    response (87), scores response 1 twice (88), names a response that was not shown (89), and
    gives a score off the scale (90)."""
    entries = together_entries(body)
    if entries is None:
        return StandInFailure(400, "not a together prompt")
    item = reference_item(body)
    if item == 87:
        entries = entries[:-1]
    elif item == 88:
        entries[1]["response"] = 1
    elif item == 89:
        entries[2]["response"] = 4
    elif item == 90:
        entries[0]["score"] = 150
    return json.dumps({"scores": entries})


def test_a_reply_that_loses_track_is_unparseable_for_that_item_only(runs, capsys):
    with OllamaStandIn(misbehaving) as standin:
        assert compare(standin.url) == 0
    assert ("together: 10 items x 3 models, 1 pass: 14 scored, 4 empty, 12 unparseable, "
            "0 error") in capsys.readouterr().out
    items = {ITEMS[r["index"]]: r for r in passes(runs)}
    assert {i: items[i]["problem"] for i in (87, 88, 89, 90)} == {
        87: "response 3 not scored", 88: "response 1 scored twice",
        89: "unknown response 4", 90: "response 1: score 150 is not an integer 0..100"}
    for model in MODELS:
        for i, record in model_scores(runs, model).items():
            if i in EMPTY[model]:
                assert (record["state"], record["score"]) == ("empty", 0)
            elif i in (87, 88, 89, 90):
                # Not 0: no score at all, for every model of the item; the reply is kept.
                assert (record["state"], record["score"], record["reason"]) == (
                    "unparseable", None, None)
                assert record["raw_reply"] == items[i]["raw_reply"]
                assert record["position"] == items[i]["order"].index(model) + 1
            else:
                assert (record["state"], record["score"]) == ("scored", expected_score(model, i))
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    # a: 100 on 85, 86, 91, 93, 94 and 0 on 92 -> 500 / 6; unparseable items are left out
    rows = {r["model"]: r for r in board["models"]}
    assert (rows["a"]["counted"], rows["a"]["mean"]) == (6, round(500 / 6, 4))
    assert rows["a"]["states"] == {"scored": 5, "empty": 1, "unparseable": 4, "error": 0}


def by_position(body: dict) -> str:
    """A judge that reads nothing but the place: Response 1 gets 90, 2 gets 60, 3 gets 30."""
    _, responses = parse_together_prompt(prompt_of(body))
    return json.dumps({"scores": [{"response": n, "score": 120 - 30 * n, "reason": "place"}
                                  for n in range(1, len(responses) + 1)]})


def test_swap_reverses_the_order_and_shows_a_judge_that_favours_a_place(runs, capsys):
    with OllamaStandIn(by_position) as standin:
        assert compare(standin.url, "judge.swap=true") == 0
        assert len(standin.requests) == 18  # 9 items, twice
    out = capsys.readouterr().out
    assert "together: 10 items x 3 models, 2 passes (swap): " in out
    assert ("together: mean score by position shown (first / swapped / both; effect): "
            "1: 90 / 90 / 90; 28.3333, 2: 60 / 60 / 60; -1.6667, 3: 30 / 30 / 30; -30\n") in out
    items = passes(runs)
    assert [(r["index"], r["pass"]) for r in items] == [(n, p) for n in range(10) for p in (1, 2)]
    for first, second in zip(items[::2], items[1::2]):
        assert second["order"] == first["order"][::-1]
        assert second["shuffle_seed"] == first["shuffle_seed"]
    # By hand: every asked pass has a first and a second place (9 items, 9 per pass); a third
    # place only the 8 items with three responses (not 92: none; not 93: two).
    # Effect: on a three-response item, the response shown first (90) is shown third when
    # reversed (30): +30 at place 1, -30 at place 3; the middle one stays (60, 60): 0 and 0;
    # the third one likewise -30 at 3 and +30 at 1. On item 93 (two responses) each is shown at
    # 1 (90) and 2 (60): +15 at 1, -15 at 2, twice. Place 1: (16 * 30 + 2 * 15) / 18;
    # place 2: (16 * 0 - 2 * 15) / 18; place 3: 16 * -30 / 16.
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    assert board["positions"] == {"swap": True, "rows": [
        {"position": 1, "first": {"items": 9, "mean": 90.0}, "second": {"items": 9, "mean": 90.0},
         "both": {"items": 18, "mean": 90.0}, "effect": {"items": 18, "mean": round(510 / 18, 4)}},
        {"position": 2, "first": {"items": 9, "mean": 60.0}, "second": {"items": 9, "mean": 60.0},
         "both": {"items": 18, "mean": 60.0}, "effect": {"items": 18, "mean": round(-30 / 18, 4)}},
        {"position": 3, "first": {"items": 8, "mean": 30.0}, "second": {"items": 8, "mean": 30.0},
         "both": {"items": 16, "mean": 30.0}, "effect": {"items": 16, "mean": -30.0}},
    ]}
    # A model's own score is its first-pass score: here, its first-pass place.
    for model in MODELS:
        for i, record in model_scores(runs, model).items():
            if record["state"] == "scored":
                assert record["score"] == 120 - 30 * record["position"]
    markdown = (runs / OUT / "leaderboard.md").read_text()
    assert "| 3 | 30.00 (8) | 30.00 (8) | 30.00 (16) | -30.00 (16) |" in markdown
    assert "a model's score is its first-pass score." in markdown
    # compare.html's item viewer: how far each item's scores moved with position (three
    # responses: 90 at place 1 and 30 at place 3 when reversed; two: 90 and 60), most divided
    # first (spread and moves: item 93 has 90, 60 and an empty 0).
    page = (runs / OUT / "compare.html").read_text()
    sections = [(int(task), int(spread), int(moves), int(disagreement)) for spread, moves,
                disagreement, task in re.findall(
                    r'data-spread="(\d+)" data-moves="(\d+)" data-disagreement="(\d+)">'
                    r".*?<b>Instruction:</b> Task (\d+)</p>", page)]
    expected = {i: ({3: 60, 2: 90, 0: 0}[len(shown(i))], {3: 60, 2: 30, 0: 0}[len(shown(i))])
                for i in ITEMS}
    assert sorted(sections, key=lambda s: s[0]) == sorted(
        (i, spread, moves, max(spread, moves)) for i, (spread, moves) in expected.items())
    assert [task for task, *_ in sections] == sorted(
        ITEMS, key=lambda i: (-max(expected[i]), ITEMS.index(i)))
    assert "(shown as Response 1; swapped: 30 as Response 3)" in page


def test_swap_with_a_fair_judge(runs):
    # The mock judge scores responses, not places: the reversed pass gives every model the
    # same score, and the per-position means are the means of whoever was shown there.
    assert compare(None, "judge.swap=true", *MOCK_JUDGE) == 0
    items = passes(runs)
    for first, second in zip(items[::2], items[1::2]):
        if first["order"]:
            assert second["scores"] == first["scores"][::-1]
    rows = json.loads((runs / OUT / "together/summary.json").read_text())["positions"]
    for row in rows:
        place = row["position"] - 1
        for key, number in (("first", 1), ("second", 2)):
            given = [expected_score(r["order"][place], ITEMS[r["index"]]) for r in items
                     if r["pass"] == number and len(r["order"]) > place]
            assert row[key] == {"items": len(given), "mean": round(sum(given) / len(given), 4)}
        # Each response got the same score at both of its places: no effect anywhere.
        assert row["effect"]["mean"] == 0.0
    assert [row["effect"]["items"] for row in rows] == [18, 18, 16]


class Cards(HTMLParser):
    """Each response card of compare.html: model and the text of its position note."""

    def __init__(self):
        super().__init__()
        self.positions: list[tuple[str, str]] = []
        self._model = None
        self._in_position = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-model" in attrs:
            self._model = attrs["data-model"]
        self._in_position = attrs.get("class") == "position"

    def handle_data(self, data):
        if self._in_position:
            self.positions.append((self._model, data))
            self._in_position = False


def test_both_modes_side_by_side(runs, capsys):
    # The mock judge answers book prompts and together prompts alike.
    mock_judge = [argument for setting in MOCK_JUDGE for argument in ("--set", setting)]
    for model in MODELS:
        assert main(["judge", "--config", str(runs / model / "config.toml"), "--run", model,
                     *mock_judge, "--set", "judge.canaries=false"]) == 0
    assert compare(None, *MOCK_JUDGE) == 0
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    # The book prompt's scores are the same as the together ones: the same ranking.
    modes = board["modes"]
    assert [(r["model"], r["together_rank"], r["together_mean"], r["single_rank"],
             r["single_mean"]) for r in modes["models"]] == [
        ("a", 1, 90.0, 1, 90.0), ("c", 2, 60.0, 2, 60.0), ("b", 3, 53.6, 3, 53.6)]
    assert (modes["spearman"], modes["kendall"]) == (1.0, 1.0)
    # Agreement per model between the modes, on the items both scored
    agreement = [e for e in board["agreement"] if e["kind"] == "modes"]
    assert [(e["a"], e["b"], e["items"], e["mean_abs_difference"]) for e in agreement] == [
        ("a together", "a single", 9, 0.0), ("b together", "b single", 9, 0.0),
        ("c together", "c single", 8, 0.0)]
    assert agreement[0]["differs"] == ["mode together vs single", "structured True vs False"]
    assert agreement[0]["pearson"] is None  # a scored 100 everywhere: nothing varies
    assert agreement[1]["pearson"] == 1.0  # b: 67s and one 0, alike in both modes
    assert "judges.png" in board["plots"]

    markdown = (runs / OUT / "leaderboard.md").read_text()
    assert "## Modes side by side" in markdown and "## Position check" in markdown
    assert "Rank correlation of the two means: Spearman 1.000, Kendall 1.000." in markdown
    a_ci = board["models"][0]["ci"]
    ci = f"[{a_ci[0]:.2f}, {a_ci[1]:.2f}]"
    assert f"| a | 1 | 90.00 | {ci} | 1 | 90.00 | {ci} |" in markdown
    # Position 1 without swap: the first-pass mean of whoever was shown first
    given = [expected_score(r["order"][0], ITEMS[r["index"]]) for r in passes(runs) if r["order"]]
    mean = sum(given) / len(given)
    assert (f"| 1 | {mean:.2f} ({len(given)}) | n/a | {mean:.2f} ({len(given)}) | n/a |"
            in markdown)

    cards = Cards()
    cards.feed((runs / OUT / "compare.html").read_text())
    first_item = model_scores(runs, "a")[85]
    assert ("a", f"(shown as Response {first_item['position']})") in cards.positions
    assert len(cards.positions) == 26  # every scored response, none for the empty ones


def test_together_mode_has_no_canaries_but_a_failed_single_mode_judge_is_marked(runs, capsys):
    """Together mode asks no canaries, so its ranking is never flagged; the runs' own
    single-mode judgments set beside it are, when their judge failed its canaries."""
    with OllamaStandIn(together_judge) as standin:
        for model in MODELS:
            assert main(["judge", "--config", str(runs / model / "config.toml"), "--run", model,
                         "--set", f"judge.host={standin.url}",
                         "--set", "judge.canaries=false"]) == 0
        # b's own judge failed its canaries (written here: the stand-in reads well).
        (runs / "b/judge/canaries.jsonl").write_text(
            json.dumps({"canary": "good", "item_id": "x", "state": "scored", "score": 20}) + "\n"
            + json.dumps({"canary": "bad", "item_id": "x", "state": "scored", "score": 80})
            + "\n")
        capsys.readouterr()
        assert compare(standin.url) == 0
    why = ("good canaries 20 on average, bad ones 80: the lowest good canary, 20, is not above "
           "the highest bad one, 80")
    note = f"Run b, judged alone: the judge failed its canaries ({why}); its scores are not " \
           "meaningful."
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    assert [row["canaries_failed"] for row in board["models"]] == [False, False, False]
    assert [(r["model"], r["single_canaries_failed"], r["single_canaries_why"])
            for r in board["modes"]["models"]] == [("a", False, None), ("c", False, None),
                                                   ("b", True, why)]
    assert f"  {note}\n" in capsys.readouterr().out
    markdown = (runs / OUT / "leaderboard.md").read_text()
    assert f"\n**{note}**\n" in markdown
    assert "\n| b (canaries failed) | 3 | 53.60 |" in markdown  # the modes table
    assert "\n| b together | b single (canaries failed) | " in markdown  # the agreement table
    assert "\n| 3 | b | " in markdown  # the together ranking itself is not flagged


def test_single_mode_rankings_by_different_judges_are_not_set_beside(runs, capsys):
    """The single-mode ranking beside a together one is a ranking too: when the runs' own
    judgments were made by different judges it is left out, or marked mixed on request."""
    other = "sha256:" + "c" * 64
    for model in MODELS:  # c's judge is llama3 pulled anew: another digest
        models = {"llama3:latest": other} if model == "c" else None
        with OllamaStandIn(models=models) as standin:
            assert main(["judge", "--config", str(runs / model / "config.toml"), "--run", model,
                         "--set", f"judge.host={standin.url}",
                         "--set", "judge.canaries=false"]) == 0
    digest = read_jsonl(runs / "a/judge/scores.jsonl")[0]["judge_digest"]
    mismatch = f"runs a and c were judged differently (digest {digest} vs {other})"
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
        board = json.loads((runs / OUT / "leaderboard.json").read_text())
        assert board["modes"] is None
        note = ("Not shown: the runs' own single-mode judgments were not judged alike: "
                f"{mismatch}; --allow-mixed-judges shows them.")
        assert board["modes_note"] == note
        markdown = (runs / OUT / "leaderboard.md").read_text()
        assert f"## Modes side by side\n\n**{note}**\n" in markdown
        # the together ranking itself had one judge: not mixed
        assert (board["comparison"], board["mixed_judges"]) == ("models", None)

        assert compare(standin.url, extra=["--allow-mixed-judges"]) == 0
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    assert [row["model"] for row in board["modes"]["models"]] == ["a", "c", "b"]
    assert board["modes_note"] == (
        f"Mixed judges: {mismatch}. The "
        "single-mode ranking sets scores of different judges side by side "
        "(--allow-mixed-judges): a difference between two models may come from their judges.")
    assert f'<p class="mixed"><b>{board["modes_note"]}</b></p>' in (
        runs / OUT / "compare.html").read_text()


def test_an_openai_compatible_server(runs):
    with OpenAIStandIn(together_judge) as standin:
        assert compare(standin.url, "judge.backend='openai'", "judge.model='gpt-4o-mini'") == 0
        body = standin.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    count = len(parse_together_prompt(prompt_of(body))[1])
    assert body["response_format"]["json_schema"]["schema"] == together_schema("book", count)
    assert model_scores(runs, "c")[85]["score"] == 75
    assert model_scores(runs, "c")[85]["judge_backend"] == "openai"
