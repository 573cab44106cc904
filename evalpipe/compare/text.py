"""The leaderboard in words, shared by leaderboard.md (evalpipe/compare/markdown.py), compare.html
(evalpipe/compare/html.py) and the command's summary: the tables as header and text cells, the
title, the notes to read before any number, and the sentences that explain each section.
Everything is computed from leaderboard.json's dict (evalpipe/compare/leaderboard.py).
"""

from __future__ import annotations

from collections.abc import Callable

from evalpipe import stats
from evalpipe.compare.leaderboard import mixed_judges_text
from evalpipe.records import STATES
from evalpipe.report.format import interval, level, number


def _share(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _judge_text(identity: dict) -> str:
    if identity["model"] is None:
        return "n/a"
    return f"{identity['model']} ({identity['template']}, {identity['mode']})"


# -- a judge that failed its canaries --------------------------------------------------------------

CANARIES_FAILED = " (canaries failed)"  # after the name of a judgment whose judge failed them


def _unmarked(name: str) -> str:
    return name


def canary_marker(board: dict) -> Callable[[str], str]:
    """name -> the name as the Markdown tables and the printed leaderboard show it: marked
    CANARIES_FAILED when it stands for a judgment whose judge failed its canaries (a model
    judged the board's way, its repeats in the agreement table, and, beside a together
    ranking, its single-mode judgment in the agreement table: "<model> single"; modes_table
    marks its own rows)."""
    failed = {row["model"] for row in board["models"] if row.get("canaries_failed")}
    for row in (board.get("modes") or {}).get("models", []):
        if row.get("single_canaries_failed"):
            failed.add(f"{row['model']} single")
    for entry in board["agreement"]:
        if entry["kind"] == "repeats" and entry["a"].rsplit(" repeat ", 1)[0] in failed:
            failed |= {entry["a"], entry["b"]}
    return lambda name: name + CANARIES_FAILED if name in failed else name


def canary_notes(board: dict) -> list[str]:
    """One note per judgment whose judge failed its canaries, to read before any number (in
    leaderboard.md and the printed leaderboard; compare.html shows the flags its own way)."""
    notes = [f"Run {row['model']}: {stats.canary_warning(row['canaries_why'])}."
             for row in board["models"] if row.get("canaries_failed")]
    notes += [f"Run {row['model']}, judged alone: "
              f"{stats.canary_warning(row['single_canaries_why'])}."
              for row in (board.get("modes") or {}).get("models", [])
              if row.get("single_canaries_failed")]
    return notes


# -- the tables --------------------------------------------------------------------------------------

def leaderboard_tables(board: dict, mark: Callable[[str], str] = _unmarked
                       ) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The tables Markdown and HTML share: header and text cells; `mark` shows a name
    (canary_marker: a judgment whose judge failed its canaries is marked so)."""
    ci = f"{level(board['confidence'])} CI"  # e.g. "95% CI"
    models = (
        ["rank", "model", "base model", "base test loss", "fine-tuned test loss", "mean score",
         ci, "scored", "empty", "unparseable", "error", "overlap (token F1)", "judge"],
        [["n/a" if r["rank"] is None else str(r["rank"]), mark(r["model"]),
          r["base_model"] or "n/a",
          number(r["base_test_loss"], 3), number(r["finetuned_test_loss"], 3),
          number(r["mean"]), interval(r["ci"]),
          *(str(r["states"][state]) for state in STATES),
          number(r["overlap_mean"], 3), _judge_text(r["judge"])] for r in board["models"]])
    pairs = (
        ["a", "b", "items", "mean a", "mean b", "a - b", f"{level(board['confidence'])} paired CI",
         "Wilcoxon p", "a wins", "b wins", "ties"],
        [[mark(p["a"]), mark(p["b"]), str(p["items"]), number(p["mean_a"]), number(p["mean_b"]),
          number(p["mean_difference"]), interval(p["ci"]),
          number(p["wilcoxon"]["p_value"], 4), _share(p["wins"]["a_share"]),
          _share(p["wins"]["b_share"]), _share(p["wins"]["tie_share"])]
         for p in board["pairs"]])
    agreement = (
        ["a", "b", "what differs", "items", "Pearson", "Spearman", "Kendall",
         "mean abs difference", "kappa (quadratic, bins of ten)"],
        [[mark(e["a"]), mark(e["b"]), "; ".join(e["differs"]), str(e["items"]), number(e["pearson"], 3),
          number(e["spearman"], 3), number(e["kendall"], 3),
          number(e["mean_abs_difference"]), number(e["kappa_quadratic"], 3)]
         for e in board["agreement"]])
    return {"models": models, "pairs": pairs, "agreement": agreement}


def _shares_text(shares: dict | None) -> str:
    if shares is None:
        return "n/a"
    return " / ".join(_share(shares[source]) for source in ("items", "seeds", "judge"))


def verdict_text(pair: dict, items: int) -> str:
    """Whether the items tell a pair apart: "distinguishable", or "not distinguishable with N
    items (needs about M)" (no M for a difference of 0, which no number of items shows)."""
    if pair["distinguishable"] is None:
        return f"not computed with {items} item{'s' if items != 1 else ''}"
    if pair["distinguishable"]:
        return "distinguishable"
    needs = ("" if pair["items_needed"] is None
             else f" (needs about {pair['items_needed']})")
    return f"not distinguishable with {items} items{needs}"


def how_sure_tables(board: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """How sure the ranking is (leaderboard.json's `how_sure`), as header and text cells: per
    model P(best), rank interval, tier and where its uncertainty comes from; per pair P(a > b),
    the minimum detectable difference and whether the items tell the two apart."""
    how_sure = board["how_sure"]
    models = (
        ["model", "runs", "P(best)", "rank interval", "tier",
         "uncertainty from items / seeds / judge"],
        [[m["model"], ", ".join(m["runs"]), _share(m["p_best"]),
          f"[{m['rank_interval'][0]}, {m['rank_interval'][1]}]", str(m["tier"]),
          _shares_text(m["variance_shares"])] for m in how_sure["models"]])
    pairs = (
        ["a", "b", "P(a > b)", "MDD", "verdict"],
        [[p["a"], p["b"], _share(p["p_a_better"]), number(p["mdd"]),
          verdict_text(p, how_sure["items"])] for p in how_sure["pairs"]])
    return {"models": models, "pairs": pairs}


def how_sure_text(board: dict) -> str:
    how_sure = board["how_sure"]
    return (f"From one paired bootstrap ({board['resamples']} resamples, seed {board['seed']}) "
            f"over the {how_sure['items']} items every model has a score for, each model's "
            "seeds and its judge repeats averaged per item. P(best): the share of resamples "
            f"in which the model is first. Rank interval: its ranks' {level(board['confidence'])} "
            "range over the resamples. Models whose rank intervals overlap, directly or through "
            "others, are one tier. Uncertainty from: the shares of the mean's variance that the "
            "items, the seeds and the judge's repeats each cause. P(a > b): the share of "
            "resamples with a above b. MDD: the smallest true difference a paired test "
            f"(alpha {how_sure['alpha']}, power {how_sure['power']:.0%}) detects on these items.")


def tiers_text(board: dict, mark: Callable[[str], str] = _unmarked) -> str:
    """The tiers in one line, e.g. "tier 1: a; tier 2: c, b" (the printed leaderboard); `mark`
    shows a name (canary_marker)."""
    tiers: dict[int, list[str]] = {}
    for model in board["how_sure"]["models"]:
        tiers.setdefault(model["tier"], []).append(mark(model["model"]))
    return "; ".join(f"tier {tier}: {', '.join(names)}" for tier, names in sorted(tiers.items()))


def method_text(board: dict) -> str:
    text = (f"{len(board['runs'])} runs on the same {board['items']} test items. Mean score over "
            f"the scored and empty items (an empty response counts 0; unparseable and error "
            f"items are left out), with a {level(board['confidence'])} percentile bootstrap "
            f"CI ({board['resamples']} resamples, seed {board['seed']}).")
    if board.get("comparison", "models") == "models":
        text += (" Pairs compare the items both models have a score for: paired bootstrap CI of "
                 "the mean difference and a two-sided Wilcoxon signed-rank test (zero "
                 "differences dropped).")
    if board.get("mode") == "together":
        text += (" Judged together: for each item the judge saw every model's non-empty "
                 "response in one prompt, labelled Response 1..k in an order shuffled per item "
                 "(seed judge.options.seed + item index); a reply that misses a response or "
                 "scores one twice leaves the item unparseable for every model.")
        if board.get("positions") and board["positions"]["swap"]:
            text += (" Each item was judged a second time in reversed order (judge.swap) for "
                     "the position check; a model's score is its first-pass score.")
    return text


def position_table(positions: dict) -> tuple[list[str], list[list[str]]]:
    def cell(part):
        return "n/a" if part is None else f"{number(part['mean'])} ({part['items']})"

    return (["position shown", "first pass: mean (scores)", "swapped pass: mean (scores)",
             "both: mean (scores)", "position effect (responses)"],
            [[str(row["position"]), cell(row["first"]), cell(row["second"]), cell(row["both"]),
              cell(row.get("effect"))] for row in positions["rows"]])


def modes_table(modes: dict, confidence: float, marked: bool = False
                ) -> tuple[list[str], list[list[str]]]:
    """The modes side by side; `marked`: a model whose single-mode judge failed its canaries
    is marked CANARIES_FAILED (together mode has no canaries)."""
    def name(row: dict) -> str:
        failed = marked and row.get("single_canaries_failed")
        return row["model"] + CANARIES_FAILED if failed else row["model"]

    ci = f"{level(confidence)} CI"
    return (["model", "together rank", "together mean", f"together {ci}", "single rank",
             "single mean", f"single {ci}"],
            [[name(r), str(r["together_rank"]), number(r["together_mean"]),
              interval(r["together_ci"]), str(r["single_rank"]), number(r["single_mean"]),
              interval(r["single_ci"])] for r in modes["models"]])


POSITION_TEXT = ("Mean score given to the response shown at each place (and how many scores "
                 "that is), over the items whose reply was read in full; these means also "
                 "depend on which models happened to be shown there. The position effect "
                 "(judge.swap only) removes that: for each response scored in both passes, its "
                 "score at each of its two places minus the mean of the two, averaged per "
                 "place. A judge that reads only the responses has effect 0 at every place; a "
                 "positive effect is a place the judge favours.")


def modes_text(modes: dict) -> str:
    if modes["spearman"] is None:
        return ("The same runs judged one at a time (each run's judge/scores.jsonl). Rank "
                "correlation of the two means: not computed (fewer than 3 models, or a "
                "constant column).")
    return ("The same runs judged one at a time (each run's judge/scores.jsonl). Rank "
            f"correlation of the two means: Spearman {modes['spearman']:.3f}, Kendall "
            f"{modes['kendall']:.3f}.")


def correlation_text(board: dict) -> str:
    correlation = board["loss_correlation"]
    if correlation["spearman"] is None:
        return (f"Not computed: it needs at least 3 models with a fine-tuned test loss and a "
                f"mean score, not all equal; {correlation['models']} have both.")
    return (f"Over {correlation['models']} models: Spearman {correlation['spearman']:.3f}, "
            f"Kendall {correlation['kendall']:.3f} (a lower loss going with a higher score "
            f"gives a negative value).")


JUDGE_COMPARISON_TEXT = (
    "Every run holds the same responses to every item: this compares the judges (see Judge "
    "agreement), not models, so no ranking is made.")


def title(board: dict) -> str:
    kind = "Judge comparison" if board.get("comparison") == "judges" else "Comparison"
    return f"{kind} {board['name']}"


def board_notes(board: dict) -> list[str]:
    """What must be read before any number: the judges are mixed, or this is no ranking."""
    if board.get("comparison") == "judges":
        return [JUDGE_COMPARISON_TEXT]
    return [mixed_judges_text(board["mixed_judges"])] if board.get("mixed_judges") else []


NO_AGREEMENT = ("No two runs hold the same responses and no run has judge repeats: there is "
                "no second judgment to compare with.")
