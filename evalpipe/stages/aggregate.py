"""Stage 5, aggregate: the numbers of one run, its plots, and an HTML report of every item.

Reads what the judge wrote (judge/scores.jsonl, judge/canaries.jsonl, judge/summary.json; see
docs/records.md) and, when the responses came from a model fine-tuned in this run, the finetune
stage's summary.json and metrics.jsonl. Writes in results/<run>/aggregate/:

- summary.json  the numbers (see docs/aggregate.md for every key), floats rounded to 4 decimals
- summary.md    the same numbers as a Markdown table, for a pull request or a notebook
- report.html   one self-contained page: numbers, plots, and a sortable table of every item
- scores_histogram.png, score_vs_length.png, loss_curves.png

The mean, median, sd and confidence interval are over the items that carry a score (`scored`
and `empty`, an empty response scoring 0); failures (`unparseable`, `error`) are counted, never
silently folded into a number. The statistics themselves live in evalpipe/stats/describe.py, the pictures
and the page in evalpipe/report/run_page.py; this module reads and checks the inputs and puts the
summary together. Nothing here is slow (110 items), so there is no progress bar.
"""

from __future__ import annotations

from pathlib import Path

from evalpipe import stats
from evalpipe.config import RunConfig
from evalpipe.io import write_json, write_text
from evalpipe.paths import RunPaths
from evalpipe.records import (
    CANARIES,
    DECIMALS,
    FINETUNE_KEYS,
    FINETUNE_METRICS,
    FINETUNE_SUMMARY,
    JUDGE_SUMMARY,
    SCORES,
    STATES,
    STATES_WITH_SCORE,
    count_of,
    load_canaries,
    load_finetune_summary,
    load_judge_summary,
    load_metrics,
    load_scores,
    uses_finetune,
)

HISTOGRAM = "scores_histogram.png"
SCATTER = "score_vs_length.png"
LOSSES = "loss_curves.png"  # always written: says "no fine-tuning in this run" when there is none
PLOTS = (HISTOGRAM, SCATTER, LOSSES)

NO_SCORED_ITEMS = "no scored items"

# The fine-tuning figures set beside the scores (finetune/summary.json, written by finetune.py).


# -- the stage contract (evalpipe/stages/contract.py) -------------------------------------------

def needs(config: RunConfig) -> tuple[str, ...]:
    return ("judge",)


def config_key(config: RunConfig) -> dict:
    return config.section("aggregate")


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    files = {SCORES: paths / SCORES, JUDGE_SUMMARY: paths / JUDGE_SUMMARY}
    if config.judge.canaries:  # the judge writes canaries.jsonl only when asked for canaries
        files[CANARIES] = paths / CANARIES
    if uses_finetune(config):
        files[FINETUNE_SUMMARY] = paths / FINETUNE_SUMMARY
        files[FINETUNE_METRICS] = paths / FINETUNE_METRICS
    return files


def outputs(config: RunConfig) -> tuple[str, ...]:
    return ("summary.json", "summary.md", "report.html", *PLOTS)


def run(config: RunConfig, paths: RunPaths) -> None:
    from evalpipe.report import plots, run_page

    files = inputs(config, paths)
    records = load_scores(files[SCORES])
    judge_summary = load_judge_summary(files[JUDGE_SUMMARY])
    canaries = load_canaries(files[CANARIES]) if CANARIES in files else []
    finetune_summary, metrics = None, None
    if FINETUNE_SUMMARY in files:
        finetune_summary = load_finetune_summary(files[FINETUNE_SUMMARY])
        metrics = load_metrics(files[FINETUNE_METRICS])

    items = item_rows(records)
    summary = summarize(config, paths.run, items, judge_summary, canaries, finetune_summary)

    out = paths.stage_dir("aggregate")
    measure = summary["length"]["measure"]
    images = {
        HISTOGRAM: plots.plot_score_histogram(counted_scores(items), out / HISTOGRAM),
        SCATTER: plots.plot_score_vs_length(
            items, [item_length(item, measure) for item in items], measure, out / SCATTER),
        LOSSES: plots.plot_loss_curves(metrics, out / LOSSES),
    }
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", run_page.render_markdown(summary))
    write_text(out / "report.html", run_page.render_html(summary, items, canaries, images))

    if summary["judge_incomplete"]:
        print(f"aggregate: {summary['judge_incomplete']}: the judgments in error are left out of "
              "the numbers; 'evalpipe judge' asks for them again")
    if summary["canaries"]["failed"]:
        print(f"aggregate: WARNING: {stats.canary_warning(summary['canaries']['why'])}")
    score = summary["score"]
    if score["mean"] is None:
        print(f"aggregate: {summary['items']} items, {NO_SCORED_ITEMS}; see {out / 'report.html'}")
    else:
        low, high = score["ci"]
        print(f"aggregate: mean score {score['mean']:.2f} "
              f"[{low:.2f}, {high:.2f}] over {score['n']} of {summary['items']} items; "
              f"report in {out / 'report.html'}")


