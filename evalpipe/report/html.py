"""Building blocks of the self-contained HTML pages: escaping, embedded PNGs, the page frame."""

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
