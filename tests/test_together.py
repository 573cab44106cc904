"""Together mode (`evalpipe compare --mode together`): every model's response to an item in one
prompt, driven through the command line against the stand-in judge servers (real HTTP on
127.0.0.1, through the real `ollama` and `openai` clients; tests/standins.py).

Three runs, a, b and c, import responses (`generate --from`, no model needed) for the ten test
items of a 100-record data set (the smoke config's book split: records 85..94). The stand-in's
`together_judge` scores every response by itself, round(100 * token F1) against the reference,
whatever its place in the prompt:

  a  the reference itself: 100               item 92: ""               (empty)
  b  "word{i}a word{i}b": P 1, R 1/2 -> 67   item 92: not imported     (empty)
     item 86: "nothing in common" -> 0
  c  3 of 4 words + "other": P 3/4, R 3/4 -> 75
                                             items 92 ("   ") and 93 ("") (empty)

So item 92 (index 7) has no response to show and is not asked, item 93 (index 8) shows two
responses, every other item three: 9 requests per pass.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from standins import (
    OllamaStandIn,
    OpenAIStandIn,
    StandInFailure,
    parse_together_prompt,
    prompt_of,
    together_entries,
    together_judge,
    unused_url,
)

from evalpipe.cli import main
from evalpipe.io import read_jsonl, read_partial_jsonl
from evalpipe.judging.prompts import parse_together, render_together, together_schema

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "configs/smoke.toml")  # judge: retries 1, concurrency 4
ITEMS = list(range(85, 95))
MODELS = ("a", "b", "c")
EMPTY = {"a": {92}, "b": {92}, "c": {92, 93}}
SCORE = {"a": 100, "b": 67, "c": 75}  # per scored item, except b's item 86 (0)
JUDGE_FIELDS = ["state", "score", "reason", "raw_reply", "error", "judge_backend",
                "judge_model", "judge_digest", "judge_template", "prompt_sha256",
                "judge_seconds", "cached"]


def output_of(i: int) -> str:
    return f"word{i}a word{i}b word{i}c word{i}d"


def response_of(model: str, i: int) -> str | None:
    """What run `model` answered to record i (None: not imported)."""
    if model == "a":
        return "" if i == 92 else output_of(i)
    if model == "b":
        return {92: None, 86: "nothing in common"}.get(i, f"word{i}a word{i}b")
    return {92: "   ", 93: ""}.get(i, f"word{i}a word{i}b word{i}c other")


def expected_score(model: str, i: int) -> int:
    if i in EMPTY[model]:
        return 0
    return 0 if (model, i) == ("b", 86) else SCORE[model]


def shown(i: int) -> list[str]:
    return [m for m in MODELS if i not in EMPTY[m]]


def make_runs(folder: Path, respond=response_of) -> None:
    """Runs a, b and c under folder/results, their data and response files in folder;
    `respond(model, i)` gives the responses (response_of unless told)."""
    records = [{"instruction": f"Task {i}", "input": f"input {i}" if i % 2 else "",
                "output": output_of(i)} for i in range(100)]
    (folder / "data.json").write_text(json.dumps(records))
    for model in MODELS:
        imported = [{**records[i], "model_response": respond(model, i)} for i in ITEMS
                    if respond(model, i) is not None]
        (folder / f"{model}.json").write_text(json.dumps(imported))
        assert main(["generate", "--config", SMOKE, "--run", model,
                     "--results", str(folder / "results"),
                     "--set", f"data.source={folder / 'data.json'}",
                     "--set", f"generate.from_file={folder / f'{model}.json'}",
                     "--set", "generate.allow_partial=true"]) == 0


@pytest.fixture(scope="module")
def made_runs(tmp_path_factory, gpt2_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("together-runs")
    make_runs(folder)
    return folder


@pytest.fixture
def runs(run_env, made_runs, monkeypatch):
    """A fresh copy of the three runs in this test's results/."""
    shutil.copytree(made_runs / "results", run_env / "results")
    monkeypatch.setenv("EVALPIPE_JUDGE_RETRY_DELAY", "0.01")
    return run_env / "results"


def compare(url: str, *settings: str, runs=MODELS, extra=()) -> int:
    args = ["compare", *runs, "--mode", "together", "--resamples", "200",
            "--set", f"judge.host={url}", *extra]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


OUT = "compare-a-vs-b-vs-c"


