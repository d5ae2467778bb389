"""The pieces both HTML pages share (the model report and the programme's performance page): one style sheet,
tables of numbers and PNG images embedded in the page."""

from __future__ import annotations

import base64
import io
from html import escape

from matplotlib.figure import Figure

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.3em .6em}td.n{text-align:right}img{max-width:100%}"
    ".cards span{display:inline-block;border:1px solid #ccc;padding:.5em 1em;margin:.2em}"
    "dt{font-weight:bold;float:left;clear:left;width:9em}dd{margin:0 0 .3em 10em}"
)


def html_table(columns: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells after the first column are right-aligned numbers."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i else ''}>{escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def png(figure: Figure) -> bytes:
    """A figure as PNG bytes."""
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=90, bbox_inches="tight")
    return out.getvalue()


def embed_png(alt: str, data: bytes) -> str:
    """An <img> element carrying PNG bytes in the page itself."""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
