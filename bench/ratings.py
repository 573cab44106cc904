"""Benchmark: the Bradley-Terry ratings of pairwise verdicts (evalpipe.stats.bradley_terry.
fit_ratings) with their item bootstrap, the resamples fitted together in blocks of
DRAWS_AT_ONCE, against the same fit with one resample at a time.

    python bench/ratings.py                         # 5 models, 110 items, both orders, 2000 resamples
    python bench/ratings.py --models 10 --naive-resamples 50

The verdicts are simulated as in tests/stats/test_bradley_terry.py: every pair of models on every
item in both orders, verdicts from a logistic judge with ties and strong verdicts and a
preference for longer answers, so both the raw and the length-controlled fits have work to do.
The baseline sets DRAWS_AT_ONCE = 1 (each resample its own Newton fit, as a loop over resamples
would do it) and runs on --naive-resamples resamples; the speed-up compares the time per
resample. Both give the same ratings: the full fit does not depend on the blocks.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time

import numpy as np

from evalpipe.stats import bradley_terry
from evalpipe.stats.bradley_terry import Question, fit_ratings


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--items", type=int, default=110)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--naive-resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=123)
    return parser.parse_args()


def simulated_questions(models: int, items: int, seed: int) -> list[Question]:
    rng = np.random.default_rng(seed)
    names = [f"model-{m}" for m in range(models)]
    strength = dict(zip(names, rng.normal(0, 0.5, models)))
    tokens = {name: rng.integers(20, 400, items) for name in names}
    questions = []
    for item, (a, b) in itertools.product(range(items), itertools.combinations(names, 2)):
        for first, second in ((a, b), (b, a)):
            length = (tokens[first][item] - tokens[second][item]) / (
                tokens[first][item] + tokens[second][item])
            d = strength[first] - strength[second] + 0.8 * length + rng.logistic()
            verdict = ("A>>B" if d > 2.5 else "A>B" if d > 0.5 else "A=B" if d >= -0.5
                       else "B>A" if d >= -2.5 else "B>>A")
            questions.append(Question(str(item), first, second, verdict,
                                      int(tokens[first][item]), int(tokens[second][item])))
    return questions


def timed(questions: list[Question], resamples: int, seed: int) -> tuple[float, dict]:
    clock = time.perf_counter()
    result = fit_ratings(questions, resamples=resamples, seed=seed)
    return time.perf_counter() - clock, result


def main():
    args = parse_args()
    questions = simulated_questions(args.models, args.items, args.seed)
    print(f"{args.models} models, {args.items} items, every pair in both orders: "
          f"{len(questions)} verdicts; numpy {np.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    seconds, result = timed(questions, args.resamples, args.seed)
    per_draw = seconds / args.resamples
    print(f"fit_ratings, {args.resamples} resamples in blocks of "
          f"{bradley_terry.DRAWS_AT_ONCE}: {seconds:.2f} s ({per_draw * 1e3:.3f} ms a resample)")

    blocks = bradley_terry.DRAWS_AT_ONCE
    bradley_terry.DRAWS_AT_ONCE = 1
    try:
        naive_seconds, naive = timed(questions, args.naive_resamples, args.seed)
    finally:
        bradley_terry.DRAWS_AT_ONCE = blocks
    naive_per_draw = naive_seconds / args.naive_resamples
    print(f"one resample at a time, {args.naive_resamples} resamples: {naive_seconds:.2f} s "
          f"({naive_per_draw * 1e3:.3f} ms a resample)")
    same = all(a["bt_rating"] == b["bt_rating"] for a, b in zip(result["models"], naive["models"]))
    print(f"same full-data ratings: {same}")
    print(f"speed-up per resample: {naive_per_draw / per_draw:.1f}x")


if __name__ == "__main__":
    main()
