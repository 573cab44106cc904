"""Building blocks of the self-contained HTML pages (report.html and compare.html): escaping,
embedded PNGs, the page frame, and the script both pages share to sort their tables.

Every page's script ends by writing `data-ready-ms` on <body>: the time (performance.now(), ms
after the page began to load) at which the whole body was parsed and every table was made
interactive. The browser tests hold it under 2 s for a large comparison (tests/report/
test_pages_in_browser.py).
"""

from __future__ import annotations

import base64
import html


def esc(value) -> str:
    """HTML-escape any value for text or a quoted attribute (None -> empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def embedded_png(name: str, data: bytes) -> str:
    """An <img> holding the PNG itself (a data: URI), named by its file in data-file."""
    return (f'<img data-file="{esc(name)}" alt="{esc(name)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


# Any <table class="sortable">: click a heading to sort by its column, click again to reverse.
# A heading with data-type="number" sorts its cells on data-sort (or their text) as numbers,
# cells without a number last; the others sort on their text. Ties keep the rows' data-index
# order, so a sort is always the same whatever came before. Each row's key is read once per
# sort and the rows move in one fragment: a table of thousands of rows stays quick.
SORTABLE_CSS = """
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
"""

SORTABLE_SCRIPT = """
(function () {
  function cellKey(cell, numeric) {
    if (!cell) return numeric ? NaN : "";
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    return numeric ? parseFloat(raw) : raw.toLowerCase();
  }
  function sortTable(table, column, ascending) {
    var headers = table.tHead.rows[0].cells, body = table.tBodies[0];
    var numeric = headers[column].getAttribute("data-type") === "number";
    var keyed = Array.prototype.map.call(body.rows, function (row, position) {
      var index = row.hasAttribute("data-index") ? parseInt(row.getAttribute("data-index"), 10)
                                                 : position;
      return {row: row, key: cellKey(row.cells[column], numeric), index: index};
    });
    keyed.sort(function (a, b) {
      var order;
      if (numeric && (isNaN(a.key) || isNaN(b.key))) {
        order = isNaN(a.key) - isNaN(b.key);  // no number: last, whichever way
        if (order) return order;
      } else {
        order = a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
        if (!ascending) order = -order;
      }
      return order || a.index - b.index;
    });
    var fragment = document.createDocumentFragment();
    keyed.forEach(function (entry) { fragment.appendChild(entry.row); });
    body.appendChild(fragment);
    for (var i = 0; i < headers.length; i++) headers[i].removeAttribute("aria-sort");
    headers[column].setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.setAttribute("title", "sort by this column");
      header.addEventListener("click", function () {
        sortTable(table, column, header.getAttribute("aria-sort") !== "ascending");
      });
    });
  });
})();
"""

READY_SCRIPT = """
document.body.setAttribute("data-ready-ms", performance.now().toFixed(0));
"""


def page(title: str, css: str, body: str, script: str = "") -> str:
    """A whole self-contained HTML page; the script runs last, when the body is there, and
    ends by marking the page ready (`data-ready-ms`)."""
    script_tag = f"<script>{script}{READY_SCRIPT}</script>\n"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{css}</style>
</head>
<body>
{body}
{script_tag}</body>
</html>
"""
