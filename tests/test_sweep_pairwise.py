"""Several base models in one config with judge.mode = "pairwise" (evalpipe/sweep.py): each
sub-run is fine-tuned and generated on its own, then all are judged two at a time
(evalpipe/judging/pairwise.py) and compared into results/compare-<run>/, ranked by Bradley-Terry
rating. The tiny checkpoints and the config are test_sweep.py's; the stand-in judge answers
pairwise prompts by word overlap (the mock judge's rule) over real HTTP."""

from __future__ import annotations

import json

from standins import OllamaStandIn, prompt_of, unused_url
from test_sweep import tiny_checkpoints, write_config

from evalpipe.cli import main
from evalpipe.io import read_jsonl
from evalpipe.judging.backends.mock import pairwise_reply


def overlap_pairwise(body: dict) -> str:
    return pairwise_reply(prompt_of(body), structured=True)


def test_evaluate_compares_the_bases_pairwise(run_env, gpt2_tokenizer, capsys):
    base_a, base_b = tiny_checkpoints(run_env)
    results = run_env / "results"
    runs = ["duo--tiny-a", "duo--tiny-b"]
    with OllamaStandIn(overlap_pairwise) as standin:
        config = write_config(run_env, [base_a, base_b], standin.url)
        text = config.read_text().replace('mode = "together"', 'mode = "pairwise"')
        config.write_text(text)
        assert main(["evaluate", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "== compare-duo (2 base models, judge.mode = pairwise)\n" in out
        for run in runs:
            assert (results / run / "generate/responses.jsonl").exists()
            assert not (results / run / "judge").exists()  # judged pairwise, not alone
        questions = read_jsonl(results / "compare-duo/pairwise/questions.jsonl")
        assert len(questions) == 10 * 2  # one pair, 10 items, both orders
        asked = sum(q["state"] != "empty" for q in questions)
        assert len(standin.requests) == asked
        board = json.loads((results / "compare-duo/leaderboard.json").read_text())
        assert (board["name"], board["mode"], board["runs"]) == ("duo", "pairwise", runs)
        assert sorted(row["model"] for row in board["models"]) == runs
        assert {row["model"]: row["base_model"] for row in board["models"]} == {
            "duo--tiny-a": base_a, "duo--tiny-b": base_b}
        assert board["pairwise"]["anchor"] == "duo--tiny-a"

        # Again, with the judge down: nothing runs, nothing is asked.
        down = write_config(run_env, [base_a, base_b], unused_url(), "down.toml")
        down.write_text(down.read_text().replace('mode = "together"', 'mode = "pairwise"'))
        assert main(["evaluate", "--config", str(down), "--run", "duo"]) == 0
        again = capsys.readouterr().out
        assert "pairwise: up to date" in again and ": running (" not in again
        assert len(standin.requests) == asked

        assert main(["status", "--config", str(config)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[8] == f"comparison compare-duo in {results}/compare-duo"
        assert lines[9].split()[:2] == ["pairwise", "done"]
        assert lines[10].split()[:2] == ["compare", "done"]

        # judge and aggregate are not for runs judged pairwise.
        assert main(["judge", "--config", str(config)]) == 1
        assert capsys.readouterr().err == (
            "evalpipe: error: judge: with sub-runs and judge.mode = 'pairwise' the runs are "
            "judged pairwise by 'evalpipe evaluate'\n")
