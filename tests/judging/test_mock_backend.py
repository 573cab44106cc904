"""The mock judge backend (evalpipe/judging/backends/mock.py) and the registry that finds every
backend by its judge.backend name (evalpipe/judging/backends/__init__.py)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalpipe.cli import main
from evalpipe.config import CHOICES, JudgeConfig
from evalpipe.io import read_jsonl
from evalpipe.judging.backends import (
    BACKENDS,
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    MockBackend,
    Reply,
    make_backend,
)
from evalpipe.judging.backends.mock import prompt_tokens
from evalpipe.judging.prompts import render, render_together, schema, together_schema

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs/smoke.toml")
OVERLAP_DIGEST = hashlib.sha256(b"evalpipe mock judge overlap").hexdigest()

# F1 of "The car is as fast as a bullet." against "The car is as fast as lightning.":
# 6 common words, precision 6/8, recall 6/7, F1 0.8.
SIMILE = {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
          "output": "The car is as fast as lightning.",
          "response": "The car is as fast as a bullet."}
# "Rome." against "The capital of Italy is Rome.": precision 1, recall 1/6, F1 2/7 (0.29).
ROME = {"instruction": "What is the capital of Italy?", "input": "",
        "output": "The capital of Italy is Rome.", "response": "Rome."}


def ask(prompt: str, schema=None) -> Reply:
    backend = make_backend(JudgeConfig(backend="mock", model="overlap"))
    backend.preflight()
    return backend.ask(JudgeRequest(prompt=prompt, options={"seed": 1}, schema=schema))


def test_the_book_prompt_gets_100_times_the_overlap():
    prompt = render("book", SIMILE)
    assert ask(prompt) == Reply("80", prompt_tokens(prompt))
    assert ask(render("book", ROME)).text == "29"
    assert ask(render("book", {**ROME, "response": ROME["output"]})).text == "100"
    assert ask(render("book", {**ROME, "response": "Paris, surely"})).text == "0"
    assert json.loads(ask(render("book", SIMILE, structured=True), schema("book")).text) == {
        "score": 80, "reason": "word overlap F1 with the correct output is 0.80"}


def test_the_rubric_prompt_gets_1_plus_4_times_the_overlap():
    assert ask(render("rubric", SIMILE)).text == (
        "Score: 4\nReason: word overlap F1 with the reference is 0.80")
    assert ask(render("rubric", ROME)).text == (
        "Score: 2\nReason: word overlap F1 with the reference is 0.29")
    assert json.loads(ask(render("rubric", ROME, structured=True), schema("rubric")).text) == {
        "score": 2, "reason": "word overlap F1 with the reference is 0.29"}


def test_a_together_prompt_gets_each_response_scored_on_its_own():
    responses = [ROME["response"], ROME["output"], "Paris"]
    assert ask(render_together("book", ROME, responses)).text == (
        "Response 1: 29 - word overlap F1 with the reference is 0.29\n"
        "Response 2: 100 - word overlap F1 with the reference is 1.00\n"
        "Response 3: 0 - word overlap F1 with the reference is 0.00")
    reply = ask(render_together("rubric", ROME, responses), together_schema("rubric", 3))
    assert json.loads(reply.text) == {"scores": [
        {"response": 1, "score": 2, "reason": "word overlap F1 with the reference is 0.29"},
        {"response": 2, "score": 5, "reason": "word overlap F1 with the reference is 1.00"},
        {"response": 3, "score": 1, "reason": "word overlap F1 with the reference is 0.00"}]}


def test_the_prompt_token_count_is_words_and_punctuation_marks():
    assert prompt_tokens("Rome, surely. Not Paris!") == 7
    prompt = render("book", ROME)
    assert ask(prompt).prompt_tokens == prompt_tokens(prompt)
    assert ask(prompt).context is None


def test_a_prompt_of_no_known_layout_is_a_one_line_error():
    with pytest.raises(JudgeError) as caught:
        ask("How are you?")
    assert str(caught.value) == (
        "mock judge: the prompt has neither the book's markers (correct output `...`, score the "
        "model response `...`), nor the rubric's (Reference answer: / Response to grade:), nor "
        "a together prompt's ([Response 1] ...), nor a pairwise one ([Response A] ...)")


def test_the_identity_is_the_rule_and_a_digest_of_its_name():
    backend = make_backend(JudgeConfig(backend="mock", model="overlap"))
    assert isinstance(backend, MockBackend)
    assert backend.preflight() == JudgeIdentity("mock", "overlap", OVERLAP_DIGEST)
    assert backend.max_context is None
    # An empty judge.model is the default rule.
    assert make_backend(JudgeConfig(backend="mock", model="")).preflight() == \
        JudgeIdentity("mock", "overlap", OVERLAP_DIGEST)


def test_an_unknown_rule_is_a_one_line_error():
    with pytest.raises(JudgeError) as caught:
        make_backend(JudgeConfig(backend="mock", model="llama3"))
    assert str(caught.value) == (
        "judge.model: the mock judge has no scoring rule 'llama3' (known: 'overlap')")


def test_every_registered_backend_is_a_judge_backend_choice_and_back():
    assert tuple(BACKENDS) == CHOICES[("judge", "backend")] == (
        "ollama", "openai", "llamacpp", "mock")


def test_an_unknown_backend_is_a_one_line_error_naming_the_known_ones():
    with pytest.raises(JudgeError) as caught:
        make_backend(JudgeConfig(backend="vllm"))
    assert str(caught.value) == (
        "judge.backend: unknown backend 'vllm' (known: 'ollama', 'openai', 'llamacpp', 'mock')")


def test_a_backend_module_is_imported_only_when_that_backend_is_used():
    code = ("import sys\n"
            "from evalpipe.config import JudgeConfig\n"
            "from evalpipe.judging.backends import make_backend\n"
            "make_backend(JudgeConfig(backend='mock', model='overlap')).preflight()\n"
            "print(sorted(m for m in sys.modules if m.startswith('evalpipe.judging.backends.')"
            " or m in ('ollama', 'openai', 'httpx', 'xllamacpp')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert result.stdout == "['evalpipe.judging.backends.base', 'evalpipe.judging.backends.mock']\n"


def test_every_public_name_is_there_for_the_callers():
    from evalpipe.judging import backends

    assert set(backends._LAZY_NAMES) <= set(backends.__all__)
    for name in backends.__all__:  # each one resolves (a lazy one imports its module)
        getattr(backends, name)


# -- the judge stage with the mock judge --------------------------------------------------------

def output_of(i: int) -> str:
    return f"word{i}a word{i}b word{i}c word{i}d"


def test_evalpipe_judge_with_the_mock_judge(run_env, gpt2_tokenizer, capsys):
    """The whole judge stage, no server: the scores are the overlap rule's, and what is
    recorded names the mock judge."""
    records = [{"instruction": f"Task {i}", "input": "", "output": output_of(i)}
               for i in range(100)]
    (run_env / "data.json").write_text(json.dumps(records))
    responses = {85: "word85a word85b word85c other", 86: "", 87: "word87a word87b",
                 91: output_of(91)}
    (run_env / "responses.json").write_text(json.dumps(
        [{**records[i], "model_response": text} for i, text in responses.items()]))
    settings = ["--config", SMOKE, "--run", "r",
                "--set", f"data.source={run_env / 'data.json'}",
                "--set", f"generate.from_file={run_env / 'responses.json'}",
                "--set", "generate.allow_partial=true",
                "--set", "judge.backend=mock", "--set", "judge.model=overlap"]
    assert main(["judge", *settings]) == 0
    out = capsys.readouterr().out
    assert ("judge: 10 items: 3 scored, 7 empty, 0 unparseable, 0 error; canaries: good mean "
            "100, bad mean 0; 0 from the judgment cache\n") in out
    assert "ollama" not in out.lower() and "llama3" not in out
    root = run_env / "results/r/judge"
    scores = {int(r["instruction"].split()[1]): r for r in read_jsonl(root / "scores.jsonl")}
    assert {i: (r["state"], r["score"]) for i, r in scores.items() if i in responses} == {
        85: ("scored", 75), 86: ("empty", 0), 87: ("scored", 67), 91: ("scored", 100)}
    assert {(r["judge_backend"], r["judge_model"], r["judge_digest"])
            for r in scores.values()} == {("mock", "overlap", OVERLAP_DIGEST)}
    summary = json.loads((root / "summary.json").read_text())
    assert summary["judge"] == {"backend": "mock", "model": "overlap", "digest": OVERLAP_DIGEST}
    # status reads the mock judge's digest as it reads a server's: the judge is up to date.
    assert main(["status", *settings]) == 0
    status = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert status["judge"].split()[1:3] == ["done", "finished"]
    assert "not checked" not in status["judge"]
