"""`evalpipe show` (issue #15): the items table on a hand-made run (exact text at a fixed
terminal width), its filters, one item's journey in every state, a comparison's item, and the
one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evalpipe import show as show_module
from evalpipe.api import load_scores
from evalpipe.cli import main
from evalpipe.config import RunConfig
from evalpipe.judging.prompts import render

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "configs/smoke.toml")


def judged(number: int, instruction: str, input_: str, output: str, response: str | None,
           state: str, score: int | None, *, reason=None, raw=None, error=None,
           template="book", structured=False) -> dict:
    """A judge/scores.jsonl record as the judge writes it (docs/records.md); its prompt_sha256
    is the hash of the prompt the judge would have been sent (none for an empty response)."""
    record = {"id": f"{number:012x}", "instruction": instruction, "input": input_,
              "output": output, "response": response, "prompt_tokens": 40,
              "response_tokens": len((response or "").split()), "stop_reason": "eos",
              "seconds": 0.1}
    prompt = None if state == "empty" else render(template, record, structured=structured)
    record.update(state=state, score=score, reason=reason, raw_reply=raw, error=error,
                  judge_backend="ollama", judge_model="llama3:latest",
                  judge_digest="sha256:abc123", judge_template=template,
                  prompt_sha256=prompt and hashlib.sha256(prompt.encode()).hexdigest(),
                  judge_seconds=0.5, cached=state == "scored")
    return record


HAND_RECORDS = [
    judged(0xA1, "Rewrite the sentence using a simile.", "The car is very fast.",
           "The car is as fast as lightning.", "The car is as fast as a cheetah.",
           "scored", 85, raw="85"),
    judged(0xB2, "What is the capital of France?", "", "The capital of France is Paris.", "",
           "empty", 0),
    judged(0xC3, "Name a mammal.", "", "A dog.", "A whale is a mammal that lives in the sea.",
           "unparseable", None, raw="I think it is fine."),
    judged(0xD4, "Convert 5 km to meters.", "", "5 km is 5000 meters.", "5000 meters",
           "error", None, error="HTTP 500 from http://127.0.0.1:9/api/chat"),
    judged(0xE5, "Give a synonym of 'happy'.", "", "Joyful.", "Joyful.", "scored", 100,
           raw="100"),
]


def write_run(results: Path, run: str, records: list[dict], *, template="book",
              structured=False, config: RunConfig | None = None) -> Path:
    root = results / run
    (root / "judge").mkdir(parents=True)
    (root / "config.toml").write_text((config or RunConfig()).to_toml())
    (root / "judge/scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "judge/summary.json").write_text(json.dumps({
        "items": len(records), "states": {}, "template": template, "structured": structured,
        "judge": {"backend": "ollama", "model": "llama3", "digest": "sha256:abc123"},
        "options": {"seed": 123}, "repeats": 1}))
    return root


@pytest.fixture
def hand(run_env) -> Path:
    return write_run(run_env / "results", "hand", HAND_RECORDS)


def shown(capsys, *args: str) -> str:
    assert main(["show", *args]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


# -- the table ----------------------------------------------------------------------------------

TABLE_100 = """\
id            state        score  length    f1  instruction       response          reason
0000000000a1  scored          85       8  0.83  Rewrite the s...  The car is as...  -
0000000000b2  empty            0       0  0.00  What is the c...                    -
0000000000c3  unparseable      -      10  0.00  Name a mammal.    A whale is a ...  reply: I thin...
0000000000d4  error            -       2  0.57  Convert 5 km ...  5000 meters       error: HTTP 5...
0000000000e5  scored         100       1  1.00  Give a synony...  Joyful.           -
5 of 5 items shown; 2 scored, 1 empty, 1 unparseable, 1 error; length in response tokens
"""


def test_the_table_at_a_fixed_terminal_width(hand, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert shown(capsys, "hand") == TABLE_100
    assert max(map(len, TABLE_100.splitlines()[:-1])) <= 100


def test_a_wide_terminal_shows_the_text_whole(hand):
    text = show_module.show("hand", width=200)
    assert "Rewrite the sentence using a simile." in text
    assert "reply: I think it is fine." in text
    assert "error: HTTP 500 from http://127.0.0.1:9/api/chat" in text
    assert max(map(len, text.splitlines())) <= 200


def test_column_widths_share_the_room_left():
    cells = {"id": ["abc"], "instruction": ["x" * 50], "reason": ["short"]}
    # 3 + 2 + ? + 2 + ?: "reason" takes its 6, instruction the rest.
    assert show_module.column_widths(cells, 40) == {"id": 3, "instruction": 27, "reason": 6}
    # Never below MIN_TEXT_WIDTH, even when the terminal is narrower than the table.
    assert show_module.column_widths(cells, 10)["instruction"] == show_module.MIN_TEXT_WIDTH


def table(**selection) -> list[str]:
    rows = show_module.select_items(show_module.item_table(load_scores("hand")), **selection)
    return list(rows["id"].str[-2:])


def test_state_worst_best_and_sort(hand):
    assert table(states=["unparseable"]) == ["c3"]
    assert table(states=["error", "empty"]) == ["b2", "d4"]
    # Only items with a score are ranked; ties keep the test order.
    assert table(worst=2) == ["b2", "a1"]
    assert table(best=1) == ["e5"]
    assert table(best=10) == ["e5", "a1", "b2"]
    assert table(sort="f1") == ["b2", "c3", "d4", "a1", "e5"]
    assert table(sort="score") == ["b2", "a1", "e5", "c3", "d4"]  # missing scores last
    assert table(states=["scored"], sort="length") == ["e5", "a1"]


def test_the_options_on_the_command_line(hand, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert shown(capsys, "hand", "--state", "unparseable", "--columns", "id,score,reason") == (
        "id            score  reason\n"
        "0000000000c3      -  reply: I think it is fine.\n"
        "1 of 5 items shown; 2 scored, 1 empty, 1 unparseable, 1 error; "
        "length in response tokens\n")
    out = shown(capsys, "hand", "--worst", "1", "--columns", "id,score,length,f1")
    assert out.splitlines()[:2] == ["id            score  length    f1",
                                    "0000000000b2      0       0  0.00"]
    out = shown(capsys, "hand", "--best", "1", "--sort", "id", "--columns", "index,id")
    assert out.splitlines()[1] == "    4  0000000000e5"


@pytest.mark.parametrize("args, message", [
    (["--sort", "colour"], "show: --sort 'colour': expected one of id, state, score"),
    (["--columns", "id,colour"], "show: --columns: unknown column 'colour' (columns: id,"),
    (["--worst", "0"], "show: --worst must be at least 1, got 0"),
    (["--worst", "1", "--best", "1"], "show: give --worst or --best, not both"),
    (["--item", "ffff"], "run hand: no item 'ffff'"),
    (["--item", "0000000000"], "run hand: 5 items' ids start with '0000000000': 0000000000a1,"),
])
def test_bad_options_are_one_line_errors(hand, capsys, args, message):
    assert main(["show", "hand", *args]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"evalpipe: error: {message}") and error.count("\n") == 1


def test_a_missing_run_or_unjudged_run_is_one_line(run_env, capsys):
    assert main(["show", "nothing"]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: no run 'nothing': {run_env / 'results/nothing'} is not a folder\n")
    (run_env / "results/fresh").mkdir(parents=True)
    assert main(["show", "fresh", "--item", "ab"]) == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: run 'fresh' is not judged: "
        f"{run_env / 'results/fresh/judge/scores.jsonl'} not found "
        "('evalpipe judge --run fresh' makes it)\n")


def test_a_bad_record_is_one_line(hand, capsys):
    path = hand / "judge/scores.jsonl"
    path.write_text(path.read_text().replace('"state": "error"', '"state": "failed"'))
    assert main(["show", "hand"]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: {path}: record 3 (id 0000000000d4): field 'state' must be one of "
        "scored, empty, unparseable, error, got 'failed'\n")


# -- one item ---------------------------------------------------------------------------------

SCORED_ITEM = """\
run hand, item 0000000000a1 (1 of 5 in the test split)

