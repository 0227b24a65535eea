"""Tests for onecycle.run_callbacks: a run's history is on disk after every epoch, and the time spent
validating is counted from before_validate to after_validate (a stand-in clock, no real timing)."""

from __future__ import annotations

import json
import types

import torch

import onecycle as oc
from onecycle import run_callbacks
from onecycle.callbacks import Callback
from onecycle.data import TensorLoader
from onecycle.run_callbacks import SaveHistory, ValidationTimer


def _learner():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    return oc.Learner(torch.nn.Linear(4, 2), TensorLoader(x, y, batch_size=16, shuffle=True),
                      TensorLoader(x[:32], y[:32], batch_size=16), torch.nn.functional.cross_entropy,
                      metrics=[oc.metrics.accuracy], quiet=True)


class _ReadsHistory(Callback):
    order = SaveHistory.order + 1  # right after the history is written

    def __init__(self, folder):
        self.folder, self.seen = folder, []

    def after_epoch(self, learn):
        saved = json.loads((self.folder / "history.json").read_text())
        rows = (self.folder / "epochs.csv").read_text().strip().splitlines()
        self.seen.append((len(saved["val_losses"]), len(saved["losses"]), len(rows) - 1))


def test_save_history_writes_every_epoch_as_it_ends(tmp_path):
    learn, reader = _learner(), _ReadsHistory(tmp_path)
    learn.fit_one_cycle(3, 0.1, callbacks=[SaveHistory(tmp_path), reader])
    assert reader.seen == [(1, 4, 1), (2, 8, 2), (3, 12, 3)]  # 4 batches an epoch, one CSV row per epoch
    assert json.loads((tmp_path / "history.json").read_text())["val_losses"] == learn.recorder.val_losses
    assert (tmp_path / "iterations.csv").read_text().count("\n") == 12 + 1


def test_validation_timer_counts_validation_and_leaves_the_rest_to_training(monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 5))  # every reading 5 s after the last
    monkeypatch.setattr(run_callbacks, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))  # its own
    timer = ValidationTimer()
    learn = _learner()
    learn.fit_one_cycle(2, 0.1, callbacks=[timer])
    assert timer.validation == 2 * 5.0  # one validation an epoch, each 5 s by the stand-in clock
    rec = learn.recorder
    rec.times[:] = [30.0, 40.0]  # the epochs' recorded times (the Recorder's own clock)
    assert timer.training(rec) == 70.0 - 10.0
    timer.before_fit(learn)  # a resumed process counts only the epochs it runs itself
    assert timer.first_epoch == 2 and timer.validation == 0.0 and timer.training(rec) == 0.0
