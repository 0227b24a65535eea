"""Tests for onecycle.gridstatus: the ETA reads "?" until some work has finished, comes from finished
cells and epochs only (worked out by hand below), and counts down with the clock, never growing,
while nothing new finishes; the epochs a running cell has finished are its epochs.csv's complete rows."""

from __future__ import annotations

import io

from onecycle.compare import Cell
from onecycle.gridstatus import LiveStatus, epochs_done
from onecycle.runconfig import FitConfig, make_config


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _status(tmp_path, n=3, jobs=2, epochs=3):
    cells = []
    for i in range(n):
        cfg = make_config(FitConfig, [("t", {"task": "digits", "epochs": epochs, "lr": "0.1",
                                             "run_dir": str(tmp_path / str(i))})])
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "config.json").write_text("{}")  # the run has begun
        cells.append(Cell(i, {"seed": i}, cfg))
    clock = _Clock()
    return LiveStatus(cells, jobs=jobs, stream=io.StringIO(), clock=clock), clock, cells


def _epoch(tmp_path, i, k):
    (tmp_path / str(i) / "epochs.csv").write_text("epoch,train_loss\n" + "".join(f"{e},0.5\n" for e in range(1, k + 1)))


def test_the_eta_comes_from_finished_work_and_never_grows_while_nothing_finishes(tmp_path):
    status, clock, cells = _status(tmp_path)
    status.tick([0, 1])  # both start at t=100
    clock.now += 50
    status.tick([0, 1])
    assert status.eta({0: 0, 1: 0}) is None  # nothing finished yet: nothing to go by
    assert ", ETA ? | " in status.stream.getvalue().splitlines()[-1]
    clock.now += 10  # t=160: cell 0 finishes epoch 1 of 3 after 60 s
    _epoch(tmp_path, 0, 1)
    status.tick([0, 1])
    # cell 0: 3 epochs at 60 s each, 120 s left; cell 1 (no epoch yet) and the queued cell 2 at cell 0's
    # pace, 180 s each: 180 - 60 = 120 s left, and 180; over 2 jobs: (120 + 120 + 180) / 2 = 210 s
    assert status.eta({0: 1, 1: 0}) == 210.0
    seen = []
    for _ in range(30):  # nothing new finishes: it only counts down, to zero, then stays there
        clock.now += 10
        seen.append(status.eta({0: 1, 1: 0}))
    assert seen[0] == 200.0 and all(b <= a for a, b in zip(seen, seen[1:])) and seen[-1] == 0.0
    status.cell_done(cells[0], {"status": "finished", "wall_seconds": 200.0}, "[1/3] seed=0: finished")
    clock.now += 1  # estimated again from the finished cell: 200 s a cell
    assert status.eta({1: 0, 2: 0}) is not None


def test_the_eta_restarts_only_when_work_finishes_not_when_a_cell_starts(tmp_path):
    status, clock, cells = _status(tmp_path, n=3, jobs=3)
    status.tick([0])
    clock.now += 30
    _epoch(tmp_path, 0, 1)
    status.tick([0])
    first = status.eta({0: 1})
    clock.now += 5
    status.tick([0, 1])  # a new cell starts: no finished work, so no new estimate
    assert status.eta({0: 1, 1: 0}) == first - 5


def test_a_cell_without_its_config_yet_is_starting_and_its_clock_waits(tmp_path):
    status, clock, cells = _status(tmp_path, n=2)
    (tmp_path / "0" / "config.json").unlink()  # its worker is still starting up
    status.tick([0, 1])
    assert "queued, ETA ? | seed=0: starting; seed=1: epoch 1/3" in status.stream.getvalue().splitlines()[-1]
    clock.now += 20
    (tmp_path / "0" / "config.json").write_text("{}")
    status.tick([0, 1])
    clock.now += 30
    _epoch(tmp_path, 0, 1)  # its first epoch took 30 s from its run's start, not 50 from its worker's
    _epoch(tmp_path, 1, 1)
    status.tick([0, 1])
    # cell 0: 90 s a run, 60 left; cell 1: 50 s an epoch, 150 s a run, 100 left; over 2 jobs: 80 s
    assert status.eta({0: 1, 1: 1}) == 80.0


def test_epochs_done_counts_complete_rows_only(tmp_path):
    assert epochs_done(tmp_path) == 0  # no file yet
    (tmp_path / "epochs.csv").write_text("epoch,train_loss\n1,0.5\n2,0.4")  # row 2 is being appended
    assert epochs_done(tmp_path) == 1


def test_a_terminal_line_cut_to_its_width_keeps_the_eta(tmp_path, monkeypatch):
    import os
    import shutil
    status, clock, cells = _status(tmp_path)
    status.tty = True
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os.terminal_size((60, 24)))
    _epoch(tmp_path, 0, 1)
    status.tick([0, 1])
    clock.now += 60
    status.tick([0, 1])
    line = status.stream.getvalue().rsplit("\r\033[K", 1)[1]
    assert len(line) == 59 and "0/3 done, 2 running, 1 queued, ETA " in line and ", ETA ? " not in line
    assert "seed=1" not in line  # the cut takes the running cells' states, never the ETA
