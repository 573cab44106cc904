"""The thing that scores: the judge's prompts, their JSON schemas, and how a reply becomes a score.

Two prompt templates (`judge.template`):
  book    the book's chapter 7 prompt, word for word: a 0-100 score, "the integer number only".
  rubric  a reference-guided 1-5 rubric with a one-sentence reason; the grade is mapped to
          0-100 as 1->0, 2->25, 3->50, 4->75, 5->100, so both templates give scores on one scale.

With `judge.structured = true` the judge is also sent a JSON schema (`score`, `reason`) and the
prompt's last sentence asks for that JSON instead of free text; the reply must then be exactly
such an object. Without it the score is read from free text by the rule in `parse_reply`,
documented with examples in docs/judge.md. A score outside the scale is never clamped: the reply
is `unparseable`, because a judge that answers 150 on a 0-100 scale did not follow the prompt,
and clamping it to 100 would hide that.

Parsing works on the raw reply only, so a changed rule re-parses cached replies without asking
the judge again.

The judge stage's manifest records `template_sha256` (the prompt text and schema, whatever the
item) and `PARSE_RULE_VERSION`: a change to either makes the judge stale (docs/judge.md).

Together mode (`judge.mode = "together"`, evalpipe/judging/together.py) has its own prompt, schema and
parser at the end of this module: every model's response to one item in one prompt, labelled
"Response 1".."Response k", one score and reason per label back in one JSON object.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from evalpipe.templates import TEMPLATES

TEMPLATE_NAMES = ("book", "rubric")

# The version of the rules that read a reply (parse_reply, parse_together and their helpers).
# BUMP IT WITH EVERY CHANGE TO WHAT THEY MAKE OF A REPLY: finished judge runs are then stale,
# and rerunning them re-reads the cached replies with the new rule. Without the bump old
# scores stay "up to date" under the old rule.
PARSE_RULE_VERSION = 1


@dataclass(frozen=True)
class Scale:
    """What the judge is asked to answer with, and how that maps to a 0-100 score."""

    low: int
    high: int

    def to_score(self, value: int) -> int:
        """Map a value on this scale linearly to 0-100 (exact for the two scales used)."""
        return (value - self.low) * 100 // (self.high - self.low)


SCALES = {"book": Scale(0, 100), "rubric": Scale(1, 5)}


def format_input(record: dict) -> str:
    """The book's `format_input`: the Alpaca prompt (preamble, instruction, optional input)
    without the response part. Always Alpaca, whatever `data.template` the model was trained
    with: the judge reads the task, not the model's prompt format."""
    return TEMPLATES["alpaca"].prompt(record)


# -- prompts -----------------------------------------------------------------------------------

BOOK_FREE_TEXT_ENDING = "Respond with the integer number only."
BOOK_STRUCTURED_ENDING = (
    'Respond with a JSON object only: {"score": <the integer score>, '
    '"reason": "<one sentence saying why>"}.'
)

RUBRIC_GRADES = """\
5 - correct and complete: it says what the reference answer says (the wording may differ)
4 - correct, with a minor omission or imprecision
3 - partly correct: an important part is missing or wrong
2 - mostly wrong, but related to the task
1 - wrong, off-topic, or empty"""

RUBRIC_FREE_TEXT_ENDING = """\
Reply in exactly this form:
Grade: <1, 2, 3, 4 or 5>
Reason: <one sentence saying why>"""

RUBRIC_STRUCTURED_ENDING = (
    'Reply with a JSON object only: {"score": <the grade, 1 to 5>, '
    '"reason": "<one sentence saying why>"}.'
)


