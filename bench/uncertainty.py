"""Benchmark: the statistics of how sure a comparison is (evalpipe.stats.uncertainty.how_sure)
against a naive bootstrap that loops over resamples, models, seeds and items in Python.

    python bench/uncertainty.py                       # 10 models x 5 seeds x 110 items x 3 repeats
    python bench/uncertainty.py --naive-resamples 20  # a quicker baseline

The scores are simulated as in tests/stats/test_uncertainty.py (model mean + item difficulty +
model-by-item + seed + seed-by-item + judge noise, on the 0-100 scale), with 2% of the scores
missing (an unparseable judgment is NaN). `how_sure` is timed end to end (means, intervals,
variance shares, P(best), rank intervals, tiers, every pair with its interval, P(a > b) and
minimum detectable difference), the median of --runs runs, as it is by default (items and
seeds drawn) and with resample_repeats=True (each cell's judge repeats drawn too). The baseline
draws the latter's resamples one at a time (items, then each model's seeds, then each cell's
repeats, with numpy's choice and mean per cell) and is timed on --naive-resamples resamples;
the speed-up compares the time per resample. The bootstrap sds of the first model's mean are
printed: the naive loop and resample_repeats=True estimate the same thing, so they should agree
to a few percent.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from evalpipe.stats.uncertainty import how_sure, model_means, resampled_means


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--items", type=int, default=110)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--naive-resamples", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=123)
    return parser.parse_args()


def simulate(rng, models: int, seeds: int, items: int, repeats: int) -> np.ndarray:
    scores = (np.linspace(55, 70, models)[:, None, None, None]
              + rng.normal(0, 20, (1, 1, items, 1)) + rng.normal(0, 10, (models, 1, items, 1))
              + rng.normal(0, 2, (models, seeds, 1, 1)) + rng.normal(0, 8, (models, seeds, items, 1))
              + rng.normal(0, 6, (models, seeds, items, repeats)))
    scores[rng.random(scores.shape) < 0.02] = np.nan
    # every model keeps a score on every item (the comparison is paired)
    empty = np.isnan(scores).all(axis=(1, 3))
    scores[:, 0, :, 0] = np.where(empty, 50.0, scores[:, 0, :, 0])
    return scores


def naive_resampled_means(scores: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The same hierarchical resampling, one resample, model, seed and item at a time."""
    rng = np.random.default_rng(seed)
    n_models, n_seeds, n_items, _ = scores.shape
    means = np.empty((resamples, n_models))
    for b in range(resamples):
        items = rng.integers(0, n_items, n_items)
        for m in range(n_models):
            present_seeds = [s for s in range(n_seeds) if not np.isnan(scores[m, s]).all()]
            drawn_seeds = rng.choice(present_seeds, len(present_seeds))
            cells = {}
            for s in set(drawn_seeds.tolist()):
                for i in set(items.tolist()):
                    repeats = scores[m, s, i][~np.isnan(scores[m, s, i])]
                    if len(repeats):
                        cells[s, i] = rng.choice(repeats, len(repeats)).mean()
            item_values = []
            for i in items:
                values = [cells[s, i] for s in drawn_seeds if (s, i) in cells]
                if values:
                    item_values.append(sum(values) / len(values))
            means[b, m] = sum(item_values) / len(item_values)
    return means


def main():
    args = parse_args()
    rng = np.random.default_rng(args.seed)
    scores = simulate(rng, args.models, args.seeds, args.items, args.repeats)
    names = [f"model-{m}" for m in range(args.models)]
    print(f"how_sure: {args.models} models x {args.seeds} seeds x {args.items} items x "
          f"{args.repeats} repeats ({np.isnan(scores).mean():.1%} missing), {args.resamples} "
          f"resamples; numpy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    how_sure(scores, names, resamples=10, seed=0)  # warm-up: scipy's import, first allocations
    for label, resample_repeats in [("how_sure             ", False),
                                    ("  resample_repeats   ", True)]:
        timings = []
        for run in range(args.runs):
            clock = time.perf_counter()
            result = how_sure(scores, names, resamples=args.resamples, seed=run,
                              resample_repeats=resample_repeats)
            timings.append(time.perf_counter() - clock)
        vectorised = statistics.median(timings)
        print(f"  {label}: {vectorised:6.2f} s (median of {args.runs}: "
              f"{', '.join(f'{t:.2f}' for t in timings)}) = "
              f"{vectorised / args.resamples * 1000:7.3f} ms per resample")
    clock = time.perf_counter()
    naive = naive_resampled_means(scores, args.naive_resamples, seed=0)
    naive_seconds = time.perf_counter() - clock
    per_naive = naive_seconds / args.naive_resamples
    print(f"  naive Python loop      : {naive_seconds:6.2f} s for {args.naive_resamples} "
          f"resamples = {per_naive * 1000:7.3f} ms per resample "
          f"(x{per_naive / (vectorised / args.resamples):.0f} resample_repeats' time per "
          f"resample; "
          f"{per_naive * args.resamples:.0f} s for {args.resamples})")
    boot = resampled_means(scores, args.resamples, seed=0)
    boot_repeats = resampled_means(scores, args.resamples, seed=0, resample_repeats=True)
    print(f"  bootstrap sd of {names[0]}'s mean {model_means(scores)[0]:.2f}: how_sure "
          f"{boot[:, 0].std():.3f}, with resample_repeats {boot_repeats[:, 0].std():.3f}, "
          f"naive {naive[:, 0].std():.3f} (over "
          f"{args.naive_resamples} resamples); tiers "
          f"{[row['tier'] for row in result['models']]}")


if __name__ == "__main__":
    main()
