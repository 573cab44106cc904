"""Bradley-Terry ratings from pairwise verdicts: a judge shown two models' responses to one test
item says which is better, and many such verdicts put the models on one scale.

From verdicts to games (`games`)
    The judge answers one of VERDICTS about Response A (the model shown first) and Response B.
    Each pair of models is asked about each item in both orders. The two questions of one
    (item, pair) are combined by MT-Bench's rule: when the two orders name different winners,
    the verdict followed the position, not the responses, so both questions become ties
    (score 0.5, weight 1). Otherwise each question is a game of its own: a win scores 1, a
    tie 0.5, a loss 0, and a strong verdict (A>>B, B>>A) weighs STRONG_WEIGHT = 3, as
    Arena-Hard counts it three times. A tie in one order and a win in the other is not a flip
    (only one order names a winner): both games stand. A question whose other order was not
    asked is a game of its own by the same weights. A game is named by the two models in sorted
    order (model_a < model_b) and holds model_a's score and the normalised length difference
    (len_a - len_b) / (len_a + len_b) of the two responses in tokens (0 when both are empty).

    For plain verdicts the flip rule changes no rating: two ties of weight 1 and a win plus a
    loss add the same log-likelihood. It matters for strong verdicts (A>>B then A>B shown the
    other way round is two ties, not three wins and a loss) and for what `position_effect`
    reports.

The fit (`fit_ratings`)
    Logistic regression of the games' scores (soft labels 0, 0.5, 1; each row weighted by its
    game's weight) on the design matrix with one column per model, +1 for model_a and -1 for
    model_b, and no intercept: P(a beats b) = logistic(beta_a - beta_b). The anchor's column
    is dropped (its beta is 0), which makes the ratings identifiable when every model is
    connected to the anchor by games; a graph in two pieces is refused. The length-controlled
    fit adds the length difference as one more column, with coefficient gamma (log-odds per
    unit of normalised length difference, Arena-Hard's style control for length, here
    unstandardised so the number reads directly): the controlled ratings are the models'
    strengths at equal length.

    The fit is Newton's method on the weighted log-likelihood with a ridge of RIDGE = 1e-9 on
    every coefficient, with step halving when a step raises the loss (the loss is convex, so
    this converges; a plain Newton step from far away can overshoot and diverge). The loss and
    gradient are written without cancellation (logistic(-eta) computed as such, not as
    1 - logistic(eta)), so a rating pushed far out by separation is still fitted to full
    precision and every resample that repeats the data gives the same bits. The ridge is there for separation: a model that wins every
    game has no finite maximum-likelihood rating, and the ridge stops it at a large finite one
    (about 20 log-odds, several thousand rating points: read it as "beats everything seen").
    It also fixes gamma at 0 when all lengths are equal. Elsewhere it moves ratings by about
    1e-9 log-odds per game, far below anything printed.

The scale
    rating = 1000 + 400 * log10(e) * beta (Elo's 400 points per factor 10 in the odds); the
    anchor (given, or the first model in sorted order) is exactly 1000 with interval
    [1000, 1000]. The win rate against the anchor is logistic(beta), the Bradley-Terry
    probability of beating the anchor, as Arena-Hard reports it; from the raw fit.

The bootstrap
    Test items are drawn with replacement (all games of an item move together: both orders
    and every pair), `resamples` times from numpy's Generator(seed); each draw is refitted,
    warm-started from the full fit, and the interval is the (1 - confidence)/2 and
    (1 + confidence)/2 quantiles of the refits (numpy's linear interpolation). A draw is not
    copied out row by row: games with equal design rows on one item are summed into one row,
    and a draw's weight of each row is the item's multiplicity in the draw times that sum, so
    one matrix product gives the weights of many draws, which are fitted together
    (DRAWS_AT_ONCE at a time).

The length flag
    A model's `length_flag` is set when its length-controlled rating lies outside its raw
    interval or its raw rating lies outside its length-controlled interval (interval ends, and
    anything within FLAG_TOLERANCE = 1e-6 rating points of them, count as inside: a point
    interval of identical resamples must not flag a rounding difference). The anchor is never
    flagged (both its ratings are 1000).

The position effect (`position_effect`)
    Per pair of models: of the items asked in both orders, how many flipped (the two orders
    named different winners, as above), and the share of decided questions (verdict not A=B)
    won by the response shown first; 0.5 for a judge without a position preference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evalpipe.records import CompareError

VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
STRONG_WEIGHT = 3  # Arena-Hard's weight of a strong verdict (A>>B, B>>A)
RIDGE = 1e-9
SCALE = "elo: 1000 + 400*log10-odds; anchor = 1000"
ELO_PER_LOG_ODDS = 400 / math.log(10)
MAX_NEWTON_STEPS = 200
STEP_TOLERANCE = 1e-10  # stop when no coefficient moves by more (log-odds)
MAX_HALVINGS = 50
DRAWS_AT_ONCE = 250  # resamples fitted together: bounds the memory for many models and items
FLAG_TOLERANCE = 1e-6  # rating points: closer to an interval's end is the fit's rounding
LOSS_ROUNDING = 1e-12  # a loss higher by less than this share is equal

# The first shown model's score and the weight of each verdict
_FIRST_SCORE = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}
_WEIGHT = {"A>>B": STRONG_WEIGHT, "A>B": 1, "A=B": 1, "B>A": 1, "B>>A": STRONG_WEIGHT}


@dataclass(frozen=True)
class Question:
    """One question asked of the judge: one item, one order."""
    item: str            # test record id
    first: str           # model whose response was shown as Response A
    second: str          # model whose response was shown as Response B
    verdict: str         # one of VERDICTS, as the judge said it (A = first)
    first_tokens: int    # length of first's response (tokens)
    second_tokens: int


@dataclass(frozen=True)
class Game:
    """One row of the design matrix: model_a < model_b, model_a's score in {0, 0.5, 1}."""
    item: str
    model_a: str
    model_b: str
    score_a: float
    weight: int
    length_diff: float   # (len_a - len_b) / (len_a + len_b), 0 when both are 0


