"""compare.html: one self-contained page (inline CSS and JS, the plots embedded, no server).

It opens on the leaderboard (sortable by any column; a model's name shows the item viewer
filtered to it; a run whose judge failed its canaries is marked on its row), then the item
viewer: every test item with every model's response side by side, with its score, reason and
repeats, the items that divide the judgments most first. Disagreement is the spread of the
counted scores (highest minus lowest); in together mode with judge.swap, also how far a model's
score moved when its response was shown at another place (the swapped pass). The viewer filters
by model, state, text and spread. Then the pairs, how sure the ranking is, the loss
correlation, the position and mode checks, the judge agreement and the plots.

Hooks: each item is a `<section class="item" data-index data-id data-spread data-moves
data-disagreement>`, each response a `<div data-model data-state data-score>` holding the
response in a <pre>; the leaderboard is `<table id="leaderboard">`, each row `<tr data-model>`
(with `data-canaries-failed` when so); <body data-ready-ms> (report/html.py).
"""

from __future__ import annotations

from evalpipe.compare.load import ModelScores
from evalpipe.compare.text import (
    NO_AGREEMENT,
    POSITION_TEXT,
    board_notes,
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
from evalpipe.compare.viewer import (
    PAGE_CSS,
    SHOW_MODEL_SCRIPT,
    VIEWER_CSS,
    model_link,
    options,
    task_html,
)
from evalpipe.records import STATES, STATES_WITH_SCORE
from evalpipe.report.html import SORTABLE_CSS, SORTABLE_SCRIPT, embedded_png, esc, page

STYLE = PAGE_CSS + VIEWER_CSS + """
#leaderboard td.number { font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.canaries-failed td { background: #fdecea; }
.canary-mark { color: #b00; font-weight: bold; }
.response .repeats, .response .position { color: #666; }
.mixed { color: #a12; }
""" + SORTABLE_CSS

# The viewer's filters: a response shows when it matches the model and state chosen; an item
# shows when one of its responses does, its text matches and its spread is wide enough. A
# model's name in the leaderboard chooses that model and scrolls to the viewer.
SCRIPT = SORTABLE_SCRIPT + """
function filterItems() {
  const text = document.getElementById('filter').value.toLowerCase();
  const spread = Number(document.getElementById('spread').value);
  const model = document.getElementById('model-filter').value;
  const state = document.getElementById('state-filter').value;
  let shown = 0;
  for (const item of document.querySelectorAll('.item')) {
    let cards = 0;
    for (const card of item.querySelectorAll('.response')) {
      const wanted = (model === '' || card.dataset.model === model) &&
                     (state === '' || card.dataset.state === state);
      card.style.display = wanted ? '' : 'none';
      if (wanted) cards++;
    }
    const matches = text === '' || item.textContent.toLowerCase().includes(text);
    const wide = Number(item.dataset.disagreement) >= spread;
    const visible = cards > 0 && matches && wide;
    item.style.display = visible ? '' : 'none';
    if (visible) shown++;
  }
  document.getElementById('shown-items').textContent = shown;
}
""" + SHOW_MODEL_SCRIPT


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# The leaderboard's columns that sort as numbers (the rest: model, base model, judge as text).
TEXT_COLUMNS = ("model", "base model", "judge")


def _leaderboard_table(board: dict) -> str:
    """The leaderboard as a sortable table: each model's name shows the viewer filtered to it;
    a run whose judge failed its canaries (leaderboard.json's `canaries_failed`, absent from a
    board written before it existed) is marked, with the reason."""
    header, text_rows = leaderboard_tables(board)["models"]
    heads = "".join(
        f'<th data-type="{"text" if name in TEXT_COLUMNS else "number"}">{esc(name)}</th>'
        for name in header)
    ci_column = 6  # the interval sorts on its lower bound
    rows = []
    for index, (row, cells) in enumerate(zip(board["models"], text_rows)):
        parts = []
        for column, (name, text) in enumerate(zip(header, cells)):
            if name == "model":
                mark = ""
                if row.get("canaries_failed"):
                    why = row.get("canaries_why") or "the judge failed its canaries"
                    mark = (f' <span class="canary-mark" title="{esc(why)}">&#9888; canaries '
                            f"failed: {esc(why)}</span>")
                parts.append(f"<td>{model_link(row['model'], text)}{mark}</td>")
            elif column == ci_column:
                low = "" if row["ci"] is None else f' data-sort="{row["ci"][0]}"'
                parts.append(f'<td class="number"{low}>{esc(text)}</td>')
            elif name in TEXT_COLUMNS:
                parts.append(f"<td>{esc(text)}</td>")
            else:
                parts.append(f'<td class="number">{esc(text)}</td>')
        failed = (' class="canaries-failed" data-canaries-failed="true"'
                  if row.get("canaries_failed") else "")
        rows.append(f'<tr data-model="{esc(row["model"])}" data-index="{index}"{failed}>'
                    + "".join(parts) + "</tr>")
    return (f'<table id="leaderboard" class="sortable"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def swapped_scores(passes: list[dict] | None) -> dict[tuple[int, str], dict]:
    """(item index, model) -> the swapped pass's judgment of that model's response: place
    shown, state and score, from together/items.jsonl (judge.swap); empty without it."""
    swapped = {}
    for record in passes or []:
        if record["pass"] != 2:
            continue
        for place, label in enumerate(record["order"]):
            scored = record["state"] == "scored"
            swapped[(record["index"], label)] = {
                "position": place + 1, "state": record["state"],
                "score": record["scores"][place] if scored else None}
    return swapped


def disagreement(index: int, models: list[ModelScores],
                 swapped: dict[tuple[int, str], dict]) -> tuple[int, int]:
    """(spread, moves) of one item: the highest counted score minus the lowest, and the most a
    model's score moved between the two passes of a together judgment with judge.swap."""
    counted = [m.records[index]["score"] for m in models
               if m.records[index]["state"] in STATES_WITH_SCORE]
    spread = max(counted) - min(counted) if counted else 0
    moves = [abs(model.records[index]["score"] - other["score"])
             for model in models
             if (other := swapped.get((index, model.label))) and other["state"] == "scored"
             and model.records[index]["state"] == "scored"]
    return spread, max(moves, default=0)


def _repeats_text(record: dict) -> str:
    repeats = record.get("repeats") or []
    if len(repeats) < 2:
        return ""
    scores = ", ".join(str(r["score"]) if r.get("state") in STATES_WITH_SCORE
                       else str(r.get("state")) for r in repeats)
    return f'<p class="repeats">repeats: {esc(scores)}</p>'


def _item_section(index: int, models: list[ModelScores],
                  swapped: dict[tuple[int, str], dict]) -> str:
    """One test item: the question and the reference, then every model's response and score."""
    first = models[0].records[index]
    spread, moves = disagreement(index, models, swapped)
    cards = []
    for model in models:
        record = model.records[index]
        score = record["score"] if record["score"] is not None else record["state"]
        shown = ""
        if record.get("position"):
            shown = f"shown as Response {record['position']}"
            other = swapped.get((index, model.label))
            if other:
                other_score = other["score"] if other["score"] is not None else other["state"]
                shown += f"; swapped: {other_score} as Response {other['position']}"
            shown = f' <small class="position">({esc(shown)})</small>'
        cards.append(
            f'<div class="response state-{esc(record["state"])}" data-model="{esc(model.label)}" '
            f'data-state="{esc(record["state"])}" data-score="{esc(record["score"])}">'
            f"<b>{esc(model.label)}</b>: <span class=\"score\">{esc(score)}</span>"
            + (f' <small class="state">({esc(record["state"])})</small>'
               if record["state"] == "empty" else "")
            + f"{shown}"
            f"<pre>{esc(record.get('response'))}</pre>"
            + (f"<p class=\"reason\">{esc(record.get('reason'))}</p>" if record.get("reason")
               else "")
            + (f"<p class=\"error\">{esc(record.get('error'))}</p>" if record.get("error")
               else "") + _repeats_text(record) + "</div>")
    divided = f"scores {spread} apart" + (f", moved up to {moves} with position"
                                          if moves else "")
    return (f'<section class="item" data-index="{index}" data-id="{esc(first["id"])}" '
            f'data-spread="{spread}" data-moves="{moves}" '
            f'data-disagreement="{max(spread, moves)}">'
            f"<h3>Item {index} <small>({esc(first['id'])})</small> "
            f'<span class="disagreement">{esc(divided)}</span></h3>'
            f"{task_html(first)}"
            f"<div class=\"responses\">{''.join(cards)}</div></section>")


def _viewer(board: dict, ranked: list[ModelScores], passes: list[dict] | None) -> str:
    """The item viewer: the controls, then the items, most divided first (ties in test
    order)."""
    swapped = swapped_scores(passes)
    order = sorted(range(board["items"]),
                   key=lambda index: (-max(disagreement(index, ranked, swapped)), index))
    items = "\n".join(_item_section(index, ranked, swapped) for index in order)
    models = options(m.label for m in ranked)
    states = options(STATES)
    spreads = options((0, 20, 40, 60))
    moved = " or moved with position (judge.swap)" if passes else ""
    return f"""<h2 id="viewer">Items</h2>
<p>Every test item with each model's response, score and reason, in leaderboard order; the
items whose scores are furthest apart{esc(moved)} first.</p>
<div class="viewer-controls">Show
<select id="model-filter" onchange="filterItems()">
<option value="">every model</option>{models}</select>
<select id="state-filter" onchange="filterItems()">
<option value="">any state</option>{states}</select>
containing <input id="filter" oninput="filterItems()">
with scores at least <select id="spread" onchange="filterItems()">{spreads}</select> points
apart: <span id="shown-items">{board["items"]}</span> of {board["items"]} items.</div>
{items}"""


def render_html(board: dict, models: list[ModelScores], images: dict[str, bytes],
                passes: list[dict] | None = None) -> str:
    """The whole page; `passes` are together/items.jsonl's records when the runs were judged
    together with judge.swap (the viewer then also shows how scores moved with position)."""
    tables = leaderboard_tables(board)
    ranked_labels = [row["model"] for row in board["models"]]
    by_label = {model.label: model for model in models}
    ranked = [by_label[label] for label in ranked_labels]
    plots = "".join(f"<p>{embedded_png(name, data)}</p>" for name, data in images.items())
    judges = board.get("comparison") == "judges"
    pairs = ("" if judges else "<h2>Pairs</h2>\n" + (
        _html_table(*tables["pairs"]) if board["pairs"] else "<p>Only one model: no pairs.</p>")
        + "\n")
    if board.get("how_sure"):
        how_sure = how_sure_tables(board)
        pairs += (f"<h2>How sure</h2>\n<p>{esc(how_sure_text(board))}</p>\n"
                  f"{_html_table(*how_sure['models'])}\n"
                  + (_html_table(*how_sure["pairs"]) + "\n" if board["how_sure"]["pairs"]
                     else ""))
    notes = "".join(f"<p>{esc(note)}</p>\n" if judges
                    else f'<p class="mixed"><b>{esc(note)}</b></p>\n'
                    for note in board_notes(board))
    agreement = (_html_table(*tables["agreement"]) if board["agreement"]
                 else f"<p>{esc(NO_AGREEMENT)}</p>")
    extra = ""
    if board.get("positions"):
        extra += (f"<h2>Position check</h2>\n<p>{esc(POSITION_TEXT)}</p>\n"
                  f"{_html_table(*position_table(board['positions']))}\n")
    if board.get("modes") or board.get("modes_note"):
        extra += "<h2>Modes side by side</h2>\n"
        if board.get("modes_note"):
            extra += f'<p class="mixed"><b>{esc(board["modes_note"])}</b></p>\n'
    if board.get("modes"):
        extra += (f"<p>{esc(modes_text(board['modes']))}</p>\n"
                  f"{_html_table(*modes_table(board['modes'], board['confidence']))}\n")
    body = f"""<h1>{esc(title(board))}</h1>
{notes}<h2>{"Scores by judge" if judges else "Leaderboard"}</h2>
{_leaderboard_table(board)}
<p>{esc(method_text(board))} Click a heading to sort; click a model to read its responses.</p>
{_viewer(board, ranked, passes)}
{pairs}<h2>Test loss and score</h2>
<p>{esc(correlation_text(board))}</p>
{extra}<h2>Judge agreement</h2>
{agreement}
<h2>Plots</h2>
{plots}"""
    return page(title(board), STYLE, body, SCRIPT)
