"""Expected scores (judge.scoring = "expected", evalpipe/judging/expected.py): the rule on
hand-made log-probabilities, and the log-probabilities as the Ollama and OpenAI backends ask
for and read them through the real clients, from the stand-in servers."""

from __future__ import annotations

import math
import sqlite3

import pytest
from standins import OllamaStandIn, OpenAIStandIn, WithLogprobs

from evalpipe.judging.backends import JudgeRequest, OllamaBackend, OpenAIBackend
from evalpipe.judging.cache import JudgmentCache, cache_key
from evalpipe.judging.backends import JudgeIdentity, Reply
from evalpipe.judging.expected import (
    EXPECTED,
    NO_LOGPROBS,
    NO_SCORE_TOKEN,
    SPANS_TOKENS,
    expected_score,
)

LN = math.log

# The rubric's grade: one token. "Score: 4" with 4 at 0.6, 5 at 0.3, 3 at 0.05, and a
# candidate that is no grade ("\n", 0.05), which the renormalisation leaves out.
RUBRIC_TOKENS = [
    ["Score", [["Score", LN(0.99)], ["Grade", LN(0.01)]]],
    [":", [[":", 0.0]]],
    [" 4", [[" 4", LN(0.6)], [" 5", LN(0.3)], [" 3", LN(0.05)], ["\n", LN(0.05)]]],
    ["\n", [["\n", 0.0]]],
]


def test_the_rubric_grade_is_one_token_weighted_over_the_valid_grades():
    found = expected_score("rubric", 75, RUBRIC_TOKENS)
    # grades 3, 4, 5 -> 50, 75, 100, with 0.05, 0.6, 0.3 out of 0.95
    assert found.scoring == EXPECTED
    assert found.distribution == {"50": round(0.05 / 0.95, 4), "75": round(0.6 / 0.95, 4),
                                  "100": round(0.3 / 0.95, 4)}
    assert found.score == round((50 * 0.05 + 75 * 0.6 + 100 * 0.3) / 0.95, 4) == 81.5789


def test_the_book_score_counts_whole_number_candidates_in_range():
    tokens = [["85", [["85", LN(0.5)], ["90", LN(0.25)], [" 85", LN(0.1)], ["80", LN(0.1)],
                      ["850", LN(0.02)], ["085", LN(0.02)], ["8", LN(0.01)]]]]
    found = expected_score("book", 85, tokens)
    # 85 twice (with and without a space) adds up; 850 is off the scale, 085 no number as a
    # score is written; the single digit 8 is a whole number here (two-digit candidates show
    # the tokenizer writes numbers whole).
    total = 0.5 + 0.25 + 0.1 + 0.1 + 0.01
    assert found.distribution == {"8": round(0.01 / total, 4), "80": round(0.1 / total, 4),
                                  "85": round(0.6 / total, 4), "90": round(0.25 / total, 4)}
    assert found.score == round((8 * 0.01 + 80 * 0.1 + 85 * 0.6 + 90 * 0.25) / total, 4)


def test_a_number_written_digit_by_digit_keeps_the_integer_score():
    split = [["8", [["8", LN(0.7)], ["9", LN(0.3)]]], ["5", [["5", 0.0]]]]
    assert expected_score("book", 85, split).scoring == SPANS_TOKENS
    # A single-digit score whose candidates are all single digits: each may begin a longer
    # number, so none is read.
    single = [["5", [["5", LN(0.7)], ["9", LN(0.3)]]]]
    assert expected_score("book", 5, single).scoring == SPANS_TOKENS
    # ... unless the digit written is the only valid candidate: the number is whole.
    sure = [["0", [["0", LN(0.98)], ["N", LN(0.02)]]], [".", [[".", 0.0]]]]
    assert expected_score("book", 0, sure).distribution == {"0": 1.0}
    # On the rubric's 1-5 scale a single digit is the whole grade: 5 -> 100, 9 is no grade.
    assert expected_score("rubric", 100, single).distribution == {"100": 1.0}


def test_no_logprobs_or_no_score_token_keeps_the_integer_score():
    assert expected_score("book", 85, None).scoring == NO_LOGPROBS
    assert expected_score("book", 85, []).scoring == NO_LOGPROBS
    words = [["eighty", [["eighty", 0.0]]]]
    assert expected_score("book", 80, words).scoring == NO_SCORE_TOKEN
    # The first number is not the score the parser read ("1. ... Score: 85")
    listed = [["1", [["1", 0.0]]], [". Score: ", [[". Score: ", 0.0]]], ["85", [["85", 0.0]]]]
    assert expected_score("book", 85, listed).scoring == NO_SCORE_TOKEN
    for found in (expected_score("book", 85, None), expected_score("book", 80, words)):
        assert (found.distribution, found.score) == (None, None)


IDENTITY = JudgeIdentity("ollama", "llama3:latest", "sha256:abc")


@pytest.mark.parametrize("standin_type, backend_type", [(OllamaStandIn, OllamaBackend),
                                                          (OpenAIStandIn, OpenAIBackend)])
