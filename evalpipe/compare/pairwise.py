"""`evalpipe compare --mode pairwise`: the leaderboard of a pairwise judgment
(evalpipe/judging/pairwise.py), its Bradley-Terry ratings (evalpipe/stats/bradley_terry.py), and how it
is shown: leaderboard.json, leaderboard.md, the printed table, ratings.png and compare.html.

A pairwise comparison has no score per item and model, only verdicts on pairs, so its board is
its own: models ranked by `bt_rating`, each with its interval, its length-controlled rating,
its win rate against the anchor, the length flag (raw and length-controlled ratings further
apart than the interval) and, when they exist, the same runs' single-mode means (each run's
own judge/scores.jsonl, all judged alike) and a together judgment's means (compare-<name>/
together/ of the same responses). The board-level `pairwise` section says how the ratings
were made: the anchor, the games, the questions asked, answered from the cache or left out of
the fit (and why), the length coefficient and the position effect per pair.

compare.html ends on an item viewer, to see why a model is rated as it is: every test item
with each model's response and every question asked about it (both orders of each pair) with
its state and verdict in words (judging/pairwise.py's `verdict_words`, which `evalpipe show`
prints too), a verdict that flipped with the order marked; the items whose verdicts flipped or
split most first; filters by model (a model's name in the ratings), state and text. Its
style, its model links and each item's task are compare/viewer.py's, as in compare/html.py.
"""

from __future__ import annotations

from pathlib import Path

from evalpipe.compare import viewer
from evalpipe.compare.leaderboard import judge_mismatches, mismatch_text, model_row
from evalpipe.compare.load import ModelScores, load_models, single_mode_models
from evalpipe.compare.plots import PLOTS, RATINGS_PLOT
from evalpipe.config import AggregateConfig, RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import read_json_object, sha256_file
from evalpipe.judging import pairwise
from evalpipe.judging.engine import is_empty
from evalpipe.judging.together import FOLDER as TOGETHER_FOLDER
from evalpipe.judging.together import MANIFEST
from evalpipe.report.format import interval, level, md, number, one_line
from evalpipe.report.html import embedded_png, esc, page
from evalpipe.report.plots import pyplot, save_figure
from evalpipe.stats.bradley_terry import fit_ratings, flipped_pairs

MODEL_KEYS = ("bt_rating", "bt_interval", "bt_rating_length_controlled",
              "bt_interval_length_controlled", "win_rate_vs_anchor", "win_rate_interval",
              "length_flag", "games")


# -- the board ---------------------------------------------------------------------------------

def _means(models: list[ModelScores], bootstrap: AggregateConfig) -> dict[str, dict]:
    """Each model's mean score and interval, and its rank by mean, by label."""
    rows = {m.label: model_row(m, bootstrap) for m in models}
    ranked = sorted(rows.values(), key=lambda r: (r["mean"] is None, -(r["mean"] or 0.0)))
    return {row["model"]: {"mean": row["mean"], "ci": row["ci"], "rank": rank}
            for rank, row in enumerate(ranked, start=1)}


def together_models(results: Path, runs: list[str], configs: dict[str, RunConfig | None],
                    out: Path) -> list[ModelScores] | None:
    """The together judgment in compare-<name>/together/ when it judged exactly these runs'
    present responses and finished (its manifest holds their hashes); else None."""
    folder = out / TOGETHER_FOLDER
    if not (folder / MANIFEST).exists():
        return None
    try:
        recorded = read_json_object(folder / MANIFEST)["key"]["responses"]
    except (EvalpipeError, KeyError, TypeError):  # unreadable: no together judgment to show
        return None
    now = {run: results / run / "generate/responses.jsonl" for run in runs}
    if set(recorded) != set(runs) or any(
            not path.exists() or sha256_file(path) != recorded[run] for run, path in now.items()):
        return None
    return load_models(results, runs, configs, together=folder)


