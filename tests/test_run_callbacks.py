"""Tests for onecycle.run_callbacks: a run's history is on disk after every epoch, an epoch end writes
what that epoch added (bytes counted by the kernel, not time), the log survives a kill -9 (a line cut
short, a resume from an earlier checkpoint) without losing or doubling a row; and the time spent
validating is counted from before_validate to after_validate (a stand-in clock, no real timing)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import onecycle as oc
from onecycle import run_callbacks
from onecycle.callbacks import Callback
from onecycle.data import TensorLoader
from onecycle.recorder import Recorder
from onecycle.run_callbacks import LOG_NAME, SaveHistory, ValidationTimer, read_history, save_history


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
        saved = read_history(self.folder)  # the log, while the run trains
        rows = (self.folder / "epochs.csv").read_text().strip().splitlines()
        iters = (self.folder / "iterations.csv").read_text().strip().splitlines()
        self.seen.append((len(saved.val_losses), len(saved.losses), len(rows) - 1, len(iters) - 1))
        assert saved.state_dict() == json.loads(json.dumps(learn.recorder.state_dict()))


def test_save_history_writes_every_epoch_as_it_ends(tmp_path):
    learn, reader = _learner(), _ReadsHistory(tmp_path)
    learn.fit_one_cycle(3, 0.1, callbacks=[SaveHistory(tmp_path), reader])
    assert reader.seen == [(1, 4, 1, 4), (2, 8, 2, 8), (3, 12, 3, 12)]  # 4 batches an epoch, a CSV row per epoch
    assert read_history(tmp_path).val_losses == learn.recorder.val_losses
    assert (tmp_path / "iterations.csv").read_text().count("\n") == 12 + 1
    appended = (tmp_path / "epochs.csv").read_text()
    save_history(tmp_path, learn.recorder)  # the run's end: written whole, once; the log goes
    assert not (tmp_path / LOG_NAME).exists() and (tmp_path / "epochs.csv").read_text() == appended
    assert json.loads((tmp_path / "history.json").read_text())["val_losses"] == learn.recorder.val_losses
    assert read_history(tmp_path).state_dict() == json.loads(json.dumps(learn.recorder.state_dict()))


def _dict_metric(preds, target):
    return {"acc2": 0.5, "acc3": 0.25}


class _LateSeries(Callback):
    """A per-step series that starts in epoch 2: the CSV's header changes mid-run."""
    def after_batch(self, learn):
        if learn.epoch >= 1:
            learn.recorder.log("late", 1.0)