def model_scores(results: Path, model: str) -> dict[int, dict]:
    records = read_jsonl(results / OUT / "together/scores" / f"{model}.jsonl")
    return {int(r["instruction"].split()[1]): r for r in records}


def passes(results: Path) -> list[dict]:
    return read_jsonl(results / OUT / "together/items.jsonl")


def reference_item(body: dict) -> int:
    """The record number of the item a together request is about (from its reference)."""
    reference, _ = parse_together_prompt(prompt_of(body))
    return int(reference.split()[0][len("word"):-1])


# -- the prompt, the schema and the parser --------------------------------------------------------

def test_the_together_prompt_and_schema():
    record = {"instruction": "Name a colour.", "input": "", "output": "Red."}
    assert render_together("book", record, ["Blue.", "[x]\n\nGreen"]) == """\
You are grading 2 responses to the same task against a reference answer. Grade each response \
on its own merits, independently of the other responses and of the order in which they are shown.

Task:
Below is an instruction that describes a task. Write a response that appropriately completes \
the request.

### Instruction:
Name a colour.

Reference answer:
Red.

[Response 1]
Blue.
[End of Response 1]

[Response 2]
[x]

Green
[End of Response 2]

Score each response on a scale from 0 to 100, where 100 is the best score, and give a \
one-sentence reason for each.

Reply with a JSON object only: {"scores": [{"response": <the number of the response>, \
"score": <the integer score>, "reason": "<one sentence saying why>"}, ...]}, with exactly one \
entry for each of the 2 responses."""
    # The stand-in reads it back, responses whole.
    assert parse_together_prompt(render_together("rubric", record, ["Blue.", "[x]\n\nGreen"])) \
        == ("Red.", ["Blue.", "[x]\n\nGreen"])
    one = render_together("rubric", record, ["Red."])
    assert one.startswith("You are grading one response to the same task")
    assert "Grade each response from 1 to 5:\n5 - correct and complete" in one
    assert one.endswith('"score": <the grade, 1 to 5>, "reason": "<one sentence saying why>"}, '
                        '...]}, with exactly one entry, for the one response.')
    entry = together_schema("rubric", 3)["properties"]["scores"]
    assert (entry["minItems"], entry["maxItems"]) == (3, 3)
    assert entry["items"]["properties"]["response"] == {"type": "integer", "minimum": 1,
                                                        "maximum": 3}
    assert entry["items"]["properties"]["score"] == {"type": "integer", "minimum": 1,
                                                     "maximum": 5}
    assert together_schema("book", 2) == {
        "type": "object",
        "properties": {"scores": {
            "type": "array",
            "items": {"type": "object",
                      "properties": {
                          "response": {"type": "integer", "minimum": 1, "maximum": 2},
                          "score": {"type": "integer", "minimum": 0, "maximum": 100},
                          "reason": {"type": "string", "maxLength": 200}},
                      "required": ["response", "score", "reason"]},
            "minItems": 2, "maxItems": 2}},
        "required": ["scores"]}
    assert list(together_schema("book", 2)["properties"]["scores"]["items"]["properties"]) == [
        "response", "score", "reason"]


def _reply(*entries) -> str:
    return json.dumps({"scores": [{"response": n, "score": s, "reason": f"r{n}"}
                                  for n, s in entries]})


@pytest.mark.parametrize("text, state, scores, problem", [
    (_reply((2, 40), (1, 90), (3, 0)), "scored", (90, 40, 0), None),
    (_reply((1, 90), (2, 40)), "unparseable", None, "response 3 not scored"),
    (_reply((1, 90), (1, 40), (3, 0)), "unparseable", None, "response 1 scored twice"),
    (_reply((1, 90), (2, 40), (4, 0)), "unparseable", None, "unknown response 4"),
    (_reply((1, 90), (2, 40), (3, 150)), "unparseable", None,
     "response 3: score 150 is not an integer 0..100"),
    (_reply((1, 90), (2, 40.0), (3, 1)), "unparseable", None,
     "response 2: score 40.0 is not an integer 0..100"),
    (_reply((1, 90), (2, 40), (3, 1), (3, 1)), "unparseable", None, "response 3 scored twice"),
    (json.dumps([{"response": 1, "score": 90}]), "unparseable", None, "no 'scores' list"),
    ('{"scores": [{"response": "1", "score": 90}]}', "unparseable", None,
     "response label '1' is not an integer"),
    ("Response 1: 90\nResponse 2: 40\nResponse 3: 0", "unparseable", None, "not JSON"),
    (None, "unparseable", None, "no reply"),
])
def test_reading_a_together_reply(text, state, scores, problem):
    parsed = parse_together("book", 3, text)
    assert (parsed.state, parsed.scores, parsed.problem) == (state, scores, problem)
    if state == "scored":
        assert parsed.reasons == ("r1", "r2", "r3")