-- the data record
id: 0000000000a1
instruction: Rewrite the sentence using a simile.
input: The car is very fast.
output: The car is as fast as lightning.

-- the model's prompt (data.template alpaca)
Below is an instruction that describes a task. Write a response that appropriately completes \
the request.

### Instruction:
Rewrite the sentence using a simile.

### Input:
The car is very fast.

-- the model's response (stop reason eos, 8 tokens)
The car is as fast as a cheetah.

-- the judge's prompt (template book, structured false): its SHA-256 matches the record's \
prompt_sha256 {sha}
Given the input `Below is an instruction that describes a task. Write a response that \
appropriately completes the request.

### Instruction:
Rewrite the sentence using a simile.

### Input:
The car is very fast.` and correct output `The car is as fast as lightning.`, score the model \
response `The car is as fast as a cheetah.` on a scale from 0 to 100, where 100 is the best \
score. Respond with the integer number only.

-- the judge's reply (ollama llama3:latest, digest sha256:abc123; from the judgment cache)
85

-- the judgment
state: scored
score: 85
reason: (none)
"""


def test_a_scored_item_from_data_record_to_score(hand, capsys):
    assert shown(capsys, "hand", "--item", "0000000000a1") == SCORED_ITEM.format(
        sha=HAND_RECORDS[0]["prompt_sha256"])
    # A unique beginning of the id is enough.
    assert shown(capsys, "hand", "--item", "0000000000a") == SCORED_ITEM.format(
        sha=HAND_RECORDS[0]["prompt_sha256"])


def test_an_empty_item_was_not_sent_to_the_judge(hand, capsys):
    out = shown(capsys, "hand", "--item", "0000000000b2")
    assert out.endswith(
        "-- the model's response (stop reason eos, 0 tokens)\n"
        "'' (empty)\n\n"
        "-- the judge's prompt: none sent (an empty response scores 0 by the book's rule, the "
        "judge is not asked)\n\n"
        "-- the judge's reply (ollama llama3:latest, digest sha256:abc123)\n"
        "(none: not asked)\n\n"
        "-- the judgment\nstate: empty\nscore: 0\nreason: (none)\n")
    assert "input: (none)\n" in out


def test_an_unparseable_item_shows_the_reply(hand, capsys):
    out = shown(capsys, "hand", "--item", "0000000000c3")
    assert (f"structured false): its SHA-256 matches the record's prompt_sha256 "
            f"{HAND_RECORDS[2]['prompt_sha256']}\nGiven the input `") in out
    assert out.endswith(
        "-- the judge's reply (ollama llama3:latest, digest sha256:abc123)\n"
        "I think it is fine.\n\n"
        "-- the judgment\nstate: unparseable\nscore: -\nreason: (none)\n")


def test_an_error_item_shows_the_prompt_sent_and_the_error(hand, capsys):
    out = shown(capsys, "hand", "--item", "0000000000d4")
    assert "score the model response `5000 meters` on a scale from 0 to 100" in out
    assert out.endswith(
        "-- the judge's reply (ollama llama3:latest, digest sha256:abc123)\n"
        "(none: the request failed)\n\n"
        "-- the judgment\nstate: error\nscore: -\nreason: (none)\n"
        "error: HTTP 500 from http://127.0.0.1:9/api/chat\n")


def test_a_prompt_that_does_not_hash_to_the_record_is_called_out(run_env, capsys):
    # Judged with the rubric, structured: the prompt shown is rendered for that setting...
    rubric = judged(0xF6, "Name a colour.", "", "Red.", "Blue.", "scored", 25,
                    reason="Wrong colour.", raw='{"score": 2, "reason": "Wrong colour."}',
                    template="rubric", structured=True)
    write_run(run_env / "results", "rubric", [rubric], template="rubric", structured=True)
    out = shown(capsys, "rubric", "--item", rubric["id"])
    assert (f"-- the judge's prompt (template rubric, structured true): its SHA-256 matches the "
            f"record's prompt_sha256 {rubric['prompt_sha256']}\n"
            "You are grading a response to a task against a reference answer.") in out
    assert "reason: Wrong colour.\n" in out
    # ... and a record whose hash is not that prompt's says so.
    path = run_env / "results/rubric/judge/scores.jsonl"
    path.write_text(path.read_text().replace(rubric["prompt_sha256"], "0" * 64))
    out = shown(capsys, "rubric", "--item", rubric["id"])
    rendered = render("rubric", rubric, structured=True)
    assert (f"its SHA-256 {hashlib.sha256(rendered.encode()).hexdigest()} is NOT the record's "
            f"prompt_sha256 {'0' * 64}: this is not the prompt that was sent\n") in out


def test_the_model_prompt_follows_the_runs_data_template(run_env, capsys):
    config = RunConfig()
    config.data.template = "phi3"
    write_run(run_env / "results", "phi", HAND_RECORDS[:1], config=config)
    out = shown(capsys, "phi", "--item", "0000000000a1")
    assert ("-- the model's prompt (data.template phi3)\n"
            "<|user|>\nRewrite the sentence using a simile.\nThe car is very fast.\n\n") in out


def test_repeats_are_listed(run_env, capsys):
    record = {**HAND_RECORDS[0], "repeats": [
        {"seed": 123, "state": "scored", "score": 85, "raw_reply": "85"},
        {"seed": 124, "state": "unparseable", "score": None, "raw_reply": "great"}]}
    write_run(run_env / "results", "twice", [record])
    out = shown(capsys, "twice", "--item", record["id"])
    assert out.endswith("repeat 1 (seed 123): scored, score 85, reply 85\n"
                        "repeat 2 (seed 124): unparseable, score -, reply great\n")


# -- comparisons -------------------------------------------------------------------------------

def make_imported_runs(folder: Path, responses: dict[str, list[str]]) -> None:
    """Runs under folder/results that import `responses` (per run, one per test item) for the
    smoke config's book split of a 20-record data set (items 17 and 18)."""
    records = [{"instruction": f"Task {i}", "input": "", "output": f"word{i}a word{i}b"}
               for i in range(20)]
    (folder / "data.json").write_text(json.dumps(records))
    for run, answers in responses.items():
        imported = [{**records[i], "model_response": answer}
                    for i, answer in zip((17, 18), answers)]
        (folder / f"{run}.json").write_text(json.dumps(imported))
        assert main(["generate", "--config", SMOKE, "--run", run,
                     "--set", f"data.source={folder / 'data.json'}",
                     "--set", f"generate.from_file={folder / f'{run}.json'}"]) == 0


