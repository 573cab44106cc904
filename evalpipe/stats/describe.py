"""Statistics of one run's scores: pure functions on plain lists, no files, no configuration.

Every function here says what it does with the awkward cases (no values, one value, a constant
column, failures), because those are exactly the cases where a summary number quietly lies:
a "mean" of zero items, a standard deviation of one item, a correlation of a column that never
changes. Where a number does not exist the function returns None, and the report says so.

Conventions:
- `sd` is the sample standard deviation (ddof=1), the estimate of the spread of the population
  the items were drawn from; it is None for fewer than two values.
- `bootstrap_ci` is the percentile bootstrap of the mean, with numpy's `default_rng(seed)`, so
  the same values, resamples and seed always give the same interval.
- `token_f1` follows the SQuAD evaluation script (v2.0) to the letter, so its numbers can be
  compared with the ones people know.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

from evalpipe.records import STATES

# -- location and spread ------------------------------------------------------------------------

def state_counts(records: Sequence[dict]) -> dict[str, int]:
    """How many records end in each state, every state named (0 when none)."""
    counts = collections.Counter(record["state"] for record in records)
    return {state: counts[state] for state in STATES}


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean; None for no values."""
    if len(values) == 0:
        return None
    return float(np.mean(np.asarray(values, dtype=float)))


def median(values: Sequence[float]) -> float | None:
    """Median (the mean of the two middle values for an even count); None for no values."""
    if len(values) == 0:
        return None
    return float(np.median(np.asarray(values, dtype=float)))


def sd(values: Sequence[float]) -> float | None:
    """Sample standard deviation, sqrt(sum((x - mean)^2) / (n - 1)); None for fewer than two
    values, where the sample spread is not defined (0 would claim a certainty one item cannot
    give)."""
    if len(values) < 2:
        return None
    return float(np.std(np.asarray(values, dtype=float), ddof=1))


