"""What the aggregate stage shows: PNG plots, summary.md, and report.html.

report.html is one static file that opens offline with no server and can be mailed or attached
on its own: CSS and JavaScript are inline and the plots are embedded as base64 `data:` URIs (the
same PNGs are also written beside it, for slides and pull requests). It holds the summary
numbers, the plots, the canaries, and a table of every item, sortable by any column (click a
header; click again to reverse) and filterable by state.

The table starts worst first: items without a score (`error`, `unparseable`) at the top,
because they need a look before any number can be trusted; then by score, lowest first; ties in
test order. Every text from the data is HTML-escaped: a response may well contain `<script>`.

Hooks for tests and scripts: every summary number sits in an element with
`data-key="<dotted key in summary.json>"` and `data-value="<its JSON value>"`; every item row
is a `<tr data-id="<id>" data-state="<state>">`; every plot is an `<img data-file="<png name>">`.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from evalpipe.io import atomic_open
from evalpipe.stats import STATES

# -- plots --------------------------------------------------------------------------------------

def pyplot():
    """matplotlib's pyplot drawing to files only (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> bytes:
    """Write the figure as a PNG atomically and return its bytes (pages embed them)."""
    import io

    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return buffer.getvalue()


def _placeholder(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_score_histogram(scores: list[int], path: Path) -> bytes:
    """Histogram of the scores of scored and empty items, bins of 10 from 0 to 100 (the last
    bin holds 90..100)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if scores:
        ax.hist(scores, bins=range(0, 101, 10), edgecolor="white", color="#3b6ea5")
        ax.set_xlim(0, 100)
        ax.set_xticks(range(0, 101, 10))
        ax.set_xlabel("judge score")
        ax.set_ylabel("items")
        ax.set_title(f"scores of {len(scores)} items (scored + empty)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _placeholder(ax, "no scored items")
    return save_figure(fig, path)


def plot_score_vs_length(items: list[dict], lengths: list[int], measure: str,
                         path: Path) -> bytes:
    """Score against response length (`lengths[i]` is item i's, in `measure`: tokens or
    whitespace words), one point per scored or empty item (empty ones in grey): a judge that
    rewards length shows as a slope."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    any_point = False
    for state, color in (("scored", "#3b6ea5"), ("empty", "#999999")):
        points = [(length, item["score"]) for item, length in zip(items, lengths)
                  if item["state"] == state]
        if points:
            any_point = True
            ax.scatter([x for x, _ in points], [y for _, y in points], s=14, alpha=0.7,
                       color=color, label=f"{state} ({len(points)})")
    if any_point:
        ax.set_xlabel("response length (" + ("tokens" if measure == "response_tokens"
                                              else "whitespace words") + ")")
        ax.set_ylabel("judge score")
        ax.set_ylim(-5, 105)
        ax.legend(loc="best", fontsize=8)
    else:
        _placeholder(ax, "no scored items")
    return save_figure(fig, path)


def plot_loss_curves(metrics: list[dict] | None, path: Path) -> bytes:
    """The finetune stage's loss curves (its own plot_losses), or a picture that says there was
    no fine-tuning, so the file always exists and the stage's outputs never depend on it."""
    if metrics is not None:
        from evalpipe.finetune import plot_losses

        return plot_losses(metrics, path)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _placeholder(ax, "no fine-tuning in this run")
    return save_figure(fig, path)


# -- the summary rows, shared by summary.md and report.html ---------------------------------------

def lookup(summary: dict, key: str):
    """summary["a"]["b"] for key "a.b"; None when a section on the way is null."""
    value = summary
    for part in key.split("."):
        if value is None:
            return None
        value = value[part]
    return value


def number(value, decimals: int = 2) -> str:
    """A number with `decimals` places, or "n/a" for None."""
    return "n/a" if value is None else f"{value:.{decimals}f}"


def _plain(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def interval(ci, decimals: int = 2) -> str:
    """[low, high] with `decimals` places, or "n/a" for None."""
    return "n/a" if ci is None else f"[{ci[0]:.{decimals}f}, {ci[1]:.{decimals}f}]"


def level(confidence: float) -> str:
    """A confidence level as headings show it: 0.95 -> "95%", 0.9 -> "90%"."""
    return f"{100 * confidence:g}%"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _options(value) -> str:
    return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "none"


score2, ratio3, loss4 = number, partial(number, decimals=3), partial(number, decimals=4)


def summary_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(section, label, key, shown text) for every number worth a line. A section that is null
    in summary.json (no canaries, no repeats, no fine-tuning) gets one line saying so."""
    score = summary["score"]
    confidence = level(score["confidence"])
    sections: list[tuple[str, str | None, str, list[tuple[str, str, Callable]]]] = [
        ("Items", None, "", [
            ("items", "items", _plain),
            *((f"{state}", f"states.{state}", _plain) for state in STATES),
        ]),
        ("Judge score (scored + empty items)", None, "", [
            ("items with a score", "score.n", _plain),
            ("mean", "score.mean", score2),
            (f"{confidence} bootstrap CI of the mean ({score['resamples']} resamples, "
             f"seed {score['seed']})", "score.ci", interval),
            ("median", "score.median", score2),
            ("standard deviation (sample)", "score.sd", score2),
            ("lowest", "score.min", _plain),
            ("highest", "score.max", _plain),
        ]),
        ("The book's average (empty counts 0, failures dropped)", None, "", [
            ("book's average", "book_average.average", score2),
            ("items counted", "book_average.counted", _plain),
            ("failures dropped", "book_average.dropped", _plain),
        ]),
        ("Second opinions", None, "", [
            ("reference overlap, token F1 (SQuAD), mean over all items", "overlap_f1.mean",
             ratio3),
            ("Spearman of F1 with score (items the judge read)",
             "overlap_f1.spearman_with_score", ratio3),
            (f"mean response length ({summary['length']['measure']})", "length.mean", score2),
            ("Spearman of length with score (items the judge read)",
             "length.spearman_with_score", ratio3),
        ]),
        ("Canaries (known answers)", "canaries", "no canaries in this run", [
            ("good canaries (the reference itself)", "canaries.good.count", _plain),
            ("good: mean score", "canaries.good.mean", score2),
            ("good: lowest score", "canaries.good.min", _plain),
            ("bad canaries (an empty-looking reply)", "canaries.bad.count", _plain),
            ("bad: mean score", "canaries.bad.mean", score2),
            ("bad: highest score", "canaries.bad.max", _plain),
            ("every good above every bad", "canaries.separated", _plain),
        ]),
        ("Judge self-consistency over repeats", "self_consistency",
         "no repeats in this run", [
            ("repeats per item", "self_consistency.repeats", _plain),
            ("items compared", "self_consistency.items_compared", _plain),
            ("mean sd of an item's scores", "self_consistency.mean_sd", score2),
            ("largest sd", "self_consistency.max_sd", score2),
            ("items whose repeats differ", "self_consistency.share_differ", _percent),
        ]),
        ("Fine-tuning", "finetune", "no fine-tuning in this run", [
            ("base model", "finetune.base_model", _plain),
            ("test loss before fine-tuning", "finetune.base_test_loss", loss4),
            ("test loss after fine-tuning", "finetune.finetuned_test_loss", loss4),
            ("final validation loss", "finetune.final_val_loss", loss4),
            ("best validation loss", "finetune.best_val_loss", loss4),
            ("steps", "finetune.steps", _plain),
            ("epochs", "finetune.epochs", _plain),
            ("training time (s)", "finetune.train_seconds", _plain),
        ]),
        ("Judge", None, "", [
            ("backend", "judge.backend", _plain),
            ("model", "judge.model", _plain),
            ("digest", "judge.digest", _plain),
            ("template", "judge.template", _plain),
            ("structured output", "judge.structured", _plain),
            ("options", "judge.options", _options),
            ("repeats", "judge.repeats", _plain),
        ]),
    ]
    rows = []
    for title, optional_key, absent_text, lines in sections:
        if optional_key is not None and summary[optional_key] is None:
            rows.append((title, "", optional_key, absent_text))
            continue
        for label, key, show in lines:
            rows.append((title, label, key, show(lookup(summary, key))))
    return rows


# -- summary.md ---------------------------------------------------------------------------------

def md(text) -> str:
    """Text for a Markdown table cell: pipes escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: dict) -> str:
    lines = [f"# evalpipe run `{summary['run']}`", ""]
    if summary["note"]:
        lines += [f"**{summary['note']}**: the judge gave no usable score to any item.", ""]
    if summary.get("judge_incomplete"):
        lines += [f"**{summary['judge_incomplete']}**: the judgments in error are left out of "
                  "the numbers below; 'evalpipe judge' asks for them again.", ""]
    section = None
    for title, label, _key, text in summary_rows(summary):
        if title != section:
            lines += ([""] if section else []) + [f"## {title}", ""]
            if label:
                lines += ["| | |", "|---|---|"]
            section = title
        lines.append(f"| {md(label)} | {md(text)} |" if label else text)
    return "\n".join(lines) + "\n"


# -- report.html --------------------------------------------------------------------------------

def esc(value) -> str:
    """HTML-escape any value for text or a quoted attribute (None -> empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def embedded_png(name: str, data: bytes) -> str:
    """An <img> holding the PNG itself (a data: URI), named by its file in data-file."""
    return (f'<img data-file="{esc(name)}" alt="{esc(name)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def page(title: str, css: str, body: str, script: str = "") -> str:
    """A whole self-contained HTML page; the script runs last, when the body is there."""
    script_tag = f"<script>{script}</script>\n" if script else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{css}</style>
</head>
<body>
{body}
{script_tag}</body>
</html>
"""


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.note { background: #fde8e8; border: 1px solid #e0a0a0; padding: .5rem 1rem; font-weight: bold; }
table.numbers td, table.numbers th { padding: .15rem .8rem .15rem 0; text-align: left; }
table.numbers th { padding-top: .8rem; }
table.numbers td.value { font-variant-numeric: tabular-nums; }
.plots img { max-width: 32%; min-width: 300px; margin-right: .5rem; }
table.items { border-collapse: collapse; width: 100%; font-size: .85rem; }
table.items th, table.items td { border: 1px solid #ddd; padding: .3rem; vertical-align: top; }
table.items th { background: #f2f2f2; cursor: pointer; position: sticky; top: 0; }
table.items th[aria-sort=ascending]::after { content: " \\25B2"; }
table.items th[aria-sort=descending]::after { content: " \\25BC"; }
table.items td.text { white-space: pre-wrap; max-width: 22rem; }
tr.state-error td, tr.state-unparseable td { background: #fff4e5; }
tr.state-empty td { color: #777; }
.repeats { color: #777; font-size: .75rem; }
"""

# Sorting and filtering: numeric columns sort on data-sort, the others on their text; ties keep
# test order (data-index), so a sort is always the same whatever came before.
SCRIPT = """
(function () {
  var table = document.getElementById("items-table");
  if (!table) return;
  var body = table.tBodies[0], headers = table.tHead.rows[0].cells;
  var filter = document.getElementById("state-filter"), shown = document.getElementById("shown");
  function value(row, column, numeric) {
    var cell = row.cells[column];
    return numeric ? parseFloat(cell.getAttribute("data-sort"))
                   : cell.textContent.toLowerCase();
  }
  function sortBy(column, ascending) {
    var numeric = headers[column].getAttribute("data-type") === "number";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, column, numeric), y = value(b, column, numeric);
      var order = x < y ? -1 : x > y ? 1 : 0;
      if (!ascending) order = -order;
      return order || (parseInt(a.getAttribute("data-index"), 10) -
                       parseInt(b.getAttribute("data-index"), 10));
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < headers.length; i++) headers[i].removeAttribute("aria-sort");
    headers[column].setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(headers, function (header, column) {
    header.addEventListener("click", function () {
      sortBy(column, header.getAttribute("aria-sort") !== "ascending");
    });
  });
  function applyFilter() {
    var state = filter.value, count = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      row.hidden = state !== "" && row.getAttribute("data-state") !== state;
      if (!row.hidden) count++;
    });
    shown.textContent = count;
  }
  filter.addEventListener("change", applyFilter);
})();
"""

# The item table's columns: (heading, data-type); the score column starts sorted ascending.
COLUMNS = (("#", "number"), ("id", "text"), ("instruction", "text"), ("input", "text"),
           ("reference", "text"), ("response", "text"), ("state", "text"),
           ("score", "number"), ("judge's reason", "text"), ("overlap F1", "number"))
SCORE_COLUMN = 7
NO_SCORE_SORT = -1  # error/unparseable sort below score 0: worst first puts them on top


def worst_first(items: list[dict]) -> list[dict]:
    """Items without a score first (in test order), then by score ascending, ties in test
    order: the report's default order, the same the page's own sort gives on the score
    column."""
    return sorted(items, key=lambda item: (NO_SCORE_SORT if item["score"] is None
                                           else item["score"], item["index"]))


def _value_cell(key: str, value, text: str) -> str:
    return (f'<td class="value" data-key="{esc(key)}" '
            f'data-value="{esc(json.dumps(value, ensure_ascii=False))}">{esc(text)}</td>')


def _summary_table(summary: dict) -> str:
    parts = ['<table class="numbers">']
    section = None
    for title, label, key, text in summary_rows(summary):
        if title != section:
            parts.append(f'<tr><th colspan="2">{esc(title)}</th></tr>')
            section = title
        value = lookup(summary, key)
        parts.append(f"<tr><td>{esc(label)}</td>{_value_cell(key, value, text)}</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _item_row(item: dict) -> str:
    score = item["score"]
    score_text = esc("—" if score is None else score)
    if item["repeat_scores"]:
        repeats = ", ".join("—" if s is None else str(s) for s in item["repeat_scores"])
        score_text += f'<div class="repeats">repeats: {esc(repeats)}</div>'
    reason = item["reason"]
    if reason is None and item["state"] == "error":
        reason = f"error: {item['error']}"  # why there is no score is what the reader needs here
    response = item["response"]
    cells = [
        f'<td data-sort="{item["index"] + 1}">{item["index"] + 1}</td>',
        f'<td class="id">{esc(item["id"])}</td>',
        f'<td class="text">{esc(item["instruction"])}</td>',
        f'<td class="text">{esc(item["input"])}</td>',
        f'<td class="text">{esc(item["reference"])}</td>',
        f'<td class="text">{esc(response) if response is not None else "<em>(none)</em>"}</td>',
        f'<td>{esc(item["state"])}</td>',
        f'<td data-sort="{NO_SCORE_SORT if score is None else score}">{score_text}</td>',
        f'<td class="text">{esc(reason)}</td>',
        f'<td data-sort="{item["f1"]:.6f}">{item["f1"]:.3f}</td>',
    ]
    return (f'<tr data-id="{esc(item["id"])}" data-state="{esc(item["state"])}" '
            f'data-index="{item["index"]}" class="state-{esc(item["state"])}">'
            + "".join(cells) + "</tr>")


def _items_table(summary: dict, items: list[dict]) -> str:
    if not items:
        return "<p>no items in this run</p>"
    options = ['<option value="">all states</option>'] + [
        f'<option value="{state}">{state} ({summary["states"][state]})</option>'
        for state in STATES]
    headers = "".join(
        f'<th data-type="{kind}"'
        + (' aria-sort="ascending"' if column == SCORE_COLUMN else "")
        + f">{esc(heading)}</th>"
        for column, (heading, kind) in enumerate(COLUMNS))
    rows = "\n".join(_item_row(item) for item in worst_first(items))
    return (f'<p><label>show <select id="state-filter">{"".join(options)}</select></label> '
            f'<span id="shown">{len(items)}</span> of {len(items)} items; worst first '
            "(no score, then lowest score); click a column heading to sort</p>\n"
            f'<table class="items" id="items-table"><thead><tr>{headers}</tr></thead>\n'
            f"<tbody>\n{rows}\n</tbody></table>")


def _canary_table(canaries: list[dict]) -> str:
    if not canaries:
        return ""
    rows = "\n".join(
        f'<tr data-canary="{esc(c["canary"])}"><td>{esc(c["canary"])}</td>'
        f'<td>{esc(c.get("item_id"))}</td><td>{esc(c["state"])}</td>'
        f'<td>{esc("—" if c["score"] is None else c["score"])}</td></tr>'
        for c in canaries)
    return ("<h2>Canaries</h2>\n<table class=\"items\"><thead><tr><th>kind</th><th>item</th>"
            f"<th>state</th><th>score</th></tr></thead>\n<tbody>\n{rows}\n</tbody></table>")


def render_html(summary: dict, items: list[dict], canaries: list[dict],
                images: dict[str, bytes]) -> str:
    """The whole report as one string; `images` maps each PNG's file name to its bytes."""
    note = (f'<p class="note" data-key="note" data-value="{esc(json.dumps(summary["note"]))}">'
            f'{esc(summary["note"])}</p>' if summary["note"] else "")
    incomplete = summary.get("judge_incomplete")
    if incomplete:
        note += (f'\n<p class="note" data-key="judge_incomplete" '
                 f'data-value="{esc(json.dumps(incomplete))}">{esc(incomplete)}: the judgments '
                 "in error are left out of the numbers below; 'evalpipe judge' asks for them "
                 "again.</p>")
    run_name = (f'<span data-key="run" data-value="{esc(json.dumps(summary["run"]))}">'
                f'{esc(summary["run"])}</span>')
    plots = "\n".join(embedded_png(name, data) for name, data in images.items())
    body = f"""<h1>evalpipe report: run {run_name}</h1>
{note}
<h2>Summary</h2>
{_summary_table(summary)}
<h2>Plots</h2>
<div class="plots">
{plots}
</div>
{_canary_table(canaries)}
<h2>Items</h2>
{_items_table(summary, items)}"""
    return page(f"evalpipe report: {summary['run']}", CSS, body, SCRIPT)
