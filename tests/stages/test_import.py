"""A run whose responses were imported stays imported: later commands on it (judge, aggregate,
evaluate, status, the make targets, which always pass --config) use the imported responses
without `--from` and without any model, as the run's generate/import.json remembers them."""

import json
import shutil
from pathlib import Path

import pytest
from standins import OllamaStandIn, book_judge, book_score

from evalpipe.cli import main
from evalpipe.io import read_jsonl

BOOK = Path(__file__).resolve().parents[2] / "configs" / "book.toml"  # what make passes


@pytest.fixture
def ollama():
    with OllamaStandIn(book_judge) as server:
        yield server


@pytest.fixture
def settings(instruction_data, ollama, gpt2_tokenizer) -> list[str]:
    """Everything a user of `make ... RUN=R` would have in their config: no import named."""
    return ["--set", f"data.source={instruction_data}", "--set", f"judge.host={ollama.url}"]


@pytest.fixture
def responses(run_env, book_responses) -> Path:
    """The book's responses, in a file of the user's own that the tests may change."""
    path = run_env / "mine.json"
    shutil.copyfile(book_responses, path)
    return path


def evalpipe(command: str, settings: list[str], *extra: str) -> int:
    return main([command, "--config", str(BOOK), "--run", "r", *settings, *extra])


def run_and_capture(capsys, command: str, settings: list[str], *extra: str) -> str:
    capsys.readouterr()
    assert evalpipe(command, settings, *extra) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def remembered(path: Path) -> str:
    record = Path.cwd() / "results/r/generate/import.json"
    return (f"generate: using the responses imported from {path} (remembered in {record}; "
            f"'evalpipe clean generate' forgets them)")


def test_later_commands_use_the_imported_responses_without_a_model(
        run_env, settings, responses, book_responses, ollama, capsys):
    out = run_and_capture(capsys, "generate", settings, "--from", str(responses),
                          "--response-key", "model_response")
    assert "generate: imported 110 of 110 responses" in out
    run = run_env / "results/r"
    record = json.loads((run / "generate/import.json").read_text())
    assert record == {"from_file": str(responses), "response_key": "model_response",
                      "allow_partial": False}

    out = run_and_capture(capsys, "judge", settings)
    assert out.splitlines()[0] == remembered(responses)
    assert "generate: up to date" in out and "judge: running (never run)" in out
    assert "finetune" not in out
    book = json.loads(book_responses.read_text())
    scores = read_jsonl(run / "judge/scores.jsonl")
    assert [s["score"] for s in scores] == [book_score(b["model_response"], b["output"])
                                           for b in book]

    out = run_and_capture(capsys, "aggregate", settings)
    assert out.splitlines()[0] == remembered(responses)
    assert "aggregate: running (never run)" in out and "finetune" not in out
    assert json.loads((run / "aggregate/summary.json").read_text())["items"] == 110

    out = run_and_capture(capsys, "status", settings)
    assert out.splitlines()[1] == remembered(responses)
    states = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert states == {"prepare": "done", "generate": "done", "judge": "done",
                      "aggregate": "done"}

    asked = len(ollama.requests)
    out = run_and_capture(capsys, "evaluate", settings)
    assert "running" not in out and "finetune" not in out
    assert len(ollama.requests) == asked
    assert not (run / "finetune").exists()
    # The run's resolved config says where its responses came from (compare reads it).
    assert f'from_file = "{responses}"' in (run / "config.toml").read_text()


def test_the_same_content_at_another_path_reruns_nothing(run_env, settings, responses, capsys):
    evalpipe("generate", settings, "--from", str(responses))
    evalpipe("judge", settings)
    elsewhere = run_env / "moved" / "theirs.json"
    elsewhere.parent.mkdir()
    shutil.copyfile(responses, elsewhere)
    out = run_and_capture(capsys, "judge", settings, "--set", f"generate.from_file={elsewhere}")
    assert "generate: up to date" in out and "judge: up to date" in out
    assert "running" not in out


def test_a_changed_response_reruns_generate_judge_and_aggregate(
        run_env, settings, responses, ollama, capsys):
    evalpipe("generate", settings, "--from", str(responses))
    evalpipe("aggregate", settings)
    book = json.loads(responses.read_text())
    book[3]["model_response"] = "Something else entirely."
    responses.write_text(json.dumps(book))

    out = run_and_capture(capsys, "aggregate", settings)
    assert f"generate: running (input from ({responses}) changed)" in out
    assert "judge: running" in out and "aggregate: running" in out
    scores = read_jsonl(run_env / "results/r/judge/scores.jsonl")
    assert scores[3]["response"] == "Something else entirely."
    assert scores[3]["score"] == book_score("Something else entirely.", book[3]["output"])

    # Imported again from another file with other content: the same.
    book[3]["model_response"] = "A third answer."
    other = run_env / "other.json"
    other.write_text(json.dumps(book))
    out = run_and_capture(capsys, "generate", settings, "--from", str(other))
    assert "generate: running (input from" in out
    out = run_and_capture(capsys, "aggregate", settings)
    assert out.splitlines()[0] == remembered(other)
    assert "judge: running" in out and "aggregate: running" in out


