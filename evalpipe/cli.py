"""The command line: `evalpipe STAGE [--config FILE] [--run NAME] [--set section.key=value ...]`.

Every subcommand reads the same configuration; the stage cache decides what really runs. A
config with several base models (`model.bases`) makes one run per base (evalpipe/sweep.py):
every command then acts on each of them, and `evaluate` ends with their comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from evalpipe import __version__
from evalpipe.config import load_config
from evalpipe.errors import EvalpipeError
from evalpipe.paths import default_paths
from evalpipe.records import STATES
from evalpipe.stages.generate import remember_import
from evalpipe.stages.pipeline import STAGE_NAMES, Pipeline
from evalpipe.sweep import has_sub_runs

DEFAULT_CONFIG = "configs/book.toml"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"the run's TOML configuration (default {DEFAULT_CONFIG})")
    common.add_argument("--run", help="run name: results/<run>/ (default: the config file's name)")
    common.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one configuration value")
    common.add_argument("--results", help="results folder (default results/ or $EVALPIPE_RESULTS)")
    common.add_argument("--datasets",
                        help="downloads folder (default datasets/ or $EVALPIPE_DATASETS)")

    parser = argparse.ArgumentParser(
        prog="evalpipe",
        description="Fine-tune GPT-2 on instructions and score its responses with an LLM judge.",
    )
    parser.add_argument("--version", action="version", version=f"evalpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    descriptions = {
        "prepare": "validate and split the instruction data",
        "finetune": "fine-tune the base model on the training split",
        "generate": "generate (or import) a response for every test record",
        "judge": "score every response with the LLM judge",
        "aggregate": "summary, plots and HTML report of the scores",
    }
    for name in STAGE_NAMES:
        sub = commands.add_parser(name, parents=[common], help=descriptions[name])
        sub.add_argument("--force", action="store_true",
                         help="rerun this stage even if it is up to date")
        if name == "generate":
            sub.add_argument("--from", dest="from_file", metavar="FILE",
                             help="import responses made elsewhere (JSON or JSONL); later "
                                  "commands on the run use them until 'clean generate'")
            sub.add_argument("--response-key", metavar="KEY",
                             help="the field holding the response in --from (model_response)")
            sub.add_argument("--allow-partial", action="store_true",
                             help="accept --from files that miss some test records")
    evaluate = commands.add_parser("evaluate", parents=[common],
                                   help="run every stage that is not up to date")
    evaluate.add_argument("--jobs", type=int, default=1, metavar="N",
                          help="with model.bases or finetune.seeds: bring N sub-runs up to date "
                               "at once, each in its own process (default 1)")
    add_judge_check_options(commands)
    add_doctor_and_open(commands, common)
    commands.add_parser("status", parents=[common],
                        help="each stage: done, stale, missing or incomplete")
    clean = commands.add_parser("clean", parents=[common], help="delete a stage's outputs")
    clean.add_argument("stage", choices=[*STAGE_NAMES, "all"])
    compare = commands.add_parser(
        "compare", help="leaderboard of runs judged on the same test items (docs/compare.md)")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run names: results/<run>/")
    compare.add_argument("--name", help="results/compare-<name>/ (default: RUN-vs-RUN...)")
    compare.add_argument("--results", help="results folder (default results/ or $EVALPIPE_RESULTS)")
    compare.add_argument("--seed", type=int,
                         help="bootstrap seed (default: the first run's aggregate.seed)")
    compare.add_argument("--resamples", type=int,
                         help="bootstrap resamples (default: the first run's "
                              "aggregate.bootstrap_resamples)")
    compare.add_argument("--mode", choices=("single", "together", "pairwise"), default="single",
                         help="single: each run's own judgment (default); together: judge "
                              "every run's responses to an item in one prompt first; "
                              "pairwise: judge them two at a time, Bradley-Terry ratings")
    compare.add_argument("--config", help="--mode together or pairwise: the judge settings' "
                                          "TOML file (default: the first run's "
                                          "results/<run>/config.toml)")
    compare.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="SECTION.KEY=VALUE",
                         help="--mode together or pairwise: override one judge setting "
                              "(judge.swap=true, judge.pairs=anchor)")
    compare.add_argument("--allow-mixed-judges", action="store_true",
                         help="rank runs judged by different judges (model, digest, template, "
                              "options ...) anyway, marked as mixed in every output")
    show = commands.add_parser(
        "show", help="a run's items as a table, or one item's whole journey (--item)")
    show.add_argument("run", metavar="RUN",
                      help="run name (results/<run>/), or compare-NAME for a comparison")
    show.add_argument("--item", metavar="ID",
                      help="one item, prompt to score (or every model's answer to it)")
    show.add_argument("--state", dest="states", action="append", choices=STATES,
                      help="only items in this state (may be given again)")
    show.add_argument("--worst", type=int, metavar="N", help="the N lowest scores")
    show.add_argument("--best", type=int, metavar="N", help="the N highest scores")
    show.add_argument("--sort", metavar="COLUMN", help="sort by this column (ascending)")
    show.add_argument("--columns", metavar="A,B,C",
                      help="columns to show (default id,state,score,length,f1,instruction,"
                           "response,reason; also input, reference, index)")
    show.add_argument("--results", help="results folder (default results/ or $EVALPIPE_RESULTS)")
    return parser


JUDGE_COMMANDS = ("judge", "aggregate", "evaluate")  # the commands that may reach the judge


def add_judge_check_options(commands) -> None:
    for name in JUDGE_COMMANDS:
        commands.choices[name].add_argument(
            "--no-judge-check", action="store_true",
            help="do not ask the judge first (server, model, digest) before long work")


def add_doctor_and_open(commands, common) -> None:
    commands.add_parser("doctor", parents=[common],
                        help="what the configured run needs and whether each is there")
    page = commands.add_parser("open", help="open a run's report or a comparison's page")
    page.add_argument("page", nargs="?", metavar="RUN | compare-NAME",
                      help="results/RUN/aggregate/report.html or results/compare-NAME/"
                           "compare.html (default: the config file's name)")
    page.add_argument("--config", default=DEFAULT_CONFIG,
                      help=f"names the default run (default {DEFAULT_CONFIG})")
    page.add_argument("--results", help="results folder (default results/ or $EVALPIPE_RESULTS)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except KeyboardInterrupt:
        print("evalpipe: interrupted; finished work is kept, rerun to continue", file=sys.stderr)
        return 130
    except EvalpipeError as err:
        if os.environ.get("EVALPIPE_DEBUG"):
            traceback.print_exc()
        print(f"evalpipe: error: {err}", file=sys.stderr)
        return 1


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "show":  # reads finished results: no configuration of its own
        from evalpipe.show import show

        print(show(args.run, results=args.results, item=args.item, states=args.states,
                   worst=args.worst, best=args.best, sort=args.sort, columns=args.columns))
        return 0
    if args.command == "compare":  # works on finished runs: no configuration of its own
        from evalpipe.compare import compare_runs, judge_config_for, print_leaderboard

        config = None
        if args.mode in ("together", "pairwise"):
            config = judge_config_for(args.results, args.runs, args.config, args.overrides,
                                      mode=args.mode)
        elif args.config or args.overrides:
            raise EvalpipeError("compare: --config and --set give the judge settings of "
                                "--mode together or pairwise; --mode single reads each run's "
                                "own judgment")
        print_leaderboard(compare_runs(args.runs, args.results, args.name, args.resamples,
                                       args.seed, mode=args.mode, config=config,
                                       allow_mixed_judges=args.allow_mixed_judges))
        return 0
    if args.command == "open":
        return open_page(args.page or Path(args.config).stem, args.results)
    overrides = list(args.overrides)
    if args.command == "generate":
        if args.from_file:
            overrides.append(f"generate.from_file={_toml_string(args.from_file)}")
        if args.response_key:
            overrides.append(f"generate.response_key={_toml_string(args.response_key)}")
        if args.allow_partial:
            overrides.append("generate.allow_partial=true")
    config = load_config(args.config, overrides)
    run_name = args.run or Path(args.config).stem
    paths = default_paths(run_name, args.results, args.datasets)
    if getattr(args, "jobs", 1) < 1:
        raise EvalpipeError(f"--jobs: must be at least 1, got {args.jobs}")
    if has_sub_runs(config):
        return dispatch_bases(args, config, paths)
    # A run whose responses were imported stays imported (evalpipe/stages/generate.py).
    remembered = remember_import(config, paths, overrides)
    if args.command == "doctor":
        return doctor(config, paths)
    pipeline = Pipeline(config, paths)

    if args.command == "status":
        print(f"run {run_name} in {pipeline.paths.root}")
        if remembered:
            print(remembered)
        for status in pipeline.status():
            print(status.line())
        return 0
    if args.command == "clean":
        clean(pipeline, args.stage)
        return 0
    if remembered:
        print(remembered)
    check_judge_first(args, config, paths)
    target = "aggregate" if args.command == "evaluate" else args.command
    pipeline.ensure(target, force=getattr(args, "force", False))
    return 0


def dispatch_bases(args: argparse.Namespace, config, paths) -> int:
    """The commands of a config with several base models or seeds: each acts on every sub-run."""
    from evalpipe import sweep

    if args.command == "doctor":
        return doctor(config, paths)
    if args.command in ("judge", "aggregate") and config.judge.mode in ("together", "pairwise"):
        raise EvalpipeError(f"{args.command}: with sub-runs and judge.mode = "
                            f"'{config.judge.mode}' the runs are judged {config.judge.mode} by "
                            "'evalpipe evaluate'")
    check_judge_first(args, config, paths)
    if args.command == "evaluate":
        sweep.evaluate(config, paths, jobs=args.jobs)
        return 0
    if args.command == "status":
        print("\n".join(sweep.status_lines(config, paths)))
        return 0
    if args.command == "clean":
        sweep.each(config, paths, lambda pipeline: clean(pipeline, args.stage))
        return 0
    force = getattr(args, "force", False)
    sweep.each(config, paths, lambda pipeline: pipeline.ensure(args.command, force=force))
    return 0


def clean(pipeline: Pipeline, stage: str) -> None:
    removed = pipeline.clean(stage)
    print("removed " + ", ".join(map(str, removed)) if removed else "nothing to remove")


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_judge_first(args: argparse.Namespace, config, paths) -> None:
    """Before long work: when the judge stage will run, ask the judge now (server, model,
    digest on every host), so a judge that is not there stops the command in seconds rather
    than after fine-tuning and generating. --no-judge-check skips it."""
    from evalpipe.doctor import judge_is_due, judge_ready
    from evalpipe.judging.backends import JudgeError

    if args.command not in JUDGE_COMMANDS or args.no_judge_check:
        return
    if judge_is_due(config, paths, args.command, force=getattr(args, "force", False)):
        try:
            print(judge_ready(config.judge, pull=True))
        except JudgeError as err:  # worded as the judge stage words it
            raise EvalpipeError(f"judge: {err}") from None


def doctor(config, paths) -> int:
    """`evalpipe doctor`: one line per thing the run needs; 0 only when all are there."""
    from evalpipe.doctor import doctor_checks, doctor_lines

    checks = doctor_checks(config, paths)
    print("\n".join(doctor_lines(checks)))
    return 0 if all(check.ok for check in checks) else 1


def open_page(page: str, results: str | None) -> int:
    """`evalpipe open`: print the page's path and open it in the default browser."""
    import webbrowser

    folder = default_paths(page, results).root
    if page.startswith("compare-"):
        path = folder / "compare.html"
        makes = f"'evalpipe compare RUN RUN ... --name {page.removeprefix('compare-')}'"
    else:
        path = folder / "aggregate" / "report.html"
        makes = f"'evalpipe evaluate --run {page}' (or 'evalpipe aggregate')"
    if not path.is_file():
        raise EvalpipeError(f"no page yet: {path}; {makes} makes it")
    print(path)
    webbrowser.open(path.resolve().as_uri())
    return 0
