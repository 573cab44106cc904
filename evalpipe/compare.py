"""Comparing runs: check that they answered the same test items, then set them side by side.

`evalpipe compare RUN [RUN ...]` reads each run's judge/scores.jsonl (docs/records.md) and writes
`results/compare-<name>/`: leaderboard.json, leaderboard.md, the plots (scores.png, and
loss-vs-score.png and judges.png when there is something to draw) and compare.html, one
self-contained page. docs/compare.md says what every number means.

Runs are comparable only when their test splits are identical: the same instructions, inputs
and reference outputs, in the same order (ids are not enough: they are hashes of those three
fields, but a user may have edited one without the others). Anything else would compare models
on different questions, so compare refuses and names the first difference.

What a "model" is: one run's responses, named by the run. With `--mode single` (the default)
its scores are the run's own judge/scores.jsonl (judged alone, the book's way). With `--mode
together` the runs' responses are first judged together (evalpipe/together.py: every model's
response to an item in one prompt) into compare-<name>/together/, one scores file per model
with the same fields plus `position`, `shuffle_seed` and `mode`; `load_models` is the one place
that reads either kind, and everything after it works on models, not runs. A together
comparison also sets the runs' single-mode judgments beside it when every run has one (ranks
side by side, and the agreement of the two modes per model).

Judge agreement is computed, with no flag to ask for it, wherever two judgments of the same
responses exist: two runs whose responses are identical item by item (the same model judged by
two judges, templates or modes, or judged twice), and the repeats inside a run (`repeats`).
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import os
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evalpipe import paired, stats
from evalpipe.errors import EvalpipeError
from evalpipe.io import DataError, write_json, write_text
from evalpipe.report import pyplot, save_figure

COMPARED_FIELDS = ("instruction", "input", "output")
CONFIDENCE = 0.95
DECIMALS = 4  # floats in leaderboard.json, as the aggregate stage rounds its summary
SCORES_PLOT = "scores.png"
LOSS_PLOT = "loss-vs-score.png"
JUDGES_PLOT = "judges.png"
PLOTS = (SCORES_PLOT, LOSS_PLOT, JUDGES_PLOT)
# What identifies a judgment, in the order a difference is reported.
JUDGE_IDENTITY = ("backend", "model", "digest", "template", "mode", "structured", "options")


class CompareError(EvalpipeError):
    """Runs that cannot be compared; the message names the runs, the item and the field."""


@dataclass
class ModelScores:
    """One model's judged responses and what is known about how it was made."""

    label: str  # its name in the leaderboard: the run's name (one day "run/base")
    run: str
    records: list[dict]  # judge/scores.jsonl, in test order
    finetune: dict | None = None  # finetune/summary.json, when the responses came from it
    config: dict = field(default_factory=dict)  # the run's config.toml, when it has one
    judge_summary: dict = field(default_factory=dict)  # judge/summary.json, when present

    @property
    def base_model(self) -> str | None:
        base = self.config.get("model", {}).get("base")
        if base:
            return base
        return (self.finetune or {}).get("base_model")

    def judge_identity(self) -> dict:
        """Who judged and how: from the records (docs/records.md) and judge/summary.json."""
        first = self.records[0] if self.records else {}
        return {
            "backend": first.get("judge_backend"),
            "model": first.get("judge_model"),
            "digest": first.get("judge_digest"),
            "template": first.get("judge_template"),
            "mode": self.config.get("judge", {}).get("mode", "single"),
            "structured": self.judge_summary.get("structured"),
            "options": self.judge_summary.get("options"),
        }

    def counted(self) -> list[int]:
        """Scores of the items that carry one (scored and empty), in test order."""
        return [r["score"] for r in self.records if r["state"] in stats.STATES_WITH_SCORE]


# -- loading ------------------------------------------------------------------------------------

def _read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


