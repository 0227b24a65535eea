"""Tests for onecycle.compare's driver (``run_cells``) over the local pool (``pool.WorkerPool``):
a cell whose worker dies is continued from its checkpoint once (the same numbers as a run never
killed) and failed with its error the second time while the others go on; Ctrl-C on the driver skips
the cells not started and the running one saves, resumable with ``onecycle fit --resume``. The policy
is also checked against a scripted stand-in backend (no processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onecycle.cell import outcome
from onecycle.cli import main
from onecycle.compare import Cell, run_cells
from onecycle.pool import Event
from onecycle.run_callbacks import read_history
from onecycle.runconfig import FitConfig, make_config

TESTS = Path(__file__).parent


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _compare_folder(parent: Path) -> Path:
    (folder,) = [p for p in parent.iterdir() if p.is_dir() and p.name.endswith("compare")]
    return folder


def _cells(folder: Path) -> dict[str, Path]:
    return {json.loads((p / "cell.json").read_text())["seed"]: p for p in folder.iterdir()
            if (p / "cell.json").exists()}


# ---- the policy, against a scripted backend ---------------------------------------------------------
class _Scripted:
    """A backend whose cells end as ``script[(cell, attempt)]`` says: an outcome, or a death."""

    def __init__(self, script):
        self.script, self.busy, self.submits, self.closed, self.signals = script, {}, [], False, []

    def submit(self, key, job):
        self.submits.append((key, job["resume"]))
        self.busy[key] = sum(k == key for k, _ in self.submits)

    def running(self):
        return sorted(self.busy)

    def wait(self, timeout):
        key = min(self.busy)
        end = self.script.get((key, self.busy.pop(key)), outcome("finished"))
        return [Event(key, died=end) if isinstance(end, str) else Event(key, outcome=end)]

    def interrupt(self, signum):
        self.signals.append(signum)

    def close(self):
        self.closed = True


def _fake_cells(tmp_path, n):
    cells = []
    for i in range(n):
        cfg = make_config(FitConfig, [("t", {"task": "digits", "run_dir": str(tmp_path / str(i)), "threads": 1})])
        (tmp_path / str(i)).mkdir()
        cells.append(Cell(i, {"seed": i}, cfg))
    return cells


def test_a_dead_worker_is_retried_once_as_a_resume_then_failed(tmp_path):
    script = {(1, 1): "its worker process died (killed by SIGKILL)",
              (2, 1): "its worker process died (killed by SIGKILL)", (2, 2): "its worker process died (exit code 1)"}
    backend, retried = _Scripted(script), []
    rows, signum = run_cells(_fake_cells(tmp_path, 3), 2, backend=backend,
                             on_retry=lambda c, why: retried.append(c.index))
    assert signum is None and backend.closed and retried == [1, 2]
    assert sorted(backend.submits) == [(0, False), (1, False), (1, True), (2, False), (2, True)]  # a retry resumes
    by = {r["index"]: r for r in rows}
    assert by[0]["attempts"] == 1 and by[1]["attempts"] == 2 and by[2]["attempts"] == 2
    assert by[2]["status"] == "failed" and by[2]["error"] == "its worker process died (exit code 1), twice"
    # a cell that reported its own error is not retried
    backend = _Scripted({(0, 1): outcome("failed", "RuntimeError: boom")})
    (tmp_path / "b").mkdir()
    rows, _ = run_cells(_fake_cells(tmp_path / "b", 1), 1, backend=backend)
    assert backend.submits == [(0, False)] and rows[0]["error"] == "RuntimeError: boom"


def test_a_stop_forwards_the_signal_and_skips_the_cells_not_started(tmp_path):
    class Stopped(_Scripted):
        def wait(self, timeout):
            if not self.signals:
                raise KeyboardInterrupt  # Ctrl-C while the first cells run
            return [Event(k, outcome=outcome("interrupted", signum=signal.SIGINT)) for k in self.busy.copy()
                    if self.busy.pop(k)]

    backend = Stopped({})
    rows, signum = run_cells(_fake_cells(tmp_path, 4), 2, backend=backend)
    assert signum == signal.SIGINT and backend.signals == [signal.SIGINT] and backend.closed
    assert [r["status"] for r in rows] == ["interrupted", "interrupted", "skipped", "skipped"]
    assert [k for k, _ in backend.submits] == [0, 1]


# ---- the local pool under it, for real ------------------------------------------------------------
KILLED = ["compare", "--task", "_cli_task:killed", "--seed", "0", "1", "--lr", "0.1", "--epochs", "3",
          "--jobs", "2", "--every", "5", "--ckpt-budget", "0", "--quiet"]


@pytest.mark.parametrize("times", [1, pytest.param(2, marks=pytest.mark.slow)])  # twice: also the scripted test
def test_a_cell_whose_worker_is_killed_is_continued_once_then_failed(tmp_path, monkeypatch, capsys, times):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "out"
    assert main([*KILLED, "--task-opts", f"marks={marks}", f"times={times}", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert len(list(marks.iterdir())) == times  # seed 1's worker died that often, mid-training
    cells = _cells(_compare_folder(out))
    ok, killed = json.loads((_compare_folder(out) / "compare.json").read_text())["results"]
    assert ok["status"] == "finished" and ok["attempts"] == 1
    if times == 1:  # continued from its checkpoint: exactly the numbers of a run never killed
        assert killed["status"] == "finished" and killed["attempts"] == 2
        ref = tmp_path / "ref"
        assert main(["fit", "--task", "_cli_task:killed", "--seed", "1", "--lr", "0.1", "--epochs", "3",
                     "--task-opts", f"marks={marks}", "times=0", "--run-dir", str(ref), "--quiet"]) == 0
        a, b = read_history(ref), read_history(cells[1])
        assert b.losses == a.losses and b.val_losses == a.val_losses and len(a.losses) == 48
        assert "continuing it from its checkpoint" in (cells[1] / "log.txt").read_text()
    else:
        assert killed["status"] == "failed" and killed["attempts"] == 2
        assert killed["error"] == "its worker process died (killed by SIGKILL), twice"
        assert "its worker process died (killed by SIGKILL), twice" in table and "1/2 runs finished" in table


@pytest.mark.timeout(600)
def test_ctrl_c_skips_the_queued_cells_and_the_running_one_saves_and_resumes(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    args = ["compare", "--task", "_cli_task:tiny", "--seed", "0", "1", "--lr", "0.1", "--epochs", "3", "--jobs", "1",
            "--every", "5", "--ckpt-budget", "0", "--task-opts", f"gate={gate}", "--out", str(tmp_path / "out")]
    with open(tmp_path / "stdout.txt", "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "onecycle", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)
        try:
            while not (gate / "waiting").exists():  # the first cell is mid-training, held at its gate
                assert proc.poll() is None, (tmp_path / "stdout.txt").read_text()
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends the driver
            time.sleep(0.5)  # not needed for correctness: the cell stops at whichever step follows the signal
            (gate / "go").touch()
            assert proc.wait(timeout=300) == 130, (tmp_path / "stdout.txt").read_text()
        finally:
            proc.kill()
            proc.wait()
    folder = _compare_folder(tmp_path / "out")
    results = json.loads((folder / "compare.json").read_text())["results"]
    assert [r["status"] for r in results] == ["interrupted", "skipped"]
    cells = _cells(folder)
    assert (cells[0] / "last.ckpt").is_file() and not (cells[1] / "config.json").exists()
    done = subprocess.run([sys.executable, "-m", "onecycle", "fit", "--resume", str(cells[0]), "--quiet"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((cells[0] / "result.json").read_text())
    assert result["status"] == "finished" and result["epochs_done"] == 3


def test_draw_none_draws_only_the_grids_own_and_plot_draws_a_run_later(tmp_path, monkeypatch, capsys):
    """--draw none: the cheapest grid (its cells only train); compare's own table, plots and report
    are there, the runs' are not (and not linked), and onecycle plot RUN draws one afterwards."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    assert main(["compare", "--task", "_cli_task:tiny", "--seed", "0", "--opt", "sgd", "adamw", "--lr", "0.1",
                 "--epochs", "2", "--jobs", "2", "--draw", "none", "--out", str(tmp_path)]) == 0
    folder = _compare_folder(tmp_path)
    assert all((folder / f).is_file() for f in ("report.html", "compare.png", "summary.csv"))
    cells = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(cells) == 2
    for cell in cells:
        assert (cell / "history.json").is_file() and not (cell / "report.html").exists()
        assert not list(cell.glob("*.png"))
    assert (folder / "report.html").read_text().count("/report.html") == 0  # no link to a report not drawn
    assert main(["plot", str(cells[0])]) == 0
    assert (cells[0] / "report.html").is_file() and (cells[0] / "dashboard.png").is_file()
    capsys.readouterr()
    assert main(["compare", "--task", "_cli_task:tiny", "--draw", "sometimes", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "draw" in err and "cells, end or none" in err and "'sometimes'" in err, err


def test_draw_end_draws_every_cells_plots_and_report_after_the_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    assert main(["compare", "--task", "_cli_task:tiny", "--seed", "0", "--opt", "sgd", "adamw", "--lr", "0.1",
                 "--epochs", "2", "--jobs", "2", "--draw", "end", "--out", str(tmp_path)]) == 0
    assert "drawing the plots and reports of 2 runs" in capsys.readouterr().out
    folder = _compare_folder(tmp_path)
    for cell in (p for p in folder.iterdir() if p.is_dir()):
        assert (cell / "report.html").is_file() and (cell / "dashboard.png").is_file()
        assert json.loads((cell / "result.json").read_text())["time"]["plotting"] == 0.0  # the cell drew nothing
    assert (folder / "report.html").read_text().count("/report.html") == 2  # linked from the grid's report
