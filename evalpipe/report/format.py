"""Numbers and text as the reports show them (summary.md, report.html, leaderboard.md,
compare.html): one rule for rounding, intervals and Markdown escaping."""

from __future__ import annotations

from functools import partial


def lookup(summary: dict, key: str):
    """summary["a"]["b"] for key "a.b"; None when a section on the way is null."""
    value = summary
    for part in key.split("."):
        if value is None:
            return None
        value = value[part]
    return value


def number(value, decimals: int = 2) -> str:
    """A number with `decimals` places, or "n/a" for None."""
    return "n/a" if value is None else f"{value:.{decimals}f}"


def plain(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def interval(ci, decimals: int = 2) -> str:
    """[low, high] with `decimals` places, or "n/a" for None."""
    return "n/a" if ci is None else f"[{ci[0]:.{decimals}f}, {ci[1]:.{decimals}f}]"


def level(confidence: float) -> str:
    """A confidence level as headings show it: 0.95 -> "95%", 0.9 -> "90%"."""
    return f"{100 * confidence:g}%"


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def options_text(value) -> str:
    return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "none"


score2, ratio3, loss4 = number, partial(number, decimals=3), partial(number, decimals=4)


def md(text) -> str:
    """Text for a Markdown table cell: pipes escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")