def _check(question: Question) -> None:
    if question.first == question.second:
        raise CompareError(f"item {question.item}: model {question.first} is paired with itself")
    if question.verdict not in _FIRST_SCORE:
        raise CompareError(f"item {question.item}: unknown verdict {question.verdict!r} for "
                           f"{question.first} vs {question.second}; expected one of "
                           f"{', '.join(VERDICTS)}")
    for model, tokens in ((question.first, question.first_tokens),
                          (question.second, question.second_tokens)):
        if tokens < 0:
            raise CompareError(f"item {question.item}: {model}'s response has {tokens} tokens")


def _orders(questions: list[Question]) -> dict[tuple[str, str, str], list]:
    """{(item, model_a, model_b): [question with a shown first or None, with b first or None]},
    sorted by item, then pair."""
    pairs: dict[tuple[str, str, str], list] = {}
    for question in questions:
        _check(question)
        model_a, model_b = sorted((question.first, question.second))
        slots = pairs.setdefault((question.item, model_a, model_b), [None, None])
        slot = 0 if question.first == model_a else 1
        if slots[slot] is not None:
            raise CompareError(f"item {question.item}: {question.first} vs {question.second} "
                               f"({question.first} shown first) is asked twice")
        slots[slot] = question
    return dict(sorted(pairs.items()))


def _score_a(question: Question, model_a: str) -> float:
    score = _FIRST_SCORE[question.verdict]
    return score if question.first == model_a else 1.0 - score


def _flipped(a_first: Question | None, b_first: Question | None, model_a: str) -> bool:
    """Both orders asked, both named a winner, and not the same one."""
    if a_first is None or b_first is None:
        return False
    scores = {_score_a(a_first, model_a), _score_a(b_first, model_a)}
    return scores == {0.0, 1.0}