def _uses_finetune(config: dict) -> bool:
    """Whether the judged responses came from the model fine-tuned in the run (the aggregate
    stage's rule): an import or a base model's responses have no fine-tuning figures."""
    generate = config.get("generate", {})
    return not generate.get("from_file") and generate.get("model", "finetuned") == "finetuned"


def read_run_config(results: Path, run: str) -> dict:
    """The run's config.toml as a dict ({} when it has none)."""
    config_path = results / run / "config.toml"
    if not config_path.exists():
        return {}
    try:
        return tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise DataError(f"{config_path}: not valid TOML ({err})") from None


def _read_finetune(results: Path, run: str, config: dict) -> dict | None:
    finetune_path = results / run / "finetune/summary.json"
    if not (finetune_path.exists() and _uses_finetune(config)):
        return None
    finetune = _read_json_object(finetune_path)
    for key in ("base_test_loss", "finetuned_test_loss"):
        value = finetune.get(key)
        if value is not None and not isinstance(value, (int, float)):
            raise DataError(f"{finetune_path}: key '{key}' must be a number, got {value!r}")
    return finetune


def load_run(results: Path, run: str) -> ModelScores:
    """A run judged on its own: its scores, config.toml, judge summary and fine-tuning figures."""
    from evalpipe.aggregate import load_scores  # the same checks, the same messages

    folder = results / run
    scores_path = folder / "judge/scores.jsonl"
    if not scores_path.exists():
        if read_run_config(results, run).get("judge", {}).get("mode") == "together":
            raise CompareError(f"run {run}: {scores_path} not found: the run is set to be "
                               "judged together with others; use 'evalpipe compare ... "
                               "--mode together'")
        raise CompareError(f"run {run}: {scores_path} not found; "
                           f"make it with 'make evaluate RUN={run}'")
    model = ModelScores(label=run, run=run, records=load_scores(scores_path))
    if not model.records:
        raise CompareError(f"run {run}: {scores_path} holds no records")
    model.config = read_run_config(results, run)
    mode = model.config.get("judge", {}).get("mode", "single")
    if mode != "single":
        raise CompareError(f"run {run}: judged with judge.mode = {mode!r}; a run's own "
                           "judgment is single-mode; to judge runs together, use 'evalpipe "
                           "compare RUN RUN ... --mode together'")
    judge_summary_path = folder / "judge/summary.json"
    if judge_summary_path.exists():
        model.judge_summary = _read_json_object(judge_summary_path)
    model.finetune = _read_finetune(results, run, model.config)
    return model


def load_together_model(results: Path, run: str, together: Path, summary: dict) -> ModelScores:
    """A run's responses as judged together: compare-<name>/together/scores/<run>.jsonl, with
    the run's own config.toml and fine-tuning figures; its judge settings are the together
    judgment's (mode "together"), not those in the run's config."""
    from evalpipe.aggregate import load_scores
    from evalpipe.together import SCORES_DIR

    scores_path = together / SCORES_DIR / f"{run}.jsonl"
    if not scores_path.exists():
        raise CompareError(f"run {run}: {scores_path} not found; make it with "
                           "'evalpipe compare ... --mode together'")
    config = read_run_config(results, run)
    judge = {"backend": summary["judge"]["backend"], "model": summary["judge"]["model"],
             "template": summary["template"], "options": summary["options"],
             "swap": summary["swap"], "mode": "together"}
    model = ModelScores(label=run, run=run, records=load_scores(scores_path),
                        config={**config, "judge": judge},
                        judge_summary={"structured": summary["structured"],
                                       "options": summary["options"]})
    model.finetune = _read_finetune(results, run, config)
    return model


def load_models(results: Path, runs: list[str],
                together: Path | None = None) -> list[ModelScores]:
    """Every model of the runs, in the order given: each run's own judgment (judge/scores.jsonl),
    or, with `together` (a compare-<name>/together/ folder written by evalpipe/together.py),
    the runs' responses as judged there."""
    seen = Counter(runs)
    twice = [run for run, count in seen.items() if count > 1]
    if twice:
        raise CompareError(f"run {twice[0]} is named twice")
    if together is None:
        return [load_run(results, run) for run in runs]
    from evalpipe.together import SUMMARY

    summary = _read_json_object(together / SUMMARY)
    return [load_together_model(results, run, together, summary) for run in runs]


