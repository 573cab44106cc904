"""The stage cache, driven through the command line as a user drives it."""

import json
from pathlib import Path

import pytest

from evalpipe.cli import main
from evalpipe.io import read_jsonl, sha256_file


def records(n: int = 40) -> list[dict]:
    return [{"instruction": f"Task {i}", "input": "", "output": f"Answer {i}"} for i in range(n)]


@pytest.fixture
def source(run_env) -> Path:
    path = run_env / "data.json"
    path.write_text(json.dumps(records()))
    return path


@pytest.fixture
def responses(run_env, gpt2_tokenizer) -> Path:
    """Responses made elsewhere for the 4 test records (40 * 10%), in another order."""
    path = run_env / "responses.json"
    path.write_text(json.dumps([{**r, "model_response": f"Reply {i}"}
                                for i, r in reversed(list(enumerate(records()))[34:38])]))
    return path


def evalpipe(*args: str) -> int:
    return main([*args, "--config", "none.toml", "--run", "r"])


@pytest.fixture
def no_config(run_env):
    (run_env / "none.toml").write_text("")


def manifest(run_env: Path, stage: str) -> dict:
    return json.loads((run_env / f"results/r/{stage}/manifest.json").read_text())


def status_lines(capsys, *overrides: str) -> dict[str, str]:
    capsys.readouterr()
    assert evalpipe("status", "--set", f"data.source={Path('data.json').resolve()}",
                    *overrides) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    return {line.split()[0]: " ".join(line.split()[1:]) for line in lines}


def test_prepare_twice_does_the_work_once(run_env, source, no_config, capsys):
    assert evalpipe("prepare", "--set", f"data.source={source}") == 0
    assert "prepare: running (never run)" in capsys.readouterr().out
    first = manifest(run_env, "prepare")
    assert evalpipe("prepare", "--set", f"data.source={source}") == 0
    assert capsys.readouterr().out.startswith("prepare: up to date (finished ")
    assert manifest(run_env, "prepare") == first
    out = run_env / "results/r/prepare"
    assert first["inputs"] == {"source": sha256_file(source)}
    assert first["outputs"] == {name: sha256_file(out / name) for name in
                                ("train.jsonl", "val.jsonl", "test.jsonl", "report.json")}
    assert set(first) >= {"config_hash", "config", "evalpipe_version", "packages", "started",
                          "finished"}
    assert first["config"] == {"split": "book", "train_fraction": 0.85, "test_fraction": 0.1}
    assert "python" in first["packages"]
    assert (run_env / "results/r/config.toml").read_text().startswith("[data]\n")


def test_force_reruns_one_stage(run_env, source, no_config, capsys):
    evalpipe("prepare", "--set", f"data.source={source}")
    capsys.readouterr()
    evalpipe("prepare", "--force", "--set", f"data.source={source}")
    assert "prepare: running (--force)" in capsys.readouterr().out


def test_a_stage_first_runs_the_stages_it_needs(run_env, source, responses, no_config, capsys):
    assert evalpipe("generate", "--from", str(responses), "--set", f"data.source={source}") == 0
    out = capsys.readouterr().out
    # Importing needs no model, so finetune is not among the stages run.
    assert "prepare: running (never run)" in out and "finetune" not in out
    assert "generate: imported 4 of 4 responses" in out
    made = read_jsonl(run_env / "results/r/generate/responses.jsonl")
    assert [r["response"] for r in made] == ["Reply 34", "Reply 35", "Reply 36", "Reply 37"]


def test_editing_one_source_record_reruns_prepare_and_marks_later_stages_stale(
        run_env, source, responses, no_config, capsys):
    evalpipe("generate", "--from", str(responses), "--set", f"data.source={source}")
    imported = ("--set", f"generate.from_file={responses}")
    assert status_lines(capsys, *imported)["generate"].startswith("done")
    edited = records()
    edited[0]["output"] = "A better answer"
    source.write_text(json.dumps(edited))
    status = status_lines(capsys, *imported)
    assert status["prepare"] == f"stale input source ({source}) changed"
    assert status["generate"] == "stale prepare is stale"
    evalpipe("prepare", "--set", f"data.source={source}")
    assert "prepare: running (input source" in capsys.readouterr().out
    # The edited record is in train: test.jsonl came out identical, so the import is
    # still up to date.
    assert status_lines(capsys, *imported)["generate"].startswith("done")


