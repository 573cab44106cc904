"""How sure a comparison of models is, over its three sources of noise: the test items, the
fine-tuning seeds and the judge's repeats (issue #11). Pure functions on a numpy array; the
comparison's leaderboard calls them (evalpipe/compare/leaderboard.py, `how_sure_section`;
docs/compare.md, "How sure: items, seeds, judge").

The input is one array of scores shaped (models, seeds, items, repeats): scores[m, s, i, r] is
the judge's r-th score of item i answered by model m fine-tuned with its s-th seed. NaN marks a
score that does not exist: an unparseable or failed judgment, a repeat not asked, or a whole seed
a model does not have (models may have different numbers of seeds; pad with NaN).

Missing scores are averaged over, level by level, never counted as anything:
- a cell (model, seed, item) is the mean of its present repeats; a cell with none is absent;
- a model's item mean is the mean of its present cells over the seeds (a seed counts for a model
  when it has at least one score);
- a model's mean is the mean of its item means over the items.
Every model must have at least one score on every item, because the comparison is paired (the
caller drops the items some model has no score for, as for `evalpipe.stats.paired`); otherwise
ValueError names the model and the item.

The estimand. A model's `mean` estimates the expected score of the model over the population of
items the test items were drawn from and over fine-tuning seeds (seeds as random effects) and
judge repeats: what the model would score on average if trained again and tested again on new
items of the same kind. Its interval and the rest come from one hierarchical, paired bootstrap:
each resample draws the items with replacement (the same draw for every model: paired), then,
for each model on its own, its present seeds with replacement, and recomputes every model's
mean as above from the drawn cells. The judge's noise is in it through the cells: each cell
mean carries the noise of its repeats, and the draws of items and seeds move it.

Drawing the repeats again inside each cell as well (`resample_repeats=True`, the third level of
issue #11) counts the judge's noise twice: once in the cell means that the item and seed draws
move, once in the repeat draw, weighted by how often the cell was drawn. Measured on simulated
scores (tests/stats/test_uncertainty.py's model, 3 seeds x 40 items x 2 repeats, 4,000
comparisons) it changes little with a judge sd of 6 (coverage of a nominal 95% interval of a
difference 96.2% against 95.4%) but over-covers with a noisy judge, sd 20 (99.0% against
97.4%), and takes most of the time; so it is off by default.

Items and seeds are crossed (every seed answers every item), so this is the "pigeonhole"
bootstrap of Owen (2007): noise within a cell (the seed-by-item interaction, the judge) moves
the mean through both the item draw and the seed draw, so it is counted about three times
over. It is a small part of the variance on realistic data, and the intervals are a little
conservative there. The other way, a bootstrap over a few seeds cannot show more spread than
they have (its variance divides by S, not S - 1), so when the seed effect dominates the
intervals are too narrow. Intervals are widened for the number of items (`expanded_tail`).
docs/compare.md gives the calibration measured by tests/stats/test_uncertainty.py.

Conventions (edge cases):
- Intervals of means and differences are expanded percentile intervals at `confidence` (see
  `expanded_tail`: the bootstrap's quantiles a little further out than (1 - confidence)/2, by
  the number of items; numpy's linear quantile, as `evalpipe.stats.bootstrap_ci`).
- Ties in a resample: P(a > b) counts a tie as half; P(best) splits a shared first place equally;
  a model's rank is 1 + the number of models strictly above it (a tie shares the better rank).
- Rank interval: [lo, hi], the smallest ranks whose cumulative share of the resamples reaches
  (1 - confidence)/2 and (1 + confidence)/2 (numpy's "inverted_cdf"), so at most (1 -
  confidence)/2 of the resamples rank the model better than lo, and at most as many worse than hi.
- Tiers: the connected components of "rank intervals overlap" (two intervals sharing a rank
  overlap; a chain of overlaps joins models), numbered 1, 2, ... from the best ranks.
- Variance shares: see `variance_shares`; None when every score of the model is equal.
- Minimum detectable difference: see `minimum_detectable_difference`; None for fewer than two
  items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Elements of the (resamples, models, seeds, items, repeats) block drawn at once: bounds memory
# (8 bytes each) without making the Python loop over blocks show in the timings.
BLOCK_ELEMENTS = 4_000_000


# -- the observed array -------------------------------------------------------------------------

def check_scores(scores: np.ndarray, models: Sequence[str]) -> np.ndarray:
    """The scores as a float array of 4 dimensions matching `models`, every model with a score
    on every item; ValueError otherwise."""
    array = np.asarray(scores, dtype=float)
    if array.ndim != 4:
        raise ValueError(f"scores must be shaped (models, seeds, items, repeats), "
                         f"got {array.ndim} dimensions")
    if array.shape[0] != len(models):
        raise ValueError(f"{array.shape[0]} models of scores against {len(models)} names")
    if array.shape[0] == 0 or array.shape[2] == 0:
        raise ValueError(f"scores have no {'models' if array.shape[0] == 0 else 'items'}")
    scored = ~np.isnan(array).all(axis=(1, 3))  # (models, items)
    for m, name in enumerate(models):
        if not scored[m].all():
            item = int(np.flatnonzero(~scored[m])[0])
            raise ValueError(f"model {name!r} has no score on item {item} (of "
                             f"{(~scored[m]).sum()} such items); drop the items some model has "
                             f"no score for before comparing")
    return array


def cell_means(scores: np.ndarray) -> np.ndarray:
    """Mean over the present repeats of each (model, seed, item); NaN where none is present.
    Shape (models, seeds, items)."""
    present = ~np.isnan(scores)
    count = present.sum(axis=-1)
    total = np.where(present, scores, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def item_means(scores: np.ndarray) -> np.ndarray:
    """Each model's mean per item over its present cells (seeds): shape (models, items)."""
    cells = cell_means(scores)
    present = ~np.isnan(cells)
    return np.where(present, cells, 0.0).sum(axis=1) / present.sum(axis=1)