def test_both_apis_ask_for_and_return_the_top_logprobs(standin_type, backend_type):
    reply = WithLogprobs([("Score", [("Score", LN(0.9)), ("Grade", LN(0.1))]),
                          (": ", [(": ", 0.0)]),
                          ("3", [("4", LN(0.6)), ("5", LN(0.3)), ("3", LN(0.1))])])
    with standin_type(lambda body: reply) as standin:
        model = "llama3" if standin_type is OllamaStandIn else "gpt-4o-mini"
        backend = backend_type(standin.url, model, timeout=10)
        try:
            asked = backend.ask(JudgeRequest("grade this", {"seed": 1}, top_logprobs=2))
            plain = backend.ask(JudgeRequest("grade this", {"seed": 1}))
        finally:
            backend.close()
    sent, sent_plain = standin.requests
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    assert "logprobs" not in sent_plain and "top_logprobs" not in sent_plain
    assert asked.text == plain.text == "Score: 3"
    # Two candidates sent at each position; the token written joins them when not among them.
    assert asked.logprobs == [["Score", [["Score", LN(0.9)], ["Grade", LN(0.1)]]],
                              [": ", [[": ", 0.0]]],
                              ["3", [["4", LN(0.6)], ["5", LN(0.3)], ["3", LN(0.1)]]]]
    assert plain.logprobs is None


@pytest.mark.parametrize("standin_type", [OllamaStandIn, OpenAIStandIn])
def test_a_server_that_sends_no_logprobs_gives_none(standin_type):
    with standin_type(lambda body: "Score: 4", logprobs=False) as standin:
        model = "llama3" if standin_type is OllamaStandIn else "gpt-4o-mini"
        backend = (OllamaBackend if standin_type is OllamaStandIn else OpenAIBackend)(
            standin.url, model, timeout=10)
        try:
            reply = backend.ask(JudgeRequest("grade this", {}, top_logprobs=5))
        finally:
            backend.close()
    assert standin.requests[0]["logprobs"] is True
    assert (reply.text, reply.logprobs) == ("Score: 4", None)


def test_the_cache_keeps_the_logprobs_and_keys_the_request_for_them(tmp_path):
    cache = JudgmentCache(tmp_path / "c.sqlite")
    plain_key = cache_key(IDENTITY, "p", {"seed": 1}, None)
    asked_key = cache_key(IDENTITY, "p", {"seed": 1}, None, 20)
    assert plain_key == cache_key(IDENTITY, "p", {"seed": 1}, None, 0) != asked_key
    cache.put(asked_key, Reply("Score: 4", 50, 2048, RUBRIC_TOKENS), IDENTITY)
    cache.put(plain_key, Reply("Score: 4", 50, 2048), IDENTITY)
    cache.close()
    cache = JudgmentCache(tmp_path / "c.sqlite")
    assert cache.get(asked_key) == Reply("Score: 4", 50, 2048, RUBRIC_TOKENS)
    assert cache.get(plain_key) == Reply("Score: 4", 50, 2048, None)
    cache.close()


def test_load_scores_types_the_expected_score_columns():
    from evalpipe.api import scores_frame

    fields = {"scoring": "expected", "integer_score": 75, "expected_score": 76.5,
              "score_distribution": {"60": 0.2, "75": 0.5, "90": 0.3}}
    empty = dict.fromkeys(fields)
    records = [{"id": "a", "state": "scored", "score": 77, **fields,
                "repeats": [{"seed": 1, "state": "scored", "score": 77, "raw_reply": "75",
                             **fields}]},
               {"id": "b", "state": "empty", "score": 0, **empty,
                "repeats": [{"seed": 1, "state": "empty", "score": 0, "raw_reply": None,
                             **empty}]}]
    frame = scores_frame(records)
    assert {column: str(frame[column].dtype) for column in (
        "scoring", "integer_score", "expected_score", "repeat_1_scoring",
        "repeat_1_integer_score", "repeat_1_expected_score")} == {
        "scoring": "string", "integer_score": "Int64", "expected_score": "float64",
        "repeat_1_scoring": "string", "repeat_1_integer_score": "Int64",
        "repeat_1_expected_score": "float64"}
    assert frame["score_distribution"][0] == {"60": 0.2, "75": 0.5, "90": 0.3}
    assert frame["expected_score"].isna().tolist() == [False, True]


def test_a_cache_from_before_logprobs_gets_the_column_and_keeps_its_replies(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, raw TEXT NOT NULL, backend TEXT, "
                "model TEXT, created TEXT, prompt_tokens INTEGER, context INTEGER, "
                "checked INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO replies VALUES ('k', '85', 'ollama', 'llama3', '2026-01-01', 40, "
                "2048, 1)")
    old.commit()
    old.close()
    cache = JudgmentCache(path)
    assert cache.get("k") == Reply("85", 40, 2048, None)  # still good for integer scoring
    cache.put("e", Reply("Score: 4", 50, 2048, RUBRIC_TOKENS), IDENTITY)
    assert cache.get("e").logprobs == RUBRIC_TOKENS
    cache.close()