def build_pairwise_board(name: str, runs: list[str], records: list[dict], summary: dict,
                         settings, bootstrap: AggregateConfig, results: Path, out: Path,
                         configs: dict[str, RunConfig | None],
                         allow_mixed_judges: bool = False) -> dict:
    """leaderboard.json of a pairwise comparison (floats not yet rounded): `records` are
    questions.jsonl's, `summary` summary.json's, `settings` the judge settings."""
    questions = pairwise.fitted_questions(records)
    anchor = settings.anchor or runs[0]
    fit = fit_ratings(questions, anchor=anchor, resamples=bootstrap.bootstrap_resamples,
                      seed=bootstrap.seed, confidence=bootstrap.confidence)
    single = single_mode_models(results, runs, configs)
    notes = []
    if single is not None:
        mismatches = judge_mismatches(single)
        if mismatches and not allow_mixed_judges:
            notes.append("Single-mode scores not shown: the runs' own judgments were not "
                         "judged alike: " + "; ".join(map(mismatch_text, mismatches))
                         + "; --allow-mixed-judges shows them.")
            single = None
        elif mismatches:
            notes.append("The single-mode scores beside the ratings mix judges: "
                         + "; ".join(map(mismatch_text, mismatches)) + ".")
    together = together_models(results, runs, configs, out)
    single_means = _means(single, bootstrap) if single is not None else {}
    together_means = _means(together, bootstrap) if together is not None else {}
    base_models = {run: ModelScores(run, run, [], config=configs[run]).base_model
                   for run in runs}

    rows = []
    for rank, entry in enumerate(fit["models"], start=1):
        label = entry["model"]
        row = {"rank": rank, "model": label, "run": label,
               "base_model": base_models.get(label),
               **{key: entry[key] for key in MODEL_KEYS}}
        for mode, means in (("single", single_means), ("together", together_means)):
            found = means.get(label, {})
            row[f"{mode}_mean"] = found.get("mean")
            row[f"{mode}_ci"] = found.get("ci")
            row[f"{mode}_rank"] = found.get("rank")
        rows.append(row)
    left_out = summary["left_out"]
    return {
        "name": name,
        "mode": "pairwise",
        "comparison": "models",
        "mixed_judges": None,
        "runs": list(runs),
        "items": summary["items"],
        "confidence": bootstrap.confidence,
        "resamples": bootstrap.bootstrap_resamples,
        "seed": bootstrap.seed,
        "models": rows,
        "pairwise": {
            "pairs": summary["pairs"],
            "anchor": fit["anchor"],
            "scale": fit["scale"],
            "judge": summary["judge"],
            "questions": summary["questions"],
            "states": summary["states"],
            "requests": summary["requests"],
            "from_cache": summary["cache_hits"],
            "left_out": {**left_out, "total": sum(left_out.values())},
            "fitted": len(questions),
            "games": fit["games"],
            "fitted_items": fit["items"],
            "length_coefficient": fit["length_coefficient"],
            "length_coefficient_interval": fit["length_coefficient_interval"],
            "position": fit["position"],
            "single_shown": single is not None,
            "together_shown": together is not None,
        },
        "notes": notes,
        "pairs": [],
        "how_sure": None,
        "agreement": [],
        "positions": None,
        "modes": None,
        "modes_note": None,
        "plots": [],
    }


# -- words -------------------------------------------------------------------------------------

def _rating(value) -> str:
    return number(value, 0)


