"""judge.pull: an Ollama server that lacks the judge model pulls it (the ollama client's streamed
pull, with a progress bar) before judging; `false`, a model the registry does not have, and
`status` (which never pulls) each end as they should. Against the stand-in's /api/pull."""

from __future__ import annotations

import hashlib
from pathlib import Path

from standins import OllamaStandIn

from evalpipe.cli import main
from evalpipe.io import read_jsonl

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.toml"
DIGEST = hashlib.sha256(b"llama3 as pulled").hexdigest()


def judge(run_env, instruction_data, book_responses, url, *settings, command="judge"):
    return main([command, "--config", str(SMOKE), "--run", "pulled",
                 "--set", f"data.source={instruction_data}",
                 "--set", f"generate.from_file={book_responses}",
                 "--set", f"judge.host={url}", "--set", "judge.canaries=false",
                 *(part for setting in settings for part in ("--set", setting))])


def test_a_missing_judge_model_is_pulled_then_judged(run_env, instruction_data, book_responses,
                                                     gpt2_tokenizer, capsys):
    with OllamaStandIn(models={}, pullable={"llama3:latest": DIGEST}) as standin:
        assert judge(run_env, instruction_data, book_responses, standin.url) == 0
        assert standin.pulls == ["llama3"]
        assert standin.models == {"llama3:latest": DIGEST}
    err = capsys.readouterr().err
    assert f"judge: pulling llama3 into Ollama at {standin.url} (judge.pull = true)\n" in err
    assert "pull abababababab: 100%" in err  # the layer's progress bar, finished
    scores = read_jsonl(run_env / "results/pulled/judge/scores.jsonl")
    assert len(scores) == 110
    assert {r["judge_digest"] for r in scores} == {DIGEST}
    assert {r["state"] for r in scores} == {"scored"}


def test_with_pull_false_a_missing_model_is_the_one_line_error(run_env, instruction_data,
                                                              book_responses, gpt2_tokenizer,
                                                              capsys):
    with OllamaStandIn(models={}, pullable={"llama3:latest": DIGEST}) as standin:
        assert judge(run_env, instruction_data, book_responses, standin.url,
                     "judge.pull=false") == 1
        assert standin.pulls == [] and standin.requests == []
    assert capsys.readouterr().err == (
        f"evalpipe: error: judge: Ollama at {standin.url} has no model 'llama3': "
        "run 'ollama pull llama3'\n")


def test_a_model_the_registry_does_not_have_is_one_line(run_env, instruction_data,
                                                        book_responses, gpt2_tokenizer, capsys):
    with OllamaStandIn(models={}) as standin:
        assert judge(run_env, instruction_data, book_responses, standin.url) == 1
        assert standin.pulls == ["llama3"] and standin.requests == []
    assert capsys.readouterr().err.endswith(
        f"\nevalpipe: error: judge: Ollama at {standin.url} could not pull 'llama3': "
        "pull model manifest: file does not exist\n")
    assert not (run_env / "results/pulled/judge/scores.jsonl").exists()


def test_status_never_pulls(run_env, instruction_data, book_responses, gpt2_tokenizer, capsys):
    with OllamaStandIn(models={}, pullable={"llama3:latest": DIGEST}) as standin:
        assert judge(run_env, instruction_data, book_responses, standin.url,
                     command="status") == 0
        assert standin.pulls == []
    assert "judge      missing  never run" in capsys.readouterr().out


def test_evaluate_pulls_in_its_judge_check_before_any_stage(run_env, instruction_data,
                                                            book_responses, gpt2_tokenizer,
                                                            capsys):
    with OllamaStandIn(models={}, pullable={"llama3:latest": DIGEST}) as standin:
        assert judge(run_env, instruction_data, book_responses, standin.url,
                     command="evaluate") == 0
        assert standin.pulls == ["llama3"]
    out = capsys.readouterr().out.splitlines()
    ready = (f"judge: llama3:latest (digest {DIGEST[:12]}) at {standin.url} is ready")
    assert out.index(ready) < out.index("prepare: running (never run)")
    assert (run_env / "results/pulled/aggregate/report.html").exists()
