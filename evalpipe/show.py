"""`evalpipe show`: a run's results in the terminal (issue #15).

    evalpipe show RUN [--state S] [--worst N | --best N] [--sort COLUMN] [--columns a,b,c]
    evalpipe show RUN --item ID             one item's whole journey, prompt to score
    evalpipe show compare-NAME [--item ID]  a comparison's leaderboard, or every model on one item

The table is built in pure functions (`item_table`, `select_items`, `format_table`) that take a
DataFrame and a width, so tests call them with a fixed terminal width; `show` only reads the
files (through evalpipe/api.py) and picks the terminal's width.

Entry layer, beside the command line: it reads what the stages wrote and re-renders the
prompts with the same functions the stages use (evalpipe/templates.py for the model's prompt,
evalpipe/judging/prompts.py for the judge's), and checks the judge's against the record's hash.
"""

from __future__ import annotations

import shutil

import pandas as pd

from evalpipe import api, stats
from evalpipe.config import load_config
from evalpipe.errors import EvalpipeError
from evalpipe.io import read_jsonl
from evalpipe.paths import default_paths
from evalpipe.records import STATES, STATES_WITH_SCORE, count_of
from evalpipe.records import load_scores as read_scores
from evalpipe.report.format import one_line

# The table's columns: the default ones first. Text columns share the width left by the others.
DEFAULT_COLUMNS = ("id", "state", "score", "length", "f1", "instruction", "response", "reason")
COLUMNS = (*DEFAULT_COLUMNS, "input", "reference", "index")
TEXT_COLUMNS = ("instruction", "input", "reference", "response", "reason")
NUMBER_COLUMNS = ("score", "length", "f1", "index")  # right-aligned
MIN_TEXT_WIDTH = 8
SEPARATOR = "  "
CUT = "..."


# -- the table ----------------------------------------------------------------------------------

def length_measure(scores: pd.DataFrame) -> str:
    """aggregate's rule (docs/aggregate.md): response tokens when every item has a count, else
    whitespace words for all, so one column never mixes two scales."""
    if "response_tokens" in scores and scores["response_tokens"].notna().all():
        return "tokens"
    return "words"


def why(record: pd.Series) -> str | None:
    """The `reason` column: the judge's reason; for a failure, what failed."""
    if record["state"] == "error":
        return f"error: {record.get('error')}"
    if record["state"] == "unparseable":
        return f"reply: {record.get('raw_reply')}"
    reason = record.get("reason")
    return None if pd.isna(reason) else reason


def item_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per item (a load_scores frame's row), in test order, with every column of
    COLUMNS: `length` in response tokens or words (length_measure), `f1` the overlap F1 of
    response and reference (evalpipe.stats.token_f1), `reason` the reason or what failed."""
    responses = scores["response"].astype(object).where(scores["response"].notna(), None)
    if length_measure(scores) == "tokens":
        length = scores["response_tokens"]
    else:
        length = pd.array([len((r or "").split()) for r in responses], dtype="Int64")
    return pd.DataFrame({
        "index": range(len(scores)),
        "id": scores["id"],
        "state": scores["state"],
        "score": scores["score"],
        "length": length,
        "f1": [stats.token_f1(r, o) for r, o in zip(responses, scores["output"])],
        "instruction": scores["instruction"],
        "input": scores["input"],
        "reference": scores["output"],
        "response": scores["response"],
        "reason": scores.apply(why, axis=1) if len(scores) else pd.Series(dtype=object),
    })


def select_items(table: pd.DataFrame, *, states: list[str] | None = None,
                 worst: int | None = None, best: int | None = None,
                 sort: str | None = None) -> pd.DataFrame:
    """The rows asked for: those in `states`; sorted by `sort` (ascending, missing values
    last, ties in test order); `worst`/`best` N: the N lowest/highest scores (only items that
    carry a score), ties in test order."""
    for state in states or ():
        if state not in STATES:
            raise EvalpipeError(f"show: --state {state!r}: expected one of {', '.join(STATES)}")
    if worst is not None and best is not None:
        raise EvalpipeError("show: give --worst or --best, not both")
    if sort is not None and sort not in COLUMNS:
        raise EvalpipeError(f"show: --sort {sort!r}: expected one of {', '.join(COLUMNS)}")
    if states:
        table = table[table["state"].isin(states)]
    if sort is not None:
        table = table.sort_values(sort, kind="stable", na_position="last")
    for count, ascending in ((worst, True), (best, False)):
        if count is not None:
            if count < 1:
                raise EvalpipeError(f"show: --{'worst' if ascending else 'best'} must be at "
                                    f"least 1, got {count}")
            table = (table[table["state"].isin(STATES_WITH_SCORE)]
                     .sort_values("score", ascending=ascending, kind="stable").head(count))
    return table


def parse_columns(text: str | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_COLUMNS
    columns = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown or not columns:
        problem = f"unknown column {unknown[0]!r}" if unknown else "no column named"
        raise EvalpipeError(f"show: --columns: {problem} (columns: {', '.join(COLUMNS)})")
    return columns


def cell(value, column: str) -> str:
    """One cell as text, on one line: '-' for a missing value."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if column == "f1":
        return f"{value:.2f}"
    return " ".join(str(value).split())


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - len(CUT), 0)] + CUT


