"""Progress in a Jupyter notebook: HTML updated in place instead of carriage-return text, which a
notebook cell cannot rewrite. ``in_notebook`` says whether the code runs in a kernel with a front
end (IPython's ``ZMQInteractiveShell``: Jupyter, VS Code, Colab); ``FitView`` is a fit's bar and its
epoch table in one display updated as the fit runs; ``FinderView`` the range test's bar.

IPython is imported only when a kernel already loaded it (``sys.modules``), so plain Python pays
nothing. Updates are throttled (``interval`` seconds), and reading a loss value (a host sync on a
GPU) happens only in those updates.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["in_notebook", "FitView", "FinderView", "table_html"]


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (an IPython shell with a kernel behind it)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _html(markup: str) -> Any:
    from IPython.display import HTML
    return HTML(markup)


def _bar(done: int, total: int, text: str) -> str:
    return (f'<div style="font-family:monospace;font-size:12.5px"><progress value="{done}" max="{max(total, 1)}" '
            f'style="width:320px;vertical-align:middle"></progress> {html.escape(text)}</div>')


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain HTML table of ready-formatted cells, numbers aligned right."""
    head = "".join(f'<th style="text-align:right;padding:1px 8px">{html.escape(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="text-align:right;padding:1px 8px">{html.escape(c)}</td>' for c in r)
                   + "</tr>" for r in rows)
    style = "border-collapse:collapse;font-family:monospace;font-size:12.5px"
    return f'<table style="{style}"><tr>{head}</tr>{body}</table>'


class _View:
    """One display, replaced in place at most every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        from IPython.display import display
        self.interval, self._next = interval, 0.0
        self.handle = display(_html(""), display_id=True)

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True

    def show(self, markup: str) -> None:
        self.handle.update(_html(markup))


class FitView(_View):
    """A fit's bar (steps over the whole fit, the epoch in its text) above its epoch table."""

    def __init__(self, total: int, done: int, interval: float = 0.2) -> None:
        super().__init__(interval)
        self.total, self.done, self.start = total, done, time.monotonic()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.text = ""

    def step(self, done: int, epoch: int, n_epochs: int, loss: Any = None) -> None:
        """``done`` steps of the fit; ``loss`` (a callable giving the latest loss) is read only when shown."""
        self.done = done
        if self.due():
            loss_text = f", loss {float(loss()):.4f}" if loss is not None else ""
            elapsed = time.monotonic() - self.start
            self.text = f"epoch {epoch + 1}/{n_epochs}: {done}/{self.total} steps, {elapsed:.1f} s{loss_text}"
            self._redraw()

    def row(self, header: Sequence[str], cells: Sequence[str]) -> None:
        self.header, self.rows = list(header), [*self.rows, list(cells)]
        self._redraw()

    def _redraw(self) -> None:
        bar = _bar(self.done, self.total, self.text) if self.text else ""
        self.show(bar + (table_html(self.header, self.rows) if self.rows else ""))

    def close(self) -> None:
        """The bar's last state (how far the fit got, in how long) above the table."""
        self.text = f"{self.done}/{self.total} steps in {time.monotonic() - self.start:.1f} s"
        self._redraw()


class FinderView(_View):
    """The range test's bar: steps done, the current LR and the best smoothed loss so far."""

    def __init__(self, total: int, desc: str, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.total, self.desc, self.done, self.text = total, desc, 0, ""

    def step(self, done: int, lr: float, best: float) -> None:
        self.done, self.text = done, f"lr {lr:.3g}, best {best:.4g}"
        if self.due():
            self.show(_bar(done, self.total, f"{self.desc}: {done}/{self.total} steps, {self.text}"))

    def close(self) -> None:
        """The bar's last state: the steps the test ran (it may stop early, on divergence)."""
        self.show(_bar(self.done, self.total, f"{self.desc}: ran {self.done} of {self.total} steps, {self.text}"))
