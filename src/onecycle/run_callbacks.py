"""Callbacks the command line adds to a run's fit: its history saved at every epoch end, and the time
spent validating (for the run's time split); and the run folder's history files, written and read.

While a run trains, its history is ``history.jsonl``, an append-only log (``Recorder.log_snapshot``,
``log_delta``): each process's first epoch end writes the whole history as one line (a resumed run's
history is the checkpoint's, so rows a killed process logged past it are dropped, never doubled),
every later epoch end appends one line with that epoch's rows only; ``epochs.csv`` and
``iterations.csv`` get the same rows appended. When the run ends (finished, failed or stopped)
``save_history`` writes ``history.json`` and both CSVs whole, once, and removes the log. A run killed
outright keeps its log: ``read_history`` reads it (a last line cut short is left out).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from .callbacks import Callback
from .recorder import Recorder, csv_text

__all__ = ["SaveHistory", "ValidationTimer", "save_history", "read_history", "has_history", "LOG_NAME"]

LOG_NAME = "history.jsonl"


def _append(path: Path, text: str) -> None:
    """One ``write`` in append mode: a crash leaves the file as it was or with a last line cut short."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


class SaveHistory(Callback):
    """Keeps the run folder's history up to date at every epoch end, writing only what the epoch
    added (see the module's docstring), so a run that dies keeps its history up to its last finished
    epoch and a long run's epoch ends cost the same at epoch 300 as at epoch 3."""
    order = 150  # after the per-step statistics are flushed into the recorder

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._lengths: dict[str, Any] | None = None  # what the log holds; None: nothing written yet
        self._csv: dict[str, tuple[list[str], int]] = {}  # per CSV: its header and the rows it holds

    def after_epoch(self, learn: Any) -> None:
        rec = learn.recorder
        if self._lengths is None:  # this process's first epoch end: the log starts again, whole
            from .atomic import atomic_write_text
            line, self._lengths = rec.log_snapshot()
            atomic_write_text(self.folder / LOG_NAME, line)
        else:
            line, self._lengths = rec.log_delta(self._lengths)
            _append(self.folder / LOG_NAME, line)
        self._write_csv("epochs.csv", rec.epoch_rows, rec.n_epochs)
        self._write_csv("iterations.csv", rec.iteration_rows, len(rec.losses))

    def _write_csv(self, name: str, rows_from: Any, total: int) -> None:
        """Append the rows the CSV lacks; the whole file when its header changed (a metric or a series
        that appeared) or at this process's first write."""
        header, written = self._csv.get(name, (None, 0))
        new_header, rows = rows_from(written)
        if new_header != header:
            from .atomic import atomic_write_text
            new_header, rows = rows_from(0)
            atomic_write_text(self.folder / name, csv_text(new_header, rows))
        else:
            _append(self.folder / name, csv_text(new_header, rows, with_header=False))
        self._csv[name] = (new_header, total)


def save_history(folder: str | os.PathLike, rec: Recorder) -> None:
    """A run's history as it ends: ``history.json``, ``epochs.csv`` and ``iterations.csv`` written
    whole, then the log removed (a reader prefers the log while it exists: same content)."""
    folder = Path(folder)
    rec.save_json(folder / "history.json")
    rec.save_csv(folder)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / LOG_NAME)


def has_history(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / LOG_NAME).exists() or (folder / "history.json").exists()


def read_history(folder: str | os.PathLike) -> Recorder | None:
    """A run folder's history: its log while the run trains (or after it was killed), else
    ``history.json``; None when it has neither."""
    folder = Path(folder)
    log = folder / LOG_NAME
    try:
        return Recorder.from_log(log.read_text(encoding="utf-8"), str(log))
    except FileNotFoundError:
        pass
    path = folder / "history.json"
    return Recorder.load_json(path) if path.exists() else None


class ValidationTimer(Callback):
    """Seconds spent validating in the epochs this process completed (``before_validate`` to
    ``after_validate``); the rest of those epochs' recorded times is training."""
    order = 1000  # last before validating is the closest to it

    def before_fit(self, learn: Any) -> None:
        self.first_epoch, self.validation, self._pending = learn.recorder.n_epochs, 0.0, 0.0

    def before_validate(self, learn: Any) -> None:
        self._start = time.perf_counter()

    def after_validate(self, learn: Any) -> None:
        self._pending = time.perf_counter() - self._start

    def after_epoch(self, learn: Any) -> None:  # only epochs the recorder holds count
        self.validation, self._pending = self.validation + self._pending, 0.0

    def training(self, rec: Any) -> float:
        return max(0.0, sum(rec.times[self.first_epoch:]) - self.validation)
