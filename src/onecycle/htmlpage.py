"""One self-contained HTML page (``Page``: headings, tables, PNGs embedded as base64 data URIs, text; no
script, no external URL, so it opens offline and makes no network request) and how numbers are shown
in it and in the terminal (``fmt_value``, ``fmt_seconds``). A run's page is built in ``report.py``, a
grid's in ``compare_report.py``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .metrics import is_fraction

__all__ = ["Page", "fact", "png_css_width", "fmt_value", "fmt_seconds"]

# ---- numbers ---------------------------------------------------------------------------------------
def fmt_seconds(s: Any) -> str:
    """A duration with its unit: ``0.42 s``, ``12.3 s``, ``2 min 05 s``."""
    if not isinstance(s, (int, float)) or math.isnan(s):
        return "-"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60):02d} s"


def fmt_value(name: str, v: Any) -> str:
    """``v`` formatted for a column named ``name``: losses to 4 decimals, accuracy-like metrics as a
    percentage to 2 decimals, times with their unit, LRs to 3 significant digits, counts whole."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if math.isnan(v):
        return "nan"
    if name in ("epoch", "iterations", "epochs") or isinstance(v, int) and not is_fraction(name):
        return f"{int(v)}"
    if name in ("time", "seconds") or name.endswith("seconds"):
        return fmt_seconds(v)
    if name == "lr" or name.startswith("lr_"):
        return f"{v:.3g}"
    if is_fraction(name) and -1e-9 <= v <= 1 + 1e-9:
        return f"{100 * v:.2f}%"
    return f"{v:.4f}"



# ---- HTML --------------------------------------------------------------------------------------------
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;"
    "line-height:1.4}h1{font-size:1.45em;margin:.2em 0 .6em}h2{font-size:1.15em;margin:1.6em 0 .4em;"
    "border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0;font-size:14px}"
    "td,th{border:1px solid #d4d4d4;padding:3px 9px;text-align:right;font-variant-numeric:tabular-nums;"
    "white-space:nowrap}td.t{white-space:normal}"
    "th{background:#f3f3f3}td:first-child,th:first-child,td.t,th.t{text-align:left}tr.best td{background:#eef7ee}"
    "figure{margin:1em 0}img{display:block;max-width:100%;height:auto}figcaption{color:#555;font-size:13px}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12.5px}"
    ".card{border:1px solid #cfd8e3;background:#f8fafc;border-radius:8px;padding:1em 1.3em;margin:0 0 1em}"
    ".card dl{display:grid;grid-template-columns:8.5em 1fr;gap:.45em 1em;margin:0}.card dt{color:#555}"
    ".card dd{margin:0}.card b{font-size:1.1em}.card pre{margin:0;padding:.4em .6em;white-space:pre-wrap;"
    "word-break:break-all;background:#fff;border:1px solid #ddd;user-select:all}"
    ".status{display:inline-block;padding:0 .5em;border-radius:4px;font-size:.8em;vertical-align:middle;"
    "background:#dfd;color:#161}.status.failed,.status.interrupted{background:#fdd;color:#911}"
    ".bar{display:flex;height:14px;border-radius:3px;overflow:hidden;margin:.3em 0;max-width:640px}"
    ".bar span{display:block;height:100%}.key{display:inline-block;width:.8em;height:.8em;margin:0 .25em 0 .7em;"
    "vertical-align:-.05em;border-radius:2px}.key:first-child{margin-left:0}.muted{color:#666}"
    ".warn{background:#fff4d6;border:1px solid #e5c46b;padding:.5em .8em;border-radius:4px}"
    "details summary{cursor:pointer;color:#345}.scroll{overflow-x:auto;max-width:100%}"
    ".small{font-size:12.5px}table.wrap td.t{white-space:normal;min-width:7em}table.wrap th{white-space:normal}"
    "td.top{font-weight:bold}"
    "td.top::after{content:' \\2605';color:#c90}")


def fact(key: str, value: Any, text: str, tag: str = "span") -> str:
    """A value shown as ``text`` that carries the exact ``value`` of ``result.json``'s ``key`` (as JSON)."""
    value = html.escape(json.dumps(value), quote=True)
    return f'<{tag} data-key="{html.escape(key)}" data-value="{value}">{html.escape(text)}</{tag}>'


