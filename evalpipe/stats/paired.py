"""Statistics over pairs of score lists on the same items: two models, or two judges, side by side.

Every function takes two equally long lists whose i-th entries belong to the same test item
(the caller has already dropped the items either side has no score for). Pairing is the point:
two models answer the same questions, and the hard questions are hard for both, so comparing
item by item removes that shared variation, which comparing two independent means would not.

Conventions, chosen so that the awkward cases give a documented value instead of a crash or a
nan with a warning (`evalpipe.stats` follows the same rules):
- No items: every statistic is None.
- A correlation (Pearson, Spearman, Kendall) is None for fewer than 3 pairs (two points always
  lie on a line) or when either list is constant (the correlation is undefined).
- The paired bootstrap CI is `evalpipe.stats.bootstrap_ci` of the per-item differences: drawing
  item indices with replacement and taking both scores of each drawn item is exactly drawing
  the differences with replacement. One item gives [d, d].
- Wilcoxon signed-rank: zero differences are dropped first (Wilcoxon's own rule, scipy's
  zero_method="wilcox"); all differences zero gives statistic 0 and p-value 1.0 (the two lists
  are identical, so there is no evidence of a difference). See `wilcoxon_signed_rank`.
- Cohen's kappa bins scores in tens (0-9, 10-19, ..., 80-89, 90-100: 100 joins the top bin)
  and weighs a disagreement by the squared distance between bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evalpipe.stats import bootstrap_ci, correlation_defined

KAPPA_BINS = 10  # scores 0..100 binned in tens; 100 goes with 90-99


def _as_pair(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        raise ValueError(f"paired statistics need lists of one length, got {len(a)} and {len(b)}")
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


def differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """Per-item a - b."""
    a_values, b_values = _as_pair(a, b)
    return a_values - b_values


def mean_difference(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Mean of a - b over the items; None for no items."""
    diff = differences(a, b)
    return float(diff.mean()) if len(diff) else None


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], resamples: int, seed: int,
                        confidence: float = 0.95) -> list[float] | None:
    """Percentile bootstrap CI of the mean difference a - b, resampling items (not each list on
    its own), seeded: [low, high], or None for no items."""
    return bootstrap_ci(differences(a, b).tolist(), resamples, seed, confidence)


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test of a - b: `statistic`, `p_value`, `nonzero` (the
    number of items whose difference is not zero, which is what the test ranks).

    Zero differences are dropped before calling scipy.stats.wilcoxon (Wilcoxon's original rule;
    tied items say nothing about which side is better). On the rest scipy's method="auto"
    applies: the exact null distribution when no two |differences| tie (and at most 50 items),
    the exact permutation distribution for ties with at most 13 items, otherwise the normal
    approximation with tie correction and no continuity correction. `statistic` is the smaller
    of the two signed-rank sums.

    Degenerate cases: no items -> statistic and p_value None; all differences zero -> statistic
    0.0 and p_value 1.0 (the lists are identical: nothing to rank, no evidence of a difference);
    one nonzero difference -> p_value 1.0 (the exact test cannot reject with one item).
    """
    return _wilcoxon_of(differences(a, b))


def _wilcoxon_of(diff: np.ndarray) -> dict:
    if len(diff) == 0:
        return {"statistic": None, "p_value": None, "nonzero": 0}
    nonzero = diff[diff != 0]
    if len(nonzero) == 0:
        return {"statistic": 0.0, "p_value": 1.0, "nonzero": 0}
    from scipy.stats import wilcoxon

    result = wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method="auto")
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue),
            "nonzero": int(len(nonzero))}


def win_shares(a: Sequence[float], b: Sequence[float]) -> dict:
    """How often each side scores higher: counts `a`, `b`, `ties`, and the same as shares of
    all items (`a_share`, `b_share`, `tie_share`, summing to 1; None for no items)."""
    return _wins_of(differences(a, b))


def _wins_of(diff: np.ndarray) -> dict:
    n = len(diff)
    a_wins, b_wins, ties = int((diff > 0).sum()), int((diff < 0).sum()), int((diff == 0).sum())
    return {"a": a_wins, "b": b_wins, "ties": ties,
            "a_share": a_wins / n if n else None,
            "b_share": b_wins / n if n else None,
            "tie_share": ties / n if n else None}


def correlations(x: Sequence[float], y: Sequence[float]) -> dict:
    """Pearson, Spearman (ties get their average rank) and Kendall's tau-b (corrects for ties
    on either side), from scipy.stats; each None for fewer than 3 pairs or a constant list."""
    x_values, y_values = _as_pair(x, y)
    if not correlation_defined(x_values, y_values):
        return {"pearson": None, "spearman": None, "kendall": None}
    from scipy.stats import kendalltau, pearsonr, spearmanr

    return {"pearson": float(pearsonr(x_values, y_values).statistic),
            "spearman": float(spearmanr(x_values, y_values).statistic),
            "kendall": float(kendalltau(x_values, y_values, variant="b").statistic)}


def score_bins(scores: Sequence[float]) -> np.ndarray:
    """Scores 0..100 to bins 0..9 by tens: 0-9 -> 0, 10-19 -> 1, ..., 90-100 -> 9."""
    values = np.asarray(scores, dtype=float)
    if len(values) and (values.min() < 0 or values.max() > 100):
        raise ValueError("scores must lie in 0..100 to be binned in tens")
    return np.minimum(np.floor(values / 10).astype(int), KAPPA_BINS - 1)


def quadratic_kappa(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cohen's kappa with quadratic weights on scores binned in tens (`score_bins`).

    kappa = 1 - sum(w * observed) / sum(w * expected), where observed is the table of bin pairs
    as shares of the items, expected the outer product of its two margins (agreement by
    chance), and w[i][j] = (i - j)^2 (the usual division by (bins - 1)^2 cancels). 1 is perfect
    agreement, 0 no better than chance. One side constant gives 0 (its table equals chance);
    both sides in one and the same bin for every item gives None (0/0: nothing varies to agree
    on); no items gives None.
    """
    a_values, b_values = _as_pair(a, b)
    if len(a_values) == 0:
        return None
    a_bins, b_bins = score_bins(a_values), score_bins(b_values)
    observed = np.zeros((KAPPA_BINS, KAPPA_BINS))
    np.add.at(observed, (a_bins, b_bins), 1.0)
    observed /= len(a_values)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    index = np.arange(KAPPA_BINS)
    weights = (index[:, None] - index[None, :]) ** 2
    expected_disagreement = float((weights * expected).sum())
    if expected_disagreement == 0:
        return None
    return 1.0 - float((weights * observed).sum()) / expected_disagreement