def model_means(scores: np.ndarray) -> np.ndarray:
    """Each model's mean over the items of its item means: shape (models,)."""
    return item_means(scores).mean(axis=1)


def variance_shares(model_scores: np.ndarray) -> dict | None:
    """Where one model's uncertainty comes from: {"items", "seeds", "judge"}, shares summing to 1.

    `model_scores` is one model's (seeds, items, repeats). Each share is the variance the model's
    mean would have if only that source were resampled (the ideal bootstrap variance of that
    level alone, in closed form), divided by the sum of the three:
    - items: var(y_i) / I, y_i the item means, over the I items;
    - seeds: var(z_s) / S, z_s the mean of seed s's cells over the items, over its S present
      seeds (0 for one seed);
    - judge: sum over items i of sum over present cells (s, i) of var(cell repeats) / k_si,
      divided by (I n_i)^2, k_si the cell's present repeats and n_i the item's present cells
      (0 where every cell has one repeat);
    var is the population variance (divide by the count), as a bootstrap draws it. The seed
    share includes the seed-by-item interaction as far as seed means show it, and the judge
    share only what repeats show: with one repeat the judge's noise is inside the item share.
    None when all three are 0 (every score equal).
    """
    cells = cell_means(model_scores[None])[0]  # (seeds, items)
    cell_present = ~np.isnan(cells)
    seeds = cell_present.any(axis=1)
    items = cells.shape[1]
    per_item = np.where(cell_present, cells, 0.0).sum(axis=0) / cell_present.sum(axis=0)
    items_variance = per_item.var() / items
    seed_means = (np.where(cell_present, cells, 0.0).sum(axis=1)[seeds]
                  / cell_present.sum(axis=1)[seeds])
    seeds_variance = seed_means.var() / len(seed_means)
    repeat_present = ~np.isnan(model_scores)
    counts = repeat_present.sum(axis=-1)
    deviations = np.where(repeat_present, model_scores - cells[..., None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_variance = np.where(counts > 0, (deviations ** 2).sum(axis=-1)
                                 / np.maximum(counts, 1) ** 2, 0.0)  # var / k
    judge_variance = float((cell_variance.sum(axis=0) / cell_present.sum(axis=0) ** 2).sum()
                           / items ** 2)
    total = items_variance + seeds_variance + judge_variance
    if total == 0:
        return None
    return {"items": float(items_variance / total), "seeds": float(seeds_variance / total),
            "judge": float(judge_variance / total)}


# -- the bootstrap ----------------------------------------------------------------------------

def _counts(indices: np.ndarray, size: int) -> np.ndarray:
    """How often each of 0..size-1 occurs along the last axis of `indices` (-1 never counts)."""
    rows = indices.reshape(-1, indices.shape[-1])
    offsets = np.arange(len(rows))[:, None] * (size + 1)
    flat = np.bincount((rows + 1 + offsets).ravel(), minlength=len(rows) * (size + 1))
    return flat.reshape(*indices.shape[:-1], size + 1)[..., 1:]


def resampled_means(scores: np.ndarray, resamples: int, seed: int,
                    resample_repeats: bool = False) -> np.ndarray:
    """Every model's mean in each of `resamples` hierarchical paired bootstrap resamples (the
    module docstring): shape (resamples, models). The judge's repeats are drawn again inside
    each cell only with `resample_repeats` (the module docstring says why not by default).
    Seeded with numpy's default_rng(seed); the result depends only on the scores, `resamples`,
    `seed` and `resample_repeats`."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    n_models, n_seeds, n_items, n_repeats = scores.shape
    rng = np.random.default_rng(seed)
    present = ~np.isnan(scores)
    # Present repeats first in each cell, so that drawing index j < k picks a present one.
    order = np.argsort(~present, axis=-1, kind="stable")
    packed = np.take_along_axis(np.where(present, scores, 0.0), order, axis=-1)
    repeat_counts = present.sum(axis=-1)  # (models, seeds, items)
    cells = cell_means(scores)
    cell_present = repeat_counts > 0
    resample_repeats = resample_repeats and bool((repeat_counts > 1).any())
    # Each model's present seeds, as a table of seed indices to draw from.
    seed_present = cell_present.any(axis=2)  # (models, seeds)
    seed_counts = seed_present.sum(axis=1)
    seed_table = np.zeros((n_models, n_seeds), dtype=np.int64)
    for m in range(n_models):
        present_seeds = np.flatnonzero(seed_present[m])
        seed_table[m, :len(present_seeds)] = present_seeds
    cell_base = (np.arange(n_models * n_seeds * n_items) * n_repeats).reshape(
        n_models, n_seeds, n_items, 1)
    flat_packed = packed.ravel()

    per_resample = max(n_models * n_seeds * n_items * max(n_repeats, 1), 1)
    block = max(1, BLOCK_ELEMENTS // per_resample)
    means = np.empty((resamples, n_models))
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        item_weights = _counts(rng.integers(0, n_items, size=(size, n_items)), n_items)
        draws = np.floor(rng.random((size, n_models, n_seeds)) * seed_counts[:, None]).astype(
            np.int64)
        drawn = np.take_along_axis(seed_table[None].repeat(size, axis=0), draws, axis=2)
        drawn[:, np.arange(n_seeds)[None, :] >= seed_counts[:, None]] = -1  # only S_m draws
        seed_weights = _counts(drawn, n_seeds).astype(float)  # (size, models, seeds)
        if resample_repeats:
            picks = np.floor(rng.random((size, n_models, n_seeds, n_items, n_repeats))
                             * repeat_counts[..., None]).astype(np.int64)
            values = flat_packed[cell_base + picks]
            used = np.arange(n_repeats) < repeat_counts[..., None]  # k draws from k
            with np.errstate(invalid="ignore", divide="ignore"):
                block_cells = (np.where(used, values, 0.0).sum(axis=-1)
                               / np.maximum(repeat_counts, 1))
        else:
            block_cells = np.broadcast_to(np.where(cell_present, cells, 0.0),
                                          (size, n_models, n_seeds, n_items))
        # Item means over the drawn seeds that have the cell, then means over the drawn items.
        weight = seed_weights[..., None] * cell_present  # (size, models, seeds, items)
        weight_sum = weight.sum(axis=2)
        item_total = np.einsum("bmsi,bmsi->bmi", weight, block_cells)
        item_defined = weight_sum > 0
        item_mean = np.where(item_defined, item_total / np.where(item_defined, weight_sum, 1),
                             0.0)
        item_weight = item_weights[:, None, :] * item_defined
        means[start:start + size] = ((item_mean * item_weight).sum(axis=2)
                                     / item_weight.sum(axis=2))
    return means


def expanded_tail(confidence: float, items: int) -> float:
    """The tail share each side for an expanded percentile interval on `items` items
    (Hesterberg 2015, "What teachers should know about the bootstrap", 4.5): the share of a
    normal distribution beyond sqrt(n / (n - 1)) * t_{(1 + confidence)/2, n - 1}, so that the
    interval is as wide, in bootstrap standard errors, as Student's t interval with the usual
    n - 1 divisor. It corrects the percentile bootstrap's narrowness (its variance divides by n,
    and it uses normal, not t, quantiles), which with 40 items costs about one point of
    coverage. (1 - confidence)/2 for fewer than two items."""
    if items < 2:
        return (1 - confidence) / 2
    from scipy.stats import norm, t

    widened = math.sqrt(items / (items - 1)) * t.ppf((1 + confidence) / 2, items - 1)
    return float(norm.sf(widened))


def percentile_interval(values: np.ndarray, confidence: float, items: int = 0) -> np.ndarray:
    """The tail and 1 - tail quantiles along axis 0 (numpy's linear), tail =
    `expanded_tail(confidence, items)`; items=0 gives the plain percentile interval, tail =
    (1 - confidence)/2."""
    tail = expanded_tail(confidence, items)
    return np.quantile(values, [tail, 1 - tail], axis=0)


def ranks(means: np.ndarray) -> np.ndarray:
    """Rank of each model in each row of `means` (resamples, models): 1 + the number of models
    strictly above it, so tied models share the better rank."""
    return 1 + (means[:, None, :] > means[:, :, None]).sum(axis=2)


def p_best(means: np.ndarray) -> np.ndarray:
    """Share of the rows of `means` (resamples, models) in which each model is first, a first
    place shared by t models counting 1/t to each. Sums to 1."""
    top = means == means.max(axis=1, keepdims=True)
    return (top / top.sum(axis=1, keepdims=True)).mean(axis=0)


def rank_intervals(means: np.ndarray, confidence: float) -> list[list[int]]:
    """Each model's [lo, hi] rank interval over the rows of `means` (resamples, models): the
    inverted-CDF quantiles of its ranks at (1 - confidence)/2 and (1 + confidence)/2."""
    tail = (1 - confidence) / 2
    bounds = np.quantile(ranks(means), [tail, 1 - tail], axis=0, method="inverted_cdf")
    return [[int(low), int(high)] for low, high in bounds.T]


def tiers(intervals: Sequence[Sequence[int]]) -> list[int]:
    """Tier of each model from its rank interval: models are one tier when their intervals are
    linked by a chain of overlaps (connected components; [1, 2] and [2, 3] overlap, [1, 1] and
    [2, 3] do not). Tiers are numbered 1, 2, ... in the order of their best ranks."""
    order = sorted(range(len(intervals)), key=lambda m: tuple(intervals[m]))
    tier_of = [0] * len(intervals)
    tier, reach = 0, None
    for m in order:
        low, high = intervals[m]
        if reach is None or low > reach:  # no interval so far reaches this one: a new tier
            tier += 1
            reach = high
        reach = max(reach, high)
        tier_of[m] = tier
    return tier_of


# -- what the items can tell apart ----------------------------------------------------------

def _z_sum(alpha: float, power: float) -> float:
    from scipy.stats import norm

    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie between 0 and 1, got {alpha} and {power}")
    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def minimum_detectable_difference(sd_diff: float, items: int, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired test at `alpha` detects with
    probability `power` on `items` items whose paired differences have sd `sd_diff` (normal
    approximation): (z_{1-alpha/2} + z_power) * sd_diff / sqrt(items); 2.8016 * sd / sqrt(n)
    at the defaults."""
    return _z_sum(alpha, power) * sd_diff / math.sqrt(items)


def items_needed(sd_diff: float, difference: float, alpha: float = 0.05,
                 power: float = 0.8) -> int | None:
    """Items a paired test needs to detect `difference` (same approximation as
    `minimum_detectable_difference`): ceil(((z_{1-alpha/2} + z_power) * sd_diff / |d|)^2), at
    least 2. None for a zero difference (no number of items detects it)."""
    if difference == 0:
        return None
    return max(2, math.ceil((_z_sum(alpha, power) * sd_diff / abs(difference)) ** 2))


def paired_differences(scores: np.ndarray, a: int, b: int) -> np.ndarray:
    """Per item, model a's item mean minus model b's (each averaged over its seeds and
    repeats): shape (items,)."""
    means = item_means(scores[[a, b]])
    return means[0] - means[1]


def distinguishability(differences: np.ndarray, alpha: float = 0.05,
                       power: float = 0.8) -> dict:
    """From per-item paired differences: `sd_diff` (sample sd, ddof=1), `mdd`
    (`minimum_detectable_difference`), `distinguishable` (|mean difference| >= mdd and not 0)
    and `items_needed` (for the observed difference, when not distinguishable; else None).
    sd_diff, mdd, distinguishable and items_needed are None for fewer than two items."""
    n = len(differences)
    if n < 2:
        return {"items": n, "sd_diff": None, "mdd": None, "distinguishable": None,
                "items_needed": None}
    difference = float(differences.mean())
    sd_diff = float(differences.std(ddof=1))
    mdd = minimum_detectable_difference(sd_diff, n, alpha, power)
    distinguishable = difference != 0 and abs(difference) >= mdd
    return {"items": n, "sd_diff": sd_diff, "mdd": mdd, "distinguishable": distinguishable,
            "items_needed": None if distinguishable else items_needed(sd_diff, difference,
                                                                      alpha, power)}


# -- all of it ----------------------------------------------------------------------------------

def how_sure(scores: np.ndarray, models: Sequence[str], resamples: int = 2000, seed: int = 0,
             confidence: float = 0.95, alpha: float = 0.05, power: float = 0.8,
             resample_repeats: bool = False) -> dict:
    """Everything issue #11 asks of the numbers, from one set of bootstrap resamples.

    Returns {"confidence", "resamples", "seed", "items", "models": [...], "pairs": [...]}.
    Each model (in the order given): `model`, `seeds` (present), `mean`, `ci` [low, high],
    `variance_shares` ({"items", "seeds", "judge"} or None), `p_best`, `rank_interval`
    [lo, hi], `tier`. Each pair (a before b in the order given): `a`, `b`, `difference`
    (mean a - mean b), `ci`, `p_a_better` (share of resamples with a above b, ties half), and
    `distinguishability`'s `items`, `sd_diff`, `mdd`, `distinguishable`, `items_needed` ("not
    distinguishable with `items` items" when false). `alpha` and `power` are the mdd's;
    `resample_repeats` draws the judge's repeats again in each cell (`resampled_means`).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}")
    array = check_scores(scores, models)
    means = model_means(array)
    boot = resampled_means(array, resamples, seed, resample_repeats)
    mean_intervals = percentile_interval(boot, confidence, array.shape[2])
    best = p_best(boot)
    intervals = rank_intervals(boot, confidence)
    tier_of = tiers(intervals)
    seed_counts = (~np.isnan(array)).any(axis=(2, 3)).sum(axis=1)
    rows = [{"model": name, "seeds": int(seed_counts[m]), "mean": float(means[m]),
             "ci": [float(v) for v in mean_intervals[:, m]],
             "variance_shares": variance_shares(array[m]), "p_best": float(best[m]),
             "rank_interval": intervals[m], "tier": tier_of[m]}
            for m, name in enumerate(models)]
    pairs = []
    for a in range(len(models)):
        for b in range(a + 1, len(models)):
            boot_difference = boot[:, a] - boot[:, b]
            low, high = percentile_interval(boot_difference, confidence, array.shape[2])
            p_a_better = float(((boot_difference > 0) + 0.5 * (boot_difference == 0)).mean())
            pairs.append({"a": models[a], "b": models[b],
                          "difference": float(means[a] - means[b]),
                          "ci": [float(low), float(high)], "p_a_better": p_a_better,
                          **distinguishability(paired_differences(array, a, b), alpha, power)})
    return {"confidence": confidence, "resamples": resamples, "seed": seed,
            "items": int(array.shape[2]), "models": rows, "pairs": pairs}