def single_mode_models(results: Path, runs: list[str]) -> list[ModelScores] | None:
    """The runs' own single-mode judgments, when every run has one (to set beside a together
    comparison); else None."""
    for run in runs:
        if not (results / run / "judge/scores.jsonl").exists():
            return None
        if read_run_config(results, run).get("judge", {}).get("mode", "single") != "single":
            return None
    return [load_run(results, run) for run in runs]


# -- the consistency check ----------------------------------------------------------------------

def _short(text, limit: int = 40) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _item_key(record: dict) -> tuple[str, str, str]:
    return tuple(record[name] for name in COMPARED_FIELDS)


def check_same_test_items(models: list[ModelScores]) -> None:
    """Refuse models whose test items differ from the first model's, naming the first
    difference: the two runs, the item's index and ids, the field, and both values shortened.
    The same items in another order are named as such."""
    first = models[0]
    for other in models[1:]:
        a_records, b_records = first.records, other.records
        if len(a_records) != len(b_records):
            raise CompareError(
                f"runs {first.label} and {other.label} do not share a test split: "
                f"{first.label} has {len(a_records)} items, {other.label} has {len(b_records)}")
        reordered = (Counter(map(_item_key, a_records)) == Counter(map(_item_key, b_records)))
        for index, (a, b) in enumerate(zip(a_records, b_records)):
            for name in COMPARED_FIELDS:
                if a[name] != b[name]:
                    what = ("hold the same items in another order; the first difference is"
                            if reordered else "differ")
                    raise CompareError(
                        f"runs {first.label} and {other.label} {what} at item {index} "
                        f"(ids {a['id']} and {b['id']}), field {name}: "
                        f"{_short(a[name])} against {_short(b[name])}")


# -- the numbers --------------------------------------------------------------------------------

def _rounded(value):
    """Floats rounded to DECIMALS, inside lists and dicts too (numpy floats become floats)."""
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), DECIMALS)
    return value


def model_row(model: ModelScores, resamples: int, seed: int) -> dict:
    """One leaderboard row, before ranking."""
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
        "states": {state: states.get(state, 0) for state in stats.STATES},
        "counted": len(counted),
        "mean": stats.mean(counted),
        "ci": stats.bootstrap_ci(counted, resamples, seed, CONFIDENCE),
        "overlap_mean": stats.mean([stats.token_f1(r.get("response"), r["output"])
                                    for r in model.records]),
        "judge": model.judge_identity(),
    }


def _both_counted(a: ModelScores, b: ModelScores, states=stats.STATES_WITH_SCORE):
    """The scores of the items both judgments gave a counted state, in test order."""
    pairs = [(x["score"], y["score"]) for x, y in zip(a.records, b.records)
             if x["state"] in states and y["state"] in states]
    return [x for x, _ in pairs], [y for _, y in pairs]


def pair_rows(ranked: list[ModelScores], resamples: int, seed: int) -> list[dict]:
    """Every pair of models, the higher ranked one as `a`, on the items both have a score for
    (scored or empty: an empty response is the model's failure and counts 0 for it)."""
    rows = []
    for a, b in itertools.combinations(ranked, 2):
        a_scores, b_scores = _both_counted(a, b)
        rows.append({"a": a.label, "b": b.label,
                     **paired.compare_pair(a_scores, b_scores, resamples, seed, CONFIDENCE)})
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