def _win_rate(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _win_interval(ci) -> str:
    return "n/a" if ci is None else f"[{100 * ci[0]:.0f}%, {100 * ci[1]:.0f}%]"


def ratings_table(board: dict) -> tuple[list[str], list[list[str]]]:
    """The ratings as header and text cells (Markdown and HTML)."""
    ci = f"{level(board['confidence'])} CI"
    shown = board["pairwise"]
    header = ["rank", "model", "BT rating", ci, "length-controlled", f"length-controlled {ci}",
              "length flag", f"win rate vs {shown['anchor']}", f"win rate {ci}", "games"]
    for mode in ("single", "together"):
        if shown[f"{mode}_shown"]:
            header += [f"{mode} mean", f"{mode} {ci}"]
    rows = []
    for r in board["models"]:
        cells = [str(r["rank"]), r["model"], _rating(r["bt_rating"]),
                 interval(r["bt_interval"], 0), _rating(r["bt_rating_length_controlled"]),
                 interval(r["bt_interval_length_controlled"], 0),
                 "yes" if r["length_flag"] else "no", _win_rate(r["win_rate_vs_anchor"]),
                 _win_interval(r["win_rate_interval"]), str(r["games"])]
        for mode in ("single", "together"):
            if shown[f"{mode}_shown"]:
                cells += [number(r[f"{mode}_mean"]), interval(r[f"{mode}_ci"])]
        rows.append(cells)
    return header, rows


def position_rows(board: dict) -> tuple[list[str], list[list[str]]]:
    return (["model a", "model b", "items in both orders", "verdict flipped with the order",
             "share flipped", "decided questions won by the response shown first"],
            [[p["model_a"], p["model_b"], str(p["items"]), str(p["flipped"]),
              _win_rate(p["share"]), _win_rate(p["first_shown_wins"])]
             for p in board["pairwise"]["position"]])


def method_text(board: dict) -> str:
    shown = board["pairwise"]
    pairs = ("every pair of models" if shown["pairs"] == "all"
             else f"every model with the anchor {shown['anchor']}")
    coefficient = shown["length_coefficient"]
    return (f"{len(board['runs'])} runs on the same {board['items']} test items, judged two at "
            f"a time: for each item and {pairs}, the judge saw the task, the reference answer "
            "and the two responses, in both orders, and gave one verdict (A>>B, A>B, A=B, B>A, "
            "B>>A); a verdict that flips with the order counts as a tie, and an empty "
            "response loses strongly without asking. Bradley-Terry ratings by logistic "
            "regression over the games (a tie is half a win, a strong verdict weighs more), "
            f"on an Elo-like scale with {shown['anchor']} at 1000, with "
            f"{level(board['confidence'])} bootstrap intervals over items "
            f"({board['resamples']} resamples, seed {board['seed']}). Length-controlled: the "
            "normalised length difference of the two responses as a covariate (coefficient "
            f"{number(coefficient, 3)} {interval(shown['length_coefficient_interval'], 3)}); "
            "flagged where the raw and length-controlled ratings differ by more than the "
            "interval.")


def questions_text(board: dict) -> str:
    shown = board["pairwise"]
    left = shown["left_out"]
    text = (f"{shown['questions']} questions: {shown['requests']} asked of the judge "
            f"({shown['from_cache']} from the judgment cache), "
            f"{shown['states']['empty']} decided without asking (an empty response); "
            f"{shown['fitted']} fitted")
    if left["total"]:
        text += (f", {left['total']} left out of the fit ({left['unparseable']} unparseable, "
                 f"{left['error']} error)")
    return text + "."


POSITION_EFFECT_TEXT = ("Position effect: per pair of models, the items whose verdict flipped "
                        "when the order was reversed (both orders then count as ties), and the "
                        "share of the questions not judged a tie that the response shown first "
                        "won. A judge that reads only the responses flips none and shows the "
                        "first response winning about half the time.")


def pairwise_notes(board: dict) -> list[str]:
    """What to read before the ratings: questions left out, length flags, other notes."""
    shown = board["pairwise"]
    notes = list(board.get("notes") or [])
    if shown["left_out"]["total"]:
        notes.insert(0, f"{shown['left_out']['total']} of {shown['questions']} questions were "
                        f"left out of the fit ({shown['left_out']['unparseable']} unparseable, "
                        f"{shown['left_out']['error']} error); see pairwise/questions.jsonl.")
    flagged = [r["model"] for r in board["models"] if r["length_flag"]]
    if flagged:
        notes.append("Length flag: " + ", ".join(flagged) + ": the length-controlled rating "
                     "differs from the raw one by more than the interval; the judge's verdicts "
                     "follow the responses' length.")
    return notes


# -- leaderboard.md, the printed table, the plot, compare.html ----------------------------------

def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(md(c) for c in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]


def render_markdown(board: dict) -> str:
    lines = [f"# Comparison {md(board['name'])} (pairwise)", ""]
    for note in pairwise_notes(board):
        lines += [f"**{md(note)}**", ""]
    lines += [md(method_text(board)), "", md(questions_text(board)), "", "## Ratings", ""]
    lines += _md_table(*ratings_table(board))
    lines += ["", "## Position effect", "", POSITION_EFFECT_TEXT, ""]
    lines += _md_table(*position_rows(board))
    lines += ["", "## Plots", ""] + [f"![{plot}]({plot})" for plot in board["plots"]]
    return "\n".join(lines) + "\n"


def print_board(board: dict, out: Path) -> None:
    shown = board["pairwise"]
    print(f"compare: {len(board['models'])} models on {board['items']} items, judged pairwise "
          f"(anchor {one_line(shown['anchor'])} = 1000) -> {one_line(out)}/")
    for note in pairwise_notes(board):
        print(f"  {one_line(note)}")
    names = {row["model"]: one_line(row["model"]) for row in board["models"]}
    width = max(len(name) for name in names.values())
    for row in board["models"]:
        flag = "  LENGTH FLAG" if row["length_flag"] else ""
        print(f"  {row['rank']}. {names[row['model']]:<{width}}  rating "
              f"{_rating(row['bt_rating'])} {interval(row['bt_interval'], 0)}  "
              f"length-controlled {_rating(row['bt_rating_length_controlled'])} "
              f"{interval(row['bt_interval_length_controlled'], 0)}  win rate vs anchor "
              f"{_win_rate(row['win_rate_vs_anchor'])}  ({row['games']} games){flag}")


def plot_ratings(board: dict, path: Path) -> bytes:
    """Each model's rating with its interval, raw and length-controlled, best at the top."""
    plt = pyplot()
    rows = board["models"]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.6 * len(rows)))
    for offset, key, colour, label in ((0.15, "bt", "#2c3e50", "raw"),
                                       (-0.15, "bt_length_controlled", "#c0392b",
                                        "length-controlled")):
        rating = "bt_rating" if key == "bt" else "bt_rating_length_controlled"
        ci = "bt_interval" if key == "bt" else "bt_interval_length_controlled"
        ys = [len(rows) - i + offset for i in range(len(rows))]
        xs = [r[rating] for r in rows]
        errors = [[r[rating] - r[ci][0] for r in rows], [r[ci][1] - r[rating] for r in rows]]
        ax.errorbar(xs, ys, xerr=errors, fmt="o", color=colour, capsize=3, label=label)
    ax.set_yticks([len(rows) - i for i in range(len(rows))], [r["model"] for r in rows])
    ax.axvline(1000, color="#999", linestyle=":", linewidth=1)
    ax.set_xlabel(f"Bradley-Terry rating ({board['pairwise']['anchor']} = 1000), "
                  f"{level(board['confidence'])} interval")
    ax.set_title("pairwise ratings")
    ax.legend(loc="best")
    return save_figure(fig, path)


