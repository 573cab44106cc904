"""The Python interface, for notebooks: a run's judged records, its summary and a comparison's
leaderboard as pandas objects, and a stage run as the command line runs it.

    import evalpipe
    scores = evalpipe.load_scores("book")          # DataFrame, one row per test item
    evalpipe.load_summary("book")["score"]["mean"]
    board = evalpipe.load_leaderboard("a-vs-b")    # DataFrame, one row per model
    evalpipe.run_stage("judge", config="configs/book.toml", run="book",
                       overrides=["judge.template=rubric"])

Entry layer: it may import the stages. `evalpipe/__init__.py` exports these names lazily, so
`import evalpipe` imports neither pandas nor the stages. Errors are the command line's:
an `EvalpipeError` whose message is the line `evalpipe: error: ...` would print.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evalpipe.config import load_config
from evalpipe.errors import EvalpipeError
from evalpipe.io import read_json_object
from evalpipe.paths import RunPaths, default_paths
from evalpipe.records import JUDGE_SUMMARY, SCORES, STATES
from evalpipe.records import load_scores as read_scores
from evalpipe.stages.generate import remember_import
from evalpipe.stages.pipeline import STAGE_NAMES, Pipeline, get_stage

DEFAULT_CONFIG = "configs/book.toml"
LEADERBOARD = "leaderboard.json"

# The dtypes of load_scores' columns that are not plain floats: text may be missing (an import
# without a response, a judgment in error), counts and scores are null for some states.
TEXT_COLUMNS = ("id", "instruction", "input", "output", "response", "stop_reason", "reason",
                "raw_reply", "error", "judge_backend", "judge_model", "judge_digest",
                "judge_template", "prompt_sha256", "mode", "scoring")
INTEGER_COLUMNS = ("prompt_tokens", "response_tokens", "score", "position", "shuffle_seed",
                   "integer_score")
BOOLEAN_COLUMNS = ("cached",)
FLOAT_COLUMNS = ("seconds", "judge_seconds",  # null for imported responses
                 "expected_score")  # judge.scoring = "expected"; null where the integer stands
REPEAT_DTYPES = {"seed": "Int64", "state": "state", "score": "Int64", "raw_reply": "string",
                 "scoring": "string", "integer_score": "Int64", "expected_score": "float64"}


def run_paths(run: str, results: str | Path | None = None) -> RunPaths:
    """The run's folder, which must exist (results/ or $EVALPIPE_RESULTS by default)."""
    paths = default_paths(run, None if results is None else str(results))
    if not paths.root.is_dir():
        raise EvalpipeError(f"no run {run!r}: {paths.root} is not a folder")
    return paths


def judged_records(run: str, results: str | Path | None = None) -> list[dict]:
    """judge/scores.jsonl of the run, checked record by record (evalpipe.records.load_scores)."""
    path = run_paths(run, results) / SCORES
    if not path.exists():
        raise EvalpipeError(f"run {run!r} is not judged: {path} not found "
                            f"('evalpipe judge --run {run}' makes it)")
    return read_scores(path)