def ranked_rows(models: list[ModelScores], resamples: int,
                seed: int) -> tuple[list[ModelScores], list[dict]]:
    """The models in leaderboard order and their rows, each with its rank."""
    rows = {model.label: model_row(model, resamples, seed) for model in models}
    ranked = sorted(models, key=lambda m: _rank_key(rows[m.label]))
    return ranked, [{"rank": rank, **rows[model.label]}
                    for rank, model in enumerate(ranked, start=1)]


def build_leaderboard(models: list[ModelScores], name: str, resamples: int, seed: int,
                      mode: str = "single") -> dict:
    """Everything leaderboard.json holds (floats not yet rounded), plus the ranked models."""
    ranked, ranked_rows_ = ranked_rows(models, resamples, seed)
    return {
        "name": name,
        "mode": mode,
        "runs": [model.run for model in models],
        "items": len(models[0].records),
        "confidence": CONFIDENCE,
        "resamples": resamples,
        "seed": seed,
        "models": ranked_rows_,
        "pairs": pair_rows(ranked, resamples, seed),
        "loss_correlation": loss_correlation(ranked_rows_),
        "agreement": judge_agreements(models),
        "positions": None,
        "modes": None,
        "plots": [],
    }


def modes_side_by_side(together: list[ModelScores], single: list[ModelScores],
                       together_rows: list[dict], resamples: int, seed: int) -> dict:
    """The same runs ranked by both modes (`modes` in leaderboard.json), in together order,
    and the rank correlation of the two mean columns (None below 3 models or when constant)."""
    _, single_rows = ranked_rows(single, resamples, seed)
    single_by_label = {row["model"]: row for row in single_rows}
    rows = [{"model": row["model"], "together_rank": row["rank"], "together_mean": row["mean"],
             "together_ci": row["ci"], "single_rank": single_by_label[row["model"]]["rank"],
             "single_mean": single_by_label[row["model"]]["mean"],
             "single_ci": single_by_label[row["model"]]["ci"]} for row in together_rows]
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


# -- plots --------------------------------------------------------------------------------------

def plot_scores(models: list[ModelScores], rows: list[dict], path: Path) -> bytes:
    """Box plot of each model's counted scores, leaderboard order, the mean as a diamond."""
    plt = pyplot()
    by_label = {model.label: model for model in models}
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4))
    data = [by_label[row["model"]].counted() or [np.nan] for row in rows]
    positions = list(range(1, len(rows) + 1))
    ax.boxplot(data, positions=positions)
    ax.set_xticks(positions, [row["model"] for row in rows])  # works on matplotlib 3.8 too
    ax.scatter(positions, [row["mean"] if row["mean"] is not None else np.nan for row in rows],
               marker="D", color="#c0392b", zorder=3, label="mean")
    ax.set_ylim(-5, 105)
    ax.set_ylabel("judge score")
    ax.set_title("scores by model (scored and empty items)")
    ax.legend(loc="lower right")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return save_figure(fig, path)


