"""Tests for onecycle.cell: a cell run in a warm worker process gives the numbers a fresh ``onecycle
fit`` process gives, whatever ran before it; what a cell changes in the process is put back; its
output goes to its log; its own error is its outcome, and the next cell runs as if nothing happened."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from onecycle.cell import outcome, run_cell
from onecycle.run_callbacks import read_history
from onecycle.runconfig import FitConfig, make_config

TESTS = Path(__file__).parent


def _cell(folder: Path, **kw) -> Path:
    cfg = make_config(FitConfig, [("t", {"task": "_cli_task:tiny", "lr": "0.1", "epochs": 2, "threads": 1,
                                         "run_dir": str(folder), **kw})])
    folder.mkdir(parents=True)
    (folder / "cell.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    return folder


def test_a_warm_workers_cell_gives_a_fresh_processes_numbers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    assert run_cell(_cell(tmp_path / "a", seed=1, opt="adamw")) == outcome("finished")
    assert run_cell(_cell(tmp_path / "b", seed=0, opt="sgd")) == outcome("finished")  # another cell between
    assert run_cell(_cell(tmp_path / "c", seed=1, opt="adamw")) == outcome("finished")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    fresh = subprocess.run([sys.executable, "-m", "onecycle", "fit", "--config", str(tmp_path / "a" / "cell.json"),
                            "--run-dir", str(tmp_path / "fresh"), "--quiet"], env=env, timeout=300)
    assert fresh.returncode == 0
    a, c, ref = (read_history(tmp_path / n) for n in ("a", "c", "fresh"))
    assert a.losses == c.losses == ref.losses and a.val_losses == ref.val_losses and len(ref.losses) == 32
    assert read_history(tmp_path / "b").losses != ref.losses  # negative control: another seed differs
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["argv"] == ["fit", "--config", str(tmp_path / "a" / "cell.json")]  # the command it stands for


def test_what_a_cell_changes_in_the_process_is_put_back_and_its_output_is_logged(tmp_path, monkeypatch, capfd):
    monkeypatch.syspath_prepend(str(TESTS))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd, threads, handler = os.getcwd(), torch.get_num_threads(), signal.getsignal(signal.SIGINT)
    folder = _cell(tmp_path / "m", task="_cli_task:meddling", task_opts={"where": str(elsewhere)}, threads=2)
    assert run_cell(folder) == outcome("finished")
    assert os.getcwd() == cwd and torch.get_num_threads() == threads and signal.getsignal(signal.SIGINT) is handler
    assert not torch.are_deterministic_algorithms_enabled()
    out, err = capfd.readouterr()
    assert "meddling" not in out + err
    log = (folder / "log.txt").read_text()
    assert "meddling on stdout" in log and "meddling on stderr" in log and "run folder:" in log


def test_a_cells_error_is_its_outcome_and_the_next_cell_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    broken = _cell(tmp_path / "broken", task="_cli_task:broken")
    assert run_cell(broken) == outcome("failed", "RuntimeError: broken task: the data is gone")
    assert "Traceback" in (broken / "log.txt").read_text()
    assert run_cell(tmp_path / "nowhere")["status"] == "failed"  # no cell.json: failed, not raised
    assert run_cell(_cell(tmp_path / "ok")) == outcome("finished")
