"""Expected scores (judge.scoring = "expected"): the judge's probabilities for each score,
read from the log-probabilities of the reply's tokens, and their weighted mean (G-Eval's rule).

The rule, for one reply whose integer score `parse_reply` read (docs/judge.md, "Expected
scores"):
  1. The score token is the first token of the reply that, leading whitespace removed, starts
     with a digit. It must be the whole number the parser read: its digits are that number and
     the next token does not start with a digit. Otherwise the number spans tokens (a tokenizer
     that writes numbers digit by digit) and no distribution is read.
  2. Its candidates (the server's top tokens at that position, the token written among them)
     are read as numbers: leading whitespace removed, a candidate of ASCII digits without a
     leading zero is the value it spells; it is valid when the value lies on the template's
     scale (book 0-100, rubric 1-5). Candidates that spell the same value add up.
  3. On the 0-100 scale a single digit could be the first digit of a longer number; the
     candidates are read as whole numbers only when one of them has two or more digits (the
     tokenizer writes numbers as whole tokens, as Llama 3's and OpenAI's do up to 999), or
     when the token written is the only valid one (the judge is sure: its number is whole).
  4. The probabilities of the valid values, exp(logprob), are renormalised to sum to 1; the
     expected score is their weighted mean, on 0-100 (rubric grades mapped as their scores).
Where a step fails the item keeps its integer score and says why (`scoring`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from evalpipe.judging.prompts import SCALES

# Bump when the rule below changes: runs judged with expected scoring become stale, and their
# cached replies (log-probabilities included) are read again without asking the judge.
EXPECTED_RULE_VERSION = 1
DIGITS = re.compile(r"0|[1-9][0-9]*")  # a number as a score is written: no leading zero
TOP_LOGPROBS = 20  # candidates asked for at every position: the most Ollama and OpenAI give
DIGITS_KEPT = 4  # decimals of the probabilities and the expected score in scores.jsonl

# What a record's `scoring` says (docs/records.md)
EXPECTED = "expected"
NO_LOGPROBS = "integer (no logprobs)"
NO_SCORE_TOKEN = "integer (score token not found)"
SPANS_TOKENS = "integer (score spans tokens)"


@dataclass(frozen=True)
class Expected:
    scoring: str  # EXPECTED, or why the integer score stands
    distribution: dict[str, float] | None  # score (0-100, as a string) -> probability
    score: float | None  # the probability-weighted mean score, 0-100


def _number(token: str) -> int | None:
    text = token.lstrip()
    return int(text) if DIGITS.fullmatch(text) else None


def expected_score(template: str, score: int, logprobs: list | None) -> Expected:
    """The expected score of a reply whose integer score (0-100) is `score`, from its
    log-probabilities (backends.Reply.logprobs; None: the server sent none)."""
    if not logprobs:
        return Expected(NO_LOGPROBS, None, None)
    scale = SCALES[template]
    position = next((i for i, (token, _) in enumerate(logprobs)
                     if token.lstrip()[:1].isdigit()), None)
    if position is None:
        return Expected(NO_SCORE_TOKEN, None, None)
    token, candidates = logprobs[position]
    following = logprobs[position + 1][0] if position + 1 < len(logprobs) else ""
    if following[:1].isdigit():
        return Expected(SPANS_TOKENS, None, None)
    written = _number(token)
    if (written is None or not scale.low <= written <= scale.high
            or scale.to_score(written) != score):
        return Expected(NO_SCORE_TOKEN, None, None)
    weights: dict[int, float] = {}
    for candidate, logprob in candidates:
        value = _number(candidate)
        if value is not None and scale.low <= value <= scale.high:
            weights[value] = weights.get(value, 0.0) + math.exp(logprob)
    if scale.high >= 10 and len(weights) > 1 and all(value < 10 for value in weights):
        return Expected(SPANS_TOKENS, None, None)
    total = sum(weights.values())
    distribution = {scale.to_score(value): weight / total
                    for value, weight in sorted(weights.items())}
    mean = sum(value * p for value, p in distribution.items())
    return Expected(EXPECTED, {str(value): round(p, DIGITS_KEPT)
                               for value, p in distribution.items()},
                    round(mean, DIGITS_KEPT))
