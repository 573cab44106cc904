"""The PNG plots of a run's report and of a comparison: matplotlib, drawn to files only."""

from __future__ import annotations

from pathlib import Path

from evalpipe.io import atomic_open


def pyplot():
    """matplotlib's pyplot drawing to files only (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> bytes:
    """Write the figure as a PNG atomically and return its bytes (pages embed them)."""
    import io

    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return buffer.getvalue()


def _placeholder(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_score_histogram(scores: list[int], path: Path) -> bytes:
    """Histogram of the scores of scored and empty items, bins of 10 from 0 to 100 (the last
    bin holds 90..100)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if scores:
        ax.hist(scores, bins=range(0, 101, 10), edgecolor="white", color="#3b6ea5")
        ax.set_xlim(0, 100)
        ax.set_xticks(range(0, 101, 10))
        ax.set_xlabel("judge score")
        ax.set_ylabel("items")
        ax.set_title(f"scores of {len(scores)} items (scored + empty)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _placeholder(ax, "no scored items")
    return save_figure(fig, path)


def plot_score_vs_length(items: list[dict], lengths: list[int], measure: str,
                         path: Path) -> bytes:
    """Score against response length (`lengths[i]` is item i's, in `measure`: tokens or
    whitespace words), one point per scored or empty item (empty ones in grey): a judge that
    rewards length shows as a slope."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    any_point = False
    for state, color in (("scored", "#3b6ea5"), ("empty", "#999999")):
        points = [(length, item["score"]) for item, length in zip(items, lengths)
                  if item["state"] == state]
        if points:
            any_point = True
            ax.scatter([x for x, _ in points], [y for _, y in points], s=14, alpha=0.7,
                       color=color, label=f"{state} ({len(points)})")
    if any_point:
        ax.set_xlabel("response length (" + ("tokens" if measure == "response_tokens"
                                              else "whitespace words") + ")")
        ax.set_ylabel("judge score")
        ax.set_ylim(-5, 105)
        ax.legend(loc="best", fontsize=8)
    else:
        _placeholder(ax, "no scored items")
    return save_figure(fig, path)


def plot_loss_curves(metrics: list[dict] | None, path: Path) -> bytes:
    """The finetune stage's loss curves (plot_losses, as finetune draws them), or a picture that
    says there was no fine-tuning, so the file always exists and the stage's outputs never
    depend on it."""
    if metrics is not None:
        return plot_losses(metrics, path)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _placeholder(ax, "no fine-tuning in this run")
    return save_figure(fig, path)


def plot_losses(metrics: list[dict], path: Path) -> bytes:
    """Train and validation loss against epochs, with tokens seen on a second axis (as the
    book's plot_losses); written to `path`, and its PNG bytes returned."""
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    epochs = [m["epoch"] for m in metrics]
    train = [(m["epoch"], m["train_loss"]) for m in metrics if m["train_loss"] is not None]
    ax.plot([e for e, _ in train], [v for _, v in train], label="training loss")
    ax.plot(epochs, [m["val_loss"] for m in metrics], linestyle="-.", label="validation loss")
    ax.set_xlabel("epochs")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    if metrics:
        top = ax.twiny()
        top.plot([m["tokens_seen"] for m in metrics], [m["val_loss"] for m in metrics], alpha=0)
        top.set_xlabel("tokens seen")
    return save_figure(fig, path)
