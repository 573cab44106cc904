"""Together mode's prompt, schema and reply parser (evalpipe/judging/prompts.py)."""

from __future__ import annotations

import json

import pytest
from standins import parse_together_prompt

from evalpipe.judging.prompts import parse_together, render_together, together_schema

# -- the prompt, the schema and the parser --------------------------------------------------------

def test_the_together_prompt_and_schema():
    record = {"instruction": "Name a colour.", "input": "", "output": "Red."}
    assert render_together("book", record, ["Blue.", "[x]\n\nGreen"]) == """\
You are grading 2 responses to the same task against a reference answer. Grade each response \
on its own merits, independently of the other responses and of the order in which they are shown.

Task:
Below is an instruction that describes a task. Write a response that appropriately completes \
the request.

### Instruction:
Name a colour.

Reference answer:
Red.

[Response 1]
Blue.
[End of Response 1]

[Response 2]
[x]

Green
[End of Response 2]

Score each response on a scale from 0 to 100, where 100 is the best score, and give a \
one-sentence reason for each.

Reply with a JSON object only: {"scores": [{"response": <the number of the response>, \
"score": <the integer score>, "reason": "<one sentence saying why>"}, ...]}, with exactly one \
entry for each of the 2 responses."""
    # The stand-in reads it back, responses whole.
    assert parse_together_prompt(render_together("rubric", record, ["Blue.", "[x]\n\nGreen"])) \
        == ("Red.", ["Blue.", "[x]\n\nGreen"])
    one = render_together("rubric", record, ["Red."])
    assert one.startswith("You are grading one response to the same task")
    assert "Grade each response from 1 to 5:\n5 - correct and complete" in one
    assert one.endswith('"score": <the grade, 1 to 5>, "reason": "<one sentence saying why>"}, '
                        '...]}, with exactly one entry, for the one response.')
    entry = together_schema("rubric", 3)["properties"]["scores"]
    assert (entry["minItems"], entry["maxItems"]) == (3, 3)
    assert entry["items"]["properties"]["response"] == {"type": "integer", "minimum": 1,
                                                        "maximum": 3}
    assert entry["items"]["properties"]["score"] == {"type": "integer", "minimum": 1,
                                                     "maximum": 5}
    assert together_schema("book", 2) == {
        "type": "object",
        "properties": {"scores": {
            "type": "array",
            "items": {"type": "object",
                      "properties": {
                          "response": {"type": "integer", "minimum": 1, "maximum": 2},
                          "score": {"type": "integer", "minimum": 0, "maximum": 100},
                          "reason": {"type": "string", "maxLength": 200}},
                      "required": ["response", "score", "reason"]},
            "minItems": 2, "maxItems": 2}},
        "required": ["scores"]}
    assert list(together_schema("book", 2)["properties"]["scores"]["items"]["properties"]) == [
        "response", "score", "reason"]


def _reply(*entries) -> str:
    return json.dumps({"scores": [{"response": n, "score": s, "reason": f"r{n}"}
                                  for n, s in entries]})


@pytest.mark.parametrize("text, state, scores, problem", [
    (_reply((2, 40), (1, 90), (3, 0)), "scored", (90, 40, 0), None),
    (_reply((1, 90), (2, 40)), "unparseable", None, "response 3 not scored"),
    (_reply((1, 90), (1, 40), (3, 0)), "unparseable", None, "response 1 scored twice"),
    (_reply((1, 90), (2, 40), (4, 0)), "unparseable", None, "unknown response 4"),
    (_reply((1, 90), (2, 40), (3, 150)), "unparseable", None,
     "response 3: score 150 is not an integer 0..100"),
    (_reply((1, 90), (2, 40.0), (3, 1)), "unparseable", None,
     "response 2: score 40.0 is not an integer 0..100"),
    (_reply((1, 90), (2, 40), (3, 1), (3, 1)), "unparseable", None, "response 3 scored twice"),
    (json.dumps([{"response": 1, "score": 90}]), "unparseable", None, "no 'scores' list"),
    ('{"scores": [{"response": "1", "score": 90}]}', "unparseable", None,
     "response label '1' is not an integer"),
    ("Response 1: 90\nResponse 2: 40\nResponse 3: 0", "unparseable", None, "not JSON"),
    (None, "unparseable", None, "no reply"),
])
def test_reading_a_together_reply(text, state, scores, problem):
    parsed = parse_together("book", 3, text)
    assert (parsed.state, parsed.scores, parsed.problem) == (state, scores, problem)
    if state == "scored":
        assert parsed.reasons == ("r1", "r2", "r3")


def test_rubric_grades_are_mapped_to_0_100():
    assert parse_together("rubric", 2, _reply((1, 5), (2, 2))).scores == (100, 25)
    assert parse_together("rubric", 2, _reply((1, 5), (2, 0))).problem == (
        "response 2: score 0 is not an integer 1..5")