def plot_loss_vs_score(rows: list[dict], path: Path) -> bytes:
    """Mean score (with its CI) against fine-tuned test loss, one labelled point per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row["finetuned_test_loss"] is None or row["mean"] is None:
            continue
        low, high = row["ci"]
        ax.errorbar(row["finetuned_test_loss"], row["mean"],
                    yerr=[[row["mean"] - low], [high - row["mean"]]], fmt="o", capsize=4,
                    color="#3b6ea5")
        ax.annotate(row["model"], (row["finetuned_test_loss"], row["mean"]),
                    textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("fine-tuned test loss")
    ax.set_ylabel("mean judge score (95% CI)")
    ax.set_title("test loss against score")
    return save_figure(fig, path)


def plot_judges(entries: list[dict], path: Path) -> bytes:
    """One scatter per judge-against-judge comparison, the diagonal as the line of agreement."""
    plt = pyplot()
    columns = min(3, len(entries))
    rows = (len(entries) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(entries):]:
        ax.set_visible(False)
    for ax, entry in zip(axes.flat, entries):
        ax.plot([0, 100], [0, 100], color="#999999", linewidth=1)
        ax.scatter(entry["scores_a"], entry["scores_b"], alpha=0.4, color="#3b6ea5")
        ax.set_xlim(-5, 105)
        ax.set_ylim(-5, 105)
        ax.set_xlabel(entry["a"])
        ax.set_ylabel(entry["b"])
        kappa = entry["kappa_quadratic"]
        ax.set_title(f"{entry['items']} items, kappa "
                     f"{'n/a' if kappa is None else format(kappa, '.2f')}", fontsize=10)
    return save_figure(fig, path)


# -- Markdown -----------------------------------------------------------------------------------

def _number(value, decimals: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def _interval(ci, decimals: int = 2) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.{decimals}f}, {ci[1]:.{decimals}f}]"


def _share(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _judge_text(identity: dict) -> str:
    if identity["model"] is None:
        return "n/a"
    return f"{identity['model']} ({identity['template']}, {identity['mode']})"


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def leaderboard_tables(board: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The tables Markdown and HTML share: header and text cells."""
    models = (
        ["rank", "model", "base model", "base test loss", "fine-tuned test loss", "mean score",
         "95% CI", "scored", "empty", "unparseable", "error", "overlap (token F1)", "judge"],
        [[str(r["rank"]), r["model"], r["base_model"] or "n/a",
          _number(r["base_test_loss"], 3), _number(r["finetuned_test_loss"], 3),
          _number(r["mean"]), _interval(r["ci"]),
          *(str(r["states"][state]) for state in stats.STATES),
          _number(r["overlap_mean"], 3), _judge_text(r["judge"])] for r in board["models"]])
    pairs = (
        ["a", "b", "items", "mean a", "mean b", "a - b", "95% paired CI", "Wilcoxon p",
         "a wins", "b wins", "ties"],
        [[p["a"], p["b"], str(p["items"]), _number(p["mean_a"]), _number(p["mean_b"]),
          _number(p["mean_difference"]), _interval(p["ci"]),
          _number(p["wilcoxon"]["p_value"], 4), _share(p["wins"]["a_share"]),
          _share(p["wins"]["b_share"]), _share(p["wins"]["tie_share"])]
         for p in board["pairs"]])
    agreement = (
        ["a", "b", "what differs", "items", "Pearson", "Spearman", "Kendall",
         "mean abs difference", "kappa (quadratic, bins of ten)"],
        [[e["a"], e["b"], "; ".join(e["differs"]), str(e["items"]), _number(e["pearson"], 3),
          _number(e["spearman"], 3), _number(e["kendall"], 3),
          _number(e["mean_abs_difference"]), _number(e["kappa_quadratic"], 3)]
         for e in board["agreement"]])
    return {"models": models, "pairs": pairs, "agreement": agreement}


def _method_text(board: dict) -> str:
    text = (f"{len(board['runs'])} runs on the same {board['items']} test items. Mean score over "
            f"the scored and empty items (an empty response counts 0; unparseable and error "
            f"items are left out), with a {100 * board['confidence']:.0f}% percentile bootstrap "
            f"CI ({board['resamples']} resamples, seed {board['seed']}). Pairs compare the items "
            f"both models have a score for: paired bootstrap CI of the mean difference and a "
            f"two-sided Wilcoxon signed-rank test (zero differences dropped).")
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
        return "n/a" if part is None else f"{_number(part['mean'])} ({part['items']})"

    return (["position shown", "first pass: mean (scores)", "swapped pass: mean (scores)",
             "both: mean (scores)", "position effect (responses)"],
            [[str(row["position"]), cell(row["first"]), cell(row["second"]), cell(row["both"]),
              cell(row.get("effect"))] for row in positions["rows"]])


def modes_table(modes: dict) -> tuple[list[str], list[list[str]]]:
    return (["model", "together rank", "together mean", "together 95% CI", "single rank",
             "single mean", "single 95% CI"],
            [[r["model"], str(r["together_rank"]), _number(r["together_mean"]),
              _interval(r["together_ci"]), str(r["single_rank"]), _number(r["single_mean"]),
              _interval(r["single_ci"])] for r in modes["models"]])


