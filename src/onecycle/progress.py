"""Progress display: a tqdm bar per epoch on a terminal, one table row per epoch (numbered from 1),
and the LR finder's bar (``finder_bar``).

The bar is touched at most every ``interval`` seconds (reading the latest loss is a host sync);
off a terminal there is no bar at all, so logs hold only the table.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["Progress", "finder_bar"]


class _NoBar:
    shown = False  # the loop skips update() calls altogether

    def update(self, *args: Any) -> None: ...
    def close(self, *args: Any) -> None: ...


class _Bar:
    shown = True

    def __init__(self, n: int, desc: str, interval: float) -> None:
        from tqdm.auto import tqdm  # lazily: tqdm's import is not free
        self._bar = tqdm(total=n, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
        self._interval, self._next, self._done = interval, time.monotonic() + interval, 0

    def update(self, i: int, losses: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        self._bar.update(i + 1 - self._done)
        self._done = i + 1
        self._bar.set_postfix(loss=f"{float(losses[i]):.4f}", refresh=False)

    def close(self) -> None:
        self._bar.close()


class Progress:
    """Bars and the per-epoch table for one ``fit``. The table's columns are ``metric_names`` and any
    other key of the first row's ``val`` (a dict-valued metric's keys are known only then); a key first
    seen later adds a column and prints the header again."""

    def __init__(self, metric_names: Sequence[str], quiet: bool = False, interval: float = 0.5,
                 stream: Any = None) -> None:
        self.metric_names = list(metric_names)
        self.quiet, self.interval = quiet, interval
        self.stream = stream or sys.stdout
        self._header_done = False

    @property
    def names(self) -> list[str]:
        return ["epoch", "train_loss", "valid_loss", *self.metric_names, "time"]

    def note(self, text: str) -> None:
        """A line above the table (unless quiet)."""
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def bar(self, n: int, epoch: int, n_epochs: int) -> _Bar | _NoBar:
        if self.quiet or not sys.stderr.isatty():
            return _NoBar()
        return _Bar(n, f"epoch {epoch + 1}/{n_epochs}", self.interval)

    def epoch_row(self, epoch: int, train_loss: float, val: dict | None, seconds: float) -> None:
        """The table row of epoch ``epoch`` (0-based, the loop's counter), printed numbered from 1."""
        if self.quiet:
            return
        val = val or {}
        new = [k for k in val if k != "val_loss" and k not in self.metric_names]
        if new:
            self.metric_names += new
            self._header_done = False
        widths = [max(len(n), 10) for n in self.names]
        if not self._header_done:
            print("  ".join(n.rjust(w) for n, w in zip(self.names, widths)), file=self.stream)
            self._header_done = True
        cells = [str(epoch + 1), _fmt(train_loss), _fmt(val.get("val_loss", math.nan))]
        cells += [_fmt(val.get(n, math.nan)) for n in self.metric_names]
        cells.append(f"{seconds:.1f}s" if seconds >= 0.95 else f"{seconds * 1000:.0f}ms")  # not "0.0s"
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)), file=self.stream, flush=True)


class _FinderBar:
    """Steps done of the range test, the current LR and the best smoothed loss so far."""
    shown = True

    def __init__(self, n: int, desc: str, interval: float, file: Any) -> None:
        from tqdm.auto import tqdm
        self._bar = tqdm(total=n, desc=desc, leave=False, file=file, dynamic_ncols=True, unit="step",
                         mininterval=0, miniters=1)  # this bar throttles itself (interval)
        self._interval, self._next, self._done = interval, time.monotonic() + interval, 0
        self.best, self.lr = math.inf, math.nan

    def update(self, i: int, lr: float, smooth_loss: float) -> None:
        if math.isfinite(smooth_loss):
            self.best = min(self.best, smooth_loss)
        self.lr = lr
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            self._show(i + 1)

    def _show(self, done: int) -> None:
        self._bar.set_postfix(lr=f"{self.lr:.3g}", best=f"{self.best:.4g}", refresh=False)
        self._bar.update(done - self._done)
        self._done = done

    def close(self, done: int | None = None) -> None:
        if done is not None and done > self._done:
            self._show(done)
        self._bar.close()


def finder_bar(n: int, quiet: bool = False, desc: str = "lr_find", interval: float = 0.5,
               file: Any = None) -> _FinderBar | _NoBar:
    """The LR finder's bar on ``file`` (default stderr, only when it is a terminal), unless ``quiet``."""
    if quiet or (file is None and not sys.stderr.isatty()):
        return _NoBar()
    return _FinderBar(n, desc, interval, file or sys.stderr)


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"
