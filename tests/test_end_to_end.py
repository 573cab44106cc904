"""The whole pipeline on real text: the book's 110 test responses imported through generate,
judged by the stand-in Ollama server through the real `ollama` client, then aggregated."""

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from standins import OllamaStandIn, book_judge, book_score

from evalpipe.cli import main
from evalpipe.io import read_jsonl

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.toml"


@pytest.fixture
def ollama():
    with OllamaStandIn(book_judge) as server:
        yield server


def evaluate(*settings: str, command: str = "evaluate") -> int:
    args = [*command.split(), "--config", str(SMOKE), "--run", "book"]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


@pytest.fixture
def book_settings(instruction_data, book_responses, ollama, gpt2_tokenizer) -> list[str]:
    return [f"data.source={instruction_data}", f"generate.from_file={book_responses}",
            f"judge.host={ollama.url}"]


class Rows(HTMLParser):
    """The report's item rows (data-id) and summary numbers (data-key/data-value)."""

    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-id" in attrs:
            self.ids.append(attrs["data-id"])
        if "data-key" in attrs and "data-value" in attrs:
            self.values[attrs["data-key"]] = attrs["data-value"]


def test_book_responses_judged_and_aggregated(run_env, book_settings, book_responses, ollama,
                                              capsys):
    assert evaluate(*book_settings) == 0
    run = run_env / "results/book"
    book = json.loads(book_responses.read_text())

    scores = read_jsonl(run / "judge/scores.jsonl")
    assert len(scores) == 110
    assert [s["response"] for s in scores] == [b["model_response"] for b in book]
    # The stand-in judge scores 100 x token F1 of response against reference, so every
    # score is known in advance; none was lost or reordered on the way.
    expected = [book_score(b["model_response"], b["output"]) for b in book]
    assert [s["score"] for s in scores] == expected
    assert {s["state"] for s in scores} == {"scored"}
    assert {(s["judge_backend"], s["judge_model"]) for s in scores} == {("ollama",
                                                                       "llama3:latest")}
    # One request per item and per canary (5 good, 5 bad), with the book's options.
    assert len(ollama.requests) == 110 + 10
    assert all(r["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
               for r in ollama.requests)

    summary = json.loads((run / "aggregate/summary.json").read_text())
    assert summary["items"] == 110
    assert summary["states"] == {"scored": 110, "empty": 0, "unparseable": 0, "error": 0}
    assert summary["score"]["mean"] == pytest.approx(sum(expected) / 110, abs=1e-4)
    low, high = summary["score"]["ci"]
    assert low < summary["score"]["mean"] < high

    report = Rows()
    report.feed((run / "aggregate/report.html").read_text())
    assert sorted(report.ids) == sorted(s["id"] for s in scores)
    assert float(report.values["score.mean"]) == summary["score"]["mean"]
    assert float(report.values["states.scored"]) == 110

    # Nothing changed: a second evaluate runs nothing and asks the judge nothing.
    capsys.readouterr()
    asked = len(ollama.requests)
    assert evaluate(*book_settings) == 0
    out = capsys.readouterr().out
    assert "running" not in out
    assert all(f"{stage}: up to date" in out for stage in ("prepare", "generate", "judge",
                                                            "aggregate"))
    assert len(ollama.requests) == asked


def test_changing_only_judge_settings_reruns_only_judge_and_aggregate(
        run_env, book_settings, ollama, capsys):
    assert evaluate(*book_settings) == 0
    before = {stage: (run_env / f"results/book/{stage}/manifest.json").read_text()
              for stage in ("prepare", "generate", "judge", "aggregate")}
    capsys.readouterr()
    assert evaluate(*book_settings, "judge.template=rubric") == 0
    out = capsys.readouterr().out
    assert "prepare: up to date" in out and "generate: up to date" in out
    assert "judge: running" in out and "aggregate: running" in out
    after = {stage: (run_env / f"results/book/{stage}/manifest.json").read_text()
             for stage in before}
    assert after["prepare"] == before["prepare"] and after["generate"] == before["generate"]
    assert after["judge"] != before["judge"] and after["aggregate"] != before["aggregate"]
    scores = read_jsonl(run_env / "results/book/judge/scores.jsonl")
    assert {s["judge_template"] for s in scores} == {"rubric"}
    # The rubric's 1..5 grades map onto 0..100.
    assert {s["score"] for s in scores} <= {0, 25, 50, 75, 100}


def test_a_judge_that_is_down_stops_before_the_first_item(run_env, instruction_data,
                                                          book_responses, gpt2_tokenizer,
                                                          capsys):
    from standins import unused_url

    url = unused_url()
    # Past the check before long work (tests/test_first_run.py), the judge stage's own.
    assert evaluate(f"data.source={instruction_data}", f"generate.from_file={book_responses}",
                    f"judge.host={url}", command="evaluate --no-judge-check") == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("evalpipe: error: ") and "\n" not in error
    assert url in error and "ollama serve" in error
    assert (run_env / "results/book/generate/responses.jsonl").exists()  # finished work kept
    assert not (run_env / "results/book/judge/scores.jsonl").exists()
