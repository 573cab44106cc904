"""The leaderboard and its statistics, dicts in, dicts out: everything leaderboard.json holds,
computed from the loaded models (evalpipe/compare/load.py); nothing here reads or writes a file.

Judge agreement is computed, with no flag to ask for it, wherever two judgments of the same
responses exist: two runs whose responses are identical item by item (the same model judged by
two judges, templates or modes, or judged twice), and the repeats inside a run (`repeats`).

One ranking, one judge: scores of two judges (another model, digest, template, options ...)
are on scales of their own, so models are ranked only when every run was judged alike
(`judge_mismatches`); otherwise compare refuses, unless --allow-mixed-judges is given, and then
every output says the judges are mixed. Runs that all hold the same responses are not models
to rank at all: they are one model judged several times, a comparison of judges
(`comparison: "judges"`): the agreement and each judge's mean, no ranks and no pairs.

How sure a ranking is (`how_sure` in leaderboard.json): P(best), rank intervals, tiers, the
sources of noise, and per pair P(a > b) and what the items can tell apart, from
`evalpipe.stats.uncertainty.how_sure` on the array `score_array` builds. Its models are the
leaderboard's models grouped by `seed_groups`: the runs that are seeds of one model are one
model there (today every run is a model of its own, its one seed).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter

import numpy as np

from evalpipe import stats
from evalpipe.compare.load import ModelScores
from evalpipe.config import AggregateConfig
from evalpipe.records import STATES, STATES_WITH_SCORE, CompareError
from evalpipe.stats import paired, uncertainty

# What identifies a judgment, in the order a difference is reported.
JUDGE_IDENTITY = ("backend", "model", "digest", "template", "mode", "structured", "options")


def model_row(model: ModelScores, bootstrap: AggregateConfig) -> dict:
    """One leaderboard row, before ranking; `bootstrap` gives the interval's resamples, seed
    and confidence."""
    counted = model.counted()
    finetune = model.finetune or {}
    states = Counter(r["state"] for r in model.records)
    return {
        "model": model.label,
        "run": model.run,
        "base_model": model.base_model,
        "base_test_loss": finetune.get("base_test_loss"),
        "finetuned_test_loss": finetune.get("finetuned_test_loss"),
        "items": len(model.records),
        "states": {state: states.get(state, 0) for state in STATES},
        "counted": len(counted),
        "mean": stats.mean(counted),
        "ci": stats.bootstrap_ci(counted, bootstrap.bootstrap_resamples, bootstrap.seed,
                                 bootstrap.confidence),
        "overlap_mean": stats.mean([stats.token_f1(r.get("response"), r["output"])
                                    for r in model.records]),
        "judge": model.judge_identity(),
        # The judge failed its canaries: its scores are not meaningful (docs/judge.md).
        "canaries_failed": model.canary_failure is not None,
        "canaries_why": model.canary_failure,
    }


def _both_counted(a: ModelScores, b: ModelScores, states=STATES_WITH_SCORE):
    """The scores of the items both judgments gave a counted state, in test order."""
    pairs = [(x["score"], y["score"]) for x, y in zip(a.records, b.records)
             if x["state"] in states and y["state"] in states]
    return [x for x, _ in pairs], [y for _, y in pairs]


def pair_rows(ranked: list[ModelScores], bootstrap: AggregateConfig) -> list[dict]:
    """Every pair of models, the higher ranked one as `a`, on the items both have a score for
    (scored or empty: an empty response is the model's failure and counts 0 for it)."""
    rows = []
    for a, b in itertools.combinations(ranked, 2):
        a_scores, b_scores = _both_counted(a, b)
        rows.append({"a": a.label, "b": b.label,
                     **paired.compare_pair(a_scores, b_scores, bootstrap.bootstrap_resamples,
                                           bootstrap.seed, bootstrap.confidence)})
    return rows


def loss_correlation(rows: list[dict]) -> dict:
    """Spearman and Kendall between fine-tuned test loss and mean score, over the models that
    have both; None for each below 3 models or when either column is constant."""
    usable = [r for r in rows if r["finetuned_test_loss"] is not None and r["mean"] is not None]
    result = paired.correlations([r["finetuned_test_loss"] for r in usable],
                                 [r["mean"] for r in usable])
    return {"models": len(usable), "spearman": result["spearman"],
            "kendall": result["kendall"]}


def _identity_text(value) -> str:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def judge_differences(a: ModelScores, b: ModelScores) -> list[str]:
    """What differs between two judgments, e.g. ["model llama3 vs qwen2.5"]."""
    a_identity, b_identity = a.judge_identity(), b.judge_identity()
    return [f"{key} {_identity_text(a_identity[key])} vs {_identity_text(b_identity[key])}"
            for key in JUDGE_IDENTITY if a_identity[key] != b_identity[key]]


def judge_mismatches(models: list[ModelScores]) -> list[dict]:
    """How each model's judge differs from the first model's, e.g. [{"a": "a", "b": "b",
    "differs": ["digest x vs y"]}]; empty when all were judged alike."""
    first = models[0]
    return [{"a": first.label, "b": other.label, "differs": differences}
            for other in models[1:] if (differences := judge_differences(first, other))]


def mismatch_text(mismatch: dict) -> str:
    return (f"runs {mismatch['a']} and {mismatch['b']} were judged differently "
            f"({'; '.join(mismatch['differs'])})")


def mixed_judges_error(mismatches: list[dict]) -> CompareError:
    return CompareError(f"{mismatch_text(mismatches[0])}; a ranking needs one judge for every "
                        "run: judge them alike, or give --allow-mixed-judges")


def mixed_judges_text(mismatches: list[dict], what: str = "This ranking") -> str:
    """The warning every output of a ranking with --allow-mixed-judges carries."""
    runs = "; ".join(map(mismatch_text, mismatches))
    return (f"Mixed judges: {runs}. {what} sets scores of different judges side by side "
            "(--allow-mixed-judges): a difference between two models may come from their "
            "judges.")


def same_responses(models: list[ModelScores]) -> bool:
    """Whether there are several models and all hold the same response to every item."""
    responses = [[r.get("response") for r in model.records] for model in models]
    return len(models) > 1 and all(other == responses[0] for other in responses[1:])


def judge_agreements(models: list[ModelScores]) -> list[dict]:
    """Agreement wherever the same responses were judged twice, on the items both judgments
    scored (state `scored`: an empty response is 0 by rule, not by a judge, so it would only
    inflate the agreement). Each entry carries `scores_a`/`scores_b` for the scatter plot; they
    are dropped from leaderboard.json."""
    entries = []
    for a, b in itertools.combinations(models, 2):
        if [r.get("response") for r in a.records] != [r.get("response") for r in b.records]:
            continue
        a_scores, b_scores = _both_counted(a, b, states=("scored",))
        differs = judge_differences(a, b) or ["nothing: the same judge settings twice"]
        entries.append({"kind": "runs", "a": a.label, "b": b.label, "differs": differs,
                        **paired.agreement(a_scores, b_scores),
                        "scores_a": a_scores, "scores_b": b_scores})
    for model in models:
        entries.extend(repeat_agreements(model))
    return entries


def repeat_agreements(model: ModelScores) -> list[dict]:
    """Agreement between each two repeats of a run judged with judge.repeats > 1."""
    repeats = [r.get("repeats") or [] for r in model.records]
    count = max((len(r) for r in repeats), default=0)
    entries = []
    for i, j in itertools.combinations(range(count), 2):
        pairs = [(r[i]["score"], r[j]["score"]) for r in repeats
                 if len(r) > j and r[i].get("state") == "scored" and r[j].get("state") == "scored"]
        seeds = [next((r[k].get("seed") for r in repeats if len(r) > k), None) for k in (i, j)]
        a_scores, b_scores = [x for x, _ in pairs], [y for _, y in pairs]
        entries.append({"kind": "repeats",
                        "a": f"{model.label} repeat {i + 1}", "b": f"{model.label} repeat {j + 1}",
                        "differs": [f"seed {seeds[0]} vs {seeds[1]}"],
                        **paired.agreement(a_scores, b_scores),
                        "scores_a": a_scores, "scores_b": b_scores})
    return entries


def _rank_key(row: dict):
    # Highest mean first; models with no score at all last; ties in the order given.
    return (row["mean"] is None, -(row["mean"] or 0.0))


def ranked_rows(models: list[ModelScores],
                bootstrap: AggregateConfig) -> tuple[list[ModelScores], list[dict]]:
    """The models in leaderboard order and their rows, each with its rank."""
    rows = {model.label: model_row(model, bootstrap) for model in models}
    ranked = sorted(models, key=lambda m: _rank_key(rows[m.label]))
    return ranked, [{"rank": rank, **rows[model.label]}
                    for rank, model in enumerate(ranked, start=1)]


def unranked_rows(models: list[ModelScores], bootstrap: AggregateConfig) -> list[dict]:
    """The rows of a judge comparison: in the order given, rank None."""
    return [{"rank": None, **model_row(model, bootstrap)} for model in models]


SEED_RUN = re.compile(r"(?P<model>.+)--seed(?P<seed>\d+)")


def model_and_seed(model: ModelScores) -> tuple[str, str]:
    """Which model a run's scores belong to, and as which seed. A sub-run of `finetune.seeds`
    (evalpipe/sweep.py: `<run>[--<base>]--seed<N>`, fine-tuned with finetune.seed = N, as its
    config.toml says) is seed N of the model named without that suffix; any other run is a
    model of its own, with the run itself as its one seed."""
    named = SEED_RUN.fullmatch(model.label)
    if named and model.config is not None and model.config.finetune.seed == int(named["seed"]):
        return named["model"], named["seed"]
    return model.label, model.run


def seed_groups(labels: list[tuple[str, str]]) -> dict[str, list[int]]:
    """(model label, seed) per run -> each model's runs (their indices), models and seeds in
    the order first given; ValueError when a model has the same seed twice."""
    groups: dict[str, list[int]] = {}
    seen = set()
    for index, (label, seed) in enumerate(labels):
        if (label, seed) in seen:
            raise ValueError(f"model {label!r} has seed {seed!r} twice")
        seen.add((label, seed))
        groups.setdefault(label, []).append(index)
    return groups


def run_scores(model: ModelScores) -> list[list[float]]:
    """Per item, the run's scores by judge repeat (the record's `repeats` when judged more than
    once, else its own score): counted as compare counts them (scored and empty), NaN for an
    unparseable or failed judgment."""
    def score(judgment: dict) -> float:
        return judgment["score"] if judgment.get("state") in STATES_WITH_SCORE else math.nan

    return [[score(r) for r in record["repeats"]] if record.get("repeats") else [score(record)]
            for record in model.records]


def score_array(models: list[ModelScores], groups: dict[str, list[int]]) -> tuple[np.ndarray,
                                                                                  list[int]]:
    """The (models, seeds, items, repeats) array of `groups` (`seed_groups`), NaN where a score
    does not exist, on the items every model has a score for (the comparison is paired), and
    the indices of those items."""
    per_run = [run_scores(model) for model in models]
    seeds = max(len(runs) for runs in groups.values())
    repeats = max(len(scores) for run in per_run for scores in run)
    items = len(models[0].records)
    array = np.full((len(groups), seeds, items, repeats), np.nan)
    for m, runs in enumerate(groups.values()):
        for s, run in enumerate(runs):
            for i, scores in enumerate(per_run[run]):
                array[m, s, i, :len(scores)] = scores
    kept = [i for i in range(items) if (~np.isnan(array[:, :, i])).any(axis=(1, 2)).all()]
    if not kept:
        raise ValueError(f"none of the {items} items has a score from every model "
                         "(unparseable and error items have none)")
    return array[:, :, kept], kept


def how_sure_section(models: list[ModelScores], bootstrap: AggregateConfig) -> dict:
    """leaderboard.json's `how_sure`: `evalpipe.stats.uncertainty.how_sure` on the models (in
    the order given, grouped by `seed_groups`) with the board's bootstrap settings, on the
    items every model has a score for; a model's entry names its `runs`. CompareError when it
    cannot be computed (e.g. no item has a score from every model)."""
    try:
        groups = seed_groups([model_and_seed(model) for model in models])
        array, kept = score_array(models, groups)
        result = uncertainty.how_sure(array, list(groups), bootstrap.bootstrap_resamples,
                                      bootstrap.seed, bootstrap.confidence)
    except ValueError as error:
        raise CompareError(f"how sure the ranking is cannot be computed: {error}") from None
    model_keys = ("model", "seeds", "mean", "ci", "p_best", "rank_interval", "tier",
                  "variance_shares")
    pair_keys = ("a", "b", "p_a_better", "mdd", "distinguishable", "items_needed")
    return {
        "items": len(kept), "alpha": 0.05, "power": 0.8,
        "models": [{**{key: row[key] for key in model_keys},
                    "runs": [models[run].run for run in groups[row["model"]]]}
                   for row in result["models"]],
        "pairs": [{key: pair[key] for key in pair_keys} for pair in result["pairs"]],
    }


def build_leaderboard(models: list[ModelScores], name: str, bootstrap: AggregateConfig,
                      mode: str = "single", allow_mixed_judges: bool = False) -> dict:
    """Everything leaderboard.json holds (floats not yet rounded). Models are ranked only when
    one judge judged them all (else CompareError, unless `allow_mixed_judges`: then
    `mixed_judges` names the differences); runs that all hold the same responses are a
    comparison of judges, unranked."""
    mismatches = judge_mismatches(models)
    if same_responses(models):
        comparison, mismatches = "judges", []  # different judges are the point here
        ranked_rows_, pairs = unranked_rows(models, bootstrap), []
        how_sure = None
    else:
        if mismatches and not allow_mixed_judges:
            raise mixed_judges_error(mismatches)
        comparison = "models"
        ranked, ranked_rows_ = ranked_rows(models, bootstrap)
        pairs = pair_rows(ranked, bootstrap)
        how_sure = how_sure_section(ranked, bootstrap)
    return {
        "name": name,
        "mode": mode,
        "comparison": comparison,
        "mixed_judges": mismatches or None,
        "runs": [model.run for model in models],
        "items": len(models[0].records),
        "confidence": bootstrap.confidence,
        "resamples": bootstrap.bootstrap_resamples,
        "seed": bootstrap.seed,
        "models": ranked_rows_,
        "pairs": pairs,
        "how_sure": how_sure,
        "loss_correlation": loss_correlation(ranked_rows_),
        "agreement": judge_agreements(models),
        "positions": None,
        "modes": None,
        "modes_note": None,  # why modes is missing, or that its single ranking mixes judges
        "plots": [],
    }


def modes_side_by_side(together: list[ModelScores], single: list[ModelScores],
                       together_rows: list[dict], bootstrap: AggregateConfig) -> dict:
    """The same runs ranked by both modes (`modes` in leaderboard.json), in together order,
    with whether each run's own single-mode judge failed its canaries, and the rank
    correlation of the two mean columns (None below 3 models or when constant)."""
    _, single_rows = ranked_rows(single, bootstrap)
    single_by_label = {row["model"]: row for row in single_rows}
    rows = [{"model": row["model"], "together_rank": row["rank"], "together_mean": row["mean"],
             "together_ci": row["ci"], "single_rank": single_by_label[row["model"]]["rank"],
             "single_mean": single_by_label[row["model"]]["mean"],
             "single_ci": single_by_label[row["model"]]["ci"],
             "single_canaries_failed": single_by_label[row["model"]]["canaries_failed"],
             "single_canaries_why": single_by_label[row["model"]]["canaries_why"]}
            for row in together_rows]
    usable = [r for r in rows if r["together_mean"] is not None and r["single_mean"] is not None]
    correlation = paired.correlations([r["together_mean"] for r in usable],
                                      [r["single_mean"] for r in usable])
    return {"models": rows, "spearman": correlation["spearman"],
            "kendall": correlation["kendall"]}


def mode_agreements(together: list[ModelScores], single: list[ModelScores]) -> list[dict]:
    """Per model, its responses judged together against judged alone (`kind: "modes"`), on
    the items both judgments scored."""
    entries = []
    for a, b in zip(together, single):
        a_scores, b_scores = _both_counted(a, b, states=("scored",))
        entries.append({"kind": "modes", "a": f"{a.label} together", "b": f"{b.label} single",
                        "differs": judge_differences(a, b),
                        **paired.agreement(a_scores, b_scores),
                        "scores_a": a_scores, "scores_b": b_scores})
    return entries


def add_single_mode(board: dict, together: list[ModelScores], single: list[ModelScores],
                    bootstrap: AggregateConfig, allow_mixed_judges: bool = False) -> None:
    """Set the runs' own single-mode judgments beside a together comparison's `board`: `modes`
    (or `modes_note` saying why not, or that the single-mode ranking mixes judges) and, per
    model, the agreement of the two modes."""
    # The single-mode ranking beside this one is a ranking too: one judge, or marked.
    # (The same responses everywhere: no ranking in either mode.)
    single_mismatches = judge_mismatches(single)
    if board["comparison"] == "models":
        if single_mismatches and not allow_mixed_judges:
            board["modes_note"] = (
                "Not shown: the runs' own single-mode judgments were not judged alike: "
                + "; ".join(map(mismatch_text, single_mismatches))
                + "; --allow-mixed-judges shows them.")
        else:
            board["modes"] = modes_side_by_side(together, single, board["models"], bootstrap)
            if single_mismatches:
                board["modes_note"] = mixed_judges_text(single_mismatches,
                                                        "The single-mode ranking")
    board["agreement"] += mode_agreements(together, single)
