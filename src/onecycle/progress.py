"""Progress display: a fit's bar and its per-epoch table (``Progress``), and the LR finder's bar
(``finder_bar``).

A fit shows one bar over all its steps, with the epoch in its text, so it moves steadily even when
an epoch takes a tenth of a second, and one table row per epoch (numbered from 1; losses to 4
decimals, an accuracy-like metric in percent, times in seconds, as the reports show them). On a
terminal the bar is tqdm on stderr, rewritten in place, and the table rows are printed above it; in
a Jupyter notebook both are HTML updated in place (``notebook.FitView``); anywhere else (a log file,
a pipe) there is no bar, only the table. The finder's bar advances at every step.

The bar's position moves every ``interval`` seconds (0.1) at most; the loss beside it, a host read
of a value on the device, at most every ``loss_interval`` (0.5).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .metrics import percent_column
from .notebook import FinderView, FitView, in_notebook

__all__ = ["Progress", "finder_bar", "fmt_cell"]


def fmt_cell(name: str, v: Any) -> str:
    """A table cell: an accuracy-like metric in percent (``96.60%``), other numbers to 4 decimals."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if percent_column(name, [v]):
        return f"{100 * v:.2f}%"
    return f"{v:.4f}"


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


class _NoBar:
    shown = False  # the loop skips update() calls altogether

    def update(self, *args: Any) -> None: ...
    def close(self, *args: Any) -> None: ...


class _TerminalBar:
    """One tqdm bar on stderr over all the fit's steps; the caller throttles it."""

    def __init__(self, total: int, done: int) -> None:
        from tqdm.std import tqdm  # lazily: tqdm's import is not free; std: a notebook gets HTML instead
        self._tqdm = tqdm
        self._bar = tqdm(total=total, initial=done, leave=False, file=sys.stderr, dynamic_ncols=True, unit="step",
                         mininterval=0, miniters=1)

    def step(self, done: int, epoch: int, n_epochs: int, loss: Callable[[], float] | None) -> None:
        self._bar.set_description_str(f"epoch {epoch + 1}/{n_epochs}", refresh=False)
        if loss is not None:
            self._bar.set_postfix(loss=f"{float(loss()):.4f}", refresh=False)
        self._bar.update(done - self._bar.n)

    def write(self, text: str, stream: Any) -> None:
        """A line above the bar: the bar is cleared, the line printed, the bar drawn again."""
        with self._tqdm.external_write_mode(file=stream):
            print(text, file=stream, flush=True)

    def close(self) -> None:
        self._bar.close()


class _EpochBar:
    """What the loop updates in an epoch: its steps placed on the fit's one bar."""
    shown = True

    def __init__(self, progress: Progress, n: int, epoch: int, n_epochs: int) -> None:
        self.progress, self.n, self.epoch, self.n_epochs = progress, n, epoch, n_epochs

    def update(self, i: int, losses: Any) -> None:
        self.progress.advance(self.epoch * self.n + i + 1, self.epoch, self.n_epochs, losses, i)

    def close(self) -> None: ...