def test_the_log_holds_metrics_series_and_groups_that_appear_late(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    learn = oc.Learner(model, TensorLoader(x, y, batch_size=16, shuffle=True),
                       TensorLoader(x[:32], y[:32], batch_size=16), torch.nn.functional.cross_entropy,
                       metrics=[_dict_metric], quiet=True, groups=[model[0], model[1]])
    from onecycle.callbacks import GradStats
    learn.fit_one_cycle(3, [0.01, 0.1], callbacks=[SaveHistory(tmp_path), GradStats(), _LateSeries()])
    rec = learn.recorder
    assert len(rec.series) > 1 and "acc3" in rec.metric_names and len(rec.group_lrs) == 2  # the cases are there
    assert read_history(tmp_path).state_dict() == json.loads(json.dumps(rec.state_dict()))
    lines = (tmp_path / "iterations.csv").read_text().splitlines()
    assert "late" in lines[0] and len(lines) == len(rec.losses) + 1  # written whole again with its new header


def _wchar() -> int:
    """Bytes this process passed to write() so far, as the kernel counts them."""
    return int(next(ln for ln in Path("/proc/self/io").read_text().splitlines() if ln.startswith("wchar")).split()[1])


class _CountBytes(Callback):
    """Bytes each epoch end's saving wrote: ``save`` runs between two readings of the kernel's count."""
    order = SaveHistory.order

    def __init__(self, save):
        self.save, self.bytes = save, []

    def after_epoch(self, learn):
        before = _wchar()
        self.save(learn)
        self.bytes.append(_wchar() - before)


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
def test_an_epoch_end_writes_that_epochs_rows_not_the_whole_history(tmp_path):
    saver = SaveHistory(tmp_path)
    appends = _CountBytes(saver.after_epoch)
    _learner().fit_one_cycle(40, 0.01, callbacks=[appends])
    first, later = appends.bytes[1], appends.bytes[1:]
    assert first > 0 and max(later) < 1.5 * min(later), later  # the same rows each epoch: the same bytes
    assert appends.bytes[0] < 2 * first  # the first write holds one epoch's history too
    # negative control: rewriting everything at each epoch end grows with the epochs
    rewrite = _CountBytes(lambda learn: (learn.recorder.save_json(tmp_path / "h.json"),
                                         learn.recorder.save_csv(tmp_path / "whole")))
    (tmp_path / "whole").mkdir()
    _learner().fit_one_cycle(40, 0.01, callbacks=[rewrite])
    assert rewrite.bytes[-1] > 10 * rewrite.bytes[1]  # 16x at 40 epochs against 2


def test_a_line_cut_short_is_left_out_and_a_bad_line_is_named(tmp_path):
    learn = _learner()
    learn.fit_one_cycle(3, 0.1, callbacks=[SaveHistory(tmp_path)])
    log = tmp_path / LOG_NAME
    whole = log.read_text()
    lines = whole.splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed while appending epoch 3
    rec = read_history(tmp_path)
    assert rec.n_epochs == 2 and rec.val_losses == learn.recorder.val_losses[:2]
    assert len(rec.losses) == learn.recorder.epoch_iters[1]
    log.write_text(lines[0] + "{not json\n" + lines[1])
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_history(tmp_path)
    log.write_text(lines[0] + lines[2])  # epoch 3 straight after the snapshot of epoch 1: a gap
    with pytest.raises(ValueError, match="line 2: .* continues at"):
        read_history(tmp_path)


_KILLED = """
import os, signal, sys, torch
import onecycle as oc
from onecycle.callbacks import Callback
from onecycle.data import TensorLoader
from onecycle.run_callbacks import SaveHistory
folder, kill_at = sys.argv[1], int(sys.argv[2])
class Kill(Callback):
    order = SaveHistory.order + 1  # the log holds the epoch; its checkpoint is not written yet
    def after_epoch(self, learn):
        if learn.epoch + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
torch.manual_seed(0)
x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
learn = oc.Learner(torch.nn.Linear(4, 2), TensorLoader(x, y, batch_size=16, shuffle=True, seed=0),
                   TensorLoader(x[:32], y[:32], batch_size=16), torch.nn.functional.cross_entropy, quiet=True)
learn.fit_one_cycle(5, 0.1, callbacks=[SaveHistory(folder), Kill()], checkpoint_dir=folder, every=None,
                    ckpt_budget=None, resume=os.path.exists(os.path.join(folder, "last.ckpt")))
"""


def test_a_resume_after_kill_9_neither_loses_nor_doubles_a_row(tmp_path):
    def run(folder, kill_at):
        return subprocess.run([sys.executable, "-c", _KILLED, str(folder), str(kill_at)], timeout=300).returncode

    assert run(tmp_path / "ref", 0) == 0
    assert run(tmp_path / "run", 3) == -9  # epoch 3 is in the log, the checkpoint is epoch 2's
    assert read_history(tmp_path / "run").n_epochs == 3
    from onecycle.cli import main
    assert main(["plot", str(tmp_path / "run")]) == 0  # a killed run's log draws: no history.json needed
    assert (tmp_path / "run" / "dashboard.png").is_file() and not (tmp_path / "run" / "history.json").exists()
    assert run(tmp_path / "run", 0) == 0  # resumed from epoch 2's end: epoch 3 again, then 4 and 5
    ref, rec = read_history(tmp_path / "ref"), read_history(tmp_path / "run")
    assert rec.n_epochs == 5 and len(rec.losses) == len(ref.losses)
    assert rec.losses == ref.losses and rec.val_losses == ref.val_losses  # resume is exact: the same rows
    assert (tmp_path / "run" / "epochs.csv").read_text() != "" and \
        len((tmp_path / "run" / "epochs.csv").read_text().splitlines()) == 5 + 1


def test_a_killed_runs_log_reads_back_with_the_recorder(tmp_path):
    rec = Recorder(["accuracy"])
    rec.add_iterations([[0.1]], [0.9], [1.0])
    rec.add_epoch(1.0, {"val_loss": 0.5, "accuracy": 0.25}, 2.0)
    line, lengths = rec.log_snapshot()
    rec.add_iterations([[0.2], [0.3]], [0.8, 0.85], [0.9, 0.8])
    rec.add_epoch(0.85, {"val_loss": 0.4, "accuracy": 0.5}, 2.0)
    more, _ = rec.log_delta(lengths)
    assert json.loads(more)["losses"] == [1, [0.9, 0.8]]  # only the new rows, with where they start
    back = Recorder.from_log(line + more)
    assert back.state_dict() == rec.state_dict()
    assert Recorder.from_log(line + more[:-1]).n_epochs == 1  # no newline: cut short, left out


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