def column_widths(cells: dict[str, list[str]], width: int) -> dict[str, int]:
    """Every column as wide as its widest cell, except the text columns: they share what the
    others leave of `width`, the narrow ones taking what they need and the wide ones
    splitting the rest evenly (at least MIN_TEXT_WIDTH each, or what a narrower one needs)."""
    widths = {name: max(map(len, [name, *values])) for name, values in cells.items()}
    text = sorted((name for name in cells if name in TEXT_COLUMNS), key=widths.get)
    room = width - len(SEPARATOR) * (len(cells) - 1)
    room -= sum(w for name, w in widths.items() if name not in TEXT_COLUMNS)
    for done, name in enumerate(text):
        share = room // (len(text) - done)
        need = widths[name]
        widths[name] = max(min(need, share), min(need, MIN_TEXT_WIDTH))
        room -= widths[name]
    return widths


def format_table(table: pd.DataFrame, columns=DEFAULT_COLUMNS, width: int = 100) -> str:
    """The rows of `table` under a header line, each line at most `width` characters (unless
    the columns cannot fit), text cut with '...'."""
    cells = {name: [cell(value, name) for value in table[name]] for name in columns}
    widths = column_widths(cells, width)
    lines = []
    for row in [list(columns), *zip(*cells.values())]:
        parts = [cut(text, widths[name]).rjust(widths[name]) if name in NUMBER_COLUMNS
                 else cut(text, widths[name]).ljust(widths[name])
                 for name, text in zip(columns, row)]
        lines.append(SEPARATOR.join(parts).rstrip())
    return "\n".join(lines)


def state_counts(states: pd.Series) -> str:
    """'100 scored, 3 empty, 5 unparseable, 2 error': every state, in the usual order."""
    counts = states.value_counts().reindex(STATES, fill_value=0)
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def table_footer(shown: int, table: pd.DataFrame, measure: str) -> str:
    return (f"{shown} of {count_of(len(table), 'item')} shown; {state_counts(table['state'])}; "
            f"length in response {measure}")


# -- one item's journey -------------------------------------------------------------------------