def _length_diff(question: Question, model_a: str) -> float:
    len_a, len_b = question.first_tokens, question.second_tokens
    if question.first != model_a:
        len_a, len_b = len_b, len_a
    return (len_a - len_b) / (len_a + len_b) if len_a + len_b else 0.0


def games(questions: list[Question]) -> list[Game]:
    """The games of the questions, by the rule in the module docstring: sorted by item, then
    pair, the order with model_a shown first before the other."""
    rows = []
    for (item, model_a, model_b), slots in _orders(questions).items():
        flipped = _flipped(*slots, model_a)
        for question in slots:
            if question is None:
                continue
            if flipped:
                score, weight = 0.5, 1
            else:
                score, weight = _score_a(question, model_a), _WEIGHT[question.verdict]
            rows.append(Game(item, model_a, model_b, score, weight,
                             _length_diff(question, model_a)))
    return rows


def flipped_pairs(questions: list[Question]) -> set[tuple[str, str, str]]:
    """(item, model_a, model_b) of every pair whose verdict flipped with the order (its two
    questions count as ties in `games`)."""
    return {key for key, slots in _orders(questions).items() if _flipped(*slots, key[1])}


def position_effect(questions: list[Question]) -> list[dict]:
    """Per pair of models (sorted): items asked in both orders, how many of them flipped and
    their share (None without such items), and the share of decided questions won by the
    response shown first (None when none was decided)."""
    counts: dict[tuple[str, str], dict] = {}
    for (_, model_a, model_b), slots in _orders(questions).items():
        pair = counts.setdefault((model_a, model_b), {"items": 0, "flipped": 0,
                                                      "decided": 0, "first_won": 0})
        if None not in slots:
            pair["items"] += 1
            pair["flipped"] += _flipped(*slots, model_a)
        for question in slots:
            if question is not None and question.verdict != "A=B":
                pair["decided"] += 1
                pair["first_won"] += _FIRST_SCORE[question.verdict] == 1.0
    return [{"model_a": model_a, "model_b": model_b, "items": pair["items"],
             "flipped": pair["flipped"],
             "share": pair["flipped"] / pair["items"] if pair["items"] else None,
             "first_shown_wins": pair["first_won"] / pair["decided"] if pair["decided"] else None}
            for (model_a, model_b), pair in sorted(counts.items())]


# -- the fit -----------------------------------------------------------------------------------

