"""Together mode: prompts of k responses against the judge's context, and what together mode
refuses. Runs and judge: see tests/judging/together_runs.py."""

from __future__ import annotations

import json
from pathlib import Path

from standins import (
    OllamaStandIn,
    prompt_of,
    together_judge,
    unused_url,
)
from together_runs import (
    MODELS,
    OUT,
    SMOKE,
    compare,
    make_runs,
    model_scores,
    passes,
    reference_item,
    response_of,
)

from evalpipe.cli import main
from evalpipe.io import read_jsonl

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
        "together or pairwise; --mode single reads each run's own judgment\n")

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
