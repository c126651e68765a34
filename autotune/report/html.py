"""One self-contained HTML page: the PNGs embedded as base64, Optuna's interactive plots with
plotly's JavaScript inlined once, the trials table. Opens offline, can be mailed as one file."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table.summary td { padding: 2px 14px 2px 0; vertical-align: top; }
table.trials { border-collapse: collapse; font-size: 12px; }
table.trials th, table.trials td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; font-size: 13px; }
"""


def png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def page(title: str, summary: list[tuple[str, str]], sections: list[tuple[str, str, str]]) -> str:
    """`sections`: (heading, explanatory note, body HTML)."""
    rows = "\n".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in summary)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", f'<table class="summary">{rows}</table>']
    for heading, note, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        parts.append(body)
    parts.append("</body></html>")
    return "\n".join(parts)


class PlotlyEmbedder:
    """Plotly figures as HTML fragments; the first one carries plotly.js inline, the rest reuse it."""

    def __init__(self) -> None:
        self._included = False

    def __call__(self, figure: Any) -> str:
        fragment = figure.to_html(full_html=False, include_plotlyjs=not self._included,
                                  config={"displaylogo": False})
        self._included = True
        return fragment
