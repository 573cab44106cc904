"""The mock judge backend (judge.backend = "mock"): a judge in this process that reads nothing
but word overlap. For tests and for trying the pipeline without a server; never for real
scores.

judge.model names the scoring rule; the only one is "overlap" (an empty judge.model means it
too): the token-overlap F1 (lower-cased words, as SQuAD's F1) between the response and the
reference answer found in the prompt, as
  the book's prompt     str(round(100 * F1))
  the rubric prompt     "Score: N\nReason: ..." with N = 1 + round(4 * F1)
  a together prompt     one line "Response N: score - reason" per response, each scored on
                        its own (book or rubric scale), whatever its position
  a pairwise prompt     the verdict on the two F1s: equal (within 0.05) A=B, else the
                        higher one better, much better when ahead by 0.5 or more
  structured requests   the same scores as JSON ({"score", "reason"}, or {"scores": [...]},
                        or {"verdict", "reason"})
A prompt of none of these layouts is a JudgeError, so a prompt-rendering bug cannot pass
unseen. The reply reports a prompt token count (one per word and punctuation mark), so the
judge stage's truncation check has something to check.

The scoring functions are the ones the stand-in servers of the tests answer with
(tests/standins.py imports them from here): one implementation of the deterministic judge.
The identity is JudgeIdentity("mock", rule, SHA-256 of "evalpipe mock judge <rule>").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

from evalpipe.judging.backends.base import JudgeError, JudgeIdentity, JudgeRequest, Reply

RULES = ("overlap",)  # the scoring rules judge.model may name
DEFAULT_RULE = "overlap"


def make_backend(judge_config):
    """The mock judge with the scoring rule named by judge.model."""
    return MockBackend(judge_config.model)


class MockBackend:
    """The in-process word-overlap judge; safe to call from many threads (it keeps no
    state)."""

    def __init__(self, model: str = DEFAULT_RULE):
        rule = model or DEFAULT_RULE
        if rule not in RULES:
            raise JudgeError(f"judge.model: the mock judge has no scoring rule {rule!r} "
                             f"(known: {', '.join(repr(r) for r in RULES)})")
        self.rule = rule
        self.max_context: int | None = None  # no context to outgrow

    def preflight(self) -> JudgeIdentity:
        return JudgeIdentity(backend="mock", model=self.rule, digest=mock_digest(self.rule))

    def ask(self, request: JudgeRequest) -> Reply:
        text = overlap_reply(request.prompt, structured=request.schema is not None)
        if text is None:
            raise JudgeError("mock judge: the prompt has neither the book's markers (correct "
                             "output `...`, score the model response `...`), nor the rubric's "
                             "(Reference answer: / Response to grade:), nor a together "
                             "prompt's ([Response 1] ...), nor a pairwise one ([Response A] "
                             "...)")
        return Reply(text, prompt_tokens(request.prompt))

    def close(self) -> None:
        pass


def mock_digest(rule: str) -> str:
    """What stands for the weights' digest: it changes only with the rule's name."""
    return hashlib.sha256(f"evalpipe mock judge {rule}".encode()).hexdigest()


def prompt_tokens(prompt: str) -> int:
    """The mock model's token count of a prompt: one token per word and per punctuation
    mark (never fewer than the words, as with any real tokenizer)."""
    return len(re.findall(r"\w+|[^\w\s]", prompt))


# ------------------------------------------------------------------------------------------
# The overlap rule

def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def overlap_f1(response: str, reference: str) -> float:
    """Token-overlap F1 between two texts (lower-cased words), as in SQuAD's F1 score."""
    response_words, reference_words = _words(response), _words(reference)
    if not response_words or not reference_words:
        return float(response_words == reference_words)
    common = sum((Counter(response_words) & Counter(reference_words)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(response_words), common / len(reference_words)
    return 2 * precision * recall / (precision + recall)


# The book's prompt: ... and correct output `{output}`, score the model response `{response}`
# on a scale from 0 to 100 ... Whitespace between the marker words may vary; the texts
# themselves may contain backticks, so each text runs to the LAST closing marker.
_BOOK_OUTPUT_START = re.compile(r"correct\s+output\s*`", re.IGNORECASE)
_BOOK_RESPONSE_START = re.compile(r"`\s*,?\s*score\s+the\s+model\s+response\s*`", re.IGNORECASE)
_BOOK_RESPONSE_END = re.compile(r"`\s*on\s+a\s+scale", re.IGNORECASE)
# The rubric prompt: "Reference answer:" <text> "Response to grade:" <text> [instructions]
_RUBRIC_REFERENCE = re.compile(r"reference\s+answer\s*:", re.IGNORECASE)
_RUBRIC_RESPONSE = re.compile(r"response\s+to\s+grade\s*:", re.IGNORECASE)
# After the graded response a rubric prompt may go on with instructions in a new paragraph.
_RUBRIC_TRAILER = re.compile(
    r"\n\s*\n\s*(?:score|respond|reply|answer\s+with|give|grade|format|output|return|"
    r"rubric|use\s+the|remember)\b", re.IGNORECASE)


def _strip_quotes(text: str) -> str:
    text = text.strip()
    for quote in ('"""', "```", "`", '"'):
        if len(text) >= 2 * len(quote) and text.startswith(quote) and text.endswith(quote):
            return text[len(quote):-len(quote)].strip()
    return text


def parse_book_prompt(prompt: str) -> tuple[str, str] | None:
    """(correct output, model response) from the book's prompt, or None if it is not one."""
    output_start = _BOOK_OUTPUT_START.search(prompt)
    if not output_start:
        return None
    ends = list(_BOOK_RESPONSE_END.finditer(prompt, output_start.end()))
    if not ends:
        return None
    response_end = ends[-1]
    middles = [m for m in _BOOK_RESPONSE_START.finditer(prompt, output_start.end(),
                                                        response_end.start())]
    if not middles:
        return None
    middle = middles[0]
    return prompt[output_start.end():middle.start()], prompt[middle.end():response_end.start()]


def parse_rubric_prompt(prompt: str) -> tuple[str, str] | None:
    """(reference answer, response to grade) from the rubric prompt, or None."""
    reference = _RUBRIC_REFERENCE.search(prompt)
    response = _RUBRIC_RESPONSE.search(prompt, reference.end()) if reference else None
    if not (reference and response):
        return None
    response_text = prompt[response.end():]
    trailer = _RUBRIC_TRAILER.search(response_text)
    if trailer:
        response_text = response_text[:trailer.start()]
    return (_strip_quotes(prompt[reference.end():response.start()]),
            _strip_quotes(response_text))


def book_score(response: str, reference: str) -> int:
    """The stand-in judge's 0-100 score: round(100 * token-overlap F1)."""
    return round(100 * overlap_f1(response, reference))


def rubric_score(response: str, reference: str) -> int:
    """The stand-in judge's 1-5 rubric score: 1 + round(4 * token-overlap F1)."""
    return 1 + round(4 * overlap_f1(response, reference))



def single_reply(prompt: str, structured: bool) -> str | None:
    """The answer to the book's prompt or the rubric prompt, None to any other prompt.

    Book prompt: str(round(100 * F1)) with F1 the token overlap between the model response
    and the correct output. Rubric prompt ("Reference answer:" / "Response to grade:"):
    "Score: N\nReason: ..." with N = 1 + round(4 * F1). Structured: json.dumps({"score": N,
    "reason": ...}) instead.
    """
    book = parse_book_prompt(prompt)
    if book is not None:
        reference, response = book
        score = book_score(response, reference)
        reason = f"word overlap F1 with the correct output is {overlap_f1(response, reference):.2f}"
        return json.dumps({"score": score, "reason": reason}) if structured else str(score)
    rubric = parse_rubric_prompt(prompt)
    if rubric is not None:
        reference, response = rubric
        score = rubric_score(response, reference)
        reason = f"word overlap F1 with the reference is {overlap_f1(response, reference):.2f}"
        if structured:
            return json.dumps({"score": score, "reason": reason})
        return f"Score: {score}\nReason: {reason}"
    return None


# The together prompt (evalpipe/judging/prompts.py, render_together): "Reference answer:\n<text>"
# then blocks "[Response N]\n<text>\n[End of Response N]", then the instructions.
_TOGETHER_REFERENCE = re.compile(r"Reference answer:\n(.*?)\n\n\[Response 1\]\n", re.DOTALL)
_TOGETHER_BLOCK = re.compile(r"\[Response (\d+)\]\n(.*?)\n\[End of Response \1\]", re.DOTALL)
_TOGETHER_RUBRIC = re.compile(r"Grade each response from 1 to 5", re.IGNORECASE)


def parse_together_prompt(prompt: str) -> tuple[str, list[str]] | None:
    """(reference answer, [response 1, response 2, ...]) from a together prompt, or None."""
    reference = _TOGETHER_REFERENCE.search(prompt)
    if not reference:
        return None
    blocks = [(int(m.group(1)), m.group(2))
              for m in _TOGETHER_BLOCK.finditer(prompt, reference.end() - len("[Response 1]\n"))]
    if [number for number, _ in blocks] != list(range(1, len(blocks) + 1)):
        return None
    return reference.group(1), [text for _, text in blocks]


def together_entries(prompt: str) -> list[dict] | None:
    """The answer to a together prompt, as entries {response, score, reason} in label order
    (None when the prompt is not one): every response scored on its own, 100 * F1 (book
    scale) or 1 + round(4 * F1) (rubric), whatever its position."""
    parsed = parse_together_prompt(prompt)
    if parsed is None:
        return None
    reference, responses = parsed
    rubric = bool(_TOGETHER_RUBRIC.search(prompt))
    entries = []
    for number, response in enumerate(responses, start=1):
        score = (rubric_score if rubric else book_score)(response, reference)
        entries.append({"response": number, "score": score,
                        "reason": f"word overlap F1 with the reference is "
                                  f"{overlap_f1(response, reference):.2f}"})
    return entries


def overlap_reply(prompt: str, structured: bool) -> str | None:
    """The overlap rule's answer to any prompt the judge stage sends: a together prompt gets
    {"scores": [...]} as JSON when structured, else one line per response ("Response N:
    score - reason"); the book's and the rubric prompt get single_reply's answer; None to a
    prompt of none of these layouts."""
    entries = together_entries(prompt)
    if entries is None:
        pairwise = pairwise_reply(prompt, structured)
        return single_reply(prompt, structured) if pairwise is None else pairwise
    if structured:
        return json.dumps({"scores": entries})
    return "\n".join(f"Response {e['response']}: {e['score']} - {e['reason']}" for e in entries)


_PAIRWISE = re.compile(r"Reference answer:\n(.*?)\n\n\[Response A\]\n(.*?)\n\[End of Response A\]"
                       r"\n\n\[Response B\]\n(.*?)\n\[End of Response B\]", re.DOTALL)


def parse_pairwise_prompt(prompt: str) -> tuple[str, str, str] | None:
    """(reference answer, Response A, Response B) from a pairwise prompt, or None."""
    match = _PAIRWISE.search(prompt)
    return None if match is None else (match.group(1), match.group(2), match.group(3))


def overlap_verdict(reference: str, response_a: str, response_b: str) -> str:
    """The overlap rule's verdict on two responses: by the difference of their F1s."""
    difference = overlap_f1(response_a, reference) - overlap_f1(response_b, reference)
    if abs(difference) < 0.05:
        return "A=B"
    better = "A>B" if difference > 0 else "B>A"
    return better.replace(">", ">>") if abs(difference) >= 0.5 else better


def pairwise_reply(prompt: str, structured: bool) -> str | None:
    """The overlap rule's answer to a pairwise prompt ({"verdict", "reason"} as JSON when
    structured, else "... [[verdict]]"); None when the prompt is not one."""
    parsed = parse_pairwise_prompt(prompt)
    if parsed is None:
        return None
    verdict = overlap_verdict(*parsed)
    reason = "by word overlap F1 with the reference"
    if structured:
        return json.dumps({"verdict": verdict, "reason": reason})
    return f"Decided {reason}. My final verdict: [[{verdict}]]"
