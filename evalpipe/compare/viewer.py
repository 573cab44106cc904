"""What both compare.html pages share (evalpipe/compare/html.py for single and together mode,
evalpipe/compare/pairwise.py for pairwise mode): the style, the item viewer's frame (a test
item's task, the select boxes), and the link from a model's name in the page's first table to
the viewer filtered to that model.

Each page's script defines `filterItems()`, which reads the controls (`#model-filter`,
`#state-filter`, `#filter`, ...) and shows the items and parts that match; SHOW_MODEL_SCRIPT
sets `#model-filter` and calls it.
"""

from __future__ import annotations

from evalpipe.report.html import esc

PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
"""

VIEWER_CSS = """
a.show-model { font-weight: bold; white-space: nowrap; }
.viewer-controls { position: sticky; top: 0; background: #fff; padding: 0.4em 0;
                   border-bottom: 1px solid #ccc; z-index: 1; }
.item { border-top: 2px solid #888; margin-top: 1.5em; padding-top: 0.5em;
        content-visibility: auto; contain-intrinsic-size: auto 24em; }
.item h3 .disagreement { font-weight: normal; color: #a12; font-size: 0.85em; }
.responses { display: flex; flex-wrap: wrap; gap: 1em; }
.response { flex: 1 1 18em; border: 1px solid #ccc; padding: 0.5em; }
.response pre, .reference pre { white-space: pre-wrap; margin: 0.3em 0; }
.state-unparseable, .state-error { background: #fdecea; }
.state-empty { background: #f5f5f5; }
"""

# A model's name (a.show-model) chooses that model in the viewer and scrolls to it.
SHOW_MODEL_SCRIPT = """
for (const link of document.querySelectorAll('a.show-model')) {
  link.addEventListener('click', function (event) {
    event.preventDefault();
    document.getElementById('model-filter').value = link.dataset.showModel;
    filterItems();
    document.getElementById('viewer').scrollIntoView();
  });
}
"""


def model_link(model: str, text: str) -> str:
    """A model's name that opens the viewer filtered to it."""
    return (f'<a href="#viewer" class="show-model" data-show-model="{esc(model)}" '
            f'title="show its responses">{esc(text)}</a>')


def options(values, labels=None) -> str:
    """<option>s of a select box; `labels` the text shown for each value (default: itself)."""
    labels = labels or {}
    return "".join(f'<option value="{esc(value)}">{esc(labels.get(value, value))}</option>'
                   for value in values)


def task_html(record: dict) -> str:
    """A test item's instruction, input (when it has one) and reference answer."""
    input_part = f"<p><b>Input:</b> {esc(record['input'])}</p>" if record["input"] else ""
    return (f"<p><b>Instruction:</b> {esc(record['instruction'])}</p>{input_part}"
            f"<div class=\"reference\"><b>Reference:</b><pre>{esc(record['output'])}</pre></div>")
