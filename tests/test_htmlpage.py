"""Tests for onecycle.htmlpage: how numbers are shown, and the self-contained page (escaped text,
PNGs embedded at their CSS size, written atomically)."""

from __future__ import annotations

import base64
import math
import struct
import zlib

import pytest

from onecycle.htmlpage import Page, fact, fmt_seconds, fmt_value, png_css_width


@pytest.mark.parametrize("seconds, text", [(0.42, "0.42 s"), (9.999, "10.00 s"), (12.34, "12.3 s"), (59.9, "59.9 s"),
                                           (125, "2 min 05 s"), (math.nan, "-"), ("x", "-"), (None, "-")])
def test_fmt_seconds_gives_the_unit(seconds, text):
    assert fmt_seconds(seconds) == text


@pytest.mark.parametrize("name, value, text", [
    ("accuracy", 0.93125, "93.12%"), ("val_loss", 0.123456, "0.1235"), ("lr", 0.012345, "0.0123"),
    ("lr_max", 3e-4, "0.0003"), ("epoch", 3.0, "3"), ("epochs", 20, "20"), ("n_params", 1234, "1234"),
    ("time", 12.3, "12.3 s"), ("train_seconds", 0.5, "0.50 s"), ("accuracy", 1.5, "1.5000"), ("accuracy", 1, "100.00%"),
    ("x", None, "-"), ("x", True, "True"), ("x", "adamw", "adamw"), ("val_loss", math.nan, "nan"),
])
def test_fmt_value_formats_by_column(name, value, text):
    assert fmt_value(name, value) == text


def _png(width: int, dpi: float | None) -> bytes:
    """A PNG's signature and header chunk (and a pHYs chunk holding ``dpi``), enough for its size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, 10, 8, 2, 0, 0, 0))
    if dpi is not None:
        per_metre = round(dpi / 0.0254)
        data += chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
    return data


def test_png_css_width_halves_a_2x_png():
    assert png_css_width(_png(2200, 200)) == 1100  # saved at 2x: shown at half its pixels
    assert png_css_width(_png(640, 100)) == 640
    assert png_css_width(_png(640, None)) == 640  # no pHYs: its pixels


def test_page_escapes_embeds_and_writes_one_file(tmp_path):
    (tmp_path / "p.png").write_bytes(_png(400, 200))
    page = Page("<run> & co", status="failed")
    page.heading("a < b")
    page.table(["run", "accuracy"], [["<x>", 0.5], ["y", 0.25]], links=["<x>/report.html", ""], best_row=0)
    page.image(tmp_path / "p.png", 'the "plot"')
    page.raw(fact("lr", 0.01, "0.01"))
    out = page.write(tmp_path / "sub" / "report.html")
    text = out.read_text()
    assert "<h1>&lt;run&gt; &amp; co" in text and '<span class="status failed">failed</span>' in text
    assert "<h2>a &lt; b</h2>" in text and "<x>" not in text
    assert '<tr class="best"><td class="t"><a href="&lt;x&gt;/report.html">&lt;x&gt;</a></td><td>50.00%</td>' in text
    assert "<td>25.00%</td>" in text
    uri = "data:image/png;base64," + base64.b64encode(_png(400, 200)).decode()
    assert f'<img src="{uri}" width="200" alt="the &quot;plot&quot;">' in text
    assert '<span data-key="lr" data-value="0.01">0.01</span>' in text
    assert "http" not in text.lower() and "<script" not in text.lower()  # self-contained
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temp file left
    (tmp_path / "fake.png").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="fake.png is not a PNG file"):
        page.image(tmp_path / "fake.png", "x")
