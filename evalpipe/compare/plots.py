"""The comparison's plots (scores.png, ranks.png, loss-vs-score.png, judges.png), drawn with the
helpers of evalpipe/report/plots.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evalpipe.compare.load import ModelScores
from evalpipe.report.format import level
from evalpipe.report.plots import pyplot, save_figure

SCORES_PLOT = "scores.png"
RANKS_PLOT = "ranks.png"
LOSS_PLOT = "loss-vs-score.png"
JUDGES_PLOT = "judges.png"
RATINGS_PLOT = "ratings.png"  # a pairwise comparison's (evalpipe/compare/pairwise.py)
PLOTS = (SCORES_PLOT, RANKS_PLOT, LOSS_PLOT, JUDGES_PLOT, RATINGS_PLOT)


def write_plots(models: list[ModelScores], board: dict, out: Path) -> dict[str, bytes]:
    """Draw into `out` the plots there is something to draw for and remove the others (from
    an earlier comparison of the same name); their PNG bytes by file name, in page order."""
    images = {SCORES_PLOT: plot_scores(models, board["models"], out / SCORES_PLOT)}
    if board.get("how_sure"):
        images[RANKS_PLOT] = plot_ranks(board["how_sure"], board["confidence"],
                                        out / RANKS_PLOT)
    if any(r["finetuned_test_loss"] is not None and r["mean"] is not None
           for r in board["models"]):
        images[LOSS_PLOT] = plot_loss_vs_score(board["models"], board["confidence"],
                                               out / LOSS_PLOT)
    if board["agreement"]:
        images[JUDGES_PLOT] = plot_judges(board["agreement"], out / JUDGES_PLOT)
    for stale in set(PLOTS) - set(images):  # from an earlier comparison of the same name
        (out / stale).unlink(missing_ok=True)
    return images


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


def plot_ranks(how_sure: dict, confidence: float, path: Path) -> bytes:
    """Each model's mean with its interval (left) and its rank interval (right), from
    leaderboard.json's `how_sure`, in leaderboard order, best at the top; colour by tier."""
    plt = pyplot()
    models = how_sure["models"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (scores_ax, ranks_ax) = plt.subplots(
        1, 2, figsize=(9, max(2.5, 0.5 * len(models) + 1.5)), sharey=True)
    places = list(range(len(models)))
    for place, model in zip(places, models):
        colour = colours[(model["tier"] - 1) % len(colours)]
        low, high = model["ci"]
        scores_ax.errorbar(model["mean"], place, xerr=[[model["mean"] - low],
                                                       [high - model["mean"]]],
                           fmt="o", capsize=4, color=colour)
        best, worst = model["rank_interval"]
        # The markers show an interval of one rank ([1, 1]), which as a line has no length.
        ranks_ax.plot([best, worst], [place, place], linewidth=6, marker="o", markersize=9,
                      color=colour, label=f"tier {model['tier']}")
    scores_ax.set_yticks(places, [model["model"] for model in models])
    scores_ax.invert_yaxis()
    scores_ax.set_xlabel(f"mean judge score ({level(confidence)} interval)")
    scores_ax.set_title(f"score, {how_sure['items']} items")
    ranks_ax.set_xlim(0.5, len(models) + 0.5)
    ranks_ax.set_xticks(range(1, len(models) + 1))
    ranks_ax.set_xlabel(f"rank ({level(confidence)} interval; 1 is best)")
    ranks_ax.set_title("rank")
    handles, labels = ranks_ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ranks_ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    return save_figure(fig, path)


def plot_loss_vs_score(rows: list[dict], confidence: float, path: Path) -> bytes:
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
    ax.set_ylabel(f"mean judge score ({level(confidence)} CI)")
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
