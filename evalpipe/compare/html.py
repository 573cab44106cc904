"""compare.html: one self-contained page (inline CSS and JS, the plots embedded) with the
leaderboard's tables and, per test item, every model's response and score side by side."""

from __future__ import annotations

from evalpipe.compare.load import ModelScores
from evalpipe.compare.text import (
    NO_AGREEMENT,
    POSITION_TEXT,
    board_notes,
    correlation_text,
    leaderboard_tables,
    method_text,
    modes_table,
    modes_text,
    position_table,
    title,
)
from evalpipe.records import STATES_WITH_SCORE
from evalpipe.report.html import embedded_png, esc, page

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.item { border-top: 2px solid #888; margin-top: 1.5em; padding-top: 0.5em; }
.responses { display: flex; flex-wrap: wrap; gap: 1em; }
.response { flex: 1 1 18em; border: 1px solid #ccc; padding: 0.5em; }
.response pre, .reference pre { white-space: pre-wrap; margin: 0.3em 0; }
.state-unparseable, .state-error { background: #fdecea; }
.state-empty { background: #f5f5f5; }
.mixed { color: #a12; }
img { max-width: 100%; }
"""

SCRIPT = """
function filterItems() {
  const text = document.getElementById('filter').value.toLowerCase();
  const spread = Number(document.getElementById('spread').value);
  for (const item of document.querySelectorAll('.item')) {
    const matches = item.textContent.toLowerCase().includes(text);
    const wide = Number(item.dataset.spread) >= spread;
    item.style.display = matches && wide ? '' : 'none';
  }
}
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _item_section(index: int, models: list[ModelScores]) -> str:
    """One test item: the question and the reference, then every model's response and score."""
    first = models[0].records[index]
    counted = [m.records[index]["score"] for m in models
               if m.records[index]["state"] in STATES_WITH_SCORE]
    spread = max(counted) - min(counted) if counted else 0
    cards = []
    for model in models:
        record = model.records[index]
        score = record["score"] if record["score"] is not None else record["state"]
        shown = (f' <small class="position">(shown as Response {esc(record["position"])})'
                 "</small>" if record.get("position") else "")
        cards.append(
            f'<div class="response state-{esc(record["state"])}" data-model="{esc(model.label)}" '
            f'data-state="{esc(record["state"])}" data-score="{esc(record["score"])}">'
            f"<b>{esc(model.label)}</b>: <span class=\"score\">{esc(score)}</span>{shown}"
            f"<pre>{esc(record.get('response'))}</pre>"
            + (f"<p class=\"reason\">{esc(record.get('reason'))}</p>" if record.get("reason")
               else "")
            + (f"<p class=\"error\">{esc(record.get('error'))}</p>" if record.get("error")
               else "") + "</div>")
    input_part = (f"<p><b>Input:</b> {esc(first['input'])}</p>" if first["input"] else "")
    return (f'<section class="item" data-index="{index}" data-id="{esc(first["id"])}" '
            f'data-spread="{spread}">'
            f"<h3>Item {index} <small>({esc(first['id'])})</small></h3>"
            f"<p><b>Instruction:</b> {esc(first['instruction'])}</p>{input_part}"
            f"<div class=\"reference\"><b>Reference:</b><pre>{esc(first['output'])}</pre></div>"
            f"<div class=\"responses\">{''.join(cards)}</div></section>")


def render_html(board: dict, models: list[ModelScores], images: dict[str, bytes]) -> str:
    tables = leaderboard_tables(board)
    ranked_labels = [row["model"] for row in board["models"]]
    by_label = {model.label: model for model in models}
    ranked = [by_label[label] for label in ranked_labels]
    plots = "".join(f"<p>{embedded_png(name, data)}</p>" for name, data in images.items())
    items = "".join(_item_section(index, ranked) for index in range(board["items"]))
    judges = board.get("comparison") == "judges"
    pairs = ("" if judges else "<h2>Pairs</h2>\n" + (
        _html_table(*tables["pairs"]) if board["pairs"] else "<p>Only one model: no pairs.</p>")
        + "\n")
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
{notes}<p>{esc(method_text(board))}</p>
<h2>{"Scores by judge" if judges else "Leaderboard"}</h2>
{_html_table(*tables['models'])}
{pairs}<h2>Test loss and score</h2>
<p>{esc(correlation_text(board))}</p>
{extra}<h2>Judge agreement</h2>
{agreement}
<h2>Plots</h2>
{plots}
<h2>Items</h2>
<p>Show items containing <input id="filter" oninput="filterItems()">
with scores at least <select id="spread" onchange="filterItems()">
<option value="0">0</option><option value="20">20</option><option value="40">40</option>
<option value="60">60</option></select> points apart. Models in leaderboard order.</p>
{items}"""
    return page(title(board), STYLE, body, SCRIPT)