def test_rubric_grades_are_mapped_to_0_100():
    assert parse_together("rubric", 2, _reply((1, 5), (2, 2))).scores == (100, 25)
    assert parse_together("rubric", 2, _reply((1, 5), (2, 0))).problem == (
        "response 2: score 0 is not an integer 1..5")


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


def test_a_rerun_asks_nothing(runs, capsys):
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
        first = {m: model_scores(runs, m) for m in MODELS}
        asked = len(standin.requests)
        capsys.readouterr()

        # Up to date: nothing is asked, not even a server.
        assert compare(unused_url()) == 0
        assert capsys.readouterr().out.startswith("together: up to date (judged ")

        # Without the manifest the judge runs again, and every reply comes from the cache.
        (runs / OUT / "together/manifest.json").unlink()
        assert compare(standin.url) == 0
        assert len(standin.requests) == asked
        out = capsys.readouterr().out
        assert "together: running (never judged together)\n" in out
        assert "; 9 requests, 9 from the judgment cache\n" in out
        again = {m: model_scores(runs, m) for m in MODELS}
        for model in MODELS:
            for i in ITEMS:
                a, b = first[model][i], again[model][i]
                assert b["cached"] == (a["state"] != "empty")
                assert {k: v for k, v in a.items() if k not in ("cached", "judge_seconds")} == \
                    {k: v for k, v in b.items() if k not in ("cached", "judge_seconds")}

        # A changed judge setting makes it stale; the order the runs are named in does not
        # change the shuffles, so the same prompts come from the cache.
        assert compare(standin.url, "judge.swap=true") == 0
        assert "together: running (judge settings changed)" in capsys.readouterr().out
        assert len(standin.requests) == asked + 9  # only the reversed passes are new
        assert main(["compare", "c", "a", "b", "--mode", "together", "--resamples", "50",
                     "--set", f"judge.host={standin.url}"]) == 0
        assert len(standin.requests) == asked + 9
        assert read_jsonl(runs / "compare-c-vs-a-vs-b/together/items.jsonl")[3]["order"] == \
            passes(runs)[6]["order"]  # item 3's first pass, as in the a-b-c comparison


def test_a_new_digest_or_prompt_text_or_parse_rule_makes_the_together_judgment_stale(
        runs, capsys, monkeypatch):
    import hashlib

    import evalpipe.judging.prompts
    from evalpipe.judging.prompts import together_template_sha256

    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
        manifest = json.loads((runs / OUT / "together/manifest.json").read_text())
        old_digest = standin.models["llama3:latest"]
        assert manifest["identity"] == {
            "digest": old_digest, "prompt_template": together_template_sha256("book"),
            "parse_rule": evalpipe.judging.prompts.PARSE_RULE_VERSION}
        asked = len(standin.requests)

        # `ollama pull llama3` brought new weights: everything is asked again.
        new_digest = hashlib.sha256(b"llama3 pulled again").hexdigest()
        standin.models["llama3:latest"] = new_digest
        capsys.readouterr()
        assert compare(standin.url) == 0
        assert (f"together: running (digest changed: {old_digest[:12]} -> {new_digest[:12]})\n"
                in capsys.readouterr().out)
        assert len(standin.requests) == asked + 9
        assert compare(standin.url) == 0
        assert capsys.readouterr().out.startswith("together: up to date (judged ")

        # Another prompt text: new prompts, asked anew.
        old = together_template_sha256("book")
        monkeypatch.setattr(evalpipe.judging.prompts, "TOGETHER_INTRO",
                            evalpipe.judging.prompts.TOGETHER_INTRO + " Be fair.")
        new = together_template_sha256("book")
        assert compare(standin.url) == 0
        assert (f"together: running (prompt_template changed: {old[:12]} -> {new[:12]})\n"
                in capsys.readouterr().out)
        assert len(standin.requests) == asked + 18
        assert prompt_of(standin.requests[-1]).startswith("You are grading ")
        assert " Be fair.\n" in prompt_of(standin.requests[-1])

        # A new parsing rule: stale, and the cached replies are read again, nothing is asked.
        version = evalpipe.judging.prompts.PARSE_RULE_VERSION
        monkeypatch.setattr(evalpipe.judging.prompts, "PARSE_RULE_VERSION", version + 1)
        assert compare(standin.url) == 0
        out = capsys.readouterr().out
        assert f"together: running (parse_rule changed: {version} -> {version + 1})\n" in out
        assert "; 9 requests, 9 from the judgment cache\n" in out
        assert len(standin.requests) == asked + 18
        url = standin.url

    # The server is down: the digest is not checked, the judgment is kept.
    assert compare(url) == 0
    out = capsys.readouterr().out
    assert out.startswith("together: up to date (judged ")
    assert (f"; digest not checked: judge server unreachable (cannot reach Ollama at {url}: is "
            "it running? start it with 'ollama serve'))\n") in out


