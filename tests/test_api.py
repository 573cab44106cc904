"""The notebook interface (issue #15): `import evalpipe` stays light, `run_stage` runs a stage as
the command line does (the book's responses imported, the stand-in Ollama judge through the
real client), and the loaders give DataFrames with known columns and dtypes; errors are the
command line's one-line messages, raised as EvalpipeError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from standins import OllamaStandIn, book_judge, book_score, unused_url

import evalpipe
from evalpipe.cli import main
from evalpipe.errors import EvalpipeError

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "configs/smoke.toml")

SCORE_COLUMNS = {
    "id": "string", "instruction": "string", "input": "string", "output": "string",
    "response": "string", "prompt_tokens": "Int64", "response_tokens": "Int64",
    "stop_reason": "string", "seconds": "float64", "state": "category", "score": "Int64",
    "reason": "string", "raw_reply": "string", "error": "string", "judge_backend": "string",
    "judge_model": "string", "judge_digest": "string", "judge_template": "string",
    "prompt_sha256": "string", "judge_seconds": "float64", "cached": "boolean",
}


def test_import_evalpipe_stays_light():
    code = ("import sys, evalpipe; "
            "print(sorted(m for m in sys.modules if m.startswith('evalpipe') or m == 'pandas')); "
            "run_stage = evalpipe.run_stage; "
            "print('evalpipe.api' in sys.modules, 'pandas' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, env={"PYTHONPATH": str(REPO)}, check=True)
    assert result.stdout.splitlines() == ["['evalpipe']", "True True"]


def test_the_lazy_names():
    from evalpipe import api

    assert evalpipe.load_scores is api.load_scores
    assert evalpipe.run_stage is api.run_stage
    assert evalpipe.EvalpipeError is EvalpipeError
    assert {"load_scores", "load_summary", "load_leaderboard", "run_stage"} <= set(dir(evalpipe))
    with pytest.raises(AttributeError, match="module 'evalpipe' has no attribute 'nothing'"):
        evalpipe.nothing  # noqa: B018


@pytest.fixture
def ollama():
    with OllamaStandIn(book_judge) as server:
        yield server


@pytest.fixture
def book(run_env, instruction_data, book_responses, ollama, gpt2_tokenizer) -> list[str]:
    """The overrides of the book's responses, imported into the smoke config, judged by the
    stand-in."""
    return [f"data.source={instruction_data}", f"generate.from_file={book_responses}",
            f"judge.host={ollama.url}"]


def test_run_stage_judges_and_load_scores_reads_the_records(run_env, book, book_responses,
                                                            ollama):
    outputs = evalpipe.run_stage("judge", config=SMOKE, run="book", overrides=book)
    judge = run_env / "results/book/judge"  # $EVALPIPE_RESULTS, as for the command line
    assert outputs == {"scores.jsonl": judge / "scores.jsonl",
                       "canaries.jsonl": judge / "canaries.jsonl",
                       "summary.json": judge / "summary.json"}
    assert all(path.exists() for path in outputs.values())
    assert len(ollama.requests) == 110 + 10  # items and canaries, as `evalpipe judge` asks

    scores = evalpipe.load_scores("book")
    assert {column: str(dtype) for column, dtype in scores.dtypes.items()} == SCORE_COLUMNS
    assert list(scores["state"].cat.categories) == ["scored", "empty", "unparseable", "error"]
    records = [json.loads(line) for line in outputs["scores.jsonl"].read_text().splitlines()]
    assert list(scores["id"]) == [r["id"] for r in records]  # test order, one row per item
    answers = json.loads(book_responses.read_text())
    assert list(scores["score"]) == [book_score(a["model_response"], a["output"])
                                     for a in answers]
    assert scores["seconds"].isna().all()  # imported: no generation time
    assert scores["stop_reason"].eq("imported").all()

    # A second call runs nothing and asks nothing, as a second `evalpipe judge` would.
    asked = len(ollama.requests)
    assert evalpipe.run_stage("judge", config=SMOKE, run="book", overrides=book) == outputs
    assert len(ollama.requests) == asked


def test_repeats_become_columns(book):
    evalpipe.run_stage("judge", config=SMOKE, run="twice", overrides=[*book, "judge.repeats=2"])
    scores = evalpipe.load_scores("twice")
    repeats = {column: str(dtype) for column, dtype in scores.dtypes.items()
               if column.startswith("repeat")}
    assert repeats == {"repeat_1_seed": "Int64", "repeat_1_state": "category",
                       "repeat_1_score": "Int64", "repeat_1_raw_reply": "string",
                       "repeat_2_seed": "Int64", "repeat_2_state": "category",
                       "repeat_2_score": "Int64", "repeat_2_raw_reply": "string"}
    assert list(scores["repeat_1_seed"].unique()) == [123]
    assert list(scores["repeat_2_seed"].unique()) == [124]
    assert scores["repeat_1_score"].equals(scores["score"])


def test_run_stage_evaluate_and_load_summary(book):
    outputs = evalpipe.run_stage("evaluate", config=SMOKE, run="book", overrides=book)
    assert set(outputs) == {"summary.json", "summary.md", "report.html", "scores_histogram.png",
                            "score_vs_length.png", "loss_curves.png"}
    summary = evalpipe.load_summary("book")
    assert summary == json.loads(outputs["summary.json"].read_text())
    assert summary["items"] == 110 and summary["states"]["scored"] == 110


def test_load_leaderboard(book, capsys):
    evalpipe.run_stage("judge", config=SMOKE, run="book", overrides=book)
    evalpipe.run_stage("judge", config=SMOKE, run="rubric",
                       overrides=[*book, "judge.template=rubric"])
    assert main(["compare", "book", "rubric", "--name", "templates", "--resamples", "100"]) == 0
    board_json = json.loads(Path("results/compare-templates/leaderboard.json").read_text())

    board = evalpipe.load_leaderboard("templates")
    assert evalpipe.load_leaderboard("compare-templates").equals(board)
    assert list(board["model"]) == ["book", "rubric"]
    assert list(board["mean"]) == [row["mean"] for row in board_json["models"]]
    assert list(board["ci_low"]) == [row["ci"][0] for row in board_json["models"]]
    assert list(board["ci_high"]) == [row["ci"][1] for row in board_json["models"]]
    assert list(board["states_scored"]) == [110, 110]
    assert list(board["judge_template"]) == ["book", "rubric"]
    assert str(board["ci_low"].dtype) == "Float64" and "ci" not in board.columns
    assert board.attrs["comparison"] == "judges"  # the same responses: no ranking
    assert board["rank"].isna().all()
    assert board.attrs["items"] == 110 and board.attrs["name"] == "templates"

    # `evalpipe show` of a judge comparison: no ranks before the names.
    first = evalpipe.load_scores("book").iloc[0]
    capsys.readouterr()
    assert main(["show", "compare-templates", "--item", first["id"]]) == 0
    assert (f"\n-- book (run book): scored, score {first['score']}\nreason: (none)\n"
            in capsys.readouterr().out)


def test_errors_are_the_command_lines(run_env, book, capsys):
    with pytest.raises(EvalpipeError) as raised:
        evalpipe.load_scores("book")
    assert str(raised.value) == f"no run 'book': {run_env / 'results/book'} is not a folder"
    with pytest.raises(EvalpipeError, match=r"^unknown stage 'train' \(stages: prepare, "):
        evalpipe.run_stage("train", config=SMOKE)
    with pytest.raises(EvalpipeError, match=r"^judge.repeats"):
        evalpipe.run_stage("judge", config=SMOKE, overrides=["judge.repeats=0"])

    evalpipe.run_stage("generate", config=SMOKE, run="book", overrides=book)
    with pytest.raises(EvalpipeError) as raised:
        evalpipe.load_summary("book")
    assert str(raised.value) == (
        f"run 'book' is not aggregated: {run_env / 'results/book/aggregate/summary.json'} not "
        "found ('evalpipe aggregate --run book' makes it)")
    with pytest.raises(EvalpipeError, match=r"^no comparison 'nothing': .*compare-nothing/"
                                            r"leaderboard.json not found"):
        evalpipe.load_leaderboard("nothing")

    # A judge that is down: the same line the command line prints.
    down = [*book[:2], f"judge.host={unused_url()}"]
    with pytest.raises(EvalpipeError) as raised:
        evalpipe.run_stage("judge", config=SMOKE, run="book", overrides=down)
    capsys.readouterr()
    args = ["judge", "--config", SMOKE, "--run", "book"]
    assert main([*args, *(part for o in down for part in ("--set", o))]) == 1
    assert capsys.readouterr().err == f"evalpipe: error: {raised.value}\n"
    assert "\n" not in str(raised.value)


def test_load_scores_of_a_dataframe_without_optional_fields():
    from evalpipe.api import scores_frame

    frame = scores_frame([{"id": "a", "instruction": "i", "input": "", "output": "o",
                           "response": None, "state": "error", "score": None}])
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "id": "string", "instruction": "string", "input": "string", "output": "string",
        "response": "string", "state": "category", "score": "Int64"}
    assert frame["response"].isna().all() and frame["score"].isna().all()
    assert isinstance(frame, pd.DataFrame)