def _loss(beta: np.ndarray, design: np.ndarray, weights: np.ndarray,
          weighted_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per draw: the negative log-likelihood of soft labels, sum of weight * (score *
    softplus(-eta) + (1 - score) * softplus(eta)), plus ridge/2 * |beta|^2; and eta = design @
    beta per draw and row. Written as a sum of terms that are never negative (softplus(x) =
    max(x, 0) + log1p(exp(-|x|))) so that it keeps its relative precision when it is tiny, as
    it is for a model that wins every game."""
    eta = beta @ design.T
    shared = np.log1p(np.exp(-np.abs(eta)))
    loss = (((weights - weighted_scores) * np.maximum(eta, 0.0)
             + weighted_scores * np.maximum(-eta, 0.0) + weights * shared).sum(axis=1)
            + 0.5 * RIDGE * (beta ** 2).sum(axis=1))
    return loss, eta


def _chances(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logistic(eta) and logistic(-eta), each to full relative precision (1 - logistic(eta)
    would lose it for large eta)."""
    small = np.exp(-np.abs(eta))
    high, low = 1.0 / (1.0 + small), small / (1.0 + small)
    return np.where(eta >= 0, high, low), np.where(eta >= 0, low, high)


def _newton(design: np.ndarray, weights: np.ndarray, weighted_scores: np.ndarray,
            start: np.ndarray) -> np.ndarray:
    """Fit every draw (row of `weights` and `weighted_scores`, shape (draws, rows)) together:
    coefficients of shape (draws, columns of `design`). A step that raises a draw's loss (beyond
    rounding, LOSS_ROUNDING) is halved for that draw; draws that have converged drop out."""
    draws, columns = weights.shape[0], design.shape[1]
    beta = np.tile(start, (draws, 1)).astype(float)
    loss, eta = _loss(beta, design, weights, weighted_scores)
    outer = (design[:, :, None] * design[:, None, :]).reshape(len(design), columns * columns)
    active = np.arange(draws)
    for _ in range(MAX_NEWTON_STEPS):
        if len(active) == 0:
            break
        b, w, ws, old_loss = beta[active], weights[active], weighted_scores[active], loss[active]
        win, loss_chance = _chances(eta[active])
        # w * win - ws, written so that it does not cancel when a model wins nearly every game
        gradient = ((w - ws) * win - ws * loss_chance) @ design + RIDGE * b
        hessian = ((w * win * loss_chance) @ outer).reshape(-1, columns, columns)
        hessian += RIDGE * np.eye(columns)
        step = np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        size = np.ones(len(active))
        new_beta = b - step
        new_loss, new_eta = _loss(new_beta, design, w, ws)
        allowed = old_loss * (1.0 + LOSS_ROUNDING)
        worse = np.flatnonzero(new_loss > allowed)
        for _ in range(MAX_HALVINGS):
            if len(worse) == 0:
                break
            size[worse] /= 2
            new_beta[worse] = b[worse] - size[worse, None] * step[worse]
            new_loss[worse], new_eta[worse] = _loss(new_beta[worse], design, w[worse], ws[worse])
            worse = worse[new_loss[worse] > allowed[worse]]
        # a step that lowers no loss even when tiny: at the optimum up to rounding; stay
        new_beta[worse], new_loss[worse], size[worse] = b[worse], old_loss[worse], 0.0
        new_eta[worse] = eta[active[worse]]
        beta[active], loss[active], eta[active] = new_beta, new_loss, new_eta
        active = active[np.abs(size[:, None] * step).max(axis=1) > STEP_TOLERANCE]
    return beta


def _components(models: list[str], rows: list[Game]) -> list[list[str]]:
    group = {model: {model} for model in models}
    for game in rows:
        if group[game.model_a] is not group[game.model_b]:
            merged = group[game.model_a] | group[game.model_b]
            for model in merged:
                group[model] = merged
    unique = {id(members): members for members in group.values()}
    return sorted(sorted(members) for members in unique.values())


def _inside(rating: float, interval: list[float]) -> bool:
    return interval[0] - FLAG_TOLERANCE <= rating <= interval[1] + FLAG_TOLERANCE


def _interval(values: np.ndarray, confidence: float) -> np.ndarray:
    tail = (1 - confidence) / 2
    return np.quantile(values, [tail, 1 - tail], axis=0)


def fit_ratings(questions: list[Question], *, anchor: str | None = None, resamples: int = 2000,
                seed: int = 123, confidence: float = 0.95) -> dict:
    """Raw and length-controlled Bradley-Terry ratings with bootstrap intervals over items, the
    win rate against the anchor and the position effect, as a JSON-ready dict (see the module
    docstring for every rule): `anchor`, `scale`, `games` (rows of `games(questions)`, each
    counted once whatever its weight), `items`, `length_coefficient` and its interval, `models`
    (per model: `bt_rating`, `bt_interval`, the same length-controlled, `win_rate_vs_anchor`
    and `win_rate_interval` from the raw fit, `length_flag`, `games` it plays; sorted by
    bt_rating, best first, then by name) and `position` (`position_effect(questions)`)."""
    questions = list(questions)  # read twice: for the games and for the position effect
    if not questions:
        raise CompareError("no pairwise verdicts to rate")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rows = games(questions)
    models = sorted({game.model_a for game in rows} | {game.model_b for game in rows})
    anchor = models[0] if anchor is None else anchor
    if anchor not in models:
        raise CompareError(f"anchor model {anchor!r} appears in no game; "
                           f"the models are {', '.join(models)}")
    groups = _components(models, rows)
    if len(groups) > 1:
        raise CompareError("the models fall into groups never compared with each other, so they "
                           "cannot be put on one scale: "
                           + " and ".join("{" + ", ".join(g) + "}" for g in groups))

    items = sorted({game.item for game in rows})
    item_index = {item: index for index, item in enumerate(items)}
    rated = [model for model in models if model != anchor]
    column = {model: index for index, model in enumerate(rated)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(items), size=(resamples, len(items)))
    multiplicity = np.zeros((resamples, len(items)))
    np.add.at(multiplicity, (np.repeat(np.arange(resamples), len(items)), draws.ravel()), 1.0)

    def fit(with_length: bool) -> tuple[np.ndarray, np.ndarray]:
        """(full-data coefficients, bootstrap coefficients (resamples, columns))."""
        design_rows: dict[tuple, int] = {}
        cells: dict[tuple[int, int], list[float]] = {}
        for game in rows:
            x = [0.0] * (len(rated) + with_length)
            if game.model_a in column:
                x[column[game.model_a]] = 1.0
            if game.model_b in column:
                x[column[game.model_b]] = -1.0
            if with_length:
                x[-1] = game.length_diff
            row = design_rows.setdefault(tuple(x), len(design_rows))
            cell = cells.setdefault((item_index[game.item], row), [0.0, 0.0])
            cell[0] += game.weight
            cell[1] += game.weight * game.score_a
        design = np.array(list(design_rows), dtype=float)
        per_item_weight = np.zeros((len(items), len(design)))
        per_item_score = np.zeros((len(items), len(design)))
        for (item, row), (weight, score) in cells.items():
            per_item_weight[item, row] = weight
            per_item_score[item, row] = score
        full = _newton(design, per_item_weight.sum(axis=0)[None, :],
                       per_item_score.sum(axis=0)[None, :], np.zeros(design.shape[1]))[0]
        boot = np.concatenate([
            _newton(design, chunk @ per_item_weight, chunk @ per_item_score, full)
            for chunk in np.split(multiplicity, range(DRAWS_AT_ONCE, resamples, DRAWS_AT_ONCE))])
        return full, boot

    raw, raw_boot = fit(False)
    controlled, controlled_boot = fit(True)

    def ratings(beta: np.ndarray) -> np.ndarray:
        return 1000.0 + ELO_PER_LOG_ODDS * beta

    raw_interval = _interval(ratings(raw_boot), confidence)
    controlled_interval = _interval(ratings(controlled_boot[:, :len(rated)]), confidence)
    win_interval = _interval(1.0 / (1.0 + np.exp(-raw_boot)), confidence)
    length_interval = _interval(controlled_boot[:, -1], confidence)
    game_counts = {model: sum(model in (g.model_a, g.model_b) for g in rows) for model in models}

    table = []
    for model in models:
        if model == anchor:
            rating = controlled_rating = 1000.0
            interval = controlled_int = [1000.0, 1000.0]
            win, win_int = 0.5, [0.5, 0.5]
        else:
            i = column[model]
            rating = float(ratings(raw[i]))
            controlled_rating = float(ratings(controlled[i]))
            interval = [float(v) for v in raw_interval[:, i]]
            controlled_int = [float(v) for v in controlled_interval[:, i]]
            win = float(1.0 / (1.0 + math.exp(-raw[i])))
            win_int = [float(v) for v in win_interval[:, i]]
        flag = not (_inside(controlled_rating, interval) and _inside(rating, controlled_int))
        table.append({"model": model, "bt_rating": rating, "bt_interval": interval,
                      "bt_rating_length_controlled": controlled_rating,
                      "bt_interval_length_controlled": controlled_int,
                      "win_rate_vs_anchor": win, "win_rate_interval": win_int,
                      "length_flag": flag, "games": game_counts[model]})
    table.sort(key=lambda row: (-row["bt_rating"], row["model"]))
    return {"anchor": anchor, "scale": SCALE, "games": len(rows), "items": len(items),
            "length_coefficient": float(controlled[-1]) + 0.0,
            "length_coefficient_interval": [float(v) + 0.0 for v in length_interval],
            "models": table, "position": position_effect(questions)}