POSITION_TEXT = ("Mean score given to the response shown at each place (and how many scores "
                 "that is), over the items whose reply was read in full; these means also "
                 "depend on which models happened to be shown there. The position effect "
                 "(judge.swap only) removes that: for each response scored in both passes, its "
                 "score at each of its two places minus the mean of the two, averaged per "
                 "place. A judge that reads only the responses has effect 0 at every place; a "
                 "positive effect is a place the judge favours.")


def _modes_text(modes: dict) -> str:
    if modes["spearman"] is None:
        return ("The same runs judged one at a time (each run's judge/scores.jsonl). Rank "
                "correlation of the two means: not computed (fewer than 3 models, or a "
                "constant column).")
    return ("The same runs judged one at a time (each run's judge/scores.jsonl). Rank "
            f"correlation of the two means: Spearman {modes['spearman']:.3f}, Kendall "
            f"{modes['kendall']:.3f}.")


def _correlation_text(board: dict) -> str:
    correlation = board["loss_correlation"]
    if correlation["spearman"] is None:
        return (f"Not computed: it needs at least 3 models with a fine-tuned test loss and a "
                f"mean score, not all equal; {correlation['models']} have both.")
    return (f"Over {correlation['models']} models: Spearman {correlation['spearman']:.3f}, "
            f"Kendall {correlation['kendall']:.3f} (a lower loss going with a higher score "
            f"gives a negative value).")


NO_AGREEMENT = ("No two runs hold the same responses and no run has judge repeats: there is "
                "no second judgment to compare with.")


def render_markdown(board: dict) -> str:
    tables = leaderboard_tables(board)
    lines = [f"# Comparison {board['name']}", "", _method_text(board), "", "## Leaderboard", ""]
    lines += _md_table(*tables["models"])
    lines += ["", "## Pairs", ""]
    lines += _md_table(*tables["pairs"]) if board["pairs"] else ["Only one model: no pairs."]
    lines += ["", "## Test loss and score", "", _correlation_text(board), ""]
    if board.get("positions"):
        lines += ["## Position check", "", POSITION_TEXT, ""]
        lines += _md_table(*position_table(board["positions"])) + [""]
    if board.get("modes"):
        lines += ["## Modes side by side", "", _modes_text(board["modes"]), ""]
        lines += _md_table(*modes_table(board["modes"])) + [""]
    lines += ["## Judge agreement", ""]
    lines += _md_table(*tables["agreement"]) if board["agreement"] else [NO_AGREEMENT]
    lines += ["", "## Plots", ""]
    lines += [f"![{plot}]({plot})" for plot in board["plots"]]
    return "\n".join(lines) + "\n"


# -- HTML ---------------------------------------------------------------------------------------

