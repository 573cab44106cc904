"""leaderboard.md: the comparison as Markdown, from leaderboard.json's dict (docs/compare.md)."""

from __future__ import annotations

from evalpipe.compare.text import (
    NO_AGREEMENT,
    POSITION_TEXT,
    board_notes,
    canary_marker,
    canary_notes,
    correlation_text,
    how_sure_tables,
    how_sure_text,
    leaderboard_tables,
    method_text,
    modes_table,
    modes_text,
    position_table,
    title,
)
from evalpipe.report.format import md


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(board: dict) -> str:
    mark = canary_marker(board)
    tables = leaderboard_tables(board, mark)
    judges = board.get("comparison") == "judges"
    # Every text that holds a name (run, comparison, judge) goes through md.
    lines = [f"# {md(title(board))}", ""]
    for note in canary_notes(board):
        lines += [f"**{md(note)}**", ""]
    for note in board_notes(board):
        lines += [md(note) if judges else f"**{md(note)}**", ""]
    lines += [method_text(board), "", "## Scores by judge" if judges else "## Leaderboard", ""]
    lines += _md_table(*tables["models"])
    if not judges:
        lines += ["", "## Pairs", ""]
        lines += _md_table(*tables["pairs"]) if board["pairs"] else ["Only one model: no pairs."]
    if board.get("how_sure"):
        how_sure = how_sure_tables(board)
        lines += ["", "## How sure", "", how_sure_text(board), ""]
        lines += _md_table(*how_sure["models"])
        if board["how_sure"]["pairs"]:
            lines += [""] + _md_table(*how_sure["pairs"])
    lines += ["", "## Test loss and score", "", correlation_text(board), ""]
    if board.get("positions"):
        lines += ["## Position check", "", POSITION_TEXT, ""]
        lines += _md_table(*position_table(board["positions"])) + [""]
    if board.get("modes") or board.get("modes_note"):
        lines += ["## Modes side by side", ""]
        lines += [f"**{md(board['modes_note'])}**", ""] if board.get("modes_note") else []
    if board.get("modes"):
        lines += [modes_text(board["modes"]), ""]
        lines += _md_table(*modes_table(board["modes"], board["confidence"], marked=True)) + [""]
    lines += ["## Judge agreement", ""]
    lines += _md_table(*tables["agreement"]) if board["agreement"] else [NO_AGREEMENT]
    lines += ["", "## Plots", ""]
    lines += [f"![{plot}]({plot})" for plot in board["plots"]]
    return "\n".join(lines) + "\n"