def test_an_import_file_that_is_gone_is_replaced_by_the_copy_kept_in_the_run(
        run_env, settings, responses, capsys):
    evalpipe("generate", settings, "--from", str(responses))
    evalpipe("judge", settings)
    responses.unlink()
    out = run_and_capture(capsys, "aggregate", settings)
    kept = run_env / "results/r/generate/imported-responses.json"
    assert out.splitlines()[0] == (
        f"generate: using the responses imported from {responses}, which is gone: the copy "
        f"kept in {kept} (remembered in {kept.parent / 'import.json'}; "
        f"'evalpipe clean generate' forgets them)")
    assert "generate: up to date" in out and "judge: up to date" in out
    assert "aggregate: running" in out
    record = (run_env / "results/r/generate/import.json").read_text()
    assert f'from_file = "{responses}"' in (run_env / "results/r/config.toml").read_text()

    # Imported again from the copy, the run still names the original file.
    out = run_and_capture(capsys, "generate", settings, "--force")
    assert f"generate: imported 110 of 110 responses from {kept}" in out
    assert (run_env / "results/r/generate/import.json").read_text() == record
    out = run_and_capture(capsys, "judge", settings)
    assert "generate: up to date" in out and "judge: up to date" in out

    # A copy stands in only for the file it was made from.
    other = run_env / "other.json"
    assert evalpipe("generate", settings, "--from", str(other)) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: generate: input from not found: {other}\n")


def test_clean_generate_forgets_the_import(run_env, settings, responses, capsys):
    evalpipe("generate", settings, "--from", str(responses))
    assert evalpipe("clean", settings, "generate") == 0
    out = run_and_capture(capsys, "status", settings)
    assert "imported" not in out
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["prepare", "done"], ["finetune", "missing"], ["generate", "missing"],
        ["judge", "missing"], ["aggregate", "missing"]]


def test_an_explicit_setting_wins_over_the_remembered_import(run_env, settings, responses,
                                                             capsys):
    evalpipe("generate", settings, "--from", str(responses))
    # generate.from_file = "" given on the command line: generate with the model again.
    out = run_and_capture(capsys, "status", settings, "--set", 'generate.from_file=""')
    assert "imported" not in out
    assert out.splitlines()[2].split()[:2] == ["finetune", "missing"]
    assert out.splitlines()[3].startswith("generate   stale    configuration changed")
    # Another response key on the command line replaces the remembered one.
    out = run_and_capture(capsys, "status", settings, "--set", "generate.response_key=output")
    assert out.splitlines()[1] == remembered(responses)
    assert "generate   stale    configuration changed: response_key" in out


def test_a_failed_import_is_remembered_and_fails_again_instead_of_fine_tuning(
        run_env, settings, book_responses, capsys):
    some = run_env / "some.jsonl"
    some.write_text("".join(json.dumps(r) + "\n"
                            for r in json.loads(book_responses.read_text())[:100]))
    assert evalpipe("generate", settings, "--from", str(some)) == 1
    first = capsys.readouterr().err
    assert "10 test records have no response" in first
    assert evalpipe("judge", settings) == 1
    assert capsys.readouterr().err == first
    assert not (run_env / "results/r/finetune").exists()
    out = run_and_capture(capsys, "generate", settings, "--allow-partial")
    assert out.splitlines()[0] == remembered(some)
    assert "generate: imported 100 of 110 responses" in out


def test_generating_with_a_model_forgets_the_import(run_env, settings, responses, capsys):
    evalpipe("generate", settings, "--from", str(responses))
    random_model = ["--set", "generate.model=base", "--set", "model.base=random",
                    "--set", "model.emb_dim=64", "--set", "model.n_layers=2",
                    "--set", "model.n_heads=4", "--set", "model.context_length=256",
                    "--set", "generate.max_new_tokens=2"]
    out = run_and_capture(capsys, "generate", settings, *random_model,
                          "--set", 'generate.from_file=""')
    assert "imported" not in out and "generate: 110 responses" in out
    assert sorted(p.name for p in (run_env / "results/r/generate").iterdir()) == [
        "manifest.json", "responses.jsonl"]
    # Nothing names the import any more, on the command line or in the run.
    out = run_and_capture(capsys, "status", settings, *random_model)
    assert "imported" not in out and "generate   done" in out