STYLE = viewer.PAGE_CSS + viewer.VIEWER_CSS + """
tr.length-flag td { background: #fff4e0; }
.note { color: #a12; }
.response .rating { color: #666; }
.response .empty { color: #666; font-style: italic; }
table.questions { margin: 0.6em 0 0; }
table.questions pre { white-space: pre-wrap; margin: 0; }
tr.flipped td { background: #fff4e0; }
.flip { color: #a12; font-weight: bold; }
"""

# The viewer's filters: a question shows when it is about the model chosen and matches the
# state chosen ('flipped': its verdict flipped with the order); a response shows when a
# question shown is about it; an item when one of its questions shows and its text matches.
SCRIPT = """
function filterItems() {
  const text = document.getElementById('filter').value.toLowerCase();
  const model = document.getElementById('model-filter').value;
  const state = document.getElementById('state-filter').value;
  let shown = 0;
  for (const item of document.querySelectorAll('.item')) {
    const about = new Set();
    for (const row of item.querySelectorAll('tr.question')) {
      const wanted = (model === '' || row.dataset.first === model ||
                      row.dataset.second === model) &&
                     (state === '' || (state === 'flipped' ? row.dataset.flipped === 'true'
                                                           : row.dataset.state === state));
      row.style.display = wanted ? '' : 'none';
      if (wanted) { about.add(row.dataset.first); about.add(row.dataset.second); }
    }
    for (const card of item.querySelectorAll('.response')) {
      card.style.display = about.has(card.dataset.model) ? '' : 'none';
    }
    const matches = text === '' || item.textContent.toLowerCase().includes(text);
    const visible = about.size > 0 && matches;
    item.style.display = visible ? '' : 'none';
    if (visible) shown++;
  }
  document.getElementById('shown-items').textContent = shown;
}
""" + viewer.SHOW_MODEL_SCRIPT

VIEWER_ORDER_TEXT = (
    "Items whose verdicts flipped with the order in most pairs come first, then those whose "
    "two orders of a pair disagreed in most pairs (split: the two verdicts, read for the same "
    "model, differ, as better and much better, or better and a tie; a flip is a split too); "
    "ties in test order.")

