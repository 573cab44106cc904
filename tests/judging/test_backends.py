"""The Ollama and OpenAI judge backends, through the real client libraries against the
stand-in servers of tests/standins.py (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from standins import (
    DEFAULT_OLLAMA_MODELS,
    OllamaStandIn,
    OpenAIStandIn,
    StandInFailure,
    book_judge,
    prompt_of,
    prompt_tokens,
    unused_url,
)

from evalpipe.config import JudgeConfig
from evalpipe.judging.backends import (
    OPENAI_OPTION_NAMES,
    HostPool,
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    OllamaBackend,
    OpenAIBackend,
    Reply,
    TransientJudgeError,
    chat_extras,
    make_backend,
    ollama_url,
)
from evalpipe.templates import get_template

BOOK_OPTIONS = {"seed": 123, "temperature": 0, "num_ctx": 2048}
SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer"}, "reason": {"type": "string"}},
    "required": ["score", "reason"],
}


def book_prompt(record: dict, response: str) -> str:
    """The book's judge prompt, as chapter 7 renders it."""
    return (
        f"Given the input `{get_template('alpaca').prompt(record)}` "
        f"and correct output `{record['output']}`, "
        f"score the model response `{response}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


RECORD = {"instruction": "Rewrite the sentence.", "input": "A cat sat on a mat.",
          "output": "The cat sat on the mat."}
# response words: the cat sat (3); reference: the cat sat on the mat (6); 3 in common:
# precision 1, recall 1/2, F1 2/3 -> 67.
PROMPT = book_prompt(RECORD, "The cat sat.")
EXPECTED_SCORE = "67"


def judge_config(backend: str, url: str = "", **changes) -> JudgeConfig:
    config = JudgeConfig(backend=backend, host=url, timeout=10.0)
    if backend == "openai":
        config.model = "gpt-4o-mini"
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.fixture(autouse=True)
def no_judge_env(monkeypatch):
    """The user's own OLLAMA_HOST / OPENAI_* must not leak into these tests."""
    for name in ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------
# The stand-in judge itself


def test_book_judge_scores_the_word_overlap_of_the_book_prompt():
    body = {"model": "llama3", "messages": [{"role": "user", "content": PROMPT}]}
    assert book_judge(body) == EXPECTED_SCORE
    perfect = book_prompt(RECORD, "The cat sat on the mat.")
    assert book_judge({"messages": [{"role": "user", "content": perfect}]}) == "100"
    unrelated = book_prompt(RECORD, "Paris is a capital city in France.")
    assert book_judge({"messages": [{"role": "user", "content": unrelated}]}) == "0"


def test_book_judge_finds_texts_that_contain_backticks():
    record = {"instruction": "Show the command.", "input": "",
              "output": "Run `ls -l` in the shell."}
    # response words: run ls l (3) against run ls l in the shell (6): F1 2/3.
    body = {"prompt": book_prompt(record, "Run `ls -l`.")}
    assert book_judge(body) == "67"


def test_book_judge_answers_json_when_asked_for_structured_output():
    ollama_body = {"messages": [{"role": "user", "content": PROMPT}], "format": SCHEMA}
    assert json.loads(book_judge(ollama_body)) == {
        "score": 67, "reason": "word overlap F1 with the correct output is 0.67"}
    openai_body = {"messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "j", "schema": SCHEMA}}}
    assert json.loads(book_judge(openai_body))["score"] == 67


def test_book_judge_reads_the_rubric_layout():
    prompt = ("Grade the response against the reference on a scale from 1 to 5.\n\n"
              "Instruction:\nRewrite the sentence.\n\n"
              "Reference answer:\nThe cat sat on the mat.\n\n"
              "Response to grade:\nThe cat sat.\n\n"
              "Score the response. Answer with 'Score: N' and a one-line reason.")
    # F1 2/3 -> 1 + round(4 * 2/3) = 4
    assert book_judge({"prompt": prompt}) == (
        "Score: 4\nReason: word overlap F1 with the reference is 0.67")
    structured = json.loads(book_judge({"prompt": prompt, "format": "json"}))
    assert structured == {"score": 4, "reason": "word overlap F1 with the reference is 0.67"}


def test_book_judge_refuses_a_prompt_of_neither_layout():
    answer = book_judge({"prompt": "How good is this?"})
    assert isinstance(answer, StandInFailure) and answer.status == 400


def test_prompt_of_takes_the_last_user_message():
    body = {"messages": [{"role": "system", "content": "Be strict."},
                         {"role": "user", "content": "first"},
                         {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": "second"}]}
    assert prompt_of(body) == "second"
    assert prompt_of({"prompt": "generate me"}) == "generate me"


# ------------------------------------------------------------------------------------------
# Choosing hosts


def test_ollama_url_writes_hosts_out_as_the_client_reads_them():
    assert ollama_url("localhost") == "http://localhost:11434"
    assert ollama_url("0.0.0.0:8080") == "http://0.0.0.0:8080"
    assert ollama_url("http://127.0.0.1:11434/") == "http://127.0.0.1:11434"
    assert ollama_url("https://judge.example.org") == "https://judge.example.org"


def test_hosts_come_from_config_then_environment_then_default(monkeypatch):
    backend = make_backend(judge_config("ollama"))
    assert isinstance(backend, OllamaBackend) and backend.url == "http://localhost:11434"
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5")
    assert make_backend(judge_config("ollama")).url == "http://10.0.0.5:11434"
    assert make_backend(judge_config("ollama", "http://10.0.0.6:1234")).url == \
        "http://10.0.0.6:1234"
    backend = make_backend(judge_config("openai"))
    assert isinstance(backend, OpenAIBackend) and backend.url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/")
    assert make_backend(judge_config("openai")).url == "http://127.0.0.1:8080/v1"
    several = make_backend(judge_config("ollama", hosts=["a:1", "b:2"], host="c:3"))
    assert isinstance(several, HostPool)
    assert [b.url for b in several.backends] == ["http://a:1", "http://b:2"]


# ------------------------------------------------------------------------------------------
# Ollama


def test_ollama_preflight_gives_the_model_and_its_digest():
    with OllamaStandIn() as server:
        backend = make_backend(judge_config("ollama", server.url))
        assert backend.preflight() == JudgeIdentity(
            backend="ollama", model="llama3:latest",
            digest=DEFAULT_OLLAMA_MODELS["llama3:latest"])
        backend.close()
    digest = "ab" * 32
    with OllamaStandIn(models={"qwen2.5:7b-instruct": digest}) as server:
        backend = make_backend(judge_config("ollama", server.url, model="qwen2.5:7b-instruct"))
        assert backend.preflight() == JudgeIdentity("ollama", "qwen2.5:7b-instruct", digest)


def test_ollama_preflight_names_a_missing_model_and_how_to_get_it():
    with OllamaStandIn(models={"mistral:latest": "cd" * 32}) as server:
        backend = make_backend(judge_config("ollama", server.url))
        with pytest.raises(JudgeError) as caught:
            backend.preflight()
    assert str(caught.value) == (
        f"Ollama at {server.url} has no model 'llama3': run 'ollama pull llama3'")


def test_ollama_server_down_names_the_url_and_how_to_start_it():
    url = unused_url()
    backend = make_backend(judge_config("ollama", url))
    message = f"cannot reach Ollama at {url}: is it running? start it with 'ollama serve'"
    with pytest.raises(JudgeError) as caught:
        backend.preflight()
    assert str(caught.value) == message
    with pytest.raises(TransientJudgeError) as caught:
        backend.ask(JudgeRequest(PROMPT))
    assert str(caught.value) == message


def test_ollama_ask_returns_the_reply_and_sends_the_options():
    with OllamaStandIn(stream_ok=False) as server:
        backend = make_backend(judge_config("ollama", server.url))
        backend.preflight()
        reply = backend.ask(JudgeRequest(PROMPT, options=dict(BOOK_OPTIONS)))
    (body,) = server.requests
    # prompt_eval_count, and the num_ctx sent: what the truncation check reads.
    assert reply == Reply(EXPECTED_SCORE, prompt_tokens(body), 2048)
    assert backend.max_context == 8192  # /api/show: model_info's llama.context_length
    assert body["model"] == "llama3"
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
    assert body["stream"] is False
    assert body.get("format", "") == ""  # free text: no schema


def test_ollama_max_tokens_is_sent_as_num_predict():
    with OllamaStandIn() as server:
        backend = make_backend(judge_config("ollama", server.url))
        backend.ask(JudgeRequest(PROMPT, options={"seed": 1, "max_tokens": 8}))
    assert server.requests[0]["options"] == {"seed": 1, "num_predict": 8}


def test_ollama_structured_request_carries_the_schema_in_format():
    with OllamaStandIn() as server:
        backend = make_backend(judge_config("ollama", server.url))
        reply = backend.ask(JudgeRequest(PROMPT, options=dict(BOOK_OPTIONS), schema=SCHEMA))
    assert server.requests[0]["format"] == SCHEMA
    assert json.loads(reply.text)["score"] == 67


def test_ollama_http_500_is_transient():
    with OllamaStandIn(lambda body: StandInFailure(500, "llama runner process has terminated")) \
            as server:
        backend = make_backend(judge_config("ollama", server.url))
        with pytest.raises(TransientJudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert str(caught.value) == (
        f"Ollama at {server.url} answered HTTP 500: llama runner process has terminated")


def test_ollama_http_4xx_is_not_transient():
    with OllamaStandIn(lambda body: StandInFailure(400, "invalid options")) as server:
        backend = make_backend(judge_config("ollama", server.url))
        with pytest.raises(JudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert not isinstance(caught.value, TransientJudgeError)
    assert str(caught.value) == f"Ollama at {server.url} answered HTTP 400: invalid options"


def test_ollama_model_removed_after_preflight_is_a_404_judge_error():
    with OllamaStandIn() as server:
        backend = make_backend(judge_config("ollama", server.url))
        backend.preflight()
        server.models.clear()  # `ollama rm llama3` while the run goes on
        with pytest.raises(JudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert not isinstance(caught.value, TransientJudgeError)
    assert str(caught.value) == (
        f"Ollama at {server.url} has no model 'llama3': run 'ollama pull llama3'")


def test_ollama_timeout_is_transient():
    with OllamaStandIn(lambda body: StandInFailure(200, "late", delay=5.0)) as server:
        backend = make_backend(judge_config("ollama", server.url, timeout=0.3))
        with pytest.raises(TransientJudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert str(caught.value) == f"Ollama at {server.url} did not answer within 0.3 s"


def test_ollama_dropped_connection_is_transient():
    with OllamaStandIn(lambda body: StandInFailure(drop=True)) as server:
        backend = make_backend(judge_config("ollama", server.url))
        with pytest.raises(TransientJudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert str(caught.value).startswith(f"the connection to Ollama at {server.url} failed: ")


def test_ollama_garbage_answer_is_a_judge_error():
    with OllamaStandIn(lambda body: StandInFailure(200, "<html>proxy login</html>", raw=True)) \
            as server:
        backend = make_backend(judge_config("ollama", server.url))
        with pytest.raises(JudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert not isinstance(caught.value, TransientJudgeError)
    assert str(caught.value).startswith(
        f"Ollama at {server.url} answered something that is not a chat reply: ")


def test_ollama_empty_reply_is_a_judge_error():
    with OllamaStandIn(lambda body: "") as server:
        backend = make_backend(judge_config("ollama", server.url))
        with pytest.raises(JudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert str(caught.value) == (
        f"Ollama at {server.url} gave a reply with no text (done_reason: stop)")


# ------------------------------------------------------------------------------------------
# Several hosts


def test_several_hosts_take_turns_when_equally_busy():
    with OllamaStandIn() as first, OllamaStandIn() as second:
        backend = make_backend(judge_config("ollama", hosts=[first.url, second.url]))
        assert backend.preflight().digest == DEFAULT_OLLAMA_MODELS["llama3:latest"]
        replies = [backend.ask(JudgeRequest(PROMPT)).text for _ in range(8)]
        backend.close()
    assert replies == [EXPECTED_SCORE] * 8
    assert len(first.requests) == 4 and len(second.requests) == 4


def test_each_request_goes_to_the_least_busy_host():
    release = threading.Event()

    def slow(body):
        release.wait(10)
        return book_judge(body)

    with OllamaStandIn(slow) as busy, OllamaStandIn() as idle:
        backend = make_backend(judge_config("ollama", hosts=[busy.url, idle.url]))
        backend.preflight()
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(backend.ask, JudgeRequest(PROMPT))  # first host: a tie
            while not busy.requests:
                time.sleep(0.01)
            # The first host has one request in flight: the next three go to the other.
            assert [backend.ask(JudgeRequest(PROMPT)).text for _ in range(3)] == \
                [EXPECTED_SCORE] * 3
            release.set()
            assert waiting.result().text == EXPECTED_SCORE
        backend.close()
    assert (len(busy.requests), len(idle.requests)) == (1, 3)


def test_preflight_goes_on_with_the_hosts_that_answer_and_says_so(capsys):
    down = unused_url()
    with OllamaStandIn() as server:
        backend = make_backend(judge_config("ollama", hosts=[down, server.url]))
        assert backend.preflight().digest == DEFAULT_OLLAMA_MODELS["llama3:latest"]
        assert capsys.readouterr().err == (
            f"judge: going on with 1 of 2 hosts; not reachable (tried again later): {down}\n")
        assert [backend.ask(JudgeRequest(PROMPT)).text for _ in range(3)] == \
            [EXPECTED_SCORE] * 3
    assert len(server.requests) == 3


def test_preflight_with_no_host_reachable_is_one_line():
    first, second = unused_url(), unused_url()
    backend = make_backend(judge_config("ollama", hosts=[first, second]))
    with pytest.raises(JudgeError) as caught:
        backend.preflight()
    assert str(caught.value) == f"cannot reach any judge host: {first}, {second}"


def test_a_host_that_fails_is_left_out_and_tried_again_later():
    with OllamaStandIn() as first, OllamaStandIn() as second:
        backend = make_backend(judge_config("ollama", hosts=[first.url, second.url]))
        backend.retry_after = 0.3
        backend.preflight()
        first.stop()  # down: its requests go to the second host at once
        assert [backend.ask(JudgeRequest(PROMPT)).text for _ in range(4)] == \
            [EXPECTED_SCORE] * 4
        assert len(second.requests) == 4
        first.start()  # back (on a new port: point the pool's client at it)
        backend.backends[0].client = type(backend.backends[0].client)(host=first.url)
        backend.backends[0].url = first.url
        time.sleep(0.4)
        assert [backend.ask(JudgeRequest(PROMPT)).text for _ in range(4)] == \
            [EXPECTED_SCORE] * 4
        backend.close()
    assert (len(first.requests), len(second.requests)) == (2, 6)


def test_a_host_that_hangs_costs_one_timeout_not_one_per_request():
    hung_reply = lambda body: StandInFailure(200, "late", delay=5.0)  # noqa: E731
    with OllamaStandIn(hung_reply) as hung, OllamaStandIn() as good:
        backend = make_backend(judge_config("ollama", hosts=[hung.url, good.url],
                                            timeout=0.3))
        backend.preflight()
        assert [backend.ask(JudgeRequest(PROMPT)).text for _ in range(4)] == \
            [EXPECTED_SCORE] * 4
        backend.close()
    assert (len(hung.requests), len(good.requests)) == (1, 4)


def test_a_host_back_with_other_weights_is_not_asked_again(capsys):
    with OllamaStandIn() as first, OllamaStandIn() as second:
        backend = make_backend(judge_config("ollama", hosts=[first.url, second.url]))
        backend.retry_after = 0.0
        backend.preflight()
        first.models = {"llama3:latest": "ef" * 32}  # pulled anew while it was down
        backend._down_until[id(backend.backends[0])] = 0.0
        assert [backend.ask(JudgeRequest(PROMPT)).text for _ in range(3)] == \
            [EXPECTED_SCORE] * 3
        backend.close()
    assert (len(first.requests), len(second.requests)) == (0, 3)
    assert capsys.readouterr().err == (
        f"judge: host {first.url} now serves llama3:latest ({'ef' * 32}), not llama3:latest "
        f"({DEFAULT_OLLAMA_MODELS['llama3:latest']}): no longer asked\n")


def test_hosts_with_different_weights_are_refused():
    with OllamaStandIn() as first, OllamaStandIn(models={"llama3:latest": "ef" * 32}) as second:
        backend = make_backend(judge_config("ollama", hosts=[first.url, second.url]))
        with pytest.raises(JudgeError) as caught:
            backend.preflight()
    assert str(caught.value) == (
        f"judge hosts serve different models: {first.url} has llama3:latest "
        f"({DEFAULT_OLLAMA_MODELS['llama3:latest']}), {second.url} has llama3:latest "
        f"({'ef' * 32}); give servers with the same weights")


# ------------------------------------------------------------------------------------------
# OpenAI-compatible


def test_openai_preflight_gives_the_model_id_and_owner():
    with OpenAIStandIn(models=["gpt-4o-mini", "llama3"]) as server:
        backend = make_backend(judge_config("openai", server.url, model="llama3"))
        assert backend.preflight() == JudgeIdentity(
            backend="openai", model="llama3", digest="llama3/system")


def test_openai_digest_ignores_created_which_servers_set_to_the_request_time():
    # vLLM and llama-server report `created` as the time of the request: here a clock that
    # moves one second per request.
    with OpenAIStandIn(clock=itertools.count(1_700_000_000).__next__) as server:
        client = openai.OpenAI(base_url=server.url, api_key="none")
        first, second = client.models.list().data[0], client.models.list().data[0]
        assert (first.created, second.created) == (1_700_000_000, 1_700_000_001)
        backend = make_backend(judge_config("openai", server.url))
        digests = [backend.preflight().digest, backend.preflight().digest]
        client.close()
        backend.close()
    assert digests == ["gpt-4o-mini/system", "gpt-4o-mini/system"]


# What llama.cpp's llama-server lists under "meta" for a model, and that dict's canonical JSON.
LLAMA_SERVER_META = {"vocab_type": 2, "n_vocab": 49152, "n_ctx_train": 8192, "n_embd": 576,
                     "n_params": 134515008, "size": 96782592}
LLAMA_SERVER_META_JSON = (b'{"n_ctx_train":8192,"n_embd":576,"n_params":134515008,'
                          b'"n_vocab":49152,"size":96782592,"vocab_type":2}')


def test_openai_digest_of_llama_server_hashes_its_meta():
    with OpenAIStandIn(models=["smollm2"], owner="llamacpp", meta=LLAMA_SERVER_META) as server:
        digest = make_backend(judge_config("openai", server.url, model="smollm2")).preflight().digest
    assert digest == f"smollm2/llamacpp/meta:{hashlib.sha256(LLAMA_SERVER_META_JSON).hexdigest()[:12]}"
    # Another file under the same name (here: another quantisation, so another size) is
    # another judge.
    other_meta = {**LLAMA_SERVER_META, "size": 103000000}
    with OpenAIStandIn(models=["smollm2"], owner="llamacpp", meta=other_meta) as server:
        other = make_backend(judge_config("openai", server.url, model="smollm2")).preflight()
    assert other.digest.startswith("smollm2/llamacpp/meta:") and other.digest != digest


def test_openai_preflight_names_a_missing_model():
    with OpenAIStandIn(models=["gpt-4o-mini", "gpt-4o"]) as server:
        backend = make_backend(judge_config("openai", server.url, model="gpt-5"))
        with pytest.raises(JudgeError) as caught:
            backend.preflight()
    assert str(caught.value) == (
        f"the server at {server.url} has no model 'gpt-5' (it has: gpt-4o, gpt-4o-mini)")


def test_openai_server_down_names_the_url():
    url = unused_url() + "/v1"
    backend = make_backend(judge_config("openai", url))
    with pytest.raises(JudgeError) as caught:
        backend.preflight()
    assert str(caught.value).startswith(
        f"cannot reach the OpenAI-compatible server at {url}: ")
    with pytest.raises(TransientJudgeError):
        backend.ask(JudgeRequest(PROMPT))


def test_openai_wrong_key_is_refused_with_a_hint(monkeypatch):
    with OpenAIStandIn(api_key="sk-right-key") as server:
        backend = make_backend(judge_config("openai", server.url, api_key="sk-wrong-key"))
        with pytest.raises(JudgeError) as caught:
            backend.preflight()
        assert str(caught.value) == (
            f"the server at {server.url} refused the API key (HTTP 401: Incorrect API key "
            "provided: sk-***-key.): set judge.api_key or OPENAI_API_KEY")
        with pytest.raises(JudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
        assert not isinstance(caught.value, TransientJudgeError)
        # The key from the environment, when the config names none.
        monkeypatch.setenv("OPENAI_API_KEY", "sk-right-key")
        backend = make_backend(judge_config("openai", server.url))
        assert backend.preflight().model == "gpt-4o-mini"
        assert backend.ask(JudgeRequest(PROMPT)).text == EXPECTED_SCORE


def test_openai_ask_maps_the_options():
    with OpenAIStandIn() as server:
        backend = make_backend(judge_config("openai", server.url))
        options = {"seed": 123, "temperature": 0, "num_ctx": 2048, "num_predict": 16,
                   "top_k": 40}
        reply = backend.ask(JudgeRequest(PROMPT, options=options))
    (body,) = server.requests
    # usage.prompt_tokens; the context is the server's own (num_ctx is not sent).
    assert reply == Reply(EXPECTED_SCORE, prompt_tokens(body), None)
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert {k: body[k] for k in ("seed", "temperature", "max_tokens")} == {
        "seed": 123, "temperature": 0, "max_tokens": 16}
    assert "num_ctx" not in body and "top_k" not in body and "response_format" not in body
    assert chat_extras({"max_tokens": 5, "top_p": 0.9, "mirostat": 1}, OPENAI_OPTION_NAMES) == {
        "max_tokens": 5, "top_p": 0.9}


def test_openai_structured_request_carries_the_schema_in_response_format():
    with OpenAIStandIn() as server:
        backend = make_backend(judge_config("openai", server.url))
        reply = backend.ask(JudgeRequest(PROMPT, options=dict(BOOK_OPTIONS), schema=SCHEMA))
    assert server.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "judgment", "schema": SCHEMA, "strict": True}}
    assert json.loads(reply.text) == {"score": 67,
                                 "reason": "word overlap F1 with the correct output is 0.67"}


@pytest.mark.parametrize("status, transient", [(500, True), (503, True), (429, True),
                                               (404, False), (400, False)])
def test_openai_status_errors_are_sorted_by_whether_a_retry_may_help(status, transient):
    with OpenAIStandIn(lambda body: StandInFailure(status, "the judge hiccuped")) as server:
        backend = make_backend(judge_config("openai", server.url))
        with pytest.raises(JudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert isinstance(caught.value, TransientJudgeError) is transient
    assert str(caught.value) == (
        f"the server at {server.url} answered HTTP {status} to POST /chat/completions: "
        "the judge hiccuped")


def test_openai_unknown_model_on_chat_is_not_transient():
    with OpenAIStandIn() as server:
        backend = make_backend(judge_config("openai", server.url, model="gpt-9"))
        with pytest.raises(JudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert not isinstance(caught.value, TransientJudgeError)
    assert str(caught.value) == (
        f"the server at {server.url} answered HTTP 404 to POST /chat/completions: "
        "The model `gpt-9` does not exist or you do not have access to it.")


def test_openai_timeout_is_transient():
    with OpenAIStandIn(lambda body: StandInFailure(200, "late", delay=5.0)) as server:
        backend = make_backend(judge_config("openai", server.url, timeout=0.3))
        with pytest.raises(TransientJudgeError) as caught:
            backend.ask(JudgeRequest(PROMPT))
    assert str(caught.value) == f"the server at {server.url} did not answer within 0.3 s"


def test_openai_several_hosts_round_robin():
    with OpenAIStandIn() as first, OpenAIStandIn() as second:
        backend = make_backend(judge_config("openai", hosts=[first.url, second.url]))
        assert backend.preflight().digest == "gpt-4o-mini/system"
        for _ in range(3):
            assert backend.ask(JudgeRequest(PROMPT)).text == EXPECTED_SCORE
    assert len(first.requests) == 2 and len(second.requests) == 1
