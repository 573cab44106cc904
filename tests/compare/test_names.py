"""Names the pages do not control: run names and judge models written into leaderboard.md, and
printed, must neither break a table nor inject Markdown or HTML (report/format.py: md,
one_line)."""

from __future__ import annotations

import json

from compare_helpers import ITEMS, judged, run_cli, write_run

from evalpipe.report.format import md, md_code, one_line

RUN = "a|b*<script>"
JUDGE = "x_y*z"


def test_md_escapes_markdown_and_html():
    assert md(RUN) == r"a\|b\*&lt;script&gt;"
    assert md(JUDGE) == r"x\_y\*z"
    assert md("`code` ~~gone~~ & \\") == r"\`code\` \~\~gone\~\~ &amp; \\"
    # A link or an image needs "](" (or "][" for a reference): its "]" is escaped.
    assert md("[click](javascript:alert(1)) ![i][r]") == (
        r"[click\](javascript:alert(1)) ![i\][r]")
    # An interval or a lone bracket is no link: written as it is.
    assert md("[0.50, 0.60]") == "[0.50, 0.60]"
    assert md("two\nlines\r\nhere") == "two lines here"
    assert md(None) == "None" and md(3) == "3"


def test_md_code_fences_a_name_with_backticks():
    assert md_code("r") == "`r`"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`x``") == "``` `x`` ```"
    assert md_code("two\nlines") == "`two lines`"


def test_one_line_shows_control_characters_escaped():
    assert one_line("plain naïve name") == "plain naïve name"
    assert one_line("a\nb\tc\x1b[31m") == r"a\nb\tc\x1b[31m"


def test_run_and_judge_names_do_not_break_leaderboard_md(tmp_path):
    results = tmp_path / "results"
    write_run(results, RUN, [judged(item, "Bonjour", "scored", 80, judge_model=JUDGE)
                             for item in ITEMS], "gpt2")
    write_run(results, "line\nbreak", [judged(item, "Salut", "scored", 40, judge_model=JUDGE)
                                       for item in ITEMS], "gpt2")
    done = run_cli("compare", RUN, "line\nbreak", "--results", str(results), "--resamples",
                   "20", "--name", "names")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "  1. a|b*<script>  mean 80.00 [80.00, 80.00]  (4 of 4 items scored)",
        r"  2. line\nbreak   mean 40.00 [40.00, 40.00]  (4 of 4 items scored)",
        r"  tier 1: a|b*<script>; tier 2: line\nbreak",
    ]
    markdown = (results / "compare-names/leaderboard.md").read_text(encoding="utf-8")
    lines = markdown.splitlines()
    assert (r"| 1 | a\|b\*&lt;script&gt; | imported from responses.json | n/a | n/a | 80.00 | "
            r"[80.00, 80.00] | 4 | 0 | 0 | 0 | 0.250 | x\_y\*z (book, single) |") in lines
    assert (r"| 2 | line break | imported from responses.json | n/a | n/a | 40.00 | "
            r"[40.00, 40.00] | 4 | 0 | 0 | 0 | 0.000 | x\_y\*z (book, single) |") in lines
    assert r"| a\|b\*&lt;script&gt; | line break | 4 | 80.00 | 40.00 | 40.00 |" in markdown
    assert "<script>" not in markdown
    board = json.loads((results / "compare-names/leaderboard.json").read_text(encoding="utf-8"))
    assert [row["model"] for row in board["models"]] == [RUN, "line\nbreak"]  # data as it is


def test_a_comparison_name_and_notes_are_escaped(tmp_path):
    """The title holds the comparison's name (by default the runs' names), a note the runs'
    names and what differs between their judges."""
    results = tmp_path / "results"
    write_run(results, RUN, [judged(item, "Bonjour", "scored", 80, judge_model=JUDGE)
                             for item in ITEMS], "gpt2")
    write_run(results, "b_2", [judged(item, "Salut", "scored", 40) for item in ITEMS], "gpt2")
    done = run_cli("compare", RUN, "b_2", "--results", str(results), "--resamples", "20",
                   "--allow-mixed-judges")
    assert done.returncode == 0, done.stderr
    markdown = (results / f"compare-{RUN}-vs-b_2/leaderboard.md").read_text(encoding="utf-8")
    lines = markdown.splitlines()
    assert lines[0] == r"# Comparison a\|b\*&lt;script&gt;-vs-b\_2"
    assert lines[2] == (
        r"**Mixed judges: runs a\|b\*&lt;script&gt; and b\_2 were judged differently (model "
        r"x\_y\*z vs llama3). This ranking sets scores of different judges side by side "
        r"(--allow-mixed-judges): a difference between two models may come from their judges.**")
    assert "<script>" not in markdown
