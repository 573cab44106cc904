"""Comparing runs (`evalpipe compare`, docs/compare.md): check that they answered the same test
items, then set them side by side in results/compare-<name>/.

What is where, each module importing only those below it (a layers contract in pyproject.toml):

- command.py: the command itself, load, check, build, write (`compare_runs`), the summary it
  prints (`print_leaderboard`) and the judge settings of `--mode together` (`judge_config_for`);
- html.py, markdown.py, plots.py: compare.html, leaderboard.md and the PNG plots, each from
  the leaderboard's dict (and the models, for what the dict does not hold);
- text.py: what leaderboard.md, compare.html and the printed summary share: the tables as text
  cells, the title, the notes, the sentences that explain each section;
- leaderboard.py: the leaderboard and its statistics, dicts in, dicts out: rows and ranks,
  pairs, judge agreement, judge mismatches, the two modes side by side;
- load.py: each run's judged responses as a `ModelScores` (its own judgment, or its share of
  a together judgment written by evalpipe/judging/together.py).
"""

from evalpipe.compare.command import compare_runs, judge_config_for, print_leaderboard

__all__ = ["compare_runs", "judge_config_for", "print_leaderboard"]