@pytest.fixture
def two_runs(run_env, gpt2_tokenizer, monkeypatch):
    monkeypatch.setenv("EVALPIPE_JUDGE_RETRY_DELAY", "0.01")
    make_imported_runs(run_env, {"good": ["word17a word17b", "word18a word18b"],
                                 "half": ["word17a", ""]})
    return run_env


def item_id(results: Path, index: int) -> str:
    return json.loads((results / "good/generate/responses.jsonl").read_text()
                      .splitlines()[index])["id"]


def test_a_comparison_item_shows_every_model(two_runs, capsys):
    from standins import OllamaStandIn, book_judge

    with OllamaStandIn(book_judge) as ollama:
        for run in ("good", "half"):
            assert main(["judge", "--config", SMOKE, "--run", run,
                         "--set", f"data.source={two_runs / 'data.json'}",
                         "--set", f"judge.host={ollama.url}"]) == 0
    assert main(["compare", "good", "half", "--name", "pair", "--resamples", "100"]) == 0
    capsys.readouterr()
    results = two_runs / "results"
    first = item_id(results, 0)
    assert shown(capsys, "compare-pair", "--item", first) == f"""\
comparison pair (single mode), item {first} (1 of 2 in the test split)

-- the data record
id: {first}
instruction: Task 17
input: (none)
output: word17a word17b

-- 1. good (run good): scored, score 100
reason: (none)
response:
word17a word17b

-- 2. half (run half): scored, score 67
reason: (none)
response:
word17a
"""
    second = shown(capsys, "compare-pair", "--item", item_id(results, 1))
    assert "-- 2. half (run half): empty, score 0\nreason: (none)\nresponse:\n'' (empty)\n" in second
    # The leaderboard, without --item.
    board = shown(capsys, "compare-pair").splitlines()
    assert board[0] == "comparison pair (single mode, models, 2 items)"
    assert board[1].split() == ["rank", "model", "mean", "ci_low", "ci_high", "counted",
                                "items", "scored", "empty", "unparseable", "error"]
    assert board[2].split()[:2] == ["1", "good"] and board[3].split()[:2] == ["2", "half"]
    assert main(["show", "compare-pair", "--item", "ffff"]) == 1
    assert capsys.readouterr().err == "evalpipe: error: comparison pair: no item 'ffff'\n"


