"""Numbers and text as the reports show them (summary.md, report.html, leaderboard.md,
compare.html): one rule for rounding, intervals and Markdown escaping."""

from __future__ import annotations

import html
import re
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


# What Markdown (CommonMark, GitHub's tables) would read as markup in a name: the backslash
# itself, code, emphasis, strikethrough and a table's cell border.
_MD_SPECIAL = re.compile(r"([\\`*_~|])")
# A link or an image closes its text with "](" (inline) or "][" (reference): escaping that "]"
# leaves none, while a lone "[0.50, 0.60]" stays as it is.
_LINK_CLOSE = re.compile(r"\](?=[(\[])")


def md(text) -> str:
    """Text for Markdown (a table cell, a heading, a note), shown as written: on one line,
    Markdown's markup characters backslash-escaped, and &, <, > as HTML entities, so that a
    name such as `a|b*<script>` neither breaks a table nor injects markup or HTML."""
    text = " ".join(str(text).splitlines())
    text = html.escape(text, quote=False)
    return _LINK_CLOSE.sub(r"\\]", _MD_SPECIAL.sub(r"\\\1", text))


def md_code(text) -> str:
    """Text as inline code, on one line: fenced by one backtick more than its longest run of
    backticks (and padded with a space when it starts or ends with one), so that no name can
    close the code span early. Inside code nothing else is markup."""
    text = " ".join(str(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def one_line(text) -> str:
    """Text for a terminal line: every character that is not printable (a line break, a tab,
    an escape sequence's ESC) shown as its Python escape, so that a name cannot break the
    printed table or drive the terminal."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))
