"""Runs and stand-in judges for the pairwise-mode tests (tests/judging/test_pairwise_*.py).

Runs a, b, c and d import responses (`generate --from`, no model needed) for the 30 test items
of a 300-record data set (the smoke config's book split: records 255..284). Every response
starts with its model's marker ("from-a ..."), which the stand-in judges read from Response A
and Response B: they know who wrote what, as a judge with fixed preferences would.

The stand-in judges (reply functions for tests/standins.py's OllamaStandIn: real HTTP, the
real `ollama` client) answer a pairwise prompt with {"verdict", "reason"}:

  preference_judge(strengths)  Bradley-Terry with the given true strengths (logits): A wins
                               with probability 1 / (1 + exp(-(s_A - s_B))), decided by a
                               number drawn from a hash of the item and the order shown
                               (fixed: the same question always gets the same verdict), a
                               strong verdict when the strengths are more than 1 apart
  length_judge(strengths, w)   the same, with w x the normalised length difference of the two
                               responses added to the logit: a judge that likes long answers
  first_shown_judge            always A>B: all position, no reading
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from pathlib import Path

from standins import StandInFailure, prompt_of
from together_runs import import_runs

from evalpipe.cli import main
from evalpipe.io import read_json_object
from evalpipe.judging.backends.mock import parse_pairwise_prompt

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs/smoke.toml")  # judge: retries 1, concurrency 4
RECORDS = 300
ITEMS = list(range(255, 285))  # the book split's test items of 300 records
N = len(ITEMS)
MODELS = ("a", "b", "c", "d")
STRENGTHS = {"a": 1.5, "b": 0.5, "c": -0.5, "d": 0.0}  # true order: a, b, d, c
MARKER = re.compile(r"from-(\w+)")


def even_response(model: str, i: int) -> str:
    """A response of 8 words whatever the model: length says nothing."""
    return f"from-{model} " + " ".join(f"w{i}x{n}" for n in range(7))


# The length scenario: c writes the longest answers, a the shortest; each varies by item.
LENGTHS = {"a": (4, 20), "b": (8, 36), "c": (16, 64), "d": (8, 36)}


def length_of(model: str, i: int) -> int:
    low, high = LENGTHS[model]
    return random.Random(f"{model}:{i}").randint(low, high)


def varied_response(model: str, i: int) -> str:
    return f"from-{model} " + " ".join(f"w{i}x{n}" for n in range(length_of(model, i) - 1))


def make_runs(folder: Path, respond=even_response, models=MODELS) -> None:
    """Runs `models` under folder/results, their data and response files in folder;
    `respond(model, i)` gives the responses (None: not imported, an empty response)."""
    import_runs(folder, respond, models, RECORDS, ITEMS)


# -- the stand-in judges -------------------------------------------------------------------------

def shown(body: dict) -> tuple[str, str, str, str, str]:
    """(item reference, model A, model B, response A, response B) of a pairwise request."""
    parsed = parse_pairwise_prompt(prompt_of(body))
    assert parsed is not None, "not a pairwise prompt"
    reference, response_a, response_b = parsed
    return (reference, MARKER.match(response_a)[1], MARKER.match(response_b)[1], response_a,
            response_b)


def draw(*parts) -> float:
    """A number in [0, 1) fixed by `parts`: the stand-in's noise, the same on every ask."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def verdict_for(logit: float, u: float, strong: bool) -> str:
    if abs(u - 1 / (1 + math.exp(-logit))) < 0.03:
        return "A=B"
    won = "A>B" if u < 1 / (1 + math.exp(-logit)) else "B>A"
    return won.replace(">", ">>") if strong else won


def reply(verdict: str) -> str:
    return json.dumps({"verdict": verdict, "reason": "stand-in"})


def preference_judge(strengths: dict[str, float] = STRENGTHS):
    def judge(body: dict) -> str:
        reference, a, b, _, _ = shown(body)
        logit = strengths[a] - strengths[b]
        return reply(verdict_for(logit, draw(reference, a, b), abs(logit) > 1))
    return judge


def length_judge(strengths: dict[str, float], weight: float):
    def judge(body: dict) -> str:
        reference, a, b, response_a, response_b = shown(body)
        length_a, length_b = len(response_a.split()), len(response_b.split())
        logit = strengths[a] - strengths[b] + weight * (length_a - length_b) / (length_a +
                                                                                 length_b)
        return reply(verdict_for(logit, draw(reference, a, b), False))
    return judge


def first_shown_judge(body: dict) -> str:
    shown(body)
    return reply("A>B")


def failing_on(items: set[int], judge, failure=None):
    """`judge`, except that questions about the given records get `failure` (HTTP 500)."""
    def failing(body: dict):
        reference = shown(body)[0]
        if int(reference.split()[0][len("word"):-1]) in items:
            return failure or StandInFailure(500, "stand-in down for this item")
        return judge(body)
    return failing


# -- running compare and reading what it wrote ------------------------------------------------------

def compare(url: str, *settings: str, runs=("a", "b", "c"), extra=()) -> int:
    args = ["compare", *runs, "--mode", "pairwise", "--resamples", "200",
            "--set", f"judge.host={url}", *extra]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def out_of(results: Path, runs=("a", "b", "c")) -> Path:
    return results / ("compare-" + "-vs-".join(runs))


def board_of(results: Path, runs=("a", "b", "c")) -> dict:
    return read_json_object(out_of(results, runs) / "leaderboard.json")


def ratings(board: dict, key: str = "bt_rating") -> dict[str, float]:
    return {row["model"]: row[key] for row in board["models"]}