def test_a_changed_setting_reruns_only_the_stages_that_use_it(
        run_env, source, responses, no_config, capsys):
    generate = ["generate", "--from", str(responses), "--set", f"data.source={source}"]
    evalpipe(*generate)
    capsys.readouterr()
    evalpipe(*generate, "--set", "generate.allow_partial=true")
    out = capsys.readouterr().out
    assert "prepare: up to date" in out
    assert "generate: running (configuration changed: allow_partial)" in out
    evalpipe(*generate, "--set", "data.train_fraction=0.8")
    out = capsys.readouterr().out
    assert "prepare: running (configuration changed: train_fraction)" in out


def test_prepare_is_not_rerun_for_settings_that_cannot_change_its_split(
        run_env, source, no_config, capsys):
    """The book split keeps the file order (no seed), and no split uses the prompt template
    (fine-tuning and generation do, and key on it)."""
    evalpipe("prepare", "--set", f"data.source={source}")
    assert status_lines(capsys, "--set", "data.seed=7", "--set", "data.template=phi3")[
        "prepare"].startswith("done")
    shuffled = ("--set", "data.split=shuffle")
    evalpipe("prepare", "--set", f"data.source={source}", *shuffled)
    assert manifest(run_env, "prepare")["config"] == {
        "split": "shuffle", "seed": 123, "train_fraction": 0.85, "test_fraction": 0.1}
    assert status_lines(capsys, *shuffled, "--set", "data.template=phi3")[
        "prepare"].startswith("done")
    assert status_lines(capsys, *shuffled, "--set", "data.seed=7")["prepare"] == (
        "stale configuration changed: seed")


def test_an_output_changed_by_hand_makes_the_stage_stale(run_env, source, no_config, capsys):
    evalpipe("prepare", "--set", f"data.source={source}")
    with open(run_env / "results/r/prepare/test.jsonl", "a") as handle:
        handle.write("\n")
    assert status_lines(capsys)["prepare"] == "stale output test.jsonl was changed by hand"


def test_a_failed_stage_leaves_no_manifest(run_env, source, no_config, capsys):
    evalpipe("prepare", "--set", f"data.source={source}")
    bad = run_env / "bad.json"
    bad.write_text(json.dumps(records() + [{"instruction": "x", "input": ""}]))
    assert evalpipe("prepare", "--set", f"data.source={bad}") == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: {bad}: record 40: field 'output' is missing\n")
    # The old outputs are still there, but nothing vouches for them any more.
    assert not (run_env / "results/r/prepare/manifest.json").exists()
    assert status_lines(capsys)["prepare"] == "missing never run"


def test_clean_removes_a_stage(run_env, source, no_config, capsys):
    evalpipe("prepare", "--set", f"data.source={source}")
    assert evalpipe("clean", "prepare") == 0
    assert not (run_env / "results/r/prepare").exists()


def test_errors_are_one_line(run_env, no_config, capsys):
    assert evalpipe("prepare", "--set", "finetune.epochs=x") == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: --set: finetune.epochs: expected integer, got str 'x'\n")
    assert main(["prepare", "--config", "missing.toml"]) == 1
    assert capsys.readouterr().err == "evalpipe: error: missing.toml: config file not found\n"


def test_run_name_defaults_to_the_config_files_name(run_env, source, capsys):
    (run_env / "mine.toml").write_text(f'[data]\nsource = "{source}"\n')
    assert main(["prepare", "--config", "mine.toml"]) == 0
    assert (run_env / "results/mine/prepare/test.jsonl").exists()


# -- a stage's identity and an incomplete stage (the hooks `identity` and `incomplete`) ------

