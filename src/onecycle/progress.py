"""Progress display: a tqdm bar per epoch on a terminal, one table row per epoch.

The bar is touched at most every ``interval`` seconds (reading the latest loss is a host sync);
off a terminal there is no bar at all, so logs hold only the table.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["Progress"]


class _NoBar:
    shown = False  # the loop skips update() calls altogether

    def update(self, i: int, losses: Any) -> None: ...
    def close(self) -> None: ...


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

    def bar(self, n: int, epoch: int, n_epochs: int) -> _Bar | _NoBar:
        if self.quiet or not sys.stderr.isatty():
            return _NoBar()
        return _Bar(n, f"epoch {epoch + 1}/{n_epochs}", self.interval)

    def epoch_row(self, epoch: int, train_loss: float, val: dict | None, seconds: float) -> None:
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
        cells = [str(epoch), _fmt(train_loss), _fmt(val.get("val_loss", math.nan))]
        cells += [_fmt(val.get(n, math.nan)) for n in self.metric_names]
        cells.append(f"{seconds:.1f}s")
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)), file=self.stream, flush=True)

    def close(self) -> None: ...


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"