def test_errors_are_asked_again_on_the_next_run(runs, capsys):
    def broken_on_item_91(body):
        if together_entries(body) is not None and reference_item(body) == 91:
            return StandInFailure(500, "model runner crashed")
        return together_judge(body)

    with OllamaStandIn(broken_on_item_91) as standin:
        assert compare(standin.url) == 0
        out = capsys.readouterr().out
        assert "0 unparseable, 3 error; 9 requests" in out
        first_id = passes(runs)[6]["id"]
        assert (f"together: 1 judgments ended in error (first: item 6 id {first_id}: Ollama at "
                f"{standin.url} answered HTTP 500: model runner crashed (after 2 attempts)); "
                "run the same command again to ask for them, the rest comes from the judgment "
                "cache\n") in out
        assert {m: model_scores(runs, m)[91]["state"] for m in MODELS} == dict.fromkeys(
            MODELS, "error")
        assert not (runs / OUT / "together/manifest.json").exists()
        standin.reply = together_judge
        before = len(standin.requests)
        assert compare(standin.url) == 0
        assert [reference_item(b) for b in standin.requests[before:]] == [91]
    assert model_scores(runs, "a")[91]["score"] == 100


def test_a_killed_together_judge_loses_no_finished_judgment(runs, run_env):
    def slow(body):
        time.sleep(0.15)
        return together_judge(body)

    with OllamaStandIn(slow) as standin:
        command = [sys.executable, "-m", "evalpipe", "compare", *MODELS, "--mode", "together",
                   "--set", f"judge.host={standin.url}", "--set", "judge.concurrency=1"]
        process = subprocess.Popen(command, cwd=run_env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        partial = runs / OUT / "together/items.partial.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (runs / OUT / "together/items.jsonl").exists()
        assert not (runs / OUT / "together/manifest.json").exists()
        kept = read_partial_jsonl(partial)
        assert len(kept) >= 3
        # The cache would also spare the judge; without it only the partial file can.
        for leftover in runs.glob("judge-cache.sqlite*"):
            leftover.unlink()

        before = len(standin.requests)
        assert compare(standin.url) == 0
        again = [reference_item(body) for body in standin.requests[before:]]
        # 9 items need the judge (item 92 has nothing to show); the finished ones are not asked.
        assert len(again) == 9 - len([r for r in kept if r["order"]])
        assert not set(again) & {ITEMS[r["index"]] for r in kept}
    assert not partial.exists()
    for model in MODELS:
        assert {i: r["score"] for i, r in model_scores(runs, model).items()} == {
            i: expected_score(model, i) for i in ITEMS}


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


def test_swap_with_a_fair_judge(runs):
    # The stand-in scores responses, not places: the reversed pass gives every model the same
    # score, and the per-position means are the means of whoever was shown there.
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url, "judge.swap=true") == 0
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
    with OllamaStandIn(together_judge) as standin:  # book prompts go to book_judge
        for model in MODELS:
            assert main(["judge", "--config", str(runs / model / "config.toml"), "--run", model,
                         "--set", f"judge.host={standin.url}",
                         "--set", "judge.canaries=false"]) == 0
        assert compare(standin.url) == 0
    board = json.loads((runs / OUT / "leaderboard.json").read_text())
    # The book prompt's stand-in gives the same scores as the together one: the same ranking.
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


# -- prompt sizes: k responses in one prompt -------------------------------------------------------

def long_runs(run_env, monkeypatch, item_85) -> Path:
    """Runs a, b and c as usual, except that item 85's responses are item_85(model)."""
    def respond(model: str, i: int) -> str | None:
        return item_85(model) if i == 85 else response_of(model, i)

    make_runs(run_env, respond)
    monkeypatch.setenv("EVALPIPE_JUDGE_RETRY_DELAY", "0.01")
    return run_env / "results"