# A verdict read the other way round: what it says with the two responses swapped.
MIRRORED = {"A>>B": "B>>A", "A>B": "B>A", "A=B": "A=B", "B>A": "A>B", "B>>A": "A>>B"}


def item_disagreement(records: list[dict]) -> dict[int, tuple[set, set]]:
    """Per item index: (flipped, split), the pairs (model_a, model_b, sorted) whose verdict
    flipped with the order (stats.bradley_terry's rule) and those whose two verdicts differ
    at all; only questions with a verdict (judged, empty) count."""
    divided: dict[int, tuple[set, set]] = {}
    for item, model_a, model_b in flipped_pairs(pairwise.fitted_questions(records)):
        divided.setdefault(int(item), (set(), set()))[0].add((model_a, model_b))
    said: dict[tuple[int, str, str], set] = {}
    for r in records:
        if r["state"] in pairwise.FITTED:
            model_a, model_b = sorted((r["first"], r["second"]))
            verdict = r["verdict"] if r["first"] == model_a else MIRRORED[r["verdict"]]
            said.setdefault((r["index"], model_a, model_b), set()).add(verdict)
    for (index, model_a, model_b), verdicts in said.items():
        if len(verdicts) > 1:
            divided.setdefault(index, (set(), set()))[1].add((model_a, model_b))
    return divided


def _question_row(record: dict, flipped: bool) -> str:
    """One question: who was shown first, its state, the verdict in words, and the reason,
    why it was not asked, the reply that held no verdict, or the error."""
    state = record["state"]
    if state in pairwise.FITTED:
        verdict = f"{esc(record['verdict'])}, {esc(pairwise.verdict_words(record))}"
        if flipped:
            verdict += ' <span class="flip">flipped with the order: counted as a tie</span>'
    else:
        verdict = "none (left out of the fit)"
    if state == "empty":
        why = f"not asked: {esc(pairwise.not_asked_why(record))}"
    elif state == "unparseable":
        why = f"reply: <pre>{esc(record.get('raw_reply'))}</pre>"
    elif state == "error":
        why = f"error: {esc(record.get('error'))}"
    else:
        why = esc(record.get("reason"))
    marks = ' data-flipped="true"' if flipped else ""
    return (f'<tr class="question state-{esc(state)}{" flipped" if flipped else ""}" '
            f'data-first="{esc(record["first"])}" data-second="{esc(record["second"])}" '
            f'data-state="{esc(state)}"{marks}>'
            f"<td>{esc(record['first'])} vs {esc(record['second'])}</td><td>{esc(state)}</td>"
            f"<td>{verdict}</td><td>{why}</td></tr>")


def _pairwise_item(index: int, board: dict, records: list[dict],
                   responses: dict[str, list[dict]], flipped: set, split: set) -> str:
    """One test item: its task, every model's response (best rated first), every question."""
    rows = board["models"]
    task = responses[rows[0]["run"]][index]
    cards = []
    for row in rows:
        text = responses[row["run"]][index].get("response")
        empty = is_empty(text)  # as the judge treated it
        shown = ('<p class="empty">(empty response)</p>' if empty
                 else f"<pre>{esc(text)}</pre>")
        cards.append(f'<div class="response{" state-empty" if empty else ""}" '
                     f'data-model="{esc(row["model"])}"><b>{esc(row["model"])}</b> '
                     f'<small class="rating">rating {esc(_rating(row["bt_rating"]))}</small>'
                     f"{shown}</div>")
    questions = "".join(
        _question_row(r, tuple(sorted((r["first"], r["second"]))) in flipped) for r in records)
    pairs = len({frozenset((r["first"], r["second"])) for r in records})
    divided = f"{len(flipped)} flipped, {len(split)} split of {pairs} pairs"
    return (f'<section class="item" data-index="{index}" data-id="{esc(task["id"])}" '
            f'data-flipped="{len(flipped)}" data-split="{len(split)}">'
            f"<h3>Item {index} <small>({esc(task['id'])})</small> "
            f'<span class="disagreement">{esc(divided)}</span></h3>'
            f"{viewer.task_html(task)}<div class=\"responses\">{''.join(cards)}</div>"
            '<table class="questions"><thead><tr><th>Response A vs Response B</th>'
            "<th>state</th><th>verdict</th><th>reason</th></tr></thead>"
            f"<tbody>{questions}</tbody></table></section>")


