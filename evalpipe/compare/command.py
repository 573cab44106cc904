"""`evalpipe compare RUN [RUN ...]`: load the runs, check that they answered the same test
items, build the leaderboard, and write `results/compare-<name>/`: leaderboard.json,
leaderboard.md, the plots (scores.png, and loss-vs-score.png and judges.png when there is
something to draw) and compare.html, one self-contained page. docs/compare.md says what every
number means.

Runs are comparable only when their test splits are identical: the same instructions, inputs
and reference outputs, in the same order (ids are not enough: they are hashes of those three
fields, but a user may have edited one without the others). Anything else would compare models
on different questions, so compare refuses and names the first difference
(`evalpipe.records.check_same_test_items`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from evalpipe import stats
from evalpipe.compare.html import render_html
from evalpipe.compare.leaderboard import add_single_mode, build_leaderboard
from evalpipe.compare.load import load_models, read_run_config, single_mode_models
from evalpipe.compare.markdown import render_markdown
from evalpipe.compare.plots import write_plots
from evalpipe.compare.text import board_notes, canary_marker, canary_notes, tiers_text
from evalpipe.config import AggregateConfig, RunConfig, load_config
from evalpipe.io import read_jsonl, write_json, write_text
from evalpipe.records import DECIMALS, CompareError, check_same_test_items
from evalpipe.report.format import interval, number, one_line


def judge_config_for(results: str | Path | None, runs: list[str], config_file: str | None,
                     overrides: list[str], mode: str = "together"):
    """The settings of a together (or pairwise) judgment: `--config FILE` if given, else the
    first run's own results/<run>/config.toml, with `--set` overrides on top; judge.mode is
    `mode`."""
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
    config.judge.mode = mode
    return config


def compare_runs(runs: list[str], results: str | Path | None = None, name: str | None = None,
                 resamples: int | None = None, seed: int | None = None, mode: str = "single",
                 config: RunConfig | None = None, aggregate: AggregateConfig | None = None,
                 allow_mixed_judges: bool = False) -> Path:
    """`evalpipe compare`: load, check, build, and write results/compare-<name>/. With
    mode "together" the runs' responses are first judged together (evalpipe/judging/together.py)
    with the judge settings of `config` (a RunConfig), into compare-<name>/together/; with
    mode "pairwise" two at a time (evalpipe/judging/pairwise.py), into compare-<name>/pairwise/,
    and ranked by Bradley-Terry rating (`compare_pairwise`).

    The bootstrap's resamples, seed and confidence are `aggregate`'s when given (evaluate
    passes its own [aggregate] section), else the first run's [aggregate] settings (their
    defaults for a run without config.toml), so a model's interval here is the one its own
    report gives; `resamples` and `seed` (--resamples, --seed) override them.
    `allow_mixed_judges` (--allow-mixed-judges) ranks runs judged by different judges, marked
    so everywhere, instead of refusing them."""
    results = Path(results or os.environ.get("EVALPIPE_RESULTS", "results"))
    # Values from a config file were checked when it was loaded; only the command line's are
    # checked here.
    if resamples is not None and resamples < 1:
        raise CompareError(f"--resamples must be at least 1, got {resamples}")
    if seed is not None and seed < 0:
        raise CompareError(f"--seed must be 0 or more, got {seed}")
    if mode not in ("single", "together", "pairwise"):
        raise CompareError(f"--mode {mode!r}: expected 'single', 'together' or 'pairwise'")
    name = name or "-vs-".join(runs)
    if not name or "/" in name or name.startswith("."):
        raise CompareError(f"--name {name!r}: a comparison name must be a plain folder name")
    out = results / f"compare-{name}"
    configs = {run: read_run_config(results, run) for run in runs}  # each read once
    if aggregate is None:
        first = configs[runs[0]]
        aggregate = first.aggregate if first is not None else AggregateConfig()
    bootstrap = dataclasses.replace(
        aggregate,
        bootstrap_resamples=aggregate.bootstrap_resamples if resamples is None else resamples,
        seed=aggregate.seed if seed is None else seed)

    if mode == "pairwise":
        return compare_pairwise(runs, results, name, out, configs, bootstrap, config,
                                allow_mixed_judges)

    # Load: the models (judged together first, with --mode together), and beside a together
    # judgment the runs' own single-mode judgments when every run has one.
    single = None
    if mode == "together":
        from evalpipe.judging.together import FOLDER, judge_together

        if config is None:
            config = judge_config_for(results, runs, None, [])
        summary = judge_together(config, results, runs, out / FOLDER)
        models = load_models(results, runs, configs, together=out / FOLDER)
        single = single_mode_models(results, runs, configs)
    else:
        models = load_models(results, runs, configs)

    # Check: every judgment is of the same test items.
    check_same_test_items([(m.label, m.records) for m in models])
    if single is not None:
        check_same_test_items([(m.label, m.records) for m in (models[0], *single)])

    # Build: everything leaderboard.json holds.
    board = build_leaderboard(models, name, bootstrap, mode, allow_mixed_judges)
    if mode == "together":
        board["positions"] = {"swap": summary["swap"], "rows": summary["positions"]}
        if single is not None:
            add_single_mode(board, models, single, bootstrap, allow_mixed_judges)

    # Write: the plots, then the leaderboard and the pages that show it.
    images = write_plots(models, board, out)
    board["plots"] = list(images)
    for entry in board["agreement"]:  # the plot's raw points; the numbers say enough
        del entry["scores_a"], entry["scores_b"]
    write_json(out / "leaderboard.json", stats.rounded(board, DECIMALS))
    write_text(out / "leaderboard.md", render_markdown(board))
    passes = None  # with judge.swap, the viewer shows how scores moved with position
    if mode == "together" and summary["swap"]:
        from evalpipe.judging.together import FOLDER, ITEMS

        passes = read_jsonl(out / FOLDER / ITEMS)
    write_text(out / "compare.html", render_html(board, models, images, passes))
    return out


def compare_pairwise(runs: list[str], results: Path, name: str, out: Path,
                     configs: dict, bootstrap: AggregateConfig, config: RunConfig | None,
                     allow_mixed_judges: bool) -> Path:
    """--mode pairwise: judge the runs two at a time (evalpipe/judging/pairwise.py) into
    compare-<name>/pairwise/, fit the ratings, and write the board and its pages
    (evalpipe/compare/pairwise.py)."""
    from evalpipe.compare import pairwise as board_of
    from evalpipe.judging.pairwise import FOLDER, judge_pairwise, read_questions
    from evalpipe.judging.together import load_contenders

    if config is None:
        config = judge_config_for(results, runs, None, [], mode="pairwise")
    config.judge.mode = "pairwise"
    summary = judge_pairwise(config, results, runs, out / FOLDER)
    questions = read_questions(out / FOLDER)
    board = board_of.build_pairwise_board(name, runs, questions, summary,
                                          config.judge, bootstrap, results, out, configs,
                                          allow_mixed_judges)
    images = board_of.write_outputs(board, out)
    board["plots"] = list(images)
    write_json(out / "leaderboard.json", stats.rounded(board, DECIMALS))
    write_text(out / "leaderboard.md", board_of.render_markdown(board))
    responses = {c.label: c.records for c in load_contenders(results, runs)}
    write_text(out / "compare.html", board_of.render_html(board, images, questions, responses))
    return out


def print_leaderboard(out: Path) -> None:
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    if board.get("mode") == "pairwise":
        from evalpipe.compare.pairwise import print_board

        print_board(board, out)
        return
    judged = ", judged together" if board.get("mode") == "together" else ""
    judges = board.get("comparison") == "judges"
    if judges:
        print(f"compare: judge comparison of {len(board['models'])} runs holding the same "
              f"responses to {board['items']} items{judged}, no ranking -> {one_line(out)}/")
        notes = canary_notes(board)
    else:
        print(f"compare: {len(board['models'])} models on {board['items']} items{judged} "
              f"-> {one_line(out)}/")
        notes = canary_notes(board) + board_notes(board)
    # Names are printed through one_line: a line break or an escape sequence in a run's name
    # must not break the table or drive the terminal.
    for note in notes:
        print(f"  {one_line(note)}")
    mark = canary_marker(board)
    names = {row["model"]: one_line(mark(row["model"])) for row in board["models"]}
    width = max(len(name) for name in names.values())
    for row in board["models"]:
        place = "" if row["rank"] is None else f"{row['rank']}. "
        print(f"  {place}{names[row['model']]:<{width}}  mean {number(row['mean'])} "
              f"{interval(row['ci'])}  ({row['counted']} of {row['items']} items scored)")
    if board.get("how_sure"):  # which models the items (and seeds, judge) tell apart
        print(f"  {one_line(tiers_text(board, mark))}")
