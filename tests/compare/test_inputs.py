"""`evalpipe compare` on runs it cannot read and arguments it refuses: each a one-line error
naming the file, run or argument, with nothing written."""

from __future__ import annotations

import json

from compare_helpers import ITEMS, judged, write_run

from evalpipe.cli import main
from evalpipe.config import RunConfig
from evalpipe.io import write_json
from evalpipe.records import content_id


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
