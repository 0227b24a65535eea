"""Callbacks the command line adds to a run's fit: its history saved at every epoch end, and the time
spent validating (for the run's time split)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .callbacks import Callback

__all__ = ["SaveHistory", "ValidationTimer"]


class SaveHistory(Callback):
    """Rewrites ``history.json``, ``epochs.csv`` and ``iterations.csv`` at every epoch end, so a run
    that dies keeps its history up to its last finished epoch."""
    order = 150  # after the per-step statistics are flushed into the recorder

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def after_epoch(self, learn: Any) -> None:
        learn.recorder.save_json(self.folder / "history.json")
        learn.recorder.save_csv(self.folder)


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
