"""The judge's prompts and the rules that turn a reply into a score (evalpipe/judging/prompts.py)."""

import json

import pytest
from standins import parse_book_prompt, parse_rubric_prompt

from evalpipe.judging.prompts import (
    Parsed,
    parse_reply,
    render,
    schema,
    standalone_integers,
)

WITH_INPUT = {"instruction": "Rewrite the sentence using a simile.",
              "input": "The car is very fast.",
              "output": "The car is as fast as lightning.",
              "response": "The car is as fast as a bullet."}
WITHOUT_INPUT = {"instruction": "What is the capital of Italy?", "input": "",
                 "output": "The capital of Italy is Rome.", "response": "Rome."}


def test_book_prompt_is_the_books_prompt_character_for_character():
    # chapter 7, generate_model_scores: f"Given the input `{format_input(entry)}` and correct
    # output `{entry['output']}`, score the model response `{entry['model_response']}` on a
    # scale from 0 to 100, where 100 is the best score. Respond with the integer number only."
    assert render("book", WITH_INPUT) == (
        "Given the input `Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\nRewrite the sentence using a "
        "simile.\n\n### Input:\nThe car is very fast.` and correct output `The car is as fast as "
        "lightning.`, score the model response `The car is as fast as a bullet.` on a scale "
        "from 0 to 100, where 100 is the best score. Respond with the integer number only.")
    # No "### Input:" section when the input is empty, as in the book's format_input.
    assert render("book", WITHOUT_INPUT) == (
        "Given the input `Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\nWhat is the capital of "
        "Italy?` and correct output `The capital of Italy is Rome.`, score the model response "
        "`Rome.` on a scale from 0 to 100, where 100 is the best score. Respond with the "
        "integer number only.")


def test_structured_book_prompt_changes_only_its_last_sentence():
    free, structured = render("book", WITH_INPUT), render("book", WITH_INPUT, structured=True)
    stem = free[: -len("Respond with the integer number only.")]
    assert structured == stem + ('Respond with a JSON object only: {"score": <the integer '
                                 'score>, "reason": "<one sentence saying why>"}.')


def test_rubric_prompt():
    assert render("rubric", WITHOUT_INPUT) == """\
You are grading a response to a task against a reference answer.

Task:
Below is an instruction that describes a task. Write a response that appropriately completes \
the request.

### Instruction:
What is the capital of Italy?

Reference answer:
The capital of Italy is Rome.

Response to grade:
Rome.

Grade the response from 1 to 5:
5 - correct and complete: it says what the reference answer says (the wording may differ)
4 - correct, with a minor omission or imprecision
3 - partly correct: an important part is missing or wrong
2 - mostly wrong, but related to the task
1 - wrong, off-topic, or empty

Reply in exactly this form:
Grade: <1, 2, 3, 4 or 5>
Reason: <one sentence saying why>"""
    assert render("rubric", WITHOUT_INPUT, structured=True).endswith(
        'Reply with a JSON object only: {"score": <the grade, 1 to 5>, '
        '"reason": "<one sentence saying why>"}.')


@pytest.mark.parametrize("structured", [False, True])
def test_the_stand_in_judge_reads_both_prompts(structured):
    # The stand-in judge of the stage tests finds the reference and the response in the
    # rendered prompts, even when the texts hold backticks of their own.
    record = {**WITH_INPUT, "output": "Use `ls -l`.", "response": "Run `ls`, then `pwd`."}
    assert parse_book_prompt(render("book", record, structured=structured)) == (
        "Use `ls -l`.", "Run `ls`, then `pwd`.")
    assert parse_rubric_prompt(render("rubric", record, structured=structured)) == (
        "Use `ls -l`.", "Run `ls`, then `pwd`.")


def test_render_rejects_an_unknown_template():
    with pytest.raises(ValueError, match="unknown judge template 'stars'"):
        render("stars", WITH_INPUT)


def test_schemas():
    assert schema("book") == {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100},
                       "reason": {"type": "string", "maxLength": 200}},
        "required": ["score", "reason"],
    }
    assert schema("rubric")["properties"]["score"] == {"type": "integer", "minimum": 1,
                                                       "maximum": 5}


# -- free text, book (0..100) --------------------------------------------------------------------