class Progress:
    """The bar and the per-epoch table of one ``fit`` (``total``: its steps, for the bar). The table's
    columns are ``metric_names`` and any other key of the first row's ``val`` (a dict-valued metric's
    keys are known only then; its own name, which gives no column, is dropped); a key first seen
    later adds a column and prints the header again."""

    def __init__(self, metric_names: Sequence[str], quiet: bool = False, interval: float = 0.1,
                 stream: Any = None, total: int = 0, loss_interval: float = 0.5) -> None:
        self.metric_names = list(metric_names)
        self.quiet, self.interval, self.loss_interval, self.total = quiet, interval, loss_interval, total
        self.stream = stream or sys.stdout
        self._header_done, self._rows = False, 0
        self._bar: Any = None  # _TerminalBar or notebook.FitView, made at the first epoch
        self._next = self._next_loss = 0.0

    @property
    def names(self) -> list[str]:
        return ["epoch", "train_loss", "val_loss", *self.metric_names, "time"]

    def note(self, text: str) -> None:
        """A line above the table (unless quiet)."""
        if not self.quiet:
            self._write(text)

    def bar(self, n: int, epoch: int, n_epochs: int) -> _EpochBar | _NoBar:
        """The bar for epoch ``epoch`` (0-based) of ``n`` batches: the fit's one bar, made at the first
        call (from this epoch's start, for a resumed fit)."""
        if self.quiet:
            return _NoBar()
        if self._bar is None:
            total = self.total or n * n_epochs
            if in_notebook():
                self._bar = FitView(total, epoch * n)
            elif sys.stderr.isatty():
                self._bar = _TerminalBar(total, epoch * n)
            else:
                self._bar = _NoBar()
        return _NoBar() if isinstance(self._bar, _NoBar) else _EpochBar(self, n, epoch, n_epochs)

    def advance(self, done: int, epoch: int, n_epochs: int, losses: Any, i: int) -> None:
        """The bar at ``done`` steps, at most every ``interval`` seconds; ``losses[i]`` read (a host
        sync) at most every ``loss_interval``."""
        now = time.monotonic()
        if now < self._next and done < (self.total or done + 1):
            return
        self._next = now + self.interval
        loss = None
        if now >= self._next_loss:
            self._next_loss = now + self.loss_interval
            loss = lambda: float(losses[i])  # noqa: E731  (read only where it is shown)
        self._bar.step(done, epoch, n_epochs, loss)

    def epoch_row(self, epoch: int, train_loss: float, val: dict | None, seconds: float) -> None:
        """The table row of epoch ``epoch`` (0-based, the loop's counter), printed numbered from 1."""
        if self.quiet:
            return
        val = val or {}
        if val and not self._rows:  # the first row: a dict-valued metric's name gives way to its keys
            self.metric_names = [n for n in self.metric_names if n in val]
        new = [k for k in val if k != "val_loss" and k not in self.metric_names]
        if new:
            self.metric_names += new
            self._header_done = False
        self._rows += 1
        cells = [str(epoch + 1), fmt_cell("train_loss", train_loss), fmt_cell("val_loss", val.get("val_loss"))]
        cells += [fmt_cell(n, val.get(n, math.nan)) for n in self.metric_names]
        cells.append(_seconds(seconds))
        if isinstance(self._bar, FitView):
            self._bar.row(self.names, cells)
            return
        widths = [max(len(n), 10) for n in self.names]
        if not self._header_done:
            self._write("  ".join(n.rjust(w) for n, w in zip(self.names, widths)))
            self._header_done = True
        self._write("  ".join(c.rjust(w) for c, w in zip(cells, widths)))

    def _write(self, text: str) -> None:
        if isinstance(self._bar, _TerminalBar):
            self._bar.write(text, self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """The fit ended: the bar goes (the table stays)."""
        if self._bar is not None and not isinstance(self._bar, _NoBar):
            self._bar.close()
        self._bar = None


class _FinderBar:
    """Steps done of the range test (every step), the current LR and the best smoothed loss so far."""
    shown = True

    def __init__(self, n: int, desc: str, interval: float, file: Any) -> None:
        from tqdm.std import tqdm
        self._bar = tqdm(total=n, desc=desc, leave=False, file=file, dynamic_ncols=True, unit="step",
                         mininterval=interval, miniters=1)  # tqdm redraws at most every interval
        self.best, self.lr = math.inf, math.nan

    def update(self, i: int, lr: float, smooth_loss: float) -> None:
        if math.isfinite(smooth_loss):
            self.best = min(self.best, smooth_loss)
        self.lr = lr
        self._bar.set_postfix(lr=f"{self.lr:.3g}", best=f"{self.best:.4g}", refresh=False)
        self._bar.update(i + 1 - self._bar.n)

    def close(self, done: int | None = None) -> None:
        if done is not None and done > self._bar.n:
            self._bar.update(done - self._bar.n)
        self._bar.close()


class _NotebookFinderBar:
    """The finder's bar as HTML in a notebook (``notebook.FinderView``)."""
    shown = True

    def __init__(self, n: int, desc: str) -> None:
        self.view, self.best, self.lr = FinderView(n, desc), math.inf, math.nan

    def update(self, i: int, lr: float, smooth_loss: float) -> None:
        if math.isfinite(smooth_loss):
            self.best = min(self.best, smooth_loss)
        self.lr = lr
        self.view.step(i + 1, lr, self.best)

    def close(self, done: int | None = None) -> None:
        self.view.close()


def finder_bar(n: int, quiet: bool = False, desc: str = "lr_find", interval: float = 0.05,
               file: Any = None) -> _FinderBar | _NotebookFinderBar | _NoBar:
    """The LR finder's bar, advanced at every step: HTML in a notebook; tqdm on ``file`` (default
    stderr, only when it is a terminal); nothing when ``quiet``."""
    if quiet:
        return _NoBar()
    if file is None and in_notebook():
        return _NotebookFinderBar(n, desc)
    if file is None and not sys.stderr.isatty():
        return _NoBar()
    return _FinderBar(n, desc, interval, file or sys.stderr)