def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.item { border-top: 2px solid #888; margin-top: 1.5em; padding-top: 0.5em; }
.responses { display: flex; flex-wrap: wrap; gap: 1em; }
.response { flex: 1 1 18em; border: 1px solid #ccc; padding: 0.5em; }
.response pre, .reference pre { white-space: pre-wrap; margin: 0.3em 0; }
.state-unparseable, .state-error { background: #fdecea; }
.state-empty { background: #f5f5f5; }
img { max-width: 100%; }
"""

SCRIPT = """
function filterItems() {
  const text = document.getElementById('filter').value.toLowerCase();
  const spread = Number(document.getElementById('spread').value);
  for (const item of document.querySelectorAll('.item')) {
    const matches = item.textContent.toLowerCase().includes(text);
    const wide = Number(item.dataset.spread) >= spread;
    item.style.display = matches && wide ? '' : 'none';
  }
}
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _item_section(index: int, models: list[ModelScores]) -> str:
    """One test item: the question and the reference, then every model's response and score."""
    first = models[0].records[index]
    counted = [m.records[index]["score"] for m in models
               if m.records[index]["state"] in stats.STATES_WITH_SCORE]
    spread = max(counted) - min(counted) if counted else 0
    cards = []
    for model in models:
        record = model.records[index]
        score = record["score"] if record["score"] is not None else record["state"]
        shown = (f' <small class="position">(shown as Response {esc(record["position"])})'
                 "</small>" if record.get("position") else "")
        cards.append(
            f'<div class="response state-{esc(record["state"])}" data-model="{esc(model.label)}" '
            f'data-state="{esc(record["state"])}" data-score="{esc(record["score"])}">'
            f"<b>{esc(model.label)}</b>: <span class=\"score\">{esc(score)}</span>{shown}"
            f"<pre>{esc(record.get('response'))}</pre>"
            + (f"<p class=\"reason\">{esc(record.get('reason'))}</p>" if record.get("reason")
               else "")
            + (f"<p class=\"error\">{esc(record.get('error'))}</p>" if record.get("error")
               else "") + "</div>")
    input_part = (f"<p><b>Input:</b> {esc(first['input'])}</p>" if first["input"] else "")
    return (f'<section class="item" data-index="{index}" data-id="{esc(first["id"])}" '
            f'data-spread="{spread}">'
            f"<h3>Item {index} <small>({esc(first['id'])})</small></h3>"
            f"<p><b>Instruction:</b> {esc(first['instruction'])}</p>{input_part}"
            f"<div class=\"reference\"><b>Reference:</b><pre>{esc(first['output'])}</pre></div>"
            f"<div class=\"responses\">{''.join(cards)}</div></section>")


def render_html(board: dict, models: list[ModelScores], images: dict[str, bytes]) -> str:
    tables = leaderboard_tables(board)
    ranked_labels = [row["model"] for row in board["models"]]
    by_label = {model.label: model for model in models}
    ranked = [by_label[label] for label in ranked_labels]
    plots = "".join(
        f'<p><img data-file="{esc(name)}" alt="{esc(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}"></p>'
        for name, data in images.items())
    items = "".join(_item_section(index, ranked) for index in range(board["items"]))
    pairs = _html_table(*tables["pairs"]) if board["pairs"] else "<p>Only one model: no pairs.</p>"
    agreement = (_html_table(*tables["agreement"]) if board["agreement"]
                 else f"<p>{esc(NO_AGREEMENT)}</p>")
    extra = ""
    if board.get("positions"):
        extra += (f"<h2>Position check</h2>\n<p>{esc(POSITION_TEXT)}</p>\n"
                  f"{_html_table(*position_table(board['positions']))}\n")
    if board.get("modes"):
        extra += (f"<h2>Modes side by side</h2>\n<p>{esc(_modes_text(board['modes']))}</p>\n"
                  f"{_html_table(*modes_table(board['modes']))}\n")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Comparison {esc(board['name'])}</title>
<style>{STYLE}</style>
<script>{SCRIPT}</script>
</head><body>
<h1>Comparison {esc(board['name'])}</h1>
<p>{esc(_method_text(board))}</p>
<h2>Leaderboard</h2>
{_html_table(*tables['models'])}
<h2>Pairs</h2>
{pairs}
<h2>Test loss and score</h2>
<p>{esc(_correlation_text(board))}</p>
{extra}<h2>Judge agreement</h2>
{agreement}
<h2>Plots</h2>
{plots}
<h2>Items</h2>
<p>Show items containing <input id="filter" oninput="filterItems()">
with scores at least <select id="spread" onchange="filterItems()">
<option value="0">0</option><option value="20">20</option><option value="40">40</option>
<option value="60">60</option></select> points apart. Models in leaderboard order.</p>
{items}
</body></html>
"""


# -- the command --------------------------------------------------------------------------------

def judge_config_for(results: str | Path | None, runs: list[str], config_file: str | None,
                     overrides: list[str]):
    """The settings of a together judgment: `--config FILE` if given, else the first run's own
    results/<run>/config.toml, with `--set` overrides on top; judge.mode is "together"."""
    from evalpipe.config import load_config

    results = Path(results or os.environ.get("EVALPIPE_RESULTS", "results"))
    if config_file is None:
        if not runs:
            raise CompareError("give the runs to compare")
        path = results / runs[0] / "config.toml"
        if not path.exists():
            raise CompareError(f"run {runs[0]}: {path} not found; give the judge settings "
                               "with --config FILE")
        config_file = str(path)
    config = load_config(config_file, overrides)
    config.judge.mode = "together"
    return config


def compare_runs(runs: list[str], results: str | Path | None = None, name: str | None = None,
                 resamples: int = 2000, seed: int = 123, mode: str = "single",
                 config=None) -> Path:
    """`evalpipe compare`: load, check, compute, and write results/compare-<name>/. With
    mode "together" the runs' responses are first judged together (evalpipe/together.py)
    with the judge settings of `config` (a RunConfig), into compare-<name>/together/."""
    if resamples < 1:
        raise CompareError(f"--resamples must be at least 1, got {resamples}")
    if seed < 0:
        raise CompareError(f"--seed must be 0 or more, got {seed}")
    if mode not in ("single", "together"):
        raise CompareError(f"--mode {mode!r}: expected 'single' or 'together'")
    name = name or "-vs-".join(runs)
    if not name or "/" in name or name.startswith("."):
        raise CompareError(f"--name {name!r}: a comparison name must be a plain folder name")
    results = Path(results or os.environ.get("EVALPIPE_RESULTS", "results"))
    out = results / f"compare-{name}"
    if mode == "together":
        from evalpipe.together import FOLDER, judge_together

        if config is None:
            config = judge_config_for(results, runs, None, [])
        summary = judge_together(config, results, runs, out / FOLDER)
        models = load_models(results, runs, together=out / FOLDER)
    else:
        models = load_models(results, runs)
    check_same_test_items(models)
    board = build_leaderboard(models, name, resamples, seed, mode)
    if mode == "together":
        board["positions"] = {"swap": summary["swap"], "rows": summary["positions"]}
        single = single_mode_models(results, runs)
        if single is not None:
            check_same_test_items([models[0], *single])
            board["modes"] = modes_side_by_side(models, single, board["models"], resamples,
                                                seed)
            board["agreement"] += mode_agreements(models, single)

    images = {SCORES_PLOT: plot_scores(models, board["models"], out / SCORES_PLOT)}
    if any(r["finetuned_test_loss"] is not None and r["mean"] is not None
           for r in board["models"]):
        images[LOSS_PLOT] = plot_loss_vs_score(board["models"], out / LOSS_PLOT)
    if board["agreement"]:
        images[JUDGES_PLOT] = plot_judges(board["agreement"], out / JUDGES_PLOT)
    for stale in set(PLOTS) - set(images):  # from an earlier comparison of the same name
        (out / stale).unlink(missing_ok=True)
    board["plots"] = list(images)

    for entry in board["agreement"]:  # the plot's raw points; the numbers say enough
        del entry["scores_a"], entry["scores_b"]
    write_json(out / "leaderboard.json", _rounded(board))
    write_text(out / "leaderboard.md", render_markdown(board))
    write_text(out / "compare.html", render_html(board, models, images))
    return out


def print_leaderboard(out: Path) -> None:
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    judged = ", judged together" if board.get("mode") == "together" else ""
    print(f"compare: {len(board['models'])} models on {board['items']} items{judged} -> {out}/")
    width = max(len(row["model"]) for row in board["models"])
    for row in board["models"]:
        print(f"  {row['rank']}. {row['model']:<{width}}  mean {_number(row['mean'])} "
              f"{_interval(row['ci'])}  ({row['counted']} of {row['items']} items scored)")