def _viewer(board: dict, records: list[dict], responses: dict[str, list[dict]]) -> str:
    """The item viewer: the controls, then the items, most divided first."""
    by_item: dict[int, list[dict]] = {}
    for record in records:
        by_item.setdefault(record["index"], []).append(record)
    divided = item_disagreement(records)
    nothing = (set(), set())
    order = sorted(range(board["items"]), key=lambda index: (
        -len(divided.get(index, nothing)[0]), -len(divided.get(index, nothing)[1]), index))
    items = "\n".join(_pairwise_item(index, board, by_item.get(index, []), responses,
                                     *divided.get(index, nothing)) for index in order)
    models = viewer.options(row["model"] for row in board["models"])
    states = viewer.options((*pairwise.STATES, "flipped"),
                            {"flipped": "verdict flipped with the order"})
    return f"""<h2 id="viewer">Items</h2>
<p>Every test item with each model's response, best rated first, and every question asked
about it: each pair of models in both orders, Response A named first, with the verdict in
words and the judge's reason. {esc(VIEWER_ORDER_TEXT)}</p>
<div class="viewer-controls">Show questions about
<select id="model-filter" onchange="filterItems()">
<option value="">every model</option>{models}</select>
<select id="state-filter" onchange="filterItems()">
<option value="">in any state</option>{states}</select>
containing <input id="filter" oninput="filterItems()">:
<span id="shown-items">{board["items"]}</span> of {board["items"]} items.</div>
{items}"""


def render_html(board: dict, images: dict[str, bytes], records: list[dict],
                responses: dict[str, list[dict]]) -> str:
    """compare.html of a pairwise comparison: the ratings with their intervals (table and
    plot) beside the single and together means, the length flags, the position effect, then
    the item viewer. `records` are questions.jsonl's, `responses` each run's
    generate/responses.jsonl records by run.
    Hooks: `<table id="ratings">`, each row `<tr data-model>` (`data-length-flag` when
    flagged), the model's name an `<a class="show-model" data-show-model>`;
    `<table id="position-effect">`; each item a `<section class="item" data-index data-id
    data-flipped data-split>` (counts of pairs), each response a `<div class="response"
    data-model>`, each question a `<tr class="question" data-first data-second data-state>`
    (`data-flipped="true"` when its verdict flipped with the order)."""
    header, text_rows = ratings_table(board)
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body_rows = []
    for row, cells in zip(board["models"], text_rows):
        flag = ' class="length-flag" data-length-flag="true"' if row["length_flag"] else ""
        parts = [esc(c) for c in cells]
        parts[1] = viewer.model_link(row["model"], cells[1])  # opens the viewer filtered to it
        body_rows.append(f'<tr data-model="{esc(row["model"])}"{flag}>'
                         + "".join(f"<td>{c}</td>" for c in parts) + "</tr>")
    ratings = (f'<table id="ratings"><thead><tr>{head}</tr></thead>'
               f"<tbody>{''.join(body_rows)}</tbody></table>")
    position_header, position_cells = position_rows(board)
    position = ('<table id="position-effect"><thead><tr>'
                + "".join(f"<th>{esc(c)}</th>" for c in position_header) + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
                          for cells in position_cells) + "</tbody></table>")
    notes = "".join(f'<p class="note"><b>{esc(note)}</b></p>\n' for note in pairwise_notes(board))
    plots = "".join(f"<p>{embedded_png(name, data)}</p>" for name, data in images.items())
    title = f"Comparison {board['name']} (pairwise)"
    body = f"""<h1>{esc(title)}</h1>
{notes}<h2 id="pairwise">Pairwise ratings</h2>
{ratings}
<p>{esc(method_text(board))} Click a model to read the questions about it.</p>
<p>{esc(questions_text(board))}</p>
{plots}
<h2>Position effect</h2>
<p>{esc(POSITION_EFFECT_TEXT)}</p>
{position}
{_viewer(board, records, responses)}"""
    return page(title, STYLE, body, SCRIPT)


def write_outputs(board: dict, out: Path) -> dict[str, bytes]:
    """ratings.png (and no plot of another mode's comparison of the same name)."""
    images = {RATINGS_PLOT: plot_ratings(board, out / RATINGS_PLOT)}
    for stale in set(PLOTS) - set(images):
        (out / stale).unlink(missing_ok=True)
    return images