def scores_frame(records: list[dict]) -> pd.DataFrame:
    """Judged records as a DataFrame (see load_scores)."""
    rows = []
    for record in records:
        row = {key: value for key, value in record.items() if key != "repeats"}
        for number, repeat in enumerate(record.get("repeats") or [], start=1):
            row.update({f"repeat_{number}_{key}": value for key, value in repeat.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    states = pd.CategoricalDtype(STATES)
    for column in frame.columns:
        if column in TEXT_COLUMNS:
            frame[column] = frame[column].astype("string")
        elif column in INTEGER_COLUMNS:
            frame[column] = frame[column].astype("Int64")
        elif column in BOOLEAN_COLUMNS:
            frame[column] = frame[column].astype("boolean")
        elif column in FLOAT_COLUMNS:
            frame[column] = frame[column].astype("float64")
        elif column == "state":
            frame[column] = frame[column].astype(states)
        elif column.startswith("repeat_"):
            dtype = REPEAT_DTYPES.get(column.split("_", 2)[2])
            if dtype is not None:
                frame[column] = frame[column].astype(states if dtype == "state" else dtype)
    return frame


def load_scores(run: str, results: str | Path | None = None) -> pd.DataFrame:
    """The run's judged records (judge/scores.jsonl) in test order, one row per item, with
    every stage's fields (docs/records.md) as columns: `state` a categorical of the four
    states, `score` and the token counts nullable integers (`Int64`), text `string`. Repeats
    (`judge.repeats` > 1) become columns `repeat_1_seed`, `repeat_1_state`, `repeat_1_score`,
    `repeat_1_raw_reply`, `repeat_2_...`."""
    return scores_frame(judged_records(run, results))


def load_summary(run: str, results: str | Path | None = None) -> dict:
    """The run's aggregate/summary.json (docs/aggregate.md), as a dict."""
    path = run_paths(run, results) / "aggregate/summary.json"
    if not path.exists():
        raise EvalpipeError(f"run {run!r} is not aggregated: {path} not found "
                            f"('evalpipe aggregate --run {run}' makes it)")
    return read_json_object(path)


def judge_summary(run: str, results: str | Path | None = None) -> dict | None:
    """The run's judge/summary.json, checked, or None when it has none."""
    from evalpipe.records import load_judge_summary

    path = run_paths(run, results) / JUDGE_SUMMARY
    return load_judge_summary(path) if path.exists() else None


def comparison_folder(name: str, results: str | Path | None = None) -> Path:
    """results/compare-NAME/ (NAME may be given with its `compare-` prefix)."""
    results = default_paths("", None if results is None else str(results)).results
    folder = results / f"compare-{name}"
    if not (folder / LEADERBOARD).exists() and name.startswith("compare-"):
        folder = results / name
    if not (folder / LEADERBOARD).exists():
        raise EvalpipeError(f"no comparison {name!r}: {folder / LEADERBOARD} not found "
                            "('evalpipe compare RUN RUN ...' makes it)")
    return folder


def read_leaderboard(name: str, results: str | Path | None = None) -> dict:
    """compare-NAME/leaderboard.json as written by `evalpipe compare` (docs/compare.md)."""
    path = comparison_folder(name, results) / LEADERBOARD
    board = read_json_object(path)
    if not isinstance(board.get("models"), list) or not isinstance(board.get("runs"), list):
        raise EvalpipeError(f"{path}: keys 'models' and 'runs' must be lists")
    return board


def load_leaderboard(name: str, results: str | Path | None = None) -> pd.DataFrame:
    """The leaderboard of results/compare-NAME/ (its `models` rows), best first: nested keys
    flattened with `_` (`states_scored`, `judge_model`, ...), the interval as `ci_low` and
    `ci_high`. The rest of leaderboard.json (name, mode, comparison, confidence, pairs, ...)
    is in the frame's `attrs`."""
    board = read_leaderboard(name, results)
    frame = pd.json_normalize(board["models"], sep="_")
    if "ci" in frame.columns:
        bounds = [ci if isinstance(ci, list) else [None, None] for ci in frame.pop("ci")]
        frame[["ci_low", "ci_high"]] = pd.DataFrame(bounds, index=frame.index, dtype="Float64")
    frame.attrs.update({key: value for key, value in board.items() if key != "models"})
    return frame


def run_stage(stage: str, config: str | Path = DEFAULT_CONFIG, run: str | None = None,
              overrides: list[str] | tuple[str, ...] = (), *, results: str | Path | None = None,
              datasets: str | Path | None = None, force: bool = False) -> dict[str, Path]:
    """Bring `stage` (or "evaluate": every stage) of a run up to date, running the stages it
    needs first, as `evalpipe STAGE --config CONFIG --run RUN --set ...` does (an imported run
    stays imported). Returns the stage's outputs, {file name: path}."""
    if stage not in (*STAGE_NAMES, "evaluate"):
        raise EvalpipeError(f"unknown stage {stage!r} (stages: {', '.join(STAGE_NAMES)}, "
                            "evaluate)")
    overrides = list(overrides)
    settings = load_config(config, overrides)
    if settings.model.bases or settings.finetune.seeds:
        raise EvalpipeError(f"{config}: model.bases and finetune.seeds make one run per base and "
                            "seed; run_stage runs one run: use 'evalpipe evaluate' for the sweep")
    paths = default_paths(run or Path(config).stem, None if results is None else str(results),
                          None if datasets is None else str(datasets))
    remembered = remember_import(settings, paths, overrides)
    if remembered:
        print(remembered)
    target = "aggregate" if stage == "evaluate" else stage
    Pipeline(settings, paths).ensure(target, force=force)
    return {name: paths.stage_dir(target) / name for name in get_stage(target).outputs(settings)}
