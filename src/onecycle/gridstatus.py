"""``onecycle compare``'s live status line: cells done, running (with the epoch each is in, read from
its ``epochs.csv``) and queued, and an ETA.

The ETA comes from finished work only: it is estimated again when a cell finishes or a running cell
finishes an epoch, from the finished cells' times (or, before any has finished, the running cells'
pace per finished epoch, timed from when each run began, not from its worker's start-up), and in
between it counts down with the clock. So it never grows while nothing new has finished, and reads
"?" until something has.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .htmlpage import fmt_seconds

__all__ = ["LiveStatus", "epochs_done"]


def epochs_done(folder: Path) -> int:
    """Epochs a running cell has finished: the rows of its ``epochs.csv`` (appended at each epoch end)."""
    try:
        with open(folder / "epochs.csv", encoding="utf-8") as f:
            return max(0, sum(1 for line in f if line.endswith("\n")) - 1)
    except OSError:
        return 0


class LiveStatus:
    """The status line. On a terminal one line is rewritten in place; elsewhere (a log) a line is
    printed when the counts or a cell's epoch change. ``cells``: ``compare.Cell`` objects."""

    def __init__(self, cells: list[Any], jobs: int, stream: Any = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.cells, self.jobs, self.clock = {c.index: c for c in cells}, jobs, clock
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start, self.started_at, self.walls = clock(), {}, []
        self.done, self._last = 0, ""
        self._finished_work: tuple[int, int] = (0, 0)  # (cells done, epochs of running cells) last estimated at
        self._estimate: tuple[float, float] | None = None  # (seconds left, when)

    def cell_done(self, cell: Any, res: dict, line: str) -> None:
        self.done += 1
        if res.get("status") == "finished":
            self.walls.append(res.get("wall_seconds", 0.0))
        self.started_at.pop(cell.index, None)
        self._print(line, final=True)

    def note(self, line: str) -> None:
        """A line that stays above the status line (a retry, say)."""
        self._print(line, final=True)

    def _estimate_left(self, running: dict[int, int]) -> float | None:
        """Seconds of work left, shared over the jobs: each running cell's remaining time plus the
        queued cells' at the time a cell takes (the finished cells' mean; before any finished, the
        running cells' pace per finished epoch). None until there is anything to go by."""
        now = self.clock()
        elapsed = {i: now - self.started_at.get(i, now) for i in running}
        paced = {i: elapsed[i] * self.cells[i].cfg.epochs / k for i, k in running.items() if k}
        per_cell = statistics.mean(self.walls) if self.walls else statistics.mean(paced.values()) if paced else None
        if per_cell is None:
            return None
        left = sum(max(paced.get(i, per_cell) - elapsed[i], 0.0) for i in running)
        queued = len(self.cells) - self.done - len(running)
        return (left + queued * per_cell) / max(1, min(self.jobs, len(self.cells) - self.done))

    def eta(self, running: dict[int, int]) -> float | None:
        """The ETA now, for the running cells' finished epochs ``running`` (index -> epochs)."""
        work = (self.done, sum(running.values()))
        if work != self._finished_work or (self._estimate is None and any(work)):
            self._finished_work = work
            left = self._estimate_left(running)
            self._estimate = None if left is None else (left, self.clock())
        if self._estimate is None:
            return None
        left, at = self._estimate
        return max(0.0, left - (self.clock() - at))

    def tick(self, running: list[int]) -> None:
        for i in running:  # its clock starts with its run (config.json), not with its worker's start-up
            if i not in self.started_at and (self.cells[i].folder / "config.json").exists():
                self.started_at[i] = self.clock()
        epochs = {i: epochs_done(self.cells[i].folder) for i in running}
        states = []
        for i, k in epochs.items():
            cfg = self.cells[i].cfg
            folder = self.cells[i].folder
            finder = k == 0 and cfg.lr == "auto" and not (folder / "lr_find.json").exists()
            doing = "starting" if not (folder / "config.json").exists() else "LR finder" if finder else \
                f"epoch {k + 1}/{cfg.epochs}" if k < cfg.epochs else "saving"
            states.append(f"{self.cells[i].title()}: {doing}")
        queued = len(self.cells) - self.done - len(running)
        counts = f"{self.done}/{len(self.cells)} done, {len(running)} running, {queued} queued"
        cells = f" | {'; '.join(states)}" if states else ""
        if not self.tty and counts + cells == self._last:
            return
        self._last = counts + cells
        eta = self.eta(epochs)
        # the ETA before the cells' states: a terminal's line is cut at its width, and the cut takes those
        self._print(f"[{fmt_seconds(self.clock() - self.start)}] {counts}, ETA "
                    + (fmt_seconds(eta) if eta is not None else "?") + cells)

    def _print(self, line: str, final: bool = False) -> None:
        if self.tty:  # rewrite the status line; a finished cell's line stays above it
            width = shutil.get_terminal_size().columns - 1
            print("\r\033[K" + (line if final else line[:width]), end="\n" if final else "", file=self.stream,
                  flush=True)
        else:
            print(line, file=self.stream, flush=True)