def bootstrap_ci(values: Sequence[float], resamples: int, seed: int,
                 confidence: float = 0.95) -> list[float] | None:
    """Percentile bootstrap confidence interval of the mean: [low, high].

    Draws `resamples` samples of len(values) items with replacement, using
    `numpy.random.default_rng(seed)` (one `integers(0, n, size=(resamples, n))` call, so the
    result depends only on the values, `resamples` and `seed`), takes the mean of each, and
    returns the (1 - confidence)/2 and (1 + confidence)/2 quantiles of those means (numpy's
    default linear interpolation). One value gives [x, x]; no values give None. A constant
    column gives [c, c].
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n == 0:
        return None
    if n == 1:
        return [float(data[0]), float(data[0])]
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return [float(low), float(high)]


def book_average(states: Sequence[str], scores: Sequence[int | None]) -> float | None:
    """The average as chapter 7 of the book computes it: an empty response counts 0, a judgment
    that gave no usable score (`unparseable`, `error`) is dropped from numerator and
    denominator. None when nothing is left.

    With docs/records.md's rules (an `empty` record carries score 0) this equals the mean over
    scored+empty items; it is computed from the states on its own so that it stays the book's
    number even if that rule ever changes.
    """
    if len(states) != len(scores):
        raise ValueError(f"{len(states)} states against {len(scores)} scores")
    counted = []
    for state, score in zip(states, scores):
        if state == "empty":
            counted.append(0)
        elif state == "scored":
            counted.append(score)
        elif state not in STATES:
            raise ValueError(f"unknown state {state!r} (states: {', '.join(STATES)})")
    return mean(counted)


# -- reference overlap (SQuAD's token F1) -----------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lowercase, drop ASCII punctuation, drop the articles a/an/the,
    collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(response: str | None, reference: str) -> float:
    """Token-level F1 between a response and the reference, as SQuAD computes it: both
    normalized (`normalize_answer`), split on whitespace, overlap counted as a multiset (a word
    twice in both counts twice). Both empty after normalization -> 1.0, one empty -> 0.0.
    A missing response (None) counts as empty."""
    response_tokens = normalize_answer(response or "").split()
    reference_tokens = normalize_answer(reference).split()
    if not response_tokens or not reference_tokens:
        return float(response_tokens == reference_tokens)
    common = collections.Counter(response_tokens) & collections.Counter(reference_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(response_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


# -- rank correlation ---------------------------------------------------------------------------

def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (scipy.stats.spearmanr: ties get their average rank).

    None when there are fewer than 3 pairs (two points always lie on a monotone line) or when
    either column is constant (the ranks carry no order, so the correlation is undefined;
    scipy would return nan with a warning)."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} values against {len(y)}")
    if not correlation_defined(x, y):
        return None
    from scipy.stats import spearmanr

    rho, _p_value = spearmanr(x, y)
    return float(rho)


# -- the judge's own reliability ----------------------------------------------------------------

def self_consistency(repeat_scores: Sequence[Sequence[int | None]]) -> dict | None:
    """How much the judge disagrees with itself when asked the same question again.

    `repeat_scores` holds, per item, the score of each repeat (None for a repeat that gave no
    score). Only items with at least two scores are compared; for each, the sample sd of its
    scores. Returns `items_compared`, `mean_sd` (mean of the per-item sds), `max_sd`, and
    `share_differ` (share of compared items whose scores are not all equal), or None when no
    item has two scores.
    """
    sds, differ = [], 0
    for scores in repeat_scores:
        valid = [s for s in scores if s is not None]
        if len(valid) < 2:
            continue
        sds.append(sd(valid))
        differ += len(set(valid)) > 1
    if not sds:
        return None
    return {"items_compared": len(sds), "mean_sd": mean(sds), "max_sd": max(sds),
            "share_differ": differ / len(sds)}


def canary_summary(canaries: Sequence[dict]) -> dict:
    """Scores of the known answers (docs/records.md, judge/canaries.jsonl): per kind (`good`:
    the reference itself, should score high; `bad`: an empty-looking reply, should score
    near 0) the count, how many the judge scored (state `scored`), and the mean, min and max
    of those scores; `separated`: whether every scored good canary is above every scored bad
    one (None when a kind has no score); and the verdict of `canary_failure`: `failed` and
    `why`. Without canaries the kinds are None and nothing failed."""
    if not canaries:
        return {"good": None, "bad": None, "separated": None, "failed": False, "why": None}
    summary: dict = {}
    for kind in ("good", "bad"):
        scores = _scored_canaries(canaries, kind)
        summary[kind] = {"count": sum(c.get("canary") == kind for c in canaries),
                         "scored": len(scores), "mean": mean(scores),
                         "min": min(scores) if scores else None,
                         "max": max(scores) if scores else None}
    good, bad = summary["good"], summary["bad"]
    summary["separated"] = (good["min"] > bad["max"]
                            if good["scored"] and bad["scored"] else None)
    why = canary_failure(canaries)
    return {**summary, "failed": why is not None, "why": why}


def _scored_canaries(canaries: Sequence[dict], kind: str) -> list:
    return [c["score"] for c in canaries if c.get("canary") == kind and c.get("state") == "scored"]


def canary_failure(canaries: Sequence[dict]) -> str | None:
    """Why the judge failed its canaries, or None when it passed (or there are none). The
    rule (docs/judge.md, "Canaries"): only canaries the judge scored (state `scored`) are
    compared, and the lowest good score must be above the highest bad score. A kind with no
    scored canary at all (every one unparseable, in error or empty) fails: then nothing shows
    that the judge tells the two apart."""
    if not canaries:
        return None
    scores = {kind: _scored_canaries(canaries, kind) for kind in ("good", "bad")}
    unscored = []
    for kind, scored in scores.items():
        if not scored:
            counts = state_counts([c for c in canaries if c.get("canary") == kind])
            states = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
            unscored.append(f"no {kind} canary was scored ({states or 'there is none'})")
    if unscored:
        return (", ".join(unscored) + ", so nothing shows that the judge tells a good answer "
                "from a bad one")
    lowest_good, highest_bad = min(scores["good"]), max(scores["bad"])
    if lowest_good > highest_bad:
        return None
    return (f"good canaries {_one_decimal(mean(scores['good']))} on average, bad ones "
            f"{_one_decimal(mean(scores['bad']))}: the lowest good canary, {lowest_good:g}, is "
            f"not above the highest bad one, {highest_bad:g}")


def _one_decimal(value: float) -> str:
    return f"{round(value, 1):g}"


def canary_warning(why: str) -> str:
    """The sentence every output that flags a failed judge carries (the judge's and the
    aggregate's printed warning, summary.md, compare's notes)."""
    return f"the judge failed its canaries ({why}); its scores are not meaningful"


# -- writing numbers down -----------------------------------------------------------------------

def rounded(value, decimals: int):
    """Floats (numpy's too, which become plain floats) rounded to `decimals` places, everywhere
    in a nested value of dicts, lists and tuples (tuples become lists, as JSON has them); other
    values as they are. So a summary file reads well and a page shows exactly its numbers."""
    if isinstance(value, dict):
        return {key: rounded(item, decimals) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(item, decimals) for item in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), decimals)
    return value


def correlation_defined(x: Sequence[float], y: Sequence[float]) -> bool:
    """Whether a correlation of two equally long columns exists: at least 3 pairs (two points
    always lie on a line) and neither column constant (constant ranks or values carry no
    order). Every correlation here and in evalpipe.stats.paired is None where this is False."""
    return len(x) >= 3 and len(set(x)) > 1 and len(set(y)) > 1