BOOK_REPLIES = [
    # A bare integer: the whole reply.
    ("85", 85), ("  85\n", 85), ("0", 0), ("100", 100), ("085", 85),
    ("-5", None), ("150", None), ("101", None), ("+85", 85),
    # Nothing that is an integer.
    ("", None), ("   ", None), ("eighty", None), ("85.5", None), ("85.0", None),
    ("I cannot score this.", None),
    # A label before the number: that number, in range or not.
    ("Score: 85", 85), ("score:85", 85), ("**Score:** 72", 72), ("Score = 64", 64),
    ("My rating is 70.", 70), ("I give it a score of 90 because it lists 3 items.", 90),
    ("The response lists 3 of the 4 items. Score: 90", 90),
    ("Score: 85\n\nThe response misses 2 details.", 85),
    ("Score: 150", None), ("Score: 150, but the response lists 3 items", None),
    ("Score: 85, revised score: 80", 80),
    # The last integer that stands on its own.
    ("85.", 85), ("85. The response is accurate.", 85), ("I'd give it 85", 85),
    ("The response is accurate: 85%", 85), ("(85)", 85), ("`85`", 85),
    ("I would score it 90 on a scale from 0 to 100.", 90),
    # Fractions: N/100 and "N out of 100" are N; other denominators are not rescaled.
    ("I'd give it 85/100", 85), ("85 / 100", 85), ("85 out of 100", 85),
    ("8/10", None), ("4 out of 5", None), ("Score: 8/10", None), ("3/4 of the points; 70", 70),
    # Not on their own: decimals, thousands, negatives, ranges, words, list markers.
    ("between 80 and 90: 85.5", 90), ("80-90", None), ("80 - 90", None), ("80–90", None),
    ("Somewhere in 80-90, say 85", 85), ("1,000 words; 40", 40), ("GPT4 says 12", 12),
    ("the 3rd item", None), ("3x better", None), ("Score: -5", None),
    ("1. accurate\n2. complete\n\n75", 75), ("75\n1. accurate\n2. complete", 75),
    ("1. Only one list line", 1),
    # The rule's known limit (docs/judge.md): numbers after the score win.
    ("85 - it names 3 of the 4 items", 4),
]


@pytest.mark.parametrize("reply, score", BOOK_REPLIES)
def test_book_free_text(reply, score):
    parsed = parse_reply("book", False, reply)
    if score is None:
        assert parsed == Parsed("unparseable", None, None)
    else:
        assert parsed == Parsed("scored", score, None)


def test_a_reason_line_is_kept_in_free_text():
    assert parse_reply("book", False, "Score: 72\nReason: it misses 2 of the 4 facts.") == (
        Parsed("scored", 72, "it misses 2 of the 4 facts."))


def test_none_is_unparseable():
    assert parse_reply("book", False, None) == Parsed("unparseable", None, None)


def test_standalone_integers_are_found_in_order():
    found = standalone_integers("Score: 4/5. It has 3 parts, 80-90 words, 2.5 pages, 7", 5)
    assert [(i.value, i.labelled) for i in found] == [(4, True), (3, False), (7, False)]


# -- free text, rubric (1..5, mapped to 0..100) ---------------------------------------------------

RUBRIC_REPLIES = [
    ("1", 0), ("2", 25), ("3", 50), ("4", 75), ("5", 100),
    ("0", None), ("6", None), ("85", None),
    ("Grade: 4\nReason: it misses 2 of the points.", 75),
    ("Score: 5\nReason: word overlap F1 with the reference is 1.00", 100),
    ("Grade: 6\nReason: excellent, 3 of 3", None),
    ("I'd say 4/5", 75), ("4 out of 5", 75), ("8/10", None), ("Grade: 3.5", None),
    ("It lists 2 of 3 items correctly, so 3", 50),
]


@pytest.mark.parametrize("reply, score", RUBRIC_REPLIES)
def test_rubric_free_text(reply, score):
    parsed = parse_reply("rubric", False, reply)
    assert parsed.state == ("unparseable" if score is None else "scored")
    assert parsed.score == score


def test_rubric_reason():
    assert parse_reply("rubric", False, "Grade: 2\nReason: Related, but wrong.") == Parsed(
        "scored", 25, "Related, but wrong.")


# -- structured (JSON) -----------------------------------------------------------------------------

@pytest.mark.parametrize("reply, template, expected", [
    ('{"score": 85, "reason": "Accurate."}', "book", Parsed("scored", 85, "Accurate.")),
    (' \n{"reason": "fine", "score": 0}\n', "book", Parsed("scored", 0, "fine")),
    ('{"score": 100}', "book", Parsed("scored", 100, None)),
    ('{"score": 85, "reason": 3}', "book", Parsed("scored", 85, None)),
    ('{"score": 4, "reason": "Minor omission."}', "rubric",
     Parsed("scored", 75, "Minor omission.")),
    ('{"score": 150, "reason": "great"}', "book", None),
    ('{"score": -1, "reason": "x"}', "book", None),
    ('{"score": 85, "reason": "x"}', "rubric", None),
    ('{"score": 0, "reason": "x"}', "rubric", None),
    ('{"score": 85.0, "reason": "x"}', "book", None),
    ('{"score": "85", "reason": "x"}', "book", None),
    ('{"score": true, "reason": "x"}', "book", None),
    ('{"reason": "no score"}', "book", None),
    ('[85]', "book", None),
    ('85', "book", None),
    ('Score: 85', "book", None),
    ('{"score": 85, "reason": "cut short', "book", None),
    ('```json\n{"score": 85, "reason": "x"}\n```', "book", None),
    ('', "book", None),
])
def test_structured(reply, template, expected):
    assert parse_reply(template, True, reply) == (
        expected or Parsed("unparseable", None, None))
    if expected is not None:
        json.loads(reply)  # the accepted replies are exactly JSON
