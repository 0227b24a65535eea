"""Tests for onecycle.integrations.ray: a grid on a local Ray gives the local pool's table seed for
seed, with the same files in every folder; a cell whose Ray worker is killed mid-run is continued
from its checkpoint once and ends with the numbers of a run never killed; Ctrl-C cancels the cells
not started while the running one saves; without the package, ``--ray`` names the extra to install.
Ray's startup costs seconds, so one grid runs in CI and the rest are ``slow``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onecycle.cli import main
from onecycle.run_callbacks import read_history

ray = pytest.importorskip("ray")

TESTS = Path(__file__).parent
GRID = ["compare", "--task", "digits", "--opt", "sgd", "adamw", "--seed", "0", "1", "--epochs", "2", "--lr", "0.05",
        "--jobs", "2", "--quiet"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _folder(parent: Path) -> Path:
    (folder,) = [p for p in parent.iterdir() if p.is_dir()]
    return folder


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _without_times(table: str) -> list[list[str]]:
    """The table's cells but the time per run, which differs between any two runs."""
    lines = table.splitlines()
    col = lines[0].index("time/run")
    end = lines[0].index("peak LR")
    return [[ln[:col], ln[end:]] for ln in lines]


@pytest.mark.timeout(900)
def test_a_grid_on_a_local_ray_gives_the_local_pools_table_seed_for_seed(tmp_path, capsys):
    assert main([*GRID, "--out", str(tmp_path / "pool")]) == 0
    assert main([*GRID, "--ray", "--out", str(tmp_path / "ray")]) == 0
    assert not ray.is_initialized()  # the Ray it started is stopped
    capsys.readouterr()
    pool, on_ray = _folder(tmp_path / "pool"), _folder(tmp_path / "ray")
    a, b = (json.loads((f / "compare.json").read_text())["results"] for f in (pool, on_ray))
    assert [r["label"] for r in a] == [r["label"] for r in b] and len(a) == 4
    for x, y in zip(a, b):  # seed for seed: the same numbers
        assert x["status"] == y["status"] == "finished" and x["final"] == y["final"], (x["label"], y["final"])
        assert read_history(Path(x["folder"])).losses == read_history(Path(y["folder"])).losses
    assert _without_times((pool / "summary.txt").read_text()) == _without_times((on_ray / "summary.txt").read_text())
    assert _files(pool) == _files(on_ray)  # the same layout, file for file


KILLED = ["compare", "--task", "_cli_task:killed", "--seed", "0", "1", "--lr", "0.1", "--epochs", "3", "--jobs", "2",
          "--every", "5", "--ckpt-budget", "0", "--quiet"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("times", [1, 2])
def test_a_cell_whose_ray_worker_is_killed_is_continued_once_then_failed(tmp_path, monkeypatch, capsys, times):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # Ray's workers inherit it: _cli_task imports
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "o"
    assert main([*KILLED, "--ray", "--task-opts", f"marks={marks}", f"times={times}", "--out", str(out)]) == 0
    assert len(list(marks.iterdir())) == times
    ok, killed = json.loads((_folder(tmp_path / "o") / "compare.json").read_text())["results"]
    assert ok["status"] == "finished" and ok["attempts"] == 1 and killed["attempts"] == 2
    if times == 1:
        assert killed["status"] == "finished"
        ref = tmp_path / "ref"
        assert main(["fit", "--task", "_cli_task:killed", "--seed", "1", "--lr", "0.1", "--epochs", "3",
                     "--task-opts", f"marks={marks}", "times=0", "--run-dir", str(ref), "--quiet"]) == 0
        assert read_history(Path(killed["folder"])).losses == read_history(ref).losses
    else:
        assert killed["status"] == "failed" and killed["error"].startswith("its Ray worker died")
        assert killed["error"].endswith(", twice")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_on_ray_cancels_the_queued_cells_and_the_running_one_saves(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    args = ["compare", "--ray", "--task", "_cli_task:tiny", "--seed", "0", "1", "--lr", "0.1", "--epochs", "3",
            "--jobs", "1", "--every", "5", "--ckpt-budget", "0", "--task-opts", f"gate={gate}",
            "--out", str(tmp_path / "out")]
    with open(tmp_path / "stdout.txt", "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "onecycle", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)
        try:
            while not (gate / "waiting").exists():
                assert proc.poll() is None, (tmp_path / "stdout.txt").read_text()
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            (gate / "go").touch()
            assert proc.wait(timeout=300) == 130, (tmp_path / "stdout.txt").read_text()
        finally:
            proc.kill()
            proc.wait()
    results = json.loads((_folder(tmp_path / "out") / "compare.json").read_text())["results"]
    assert [r["status"] for r in results] == ["interrupted", "skipped"]
    first = Path(results[0]["folder"])
    first = first if first.is_absolute() else tmp_path / first
    assert (first / "last.ckpt").is_file() and json.loads((first / "result.json").read_text())["status"] == \
        "interrupted"
    done = subprocess.run([sys.executable, "-m", "onecycle", "fit", "--resume", str(first), "--quiet"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main([*GRID, "--ray", "--out", str(tmp_path)]) == 2
    assert "pip install 'onecycle[ray]'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any folder was made