def render(template: str, record: dict, *, structured: bool = False) -> str:
    """The prompt that asks the judge to score `record["response"]` against
    `record["output"]` for the task in `record["instruction"]` / `record["input"]`."""
    if template == "book":
        # The book's prompt (chapter 7, `generate_model_scores`), character for character.
        ending = BOOK_STRUCTURED_ENDING if structured else BOOK_FREE_TEXT_ENDING
        return (
            f"Given the input `{format_input(record)}` "
            f"and correct output `{record['output']}`, "
            f"score the model response `{record['response']}`"
            f" on a scale from 0 to 100, where 100 is the best score. "
            f"{ending}"
        )
    if template == "rubric":
        ending = RUBRIC_STRUCTURED_ENDING if structured else RUBRIC_FREE_TEXT_ENDING
        return (
            "You are grading a response to a task against a reference answer.\n\n"
            f"Task:\n{format_input(record)}\n\n"
            f"Reference answer:\n{record['output']}\n\n"
            f"Response to grade:\n{record['response']}\n\n"
            "Grade the response from 1 to 5:\n"
            f"{RUBRIC_GRADES}\n\n"
            f"{ending}"
        )
    raise ValueError(f"unknown judge template {template!r} (known: {', '.join(TEMPLATE_NAMES)})")


REASON_MAX_CHARS = 200


def schema(template: str) -> dict:
    """The JSON schema sent with `judge.structured = true` (Ollama `format`, OpenAI
    `response_format`, a llama.cpp grammar)."""
    scale = SCALES[template]
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": scale.low, "maximum": scale.high},
            # One sentence. The bound also lets a grammar-constrained judge (llama.cpp)
            # always close the JSON within a modest token limit.
            "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
        },
        "required": ["score", "reason"],
    }


# What a prompt says besides the item: rendered with these placeholders (once with an input,
# once without, as format_input differs), its hash changes with any word of the prompt text.
PLACEHOLDER_RECORD = {"instruction": "{instruction}", "input": "{input}", "output": "{output}",
                      "response": "{response}"}


def _placeholders() -> list[dict]:
    return [PLACEHOLDER_RECORD, {**PLACEHOLDER_RECORD, "input": ""}]