class Page:
    """A self-contained HTML page built from headings, tables, images and preformatted text."""

    def __init__(self, title: str, status: str | None = None) -> None:
        badge = f' <span class="status {html.escape(status)}">{html.escape(status)}</span>' if status else ""
        self.title, self.parts = title, [f"<h1>{html.escape(title)}{badge}</h1>"]

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def para(self, text: str, cls: str = "") -> None:
        self.parts.append(f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], links: Sequence[str] | None = None,
              kinds: Sequence[str] | None = None, best_row: int | None = None, wrap: bool = False,
              best_cells: Sequence[tuple[int, int]] = ()) -> None:
        """``kinds[i]``: the column name that picks column ``i``'s number format (its header by default);
        a cell may be ready markup as ``("html", markup)``. ``wrap``: text cells wrap and the table
        scrolls inside the page rather than spill out of it. ``best_cells``: (row, column) of cells to
        mark as the best of their column."""
        kinds = list(kinds or header)
        text = [_is_text(v) for v in rows[0]] if rows else [False] * len(header)
        head = "".join(f'<th class="t">{html.escape(str(h))}</th>' if t else f"<th>{html.escape(str(h))}</th>"
                       for h, t in zip(header, text))
        body = []
        for i, row in enumerate(rows):
            cells = [v[1] if isinstance(v, tuple) and v[:1] == ("html",) else html.escape(fmt_value(k, v))
                     for k, v in zip(kinds, row)]
            if links and links[i]:
                cells[0] = f'<a href="{html.escape(links[i])}">{cells[0]}</a>'
            words = [_is_text(v) for v in row]  # text reads from the left
            cls = ' class="best"' if i == best_row else ""
            marks = {j for r, j in best_cells if r == i}
            body.append(f"<tr{cls}>" + "".join(_td(c, w, j in marks) for j, (c, w) in enumerate(zip(cells, words)))
                        + "</tr>")
        table = ('<table class="wrap">' if wrap else "<table>") + f"<tr>{head}</tr>{''.join(body)}</table>"
        self.parts.append(f'<div class="scroll">{table}</div>' if wrap else table)

    def image(self, path: Path, caption: str) -> None:
        """A PNG embedded as a data URI, shown at its natural size (a 2x PNG at half its pixels, so it
        is sharp on a 2x display) and never wider than the column."""
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"{path} is not a PNG file")
        width = png_css_width(data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self.parts.append(f'<figure><img src="{uri}" width="{width}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def details(self, summary: str, text: str) -> None:
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre>"
                          "</details>")

    def write(self, path: Path) -> Path:
        page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
                f"<body>{''.join(self.parts)}</body></html>\n")
        atomic_write_text(path, page)
        return path


def _td(markup: str, text: bool, best: bool) -> str:
    """A cell: text aligned left (class ``t``), the best of its column marked (class ``top``)."""
    classes = " ".join(k for k, on in (("t", text), ("top", best)) if on)
    return f'<td class="{classes}">{markup}</td>' if classes else f"<td>{markup}</td>"


def _is_text(v: Any) -> bool:
    """Words (aligned left): a string that does not start as a number, or ready markup."""
    return isinstance(v, str) and not _numeric(v) or isinstance(v, tuple) and v[:1] == ("html",)


def _numeric(text: str) -> bool:
    """A cell that starts as a number does (``0.93 ± 0.01``, ``91.00%``, ``2/3``, ``10.7 s``): aligned right."""
    return bool(text) and text[0] in "0123456789-+."


def png_css_width(data: bytes) -> int:
    """A PNG's width in CSS pixels: its pixels at 100 dpi, matplotlib's 1x (its ``pHYs`` chunk holds
    the dpi it was saved at: a 2x PNG has 200)."""
    width = struct.unpack(">I", data[16:20])[0]
    at = data.find(b"pHYs")
    if at > 0:
        per_metre, unit = struct.unpack(">I", data[at + 4:at + 8])[0], data[at + 12]
        if unit == 1 and per_metre > 0:
            return max(1, round(width * 100 / (per_metre * 0.0254)))
    return width

