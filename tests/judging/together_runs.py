"""Three runs for the together-mode tests (tests/judging/test_together_*.py), and the helpers
that read what `evalpipe compare --mode together` wrote. The fixtures `made_runs` and `runs`
are in tests/judging/conftest.py.

Three runs, a, b and c, import responses (`generate --from`, no model needed) for the ten test
items of a 100-record data set (the smoke config's book split: records 85..94). The stand-in's
`together_judge` (and the mock judge) scores every response by itself, round(100 * token F1) against the reference,
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
from pathlib import Path

from standins import parse_together_prompt, prompt_of

from evalpipe.cli import main
from evalpipe.io import read_jsonl

REPO = Path(__file__).resolve().parents[2]
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


def import_runs(folder: Path, respond, models, records: int, items) -> None:
    """Runs `models` under folder/results importing their responses to the `items` (record
    numbers) of a data set of `records` records; the data and response files in folder.
    `respond(model, i)` gives the responses (None: not imported, an empty response)."""
    data = [{"instruction": f"Task {i}", "input": f"input {i}" if i % 2 else "",
             "output": output_of(i)} for i in range(records)]
    (folder / "data.json").write_text(json.dumps(data))
    for model in models:
        imported = [{**data[i], "model_response": respond(model, i)} for i in items
                    if respond(model, i) is not None]
        (folder / f"{model}.json").write_text(json.dumps(imported))
        assert main(["generate", "--config", SMOKE, "--run", model,
                     "--results", str(folder / "results"),
                     "--set", f"data.source={folder / 'data.json'}",
                     "--set", f"generate.from_file={folder / f'{model}.json'}",
                     "--set", "generate.allow_partial=true"]) == 0


def make_runs(folder: Path, respond=response_of) -> None:
    """Runs a, b and c under folder/results, their data and response files in folder;
    `respond(model, i)` gives the responses (response_of unless told)."""
    import_runs(folder, respond, MODELS, 100, ITEMS)


# The judge of the tests that need some judge but no HTTP: the in-process mock judge, which
# scores as together_judge does.
MOCK_JUDGE = ("judge.backend='mock'", "judge.model='overlap'")


def compare(url: str | None, *settings: str, runs=MODELS, extra=()) -> int:
    """compare --mode together of `runs` with the judge at `url` (None: no judge.host, for
    the mock judge) and --set for each setting."""
    args = ["compare", *runs, "--mode", "together", "--resamples", "200",
            *(["--set", f"judge.host={url}"] if url is not None else []), *extra]
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
