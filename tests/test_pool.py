"""Tests for onecycle.pool: a worker runs cell after cell and survives a cell's error; a worker that
dies is reported as such (its signal named) and replaced for the next cell; workers may start
processes of their own (a DataLoader's)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

from onecycle.cell import outcome
from onecycle.pool import WorkerPool, died_message
from onecycle.runconfig import FitConfig, make_config

TESTS = Path(__file__).parent


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def test_the_pool_reports_a_dead_worker_and_replaces_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    cell = tmp_path / "c"
    cell.mkdir()
    pool = WorkerPool(1)
    try:
        pid = pool.workers[0].proc.pid
        pool.submit(0, {"folder": str(cell), "resume": False})  # no cell.json: the cell fails, the worker stays
        (event,) = _wait_events(pool)
        assert event.outcome["status"] == "failed" and "cell.json" in event.outcome["error"]
        assert pool.workers[0].proc.pid == pid and pool.workers[0].proc.is_alive()
        pool.submit(1, {"folder": str(cell), "resume": False})
        os.kill(pid, signal.SIGKILL)
        (event,) = _wait_events(pool)
        assert event.died == "its worker process died (killed by SIGKILL)" or event.outcome is not None
        real = tmp_path / "real"  # a new worker takes the next cell, whose DataLoader starts a process
        cfg = make_config(FitConfig, [("t", {"task": "_cli_task:with_loader_workers", "lr": "0.1", "epochs": 1,
                                             "threads": 1, "run_dir": str(real)})])
        real.mkdir()
        (real / "cell.json").write_text(json.dumps(dataclasses.asdict(cfg)))
        pool.submit(2, {"folder": str(real), "resume": False})
        (event,) = _wait_events(pool)
        assert event.key == 2 and pool.workers[0].proc.pid != pid
        assert event.outcome == outcome("finished"), (real / "log.txt").read_text()
    finally:
        pool.close()
    assert died_message(-9) == "its worker process died (killed by SIGKILL)"
    assert died_message(3) == "its worker process died (exit code 3)"


def _wait_events(pool):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if events := pool.wait(1.0):
            return events
    raise AssertionError("no event within 300 s")
