"""The pairwise prompt, its schema and how a reply becomes a verdict
(evalpipe/judging/prompts.py), the mock judge's pairwise rule, and a pairwise comparison through
the OpenAI-style stand-in (the real `openai` client)."""

from __future__ import annotations

import json

import pytest
from pairwise_runs import N, compare, preference_judge, shown
from standins import OpenAIStandIn

from evalpipe.judging.backends.base import JudgeRequest
from evalpipe.judging.backends.mock import MockBackend
from evalpipe.judging.prompts import (
    PAIRWISE_VERDICTS,
    PairwiseParsed,
    pairwise_schema,
    parse_pairwise,
    render_pairwise,
)
from evalpipe.stats.bradley_terry import VERDICTS

RECORD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def test_the_prompt_shows_the_task_the_reference_and_both_responses_in_order():
    prompt = render_pairwise(RECORD, "Red.", "Green, I think.")
    assert prompt.startswith("Please act as an impartial judge")
    assert "Task:\nBelow is an instruction" in prompt and "### Instruction:\nName a colour." \
        in prompt
    assert "\n\nReference answer:\nBlue.\n\n[Response A]\nRed.\n[End of Response A]\n\n" \
           "[Response B]\nGreen, I think.\n[End of Response B]\n\n" in prompt
    for line in ("A>>B - Response A is significantly better", "A=B - a tie, relatively the same",
                 "B>>A - Response B is significantly better"):
        assert line in prompt
    assert prompt.endswith('Reply with a JSON object only: {"verdict": "<one of A>>B, A>B, '
                           'A=B, B>A, B>>A>", "reason": "<one sentence saying why>"}.')


def test_the_schema_allows_the_five_verdicts_only():
    assert PAIRWISE_VERDICTS == VERDICTS  # the statistics read what the judge is asked
    assert pairwise_schema() == {
        "type": "object",
        "properties": {"verdict": {"type": "string", "enum": list(VERDICTS)},
                       "reason": {"type": "string", "maxLength": 200}},
        "required": ["verdict", "reason"]}


@pytest.mark.parametrize("reply, parsed", [
    ('{"verdict": "A>B", "reason": " A is right. "}',
     PairwiseParsed("judged", "A>B", "A is right.", None)),
    ('  {"verdict": "B>>A"}\n', PairwiseParsed("judged", "B>>A", None, None)),
    ('{"verdict": "A>=B", "reason": "x"}',
     PairwiseParsed("unparseable", None, None,
                    "verdict 'A>=B' is not one of A>>B, A>B, A=B, B>A, B>>A")),
    ('{"score": 3}', PairwiseParsed("unparseable", None, None,
                                    "verdict None is not one of A>>B, A>B, A=B, B>A, B>>A")),
    # Free text: Arena-Hard's double brackets, or the bare verdict.
    ("A is more accurate.\nMy final verdict is: [[A>>B]]",
     PairwiseParsed("judged", "A>>B", None, None)),
    ("[[A=B]] ... so, again, [[ A=B ]]", PairwiseParsed("judged", "A=B", None, None)),
    ("B>A", PairwiseParsed("judged", "B>A", None, None)),
    ("[[A>B]] no wait [[B>A]]",
     PairwiseParsed("unparseable", None, None, "several verdicts: A>B, B>A")),
    ("Response A is better.", PairwiseParsed("unparseable", None, None, "no verdict")),
    ("", PairwiseParsed("unparseable", None, None, "no verdict")),
    (None, PairwiseParsed("unparseable", None, None, "no reply")),
])
def test_a_reply_becomes_a_verdict_or_says_why_not(reply, parsed):
    assert parse_pairwise(reply) == parsed


@pytest.mark.parametrize("a, b, verdict", [
    ("Blue.", "Blue.", "A=B"), ("Blue.", "Red.", "A>>B"), ("Red.", "Blue.", "B>>A"),
    ("It is blue sky.", "Red.", "A>B"),  # F1 0.4 against 0
])
def test_the_mock_judge_prefers_more_overlap(a, b, verdict):
    request = JudgeRequest(prompt=render_pairwise(RECORD, a, b), options={},
                           schema=pairwise_schema())
    reply = json.loads(MockBackend().ask(request).text)
    assert reply["verdict"] == verdict
    free = MockBackend().ask(JudgeRequest(prompt=render_pairwise(RECORD, a, b), options={},
                                          schema=None)).text
    assert parse_pairwise(free).verdict == verdict


def test_pairwise_through_an_openai_style_server(pairwise_runs):
    with OpenAIStandIn(preference_judge(), api_key="sk-test") as standin:
        assert compare(standin.url, "judge.backend='openai'", "judge.model='gpt-4o-mini'",
                       "judge.api_key='sk-test'") == 0
        bodies = list(standin.requests)
    assert len(bodies) == 3 * N * 2
    assert {shown(body)[1:3] for body in bodies} == {
        ("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")}
    schema = bodies[0]["response_format"]
    assert schema["type"] == "json_schema"
    assert schema["json_schema"]["schema"] == pairwise_schema()