# -- the numbers --------------------------------------------------------------------------------

def response_words(response: str | None) -> int:
    return len((response or "").split())


def item_rows(records: list[dict]) -> list[dict]:
    """One row per item with what the report and the statistics need, in test order."""
    items = []
    for index, record in enumerate(records):
        repeats = record.get("repeats") or []
        items.append({
            "index": index,
            "id": record["id"],
            "instruction": record["instruction"],
            "input": record["input"],
            "reference": record["output"],
            "response": record.get("response"),
            "response_tokens": record.get("response_tokens"),
            "response_words": response_words(record.get("response")),
            "state": record["state"],
            "score": record["score"],
            "reason": record.get("reason"),
            "error": record.get("error"),
            # Only what the judge scored: an empty response's repeats carry the rule's 0
            # without being asked, and k such 0s are no evidence of a consistent judge.
            "repeat_scores": [repeat.get("score") if repeat.get("state") == "scored" else None
                              for repeat in repeats],
            "f1": stats.token_f1(record.get("response"), record["output"]),
        })
    return items


def length_measure(items: list[dict]) -> str:
    """`response_tokens` when every item has it, else `words` (whitespace words) for all items:
    a correlation over a mix of tokens and words would rank items on two scales at once."""
    if all(item["response_tokens"] is not None for item in items):
        return "response_tokens"
    return "words"


def item_length(item: dict, measure: str) -> int:
    return item["response_tokens"] if measure == "response_tokens" else item["response_words"]


def counted_scores(items: list[dict]) -> list[int]:
    """The scores the statistics count: of the scored and empty items, in test order."""
    return [item["score"] for item in items if item["state"] in STATES_WITH_SCORE]


def summarize(config: RunConfig, run_name: str, items: list[dict], judge_summary: dict,
              canaries: list[dict], finetune_summary: dict | None) -> dict:
    """Every number of the run, as written to summary.json (docs/aggregate.md)."""
    settings = config.aggregate
    states = {state: sum(item["state"] == state for item in items) for state in STATES}
    counted = counted_scores(items)
    # Correlations use only the items the judge really read: empty responses score 0 without
    # a judge, and would make any judge look as if it agreed with length and overlap.
    judged = [item for item in items if item["state"] == "scored"]
    judged_scores = [item["score"] for item in judged]
    measure = length_measure(items)

    repeat_counts = {len(item["repeat_scores"]) for item in items if item["repeat_scores"]}
    consistency = stats.self_consistency([item["repeat_scores"] for item in items])
    if consistency is not None:
        consistency = {"repeats": max(repeat_counts), **consistency}

    finetune = None
    if finetune_summary is not None:
        finetune = {key: finetune_summary[key] for key in FINETUNE_KEYS}

    # Judgments in error (items, canaries; judge/summary.json's `errors`, or the items in state
    # error in a summary written before it counted them) leave the judge incomplete.
    errors = judge_summary.get("errors", states["error"])
    summary = {
        "run": run_name,
        "items": len(items),
        "states": states,
        "note": None if counted else NO_SCORED_ITEMS,
        "judge_incomplete": f"judge incomplete: {count_of(errors, 'error')}" if errors else None,
        "score": {
            "n": len(counted),
            "mean": stats.mean(counted),
            "median": stats.median(counted),
            "sd": stats.sd(counted),
            "min": min(counted) if counted else None,
            "max": max(counted) if counted else None,
            "ci": stats.bootstrap_ci(counted, settings.bootstrap_resamples, settings.seed,
                                     settings.confidence),
            "confidence": settings.confidence,
            "resamples": settings.bootstrap_resamples,
            "seed": settings.seed,
        },
        "book_average": {
            "average": stats.book_average([item["state"] for item in items],
                                          [item["score"] for item in items]),
            "counted": states["scored"] + states["empty"],
            "dropped": states["unparseable"] + states["error"],
        },
        "overlap_f1": {
            "mean": stats.mean([item["f1"] for item in items]),
            "n": len(items),
            "spearman_with_score": stats.spearman([item["f1"] for item in judged],
                                                  judged_scores),
            "spearman_n": len(judged),
        },
        "length": {
            "measure": measure,
            "mean": stats.mean([item_length(item, measure) for item in items]),
            "spearman_with_score": stats.spearman([item_length(item, measure) for item in judged],
                                                  judged_scores),
            "spearman_n": len(judged),
        },
        "canaries": stats.canary_summary(canaries),
        "self_consistency": consistency,
        "finetune": finetune,
        "judge": {
            "backend": judge_summary["judge"].get("backend"),
            "model": judge_summary["judge"].get("model"),
            "digest": judge_summary["judge"].get("digest"),
            "template": judge_summary["template"],
            "structured": judge_summary["structured"],
            "options": judge_summary["options"],
            "repeats": judge_summary["repeats"],
        },
    }
    return stats.rounded(summary, DECIMALS)