def test_a_changed_identity_value_makes_the_stage_stale(run_env, source, no_config, capsys,
                                                        monkeypatch):
    """A stage module's `identity(config, paths)` gives values that decide its outputs besides
    its configuration and inputs (the judge: the served model's digest); the manifest records
    them, and a changed one makes the stage stale."""
    from evalpipe.manifest import Unchecked
    from evalpipe.stages import prepare as prepare_stage

    served = {"weights": "a" * 64, "rule": 1}
    monkeypatch.setattr(prepare_stage, "identity", lambda config, paths: dict(served),
                        raising=False)
    evalpipe("prepare", "--set", f"data.source={source}")
    assert manifest(run_env, "prepare")["identity"] == {"weights": "a" * 64, "rule": 1}
    assert status_lines(capsys)["prepare"].startswith("done finished ")
    served["weights"] = "b" * 64
    # A SHA-256 shows its first 12 hex digits, as `ollama list` shows a model's.
    assert status_lines(capsys)["prepare"] == (
        "stale weights changed: aaaaaaaaaaaa -> bbbbbbbbbbbb")
    served["rule"] = 2
    assert status_lines(capsys)["prepare"] == (
        "stale weights changed: aaaaaaaaaaaa -> bbbbbbbbbbbb, rule changed: 1 -> 2")
    capsys.readouterr()
    evalpipe("prepare", "--set", f"data.source={source}")
    assert ("prepare: running (weights changed: aaaaaaaaaaaa -> bbbbbbbbbbbb, rule changed: "
            "1 -> 2)") in capsys.readouterr().out
    assert status_lines(capsys)["prepare"].startswith("done finished ")

    # A value that cannot be found out now is not guessed: the stage stays done, and says so.
    served["weights"] = Unchecked("the server is down")
    line = status_lines(capsys)["prepare"]
    assert line.startswith("done finished ")
    assert line.endswith("; weights not checked: the server is down")
    capsys.readouterr()
    evalpipe("prepare", "--set", f"data.source={source}")
    out = capsys.readouterr().out
    assert out.startswith("prepare: up to date (finished ")
    assert "; weights not checked: the server is down)" in out
    # ... but a value that did change still counts.
    served["rule"] = 3
    assert status_lines(capsys)["prepare"] == "stale rule changed: 2 -> 3"


def test_a_manifest_without_identity_values_is_stale(run_env, source, no_config, capsys,
                                                     monkeypatch):
    from evalpipe.stages import prepare as prepare_stage

    evalpipe("prepare", "--set", f"data.source={source}")
    monkeypatch.setattr(prepare_stage, "identity", lambda config, paths: {"rule": 1},
                        raising=False)
    assert status_lines(capsys)["prepare"] == "stale rule changed: not recorded -> 1"


def test_an_incomplete_stage_runs_again_and_makes_later_stages_stale(
        run_env, source, responses, no_config, capsys, monkeypatch):
    """A stage module's `incomplete(config, paths)`, asked after a run, says what is missing
    (the judge: items that ended in error); the stage is then neither done nor stale but
    incomplete, runs again, and the stages after it are stale."""
    from evalpipe.stages import prepare as prepare_stage

    missing = {"text": "2 errors"}
    monkeypatch.setattr(prepare_stage, "incomplete", lambda config, paths: missing["text"],
                        raising=False)
    imported = ("--set", f"generate.from_file={responses}")
    evalpipe("generate", "--from", str(responses), "--set", f"data.source={source}")
    assert manifest(run_env, "prepare")["incomplete"] == "2 errors"
    status = status_lines(capsys, *imported)
    assert status["prepare"] == "incomplete 2 errors"
    assert status["generate"] == "stale prepare is incomplete"
    missing["text"] = None
    capsys.readouterr()
    evalpipe("prepare", "--set", f"data.source={source}")
    assert "prepare: running (incomplete: 2 errors)" in capsys.readouterr().out
    assert manifest(run_env, "prepare")["incomplete"] is None
    status = status_lines(capsys, *imported)
    assert status["prepare"].startswith("done finished ")
    assert status["generate"].startswith("done finished ")