def test_a_together_comparison_item_reads_the_together_scores(two_runs, capsys):
    from standins import OllamaStandIn, together_judge

    with OllamaStandIn(together_judge) as ollama:
        assert main(["compare", "good", "half", "--name", "both", "--mode", "together",
                     "--resamples", "100", "--set", f"judge.host={ollama.url}"]) == 0
    capsys.readouterr()
    first = item_id(two_runs / "results", 0)
    out = shown(capsys, "compare-both", "--item", first)
    assert out.startswith(f"comparison both (together mode), item {first} (1 of 2 in the "
                          "test split)\n")
    together = {run: json.loads((two_runs / f"results/compare-both/together/scores/{run}.jsonl")
                                .read_text().splitlines()[0]) for run in ("good", "half")}
    for rank, run in ((1, "good"), (2, "half")):
        record = together[run]
        assert (f"-- {rank}. {run} (run {run}): scored, score {record['score']}, shown as "
                f"Response {record['position']}\nreason: {record['reason']}\n") in out
    assert {together["good"]["position"], together["half"]["position"]} == {1, 2}
    # Not judged alone: the runs have no judge/scores.jsonl, and show does not need one.
    assert not (two_runs / "results/good/judge/scores.jsonl").exists()


def test_length_is_in_words_when_an_item_has_no_token_count():
    from evalpipe.api import scores_frame

    records = [{**HAND_RECORDS[0], "response_tokens": 99},
               {**HAND_RECORDS[3], "response": None, "response_tokens": None,
                "stop_reason": "missing"}]
    table = show_module.item_table(scores_frame(records))
    # One scale for every row: whitespace words (the first response has 8), none for a missing
    # response, which also overlaps nothing.
    assert list(table["length"]) == [8, 0]
    assert list(table["f1"].round(2)) == [0.83, 0.0]
    assert show_module.length_measure(scores_frame(records)) == "words"