def words(model: str) -> str:
    """About 250 words: a response near generate's limit of 256 tokens."""
    return " ".join(f"word85{model}{n}" for n in range(250))


def test_long_together_prompts_get_a_larger_context(run_env, gpt2_tokenizer, monkeypatch):
    results = long_runs(run_env, monkeypatch, words)
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
    contexts = {reference_item(b): b["options"]["num_ctx"] for b in standin.requests}
    assert contexts == {**dict.fromkeys(set(range(86, 95)) - {92}, 2048), 85: 4096}  # 92: empty
    assert model_scores(results, "a")[85]["state"] == "scored"


def test_together_prompts_too_long_for_the_model_stop_before_asking(run_env, gpt2_tokenizer,
                                                                   monkeypatch, capsys):
    results = long_runs(run_env, monkeypatch, words)
    with OllamaStandIn(together_judge, context_length=2048) as standin:
        assert compare(standin.url) == 1
        assert standin.requests == []
    first_id = read_jsonl(results / "a/generate/responses.jsonl")[0]["id"]
    err = capsys.readouterr().err
    assert err.startswith(f"evalpipe: error: judge: item 0 (id {first_id}), pass 1, 3 "
                          "responses: the prompt needs a context of about ")
    assert err.endswith(" for the reply), but judge.options.num_ctx is 2048 and the judge "
                        "llama3:latest takes at most 2048\n")


def test_a_truncated_together_prompt_is_an_error_and_asked_again(run_env, gpt2_tokenizer,
                                                                 monkeypatch):
    # Punctuation-heavy responses: more tokens than the estimate allows for, so the prompt goes
    # with num_ctx 2048 and the stand-in cuts it, as Ollama does, without a word.
    results = long_runs(run_env, monkeypatch, lambda model: " ".join([f"{model}."] * 400))
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
        (body,) = [b for b in standin.requests if reference_item(b) == 85]
        assert body["options"]["num_ctx"] == 2048
        first = passes(results)[0]
        assert (first["state"], first["scores"], first["raw_reply"]) == ("error", None, None)
        assert first["error"] == (f"prompt truncated: the judge read 1026 tokens of a prompt "
                                  f"of {len(prompt_of(body).split())} words (num_ctx 2048)")
        assert {m: model_scores(results, m)[85]["state"] for m in MODELS} == dict.fromkeys(
            MODELS, "error")
        before = len(standin.requests)
        assert compare(standin.url) == 0  # no manifest: asks again for item 85 only
        assert [reference_item(b) for b in standin.requests[before:]] == [85]


# -- refusals ------------------------------------------------------------------------------------

def test_what_together_mode_refuses_is_one_line(runs, capsys):
    assert main(["compare", "a", "nothing", "--mode", "together"]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: run nothing: {runs}/nothing/generate/responses.jsonl not found; "
        "make it with 'make generate RUN=nothing'\n")

    url = unused_url()
    assert compare(url) == 1
    err = capsys.readouterr().err
    assert err.startswith("evalpipe: error: judge: ") and url in err and err.count("\n") == 1
    assert not (runs / OUT / "together/items.jsonl").exists()

    assert compare(url, "judge.repeats=2") == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: judge.repeats = 2: together mode judges each item once (twice with "
        "judge.swap); set judge.repeats = 1\n")

    assert main(["compare", "a", "b", "--set", "judge.swap=true"]) == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: compare: --config and --set give the judge settings of --mode "
        "together; --mode single reads each run's own judgment\n")

    (runs / "a/config.toml").unlink()
    assert compare(url) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: run a: {runs}/a/config.toml not found; give the judge settings "
        "with --config FILE\n")
    assert main(["compare", *MODELS, "--mode", "together", "--config", SMOKE,
                 "--set", "judge.template='nonsense'"]) == 1
    assert "judge.template: expected one of 'book', 'rubric'" in capsys.readouterr().err


def test_runs_on_different_items_are_refused_before_any_request(runs, capsys):
    records = read_jsonl(runs / "b/generate/responses.jsonl")
    records[2]["output"] = "something else"
    (runs / "b/generate/responses.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 1
        assert standin.requests == []
    err = capsys.readouterr().err
    assert err.startswith("evalpipe: error: runs a and b differ at item 2 ")
    assert "field output: 'word87a word87b word87c word87d' against 'something else'" in err
