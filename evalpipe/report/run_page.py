"""What the aggregate stage shows: PNG plots, summary.md, and report.html.

report.html is one static file that opens offline with no server and can be mailed or attached
on its own: CSS and JavaScript are inline and the plots are embedded as base64 `data:` URIs (the
same PNGs are also written beside it, for slides and pull requests). Its first screen answers
the question: the mean score with its interval in large type, the state counts (unparseable and
error in red when not zero), who judged (model and digest), the base model and its fine-tuning
losses, and a red line when the judge failed its canaries. Then the plots; then a table of every
item, sortable by any column (click a header; click again to reverse) and filterable by state;
then the canaries and, last, every number of summary.json in one table.

The item table starts worst first: items without a score (`error`, `unparseable`) at the top,
because they need a look before any number can be trusted; then by score, lowest first; ties in
test order. Every text from the data is HTML-escaped: a response may well contain `<script>`.

Hooks for tests and scripts: every summary number sits in the numbers table in an element with
`data-key="<dotted key in summary.json>"` and `data-value="<its JSON value>"` (one per key);
the first screen's figures carry `data-headline="<key>"` and `data-value` instead; every item
row is a `<tr data-id="<id>" data-state="<state>">`; every plot is an `<img data-file="<png
name>">`; <body data-ready-ms> is set when the page is interactive (report/html.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from evalpipe import stats
from evalpipe.records import STATES
from evalpipe.report.format import (
    interval,
    level,
    lookup,
    loss4,
    md,
    md_code,
    options_text,
    percent,
    plain,
    ratio3,
    score2,
)
from evalpipe.report.html import SORTABLE_CSS, SORTABLE_SCRIPT, embedded_png, esc, page

# -- the summary rows, shared by summary.md and report.html ---------------------------------------

def summary_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(section, label, key, shown text) for every number worth a line. A section that is null
    in summary.json (no canaries: canaries.good, no repeats, no fine-tuning) gets one line
    saying so."""
    score = summary["score"]
    confidence = level(score["confidence"])
    sections: list[tuple[str, str | None, str, list[tuple[str, str, Callable]]]] = [
        ("Items", None, "", [
            ("items", "items", plain),
            *((f"{state}", f"states.{state}", plain) for state in STATES),
        ]),
        ("Judge score (scored + empty items)", None, "", [
            ("items with a score", "score.n", plain),
            ("mean", "score.mean", score2),
            (f"{confidence} bootstrap CI of the mean ({score['resamples']} resamples, "
             f"seed {score['seed']})", "score.ci", interval),
            ("median", "score.median", score2),
            ("standard deviation (sample)", "score.sd", score2),
            ("lowest", "score.min", plain),
            ("highest", "score.max", plain),
        ]),
        ("The book's average (empty counts 0, failures dropped)", None, "", [
            ("book's average", "book_average.average", score2),
            ("items counted", "book_average.counted", plain),
            ("failures dropped", "book_average.dropped", plain),
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
        ("Canaries (known answers)", "canaries.good", "no canaries in this run", [
            ("good canaries (the reference itself)", "canaries.good.count", plain),
            ("good: mean score", "canaries.good.mean", score2),
            ("good: lowest score", "canaries.good.min", plain),
            ("bad canaries (an empty-looking reply)", "canaries.bad.count", plain),
            ("bad: mean score", "canaries.bad.mean", score2),
            ("bad: highest score", "canaries.bad.max", plain),
            ("every good above every bad", "canaries.separated", plain),
        ]),
        ("Judge self-consistency over repeats", "self_consistency",
         "no repeats in this run", [
            ("repeats per item", "self_consistency.repeats", plain),
            ("items compared", "self_consistency.items_compared", plain),
            ("mean sd of an item's scores", "self_consistency.mean_sd", score2),
            ("largest sd", "self_consistency.max_sd", score2),
            ("items whose repeats differ", "self_consistency.share_differ", percent),
        ]),
        ("Fine-tuning", "finetune", "no fine-tuning in this run", [
            ("base model", "finetune.base_model", plain),
            ("test loss before fine-tuning", "finetune.base_test_loss", loss4),
            ("test loss after fine-tuning", "finetune.finetuned_test_loss", loss4),
            ("final validation loss", "finetune.final_val_loss", loss4),
            ("best validation loss", "finetune.best_val_loss", loss4),
            ("steps", "finetune.steps", plain),
            ("epochs", "finetune.epochs", plain),
            ("training time (s)", "finetune.train_seconds", plain),
        ]),
        ("Judge", None, "", [
            ("backend", "judge.backend", plain),
            ("model", "judge.model", plain),
            ("digest", "judge.digest", plain),
            ("template", "judge.template", plain),
            ("structured output", "judge.structured", plain),
            ("options", "judge.options", options_text),
            ("repeats", "judge.repeats", plain),
        ]),
    ]
    rows = []
    for title, optional_key, absent_text, lines in sections:
        if optional_key is not None and lookup(summary, optional_key) is None:
            rows.append((title, "", optional_key, absent_text))
            continue
        for label, key, show in lines:
            rows.append((title, label, key, show(lookup(summary, key))))
    return rows


# -- summary.md ---------------------------------------------------------------------------------

def render_markdown(summary: dict) -> str:
    lines = [f"# evalpipe run {md_code(summary['run'])}", ""]
    if summary["canaries"]["failed"]:  # before any number: the numbers mean nothing
        lines += [f"**WARNING: {stats.canary_warning(summary['canaries']['why'])}.**", ""]
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

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: .5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.note { background: #fde8e8; border: 1px solid #e0a0a0; padding: .5rem 1rem; font-weight: bold; }
.alarm { color: #b00; font-weight: bold; font-size: 1.1rem; border-left: 4px solid #b00;
         padding: .3rem .8rem; margin: .5rem 0; }
.first-screen { display: flex; flex-wrap: wrap; gap: 1rem 3rem; align-items: flex-start;
                margin: 1rem 0; }
.headline .big { font-size: 3.2rem; font-weight: bold; font-variant-numeric: tabular-nums; }
.headline .ci { font-size: 1.6rem; color: #444; margin-left: .4rem;
                font-variant-numeric: tabular-nums; }
.headline .caption { color: #555; font-size: .9rem; }
ul.states { list-style: none; padding: 0; margin: .4rem 0 0; display: flex; gap: 1.2rem; }
ul.states li { font-size: 1.05rem; } ul.states b { font-size: 1.3rem; }
ul.states li.bad { color: #b00; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; margin: 0; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
dl.facts code { font-size: .8rem; word-break: break-all; }
table.numbers td, table.numbers th { padding: .15rem .8rem .15rem 0; text-align: left; }
table.numbers th { padding-top: .8rem; }
table.numbers td.value { font-variant-numeric: tabular-nums; }
.plots img { max-width: 32%; min-width: 300px; margin-right: .5rem; }
table.items { border-collapse: collapse; width: 100%; font-size: .85rem; }
table.items th, table.items td { border: 1px solid #ddd; padding: .3rem; vertical-align: top; }
table.items th { background: #f2f2f2; position: sticky; top: 0; }
table.items td.text { white-space: pre-wrap; max-width: 22rem; }
tr.state-error td, tr.state-unparseable td { background: #fff4e5; }
tr.state-empty td { color: #777; }
.repeats { color: #777; font-size: .75rem; }
""" + SORTABLE_CSS

# Sorting is the shared script's (report/html.py); filtering by state is this page's own.
SCRIPT = SORTABLE_SCRIPT + """
(function () {
  var table = document.getElementById("items-table");
  if (!table) return;
  var body = table.tBodies[0];
  var filter = document.getElementById("state-filter"), shown = document.getElementById("shown");
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
FAILED_STATES = ("unparseable", "error")  # shown in red on the first screen when not zero


def worst_first(items: list[dict]) -> list[dict]:
    """Items without a score first (in test order), then by score ascending, ties in test
    order: the report's default order, the same the page's own sort gives on the score
    column."""
    return sorted(items, key=lambda item: (NO_SCORE_SORT if item["score"] is None
                                           else item["score"], item["index"]))


def _value_cell(key: str, value, text: str) -> str:
    return (f'<td class="value" data-key="{esc(key)}" '
            f'data-value="{esc(json.dumps(value, ensure_ascii=False))}">{esc(text)}</td>')


def _headline(key: str, value, text: str, tag: str = "span", css: str = "") -> str:
    """A first-screen figure: `data-headline` names its key in summary.json (data-key stays
    the numbers table's, one element per key)."""
    css_attr = f' class="{css}"' if css else ""
    return (f'<{tag}{css_attr} data-headline="{esc(key)}" '
            f'data-value="{esc(json.dumps(value, ensure_ascii=False))}">{text}</{tag}>')


def canary_alarm(summary: dict) -> str:
    """The red line when the judge failed its canaries (summary.json's `canaries.failed`; a
    summary written before that key existed has none, and gets no line)."""
    canaries = summary.get("canaries") or {}
    if not canaries.get("failed"):
        return ""
    why = canaries.get("why")
    text = "The judge failed its canaries" + (f": {why}" if why else "") + \
        ". Its scores cannot be trusted."
    return _headline("canaries.why", why, esc(text), tag="p", css="alarm")


def _first_screen(summary: dict) -> str:
    """What a reader wants first: the score and its interval, the states, who judged, and the
    base model with its fine-tuning losses."""
    score = summary["score"]
    mean = _headline("score.mean", score["mean"], esc(score2(score["mean"])), css="big")
    ci = _headline("score.ci", score["ci"], esc(interval(score["ci"])), css="ci")
    caption = (f"mean judge score with its {level(score['confidence'])} bootstrap interval, "
               f"over the {score['n']} of {summary['items']} items that carry a score")
    states = "".join(
        _headline(f"states.{state}", count, f"{esc(state)} <b>{count}</b>", tag="li",
                  css="bad" if state in FAILED_STATES and count else "")
        for state, count in summary["states"].items())
    judge = summary["judge"]
    facts = [("judge", f'{_headline("judge.model", judge["model"], esc(plain(judge["model"])))}'
              f' <small>({esc(judge["backend"])}, template {esc(judge["template"])})</small>'),
             ("judge digest", _headline("judge.digest", judge["digest"],
                                        f'<code>{esc(plain(judge["digest"]))}</code>'))]
    finetune = summary["finetune"]
    if finetune is None:
        facts.append(("base model", "no fine-tuning in this run"))
    else:
        facts += [
            ("base model", _headline("finetune.base_model", finetune["base_model"],
                                     esc(plain(finetune["base_model"])))),
            ("test loss", _headline("finetune.base_test_loss", finetune["base_test_loss"],
                                    esc(loss4(finetune["base_test_loss"])))
             + " before, "
             + _headline("finetune.finetuned_test_loss", finetune["finetuned_test_loss"],
                         esc(loss4(finetune["finetuned_test_loss"])))
             + " after fine-tuning"),
            ("validation loss", _headline("finetune.best_val_loss", finetune["best_val_loss"],
                                          esc(loss4(finetune["best_val_loss"])))
             + f" best, {esc(loss4(finetune['final_val_loss']))} final "
             f"({esc(finetune['steps'])} steps)"),
        ]
    rows = "".join(f"<dt>{esc(label)}</dt><dd>{value}</dd>" for label, value in facts)
    return (f'<section class="first-screen" id="first-screen">\n'
            f'<div class="headline">{mean}{ci}<div class="caption">{esc(caption)}</div>\n'
            f'<ul class="states">{states}</ul></div>\n'
            f'<dl class="facts">{rows}</dl>\n</section>')


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
            f'<table class="items sortable" id="items-table"><thead><tr>{headers}</tr></thead>\n'
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
{canary_alarm(summary)}
{_first_screen(summary)}
<h2>Plots</h2>
<div class="plots">
{plots}
</div>
<h2>Items</h2>
{_items_table(summary, items)}
{_canary_table(canaries)}
<h2>All the numbers</h2>
{_summary_table(summary)}"""
    return page(f"evalpipe report: {summary['run']}", CSS, body, SCRIPT)