def agreement(a: Sequence[float], b: Sequence[float]) -> dict:
    """How well two judges (or modes, or repeats) agree on the same items: `items`, `pearson`,
    `spearman`, `kendall`, `mean_abs_difference` and `kappa_quadratic` (binned in tens).
    Each is None where undefined (see the module docstring)."""
    diff = differences(a, b)
    return {"items": int(len(diff)), **correlations(a, b),
            "mean_abs_difference": float(np.abs(diff).mean()) if len(diff) else None,
            "kappa_quadratic": quadratic_kappa(a, b)}


def compare_pair(a: Sequence[float], b: Sequence[float], resamples: int, seed: int,
                 confidence: float = 0.95) -> dict:
    """Everything the leaderboard says about two models on the items both have a score for:
    what mean_difference, paired_bootstrap_ci, wilcoxon_signed_rank and win_shares give, from
    one array of differences."""
    a_values, b_values = _as_pair(a, b)
    diff = a_values - b_values
    return {
        "items": int(len(diff)),
        "mean_a": float(a_values.mean()) if len(diff) else None,
        "mean_b": float(b_values.mean()) if len(diff) else None,
        "mean_difference": float(diff.mean()) if len(diff) else None,
        "ci": bootstrap_ci(diff.tolist(), resamples, seed, confidence),
        "wilcoxon": _wilcoxon_of(diff),
        "wins": _wins_of(diff),
    }