def find_item(records: list[dict], item: str, where: str) -> tuple[int, dict]:
    """The record with id `item` (or the only one whose id starts with it) and its index."""
    exact = [(i, r) for i, r in enumerate(records) if r["id"] == item]
    found = exact or [(i, r) for i, r in enumerate(records) if r["id"].startswith(item)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise EvalpipeError(f"{where}: no item {item!r}")
    raise EvalpipeError(f"{where}: {len(found)} items' ids start with {item!r}: "
                        f"{', '.join(r['id'] for _, r in found[:5])}")


def heading(text: str) -> str:
    """A section of an item's journey: a blank line, then '-- text'."""
    return f"\n-- {text}"


def text_or_none(value, none: str = "(none)") -> str:
    if value is None:
        return none
    return value if value.strip() else f"{value!r} (empty)"


def record_lines(record: dict) -> list[str]:
    return [heading("the data record"),
            f"id: {record['id']}",
            f"instruction: {record['instruction']}",
            f"input: {text_or_none(record['input'] or None)}",
            f"output: {record['output']}"]


def judge_prompt_lines(record: dict, template: str | None, structured: bool | None) -> list[str]:
    """The judge's exact prompt, rendered again, and whether its SHA-256 is the record's."""
    from evalpipe.judging.engine import prompt_hash
    from evalpipe.judging.prompts import render

    recorded = record.get("prompt_sha256")
    if recorded is None:
        why_not = ("an empty response scores 0 by the book's rule, the judge is not asked"
                   if record["state"] == "empty" else "the record has no prompt_sha256")
        return [heading(f"the judge's prompt: none sent ({why_not})")]
    if template is None or structured is None:
        return [heading("the judge's prompt: not shown (the run has neither judge/summary.json "
                    "nor config.toml to say its template)")]
    prompt = render(template, record, structured=structured)
    digest = prompt_hash(prompt)
    check = (f"its SHA-256 matches the record's prompt_sha256 {recorded}" if digest == recorded
             else f"its SHA-256 {digest} is NOT the record's prompt_sha256 {recorded}: this is "
                  "not the prompt that was sent")
    return [heading(f"the judge's prompt (template {template}, structured "
                    f"{str(structured).lower()}): {check}"), prompt]


def judgment_lines(record: dict) -> list[str]:
    who = (f"{record.get('judge_backend')} {record.get('judge_model')}, digest "
           f"{record.get('judge_digest')}")
    cached = "; from the judgment cache" if record.get("cached") else ""
    reply = record.get("raw_reply")
    lines = [heading(f"the judge's reply ({who}{cached})"),
             text_or_none(reply, "(none: the request failed)" if record["state"] == "error"
                          else "(none: not asked)"),
             heading("the judgment"),
             f"state: {record['state']}",
             f"score: {cell(record['score'], 'score')}",
             f"reason: {text_or_none(record.get('reason'))}"]
    if record.get("error") is not None:
        lines.append(f"error: {record['error']}")
    for number, repeat in enumerate(record.get("repeats") or [], start=1):
        lines.append(f"repeat {number} (seed {repeat.get('seed')}): {repeat.get('state')}, "
                     f"score {cell(repeat.get('score'), 'score')}, reply "
                     f"{text_or_none(repeat.get('raw_reply'))}")
    return lines


def item_journey(record: dict, *, run: str, index: int, total: int,
                 data_template: str | None, judge_template: str | None,
                 judge_structured: bool | None) -> str:
    """One item from its data record to its score, as text."""
    from evalpipe.templates import get_template

    lines = [f"run {run}, item {record['id']} ({index + 1} of {total} in the test split)"]
    lines += record_lines(record)
    if data_template is None:
        lines.append(heading("the model's prompt: not shown (the run has no config.toml to "
                             "say its data.template)"))
    else:
        note = ("; the responses were imported, so their model may have seen another prompt"
                if record.get("stop_reason") in ("imported", "missing") else "")
        lines += [heading(f"the model's prompt (data.template {data_template}{note})"),
                  get_template(data_template).prompt(record)]
    tokens = record.get("response_tokens")
    lines += [heading(f"the model's response (stop reason {record.get('stop_reason')}, "
                      f"{'-' if tokens is None else tokens} tokens)"),
              text_or_none(record.get("response"), "(none)")]
    lines += judge_prompt_lines(record, judge_template, judge_structured)
    lines += judgment_lines(record)
    return "\n".join(lines)


def comparison_item(board: dict, records: dict[str, list[dict]], item: str) -> str:
    """Every model's response and judgment for one item of a comparison; `records` holds the
    scores each model was ranked on, by run."""
    rows = board["models"]
    index, first = find_item(records[rows[0]["run"]], item, f"comparison {board['name']}")
    total = len(records[rows[0]["run"]])
    lines = [f"comparison {board['name']} ({board.get('mode', 'single')} mode), item "
             + f"{first['id']} ({index + 1} of {total} in the test split)"]
    lines += record_lines(first)
    for row in rows:
        record = records[row["run"]][index]
        rank = "" if row.get("rank") is None else f"{row['rank']}. "
        shown = (f", shown as Response {record['position']}"
                 if record.get("position") is not None else "")
        lines += [heading(f"{rank}{row['model']} (run {row['run']}): {record['state']}, score "
                          f"{cell(record['score'], 'score')}{shown}"),
                  f"reason: {text_or_none(record.get('reason'))}"]
        if record.get("error") is not None:
            lines.append(f"error: {record['error']}")
        if record["state"] == "unparseable":
            lines.append(f"reply: {record.get('raw_reply')}")
        lines += ["response:", text_or_none(record.get("response"), "(none)")]
    return "\n".join(lines)


def verdict_line(question: dict) -> str:
    """One question of a pairwise comparison: its state and what the judge (or the empty rule)
    decided, in words: who was better."""
    from evalpipe.judging.pairwise import not_asked_why, verdict_words

    pair = f"{question['first']} vs {question['second']}: {question['state']}"
    if question["state"] == "error":
        return f"{pair} (left out of the fit; asked again by the next run): {question['error']}"
    if question["state"] == "unparseable":
        return f"{pair} (left out of the fit): reply: {one_line(question['raw_reply'] or '')}"
    said = verdict_words(question)
    if question["state"] == "empty":
        return f"{pair} {question['verdict']}, {said} (not asked: {not_asked_why(question)})"
    return f"{pair} {question['verdict']}, {said}: {text_or_none(question.get('reason'))}"


def pairwise_item(board: dict, responses: dict[str, list[dict]], questions: list[dict],
                  item: str) -> str:
    """Every model's response to one item of a pairwise comparison, best rated first, then
    every question asked about it (both orders of each pair) with its verdict."""
    rows = board["models"]
    index, first = find_item(responses[rows[0]["run"]], item, f"comparison {board['name']}")
    lines = [f"comparison {board['name']} (pairwise mode), item {first['id']} "
             f"({index + 1} of {len(responses[rows[0]['run']])} in the test split)"]
    lines += record_lines(first)
    for row in rows:
        rank = "" if row.get("rank") is None else f"{row['rank']}. "
        lines += [heading(f"{rank}{row['model']} (run {row['run']}): rating "
                          f"{row['bt_rating']:.1f}"),
                  "response:", text_or_none(responses[row["run"]][index].get("response"))]
    lines.append(heading("the verdicts (Response A is the model named first)"))
    lines += [verdict_line(q) for q in questions if q["index"] == index]
    return "\n".join(lines)


def leaderboard_table(board: pd.DataFrame, width: int) -> str:
    columns = [c for c in ("rank", "model", "mean", "ci_low", "ci_high", "counted", "items",
                           *(f"states_{s}" for s in STATES),
                           # a pairwise comparison's (evalpipe/compare/pairwise.py)
                           "bt_rating", "bt_rating_length_controlled", "win_rate_vs_anchor",
                           "games") if c in board.columns]
    text = board[columns].rename(columns=lambda c: c.removeprefix("states_")).fillna("-")
    return text.to_string(index=False, max_colwidth=max(width // 3, 10))


# -- the command --------------------------------------------------------------------------------

def run_settings(paths) -> tuple[str | None, str | None, bool | None]:
    """data.template from the run's config.toml; the judge's template and structured setting
    from judge/summary.json (what the judge was asked with), else from config.toml."""
    config = load_config(paths / "config.toml") if (paths / "config.toml").exists() else None
    summary = api.judge_summary(paths.run, paths.results)
    data_template = config.data.template if config else None
    if summary is not None:
        return data_template, summary["template"], summary["structured"]
    if config is not None:
        return data_template, config.judge.template, config.judge.structured
    return None, None, None


def show(run: str, *, results: str | None = None, item: str | None = None,
         states: list[str] | None = None, worst: int | None = None, best: int | None = None,
         sort: str | None = None, columns: str | None = None, width: int | None = None) -> str:
    """What `evalpipe show` prints."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    results_dir = default_paths(run, results).results
    if (results_dir / run / api.LEADERBOARD).exists():
        return show_comparison(run, results, item, width)
    if item is not None:
        paths = api.run_paths(run, results)
        records = api.judged_records(run, results)
        index, record = find_item(records, item, f"run {run}")
        data_template, judge_template, structured = run_settings(paths)
        return item_journey(record, run=run, index=index, total=len(records),
                            data_template=data_template, judge_template=judge_template,
                            judge_structured=structured)
    scores = api.load_scores(run, results)
    table = item_table(scores)
    shown = select_items(table, states=states, worst=worst, best=best, sort=sort)
    return (format_table(shown, parse_columns(columns), width) + "\n"
            + table_footer(len(shown), table, length_measure(scores)))


def show_comparison(folder: str, results: str | None, item: str | None, width: int) -> str:
    name = folder.removeprefix("compare-")
    board = api.read_leaderboard(folder, results)
    if item is None:
        return (f"comparison {board['name']} ({board.get('mode', 'single')} mode, "
                f"{board.get('comparison', 'models')}, {board['items']} items)\n"
                + leaderboard_table(api.load_leaderboard(folder, results), width))
    if board.get("mode") == "pairwise":
        from evalpipe.judging.pairwise import FOLDER, QUESTIONS

        path = api.comparison_folder(folder, results) / FOLDER / QUESTIONS
        if not path.exists():
            raise EvalpipeError(f"comparison {name}: {path} not found (its pairwise judgment)")
        responses = {row["run"]: read_jsonl(api.run_paths(row["run"], results)
                                            / "generate/responses.jsonl")
                     for row in board["models"]}
        return pairwise_item(board, responses, read_jsonl(path), item)
    records = {}
    for row in board["models"]:
        run = row["run"]
        if board.get("mode") == "together":
            from evalpipe.judging.together import FOLDER, SCORES_DIR

            path = api.comparison_folder(folder, results) / FOLDER / SCORES_DIR / f"{run}.jsonl"
            if not path.exists():
                raise EvalpipeError(f"comparison {name}: {path} not found (the together "
                                    f"judgment of run {run})")
            records[run] = read_scores(path)
        else:
            records[run] = api.judged_records(run, results)
    return comparison_item(board, records, item)