def template_sha256(template: str, structured: bool) -> str:
    """SHA-256 of the prompt text of `template` (rendered with placeholders) and of the schema
    sent with it: what the judge is asked besides the item. Recorded in the judge's manifest."""
    text = json.dumps({"prompts": [render(template, record, structured=structured)
                                   for record in _placeholders()],
                       "schema": schema(template) if structured else None}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def together_template_sha256(template: str) -> str:
    """template_sha256 of a together prompt (two responses, and one) and its schemas."""
    prompts = [render_together(template, record, responses)
               for record in _placeholders()
               for responses in (["{response 1}", "{response 2}"], ["{response 1}"])]
    text = json.dumps({"prompts": prompts,
                       "schemas": [together_schema(template, n) for n in (1, 2)]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# -- parsing -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parsed:
    state: str  # "scored" or "unparseable"
    score: int | None  # 0..100 (rubric grades already mapped), None when unparseable
    reason: str | None


UNPARSEABLE = Parsed("unparseable", None, None)


def parse_reply(template: str, structured: bool, text: str | None) -> Parsed:
    """Read the score from a judge's reply; see docs/judge.md, "Reading the score"."""
    scale = SCALES[template]
    if text is None:
        return UNPARSEABLE
    value, reason = (_read_json if structured else _read_free_text)(text, scale)
    if value is None or not scale.low <= value <= scale.high:
        return UNPARSEABLE
    return Parsed("scored", scale.to_score(value), reason)


def _read_json(text: str, scale: Scale) -> tuple[int | None, str | None]:
    """Structured replies: exactly one JSON object (whitespace around it allowed) whose
    `score` is a JSON integer; `reason` is kept when it is a string."""
    try:
        value = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    score = value.get("score")
    if not _is_json_int(score):
        return None, None
    reason = value.get("reason")
    return score, reason.strip() if isinstance(reason, str) else None


def _is_json_int(value) -> bool:
    """A JSON integer: bool is an int in Python, and 85.0 is not what the schema asked for."""
    return isinstance(value, int) and not isinstance(value, bool)


BARE_INTEGER = re.compile(r"[+-]?\d+")
# A number token: digits, with any decimal or thousands parts glued on, so that "85.5" and
# "1,000" are seen whole (and then rejected as not an integer) rather than as 85 and 5.
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212"
# A label right before a number makes it the score the judge meant: "Score: 85",
# "**Grade:** 4", "my rating is 70", "a score of 90".
LABEL = re.compile(r"\b(?:score|grade|rating)\s*(?:[:=]|\bis\b|\bof\b)?[\s*:=]*$", re.IGNORECASE)
_DASH = f"[{DASHES}]"
RANGE_END = re.compile(rf"\d(?:\s*{_DASH}\s*|\s+to\s+)$", re.IGNORECASE)
RANGE_START = re.compile(rf"(?:\s*{_DASH}\s*|\s+to\s+)\d", re.IGNORECASE)
FRACTION_END = re.compile(r"(?:/\s*|\bout\s+of\s+)$", re.IGNORECASE)
FRACTION_START = re.compile(r"(?:\s*/\s*|\s+out\s+of\s+)(\d+)(?![\d.,])", re.IGNORECASE)
LIST_MARKER = re.compile(r"^[ \t]*(\d+)[.)][ \t]+\S", re.MULTILINE)
REASON = re.compile(r"^\W*reason\W*[:=]\**\s*(.+)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class _Integer:
    value: int
    labelled: bool


def _read_free_text(text: str, scale: Scale) -> tuple[int | None, str | None]:
    """Free-text replies, in order:
    1. the whole reply (stripped) is an integer: that is the value, in range or not;
    2. else the last integer that stands on its own and follows a label ("Score:", "Grade:",
       "rating is", "score of"): that is the value, in range or not;
    3. else the last integer that stands on its own and lies in the scale's range.
    A reason is the text after a "Reason:" at the start of a line, if any."""
    reason_match = REASON.findall(text)
    reason = reason_match[-1].strip() if reason_match else None
    stripped = text.strip()
    if BARE_INTEGER.fullmatch(stripped):
        return int(stripped), reason
    integers = standalone_integers(text, scale.high)
    labelled = [i for i in integers if i.labelled]
    if labelled:
        return labelled[-1].value, reason
    in_range = [i for i in integers if scale.low <= i.value <= scale.high]
    if in_range:
        return in_range[-1].value, reason
    return None, reason


def standalone_integers(text: str, top: int) -> list[_Integer]:
    """The integers in `text` that stand on their own, in order. Not on their own: a part of
    a decimal (85.5) or of a number with thousands separators (1,000); a number glued to a
    letter (GPT4, 3rd, 2x); a negative number (-5); either end of a range (80-90, 80 - 90,
    0 to 100); the markers of a numbered list (two or more lines starting "1. ", "2) ", ...);
    a fraction or "N out of M", unless M is `top`, the top of the scale asked for: then N
    stands for itself (85/100 is 85), because a score on the asked scale needs no conversion,
    while 8/10 would need a rescaling that the judge was not asked to leave to us."""
    list_markers = {m.start(1) for m in LIST_MARKER.finditer(text)}
    if len(list_markers) < 2:
        list_markers = set()  # one line starting "85. The response ..." is a score, not a list
    found = []
    for match in NUMBER.finditer(text):
        token, start = match.group(), match.start()
        # A window around the number is all the rules look at (and keeps long replies fast).
        before, after = text[max(0, start - 40):start], text[match.end():match.end() + 40]
        if "." in token or "," in token:
            continue  # not an integer
        if before[-1:].isalpha() or before[-1:] == "_" or after[:1].isalpha() or after[:1] == "_":
            continue  # part of a word
        if before and before[-1] in DASHES:
            continue  # a negative number, or the end of a range written without spaces
        if RANGE_END.search(before) or RANGE_START.match(after):
            continue
        if FRACTION_END.search(before):
            continue  # a denominator
        denominator = FRACTION_START.match(after)
        if denominator and int(denominator.group(1)) != top:
            continue
        if start in list_markers:
            continue
        found.append(_Integer(int(token), bool(LABEL.search(before))))
    return found


# -- together mode: every model's response to one item in one prompt --------------------------
#
# The judge sees the task, the reference and k responses labelled neutrally ("Response 1" ...
# "Response k", in an order shuffled per item by evalpipe/judging/together.py) and answers one JSON
# object: {"scores": [{"response": <label number>, "score": <int>, "reason": "<sentence>"}, ...]}
# with exactly one entry per label. The object wraps the array because OpenAI-style
# structured output wants an object at the top. Together mode is always structured: k scores
# in free text could not be read back reliably.

TOGETHER_INTRO = (
    "You are grading {count} to the same task against a reference answer. Grade each "
    "response on its own merits, independently of the other responses and of the order in "
    "which they are shown.")

TOGETHER_SCALE = {
    "book": "Score each response on a scale from 0 to 100, where 100 is the best score, and "
            "give a one-sentence reason for each.",
    "rubric": f"Grade each response from 1 to 5:\n{RUBRIC_GRADES}\n\nGive a one-sentence "
              "reason for each.",
}

TOGETHER_ENDING = (
    'Reply with a JSON object only: {{"scores": [{{"response": <the number of the response>, '
    '"score": <{what}>, "reason": "<one sentence saying why>"}}, ...]}}, with exactly '
    "{entries}.")

TOGETHER_SCORE_WORDS = {"book": "the integer score", "rubric": "the grade, 1 to 5"}


def together_label(number: int) -> tuple[str, str]:
    """The lines that open and close response `number` (1-based) in a together prompt. Square
    brackets, not '###': a GPT-2 fine-tuned on Alpaca prompts writes '### Response:' itself."""
    return f"[Response {number}]", f"[End of Response {number}]"


def _responses_word(count: int) -> str:
    return "one response" if count == 1 else f"{count} responses"


def render_together(template: str, record: dict, responses: list[str]) -> str:
    """The prompt that asks the judge to score every one of `responses` (in the order shown,
    labelled Response 1..k) against `record["output"]` for the task of `record`."""
    if template not in TOGETHER_SCALE:
        raise ValueError(f"unknown judge template {template!r} "
                         f"(known: {', '.join(TEMPLATE_NAMES)})")
    count = _responses_word(len(responses))
    entries = ("one entry, for the one response" if len(responses) == 1
               else f"one entry for each of the {count}")
    blocks = []
    for number, response in enumerate(responses, start=1):
        opening, closing = together_label(number)
        blocks.append(f"{opening}\n{response}\n{closing}")
    return (
        f"{TOGETHER_INTRO.format(count=count)}\n\n"
        f"Task:\n{format_input(record)}\n\n"
        f"Reference answer:\n{record['output']}\n\n"
        + "\n\n".join(blocks) + "\n\n"
        f"{TOGETHER_SCALE[template]}\n\n"
        + TOGETHER_ENDING.format(what=TOGETHER_SCORE_WORDS[template], entries=entries))


def together_schema(template: str, count: int) -> dict:
    """The JSON schema of a together reply for `count` responses: exactly `count` entries, each
    naming a label 1..count. (A schema cannot say "each label once"; the parser checks it.)"""
    judgment = schema(template)  # each entry: one judgment, plus the label it is about
    entry = {
        "type": "object",
        "properties": {"response": {"type": "integer", "minimum": 1, "maximum": count},
                       **judgment["properties"]},
        "required": ["response", *judgment["required"]],
    }
    return {
        "type": "object",
        "properties": {"scores": {"type": "array", "items": entry,
                                  "minItems": count, "maxItems": count}},
        "required": ["scores"],
    }


@dataclass(frozen=True)
class TogetherParsed:
    """A together reply read: one score and reason per label, in label order, or why not."""

    state: str  # "scored" or "unparseable"
    scores: tuple[int, ...] | None  # 0..100 (rubric grades mapped), index = label - 1
    reasons: tuple[str | None, ...] | None
    problem: str | None  # for "unparseable": what was wrong, in a few words


def _unparseable(problem: str) -> TogetherParsed:
    return TogetherParsed("unparseable", None, None, problem)


def parse_together(template: str, count: int, text: str | None) -> TogetherParsed:
    """Read a together reply for `count` responses. It must be one JSON object whose `scores`
    is a list holding exactly one entry per label 1..count, each with an integer `response`
    and an integer `score` in the template's scale; `reason` is kept when it is a string.
    Anything else (a label missing, scored twice or unknown, a score out of range) makes the
    whole reply unparseable: the scores of the other responses are not trusted either, since
    the judge lost track of which response is which."""
    scale = SCALES[template]
    if text is None:
        return _unparseable("no reply")
    try:
        value = json.loads(text)
    except ValueError:
        return _unparseable("not JSON")
    if not isinstance(value, dict) or not isinstance(value.get("scores"), list):
        return _unparseable("no 'scores' list")
    scores: dict[int, int] = {}
    reasons: dict[int, str | None] = {}
    for entry in value["scores"]:
        if not isinstance(entry, dict):
            return _unparseable("an entry is not an object")
        label, score = entry.get("response"), entry.get("score")
        if not _is_json_int(label):
            return _unparseable(f"response label {label!r} is not an integer")
        if not 1 <= label <= count:
            return _unparseable(f"unknown response {label}")
        if label in scores:
            return _unparseable(f"response {label} scored twice")
        if not _is_json_int(score) or not scale.low <= score <= scale.high:
            return _unparseable(f"response {label}: score {score!r} is not an integer "
                                f"{scale.low}..{scale.high}")
        scores[label] = scale.to_score(score)
        reason = entry.get("reason")
        reasons[label] = reason.strip() if isinstance(reason, str) else None
    missing = [label for label in range(1, count + 1) if label not in scores]
    if missing:
        return _unparseable(f"response {missing[0]} not scored")
    labels = range(1, count + 1)
    return TogetherParsed("scored", tuple(scores[n] for n in labels),
                          tuple(reasons[n] for n in labels), None)


# -- pairwise mode: two responses to one item, one verdict -------------------------------------
#
# In the style of Arena-Hard's judge prompt: the task, the reference answer, Response A and
# Response B, and one of five verdicts (A much better, A better, a tie, B better, B much
# better). The reply is asked as JSON {"verdict", "reason"} with a schema (every backend sends
# one: Ollama `format`, OpenAI `response_format`, a llama.cpp grammar); a judge that writes
# free text anyway is read by Arena-Hard's rule, the verdict in double brackets ([[A>B]]).
# evalpipe/judging/pairwise.py asks each pair in both orders.

PAIRWISE_VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")  # = stats.bradley_terry.VERDICTS

# The version of parse_pairwise's rule; a change makes pairwise judgments stale (as
# PARSE_RULE_VERSION does for the others, which it leaves alone).
PAIRWISE_PARSE_RULE_VERSION = 1

PAIRWISE_INTRO = (
    "Please act as an impartial judge and evaluate the quality of two responses to the task "
    "shown below, against its reference answer. Judge which response is better: more "
    "correct and complete with respect to the reference answer, and more helpful. Do not let "
    "the order in which the responses are shown, their length, or their style sway you; a "
    "longer response is not better for being longer.")

PAIRWISE_CHOICES = """\
A>>B - Response A is significantly better
A>B - Response A is slightly better
A=B - a tie, relatively the same
B>A - Response B is slightly better
B>>A - Response B is significantly better"""

PAIRWISE_ENDING = (
    'Reply with a JSON object only: {"verdict": "<one of A>>B, A>B, A=B, B>A, B>>A>", '
    '"reason": "<one sentence saying why>"}.')


def pairwise_label(letter: str) -> tuple[str, str]:
    """The lines that open and close Response `letter` (A or B) in a pairwise prompt (square
    brackets, as in together prompts: a GPT-2 fine-tuned on Alpaca writes '###' itself)."""
    return f"[Response {letter}]", f"[End of Response {letter}]"


def render_pairwise(record: dict, response_a: str, response_b: str) -> str:
    """The prompt that asks the judge which of two responses to the task of `record` is
    better, against `record["output"]`: `response_a` shown as Response A, first."""
    blocks = []
    for letter, response in (("A", response_a), ("B", response_b)):
        opening, closing = pairwise_label(letter)
        blocks.append(f"{opening}\n{response}\n{closing}")
    return (f"{PAIRWISE_INTRO}\n\n"
            f"Task:\n{format_input(record)}\n\n"
            f"Reference answer:\n{record['output']}\n\n"
            + "\n\n".join(blocks) + "\n\n"
            f"Give one verdict:\n{PAIRWISE_CHOICES}\n\n{PAIRWISE_ENDING}")


def pairwise_schema() -> dict:
    """The JSON schema of a pairwise reply: one of the five verdicts and a reason."""
    return {
        "type": "object",
        "properties": {"verdict": {"type": "string", "enum": list(PAIRWISE_VERDICTS)},
                       "reason": {"type": "string", "maxLength": REASON_MAX_CHARS}},
        "required": ["verdict", "reason"],
    }


def pairwise_template_sha256() -> str:
    """template_sha256 of the pairwise prompt and its schema."""
    text = json.dumps({"prompts": [render_pairwise(record, "{response A}", "{response B}")
                                   for record in _placeholders()],
                       "schema": pairwise_schema()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PairwiseParsed:
    """A pairwise reply read: the verdict and reason, or why not."""

    state: str  # "judged" or "unparseable"
    verdict: str | None  # one of PAIRWISE_VERDICTS, as the judge said it (A: shown first)
    reason: str | None
    problem: str | None  # for "unparseable": what was wrong, in a few words


BRACKETED_VERDICT = re.compile(r"\[\[\s*(A>>B|A>B|A=B|B>A|B>>A)\s*\]\]")


def parse_pairwise(text: str | None) -> PairwiseParsed:
    """Read a pairwise reply: a JSON object whose `verdict` is one of the five (`reason` kept
    when a string); else, in free text, the verdicts written in double brackets ([[A>B]],
    Arena-Hard's rule), which must all be the same one; else the whole reply being a bare
    verdict. Anything else is unparseable, never a tie: a judge that did not answer the
    question has not said the two are equal."""
    if text is None:
        return PairwiseParsed("unparseable", None, None, "no reply")
    stripped = text.strip()
    try:
        value = json.loads(stripped)
    except ValueError:
        value = None
    if isinstance(value, dict):
        verdict, reason = value.get("verdict"), value.get("reason")
        reason = reason.strip() if isinstance(reason, str) else None
        if isinstance(verdict, str) and verdict.strip() in PAIRWISE_VERDICTS:
            return PairwiseParsed("judged", verdict.strip(), reason, None)
        return PairwiseParsed("unparseable", None, None, f"verdict {verdict!r} is not one of "
                              + ", ".join(PAIRWISE_VERDICTS))
    if stripped in PAIRWISE_VERDICTS:
        return PairwiseParsed("judged", stripped, None, None)
    found = set(BRACKETED_VERDICT.findall(text))
    if len(found) == 1:
        return PairwiseParsed("judged", found.pop(), None, None)
    if found:
        return PairwiseParsed("unparseable", None, None,
                              "several verdicts: " + ", ".join(sorted(found)))
    return PairwiseParsed("unparseable", None, None, "no verdict")
