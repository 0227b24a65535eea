"""``onecycle compare``: a grid of fits, each in its own process and run folder under one compare
folder, ``jobs`` at a time; then one table (mean and spread over seeds, epochs to a target, wall
time) and one overlay plot per configuration (``report.compare_outputs``).

Each cell runs as ``python -m onecycle fit --config <cell>/cell.json`` in a process of its own, so a
cell that fails -- an exception, a crash, a kill -- is reported and the others go on. ``onecycle fit
--resume <cell>`` continues an interrupted cell; ``--config <cell>/cell.json --run-dir NEW`` reruns it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import read_json
from .runconfig import CompareConfig, FitConfig
from .runs import run_folder, versions

__all__ = ["Cell", "prepare_cells", "run_cells", "compare"]


@dataclass
class Cell:
    """One fit of a grid: the values that vary across the grid (``label``) and its full config."""
    index: int
    label: dict[str, Any]
    cfg: FitConfig

    @property
    def folder(self) -> Path:
        return Path(self.cfg.run_dir)

    def title(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.label.items()) or "run"


def _slug(label: dict[str, Any]) -> str:
    text = "-".join(f"{k}={v}" for k, v in label.items()) or "run"
    return "".join(c if c.isalnum() or c in "._=-" else "_" for c in text)[:80]


def prepare_cells(folder: Path, grid: list[tuple[dict[str, Any], FitConfig]], jobs: int) -> list[Cell]:
    """A sub-folder per cell holding ``cell.json``, its full config (``run_dir`` included). Torch
    threads are shared out between the jobs."""
    from .checkpoint import atomic_write_text
    threads = max(1, (os.cpu_count() or 1) // jobs)
    cells = []
    for i, (label, cfg) in enumerate(grid):
        run_dir = folder / f"{i:03d}-{_slug(label)}"
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir), quiet=False, threads=cfg.threads or threads)
        run_dir.mkdir(parents=True)
        atomic_write_text(run_dir / "cell.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        cells.append(Cell(i, label, cfg))
    return cells


def run_cells(cells: list[Cell], jobs: int, on_done: Callable[[Cell, dict], None] | None = None
              ) -> tuple[list[dict], int | None]:
    """Run every cell as ``python -m onecycle fit`` in its own process (its output in ``log.txt``),
    ``jobs`` at a time. A failing cell is recorded and the others go on. On Ctrl-C or SIGTERM the
    running cells get the same signal (each saves and stops resumably), the rest are skipped.
    Returns one result per cell and the signal that stopped the grid (None if none did)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed
    live: dict[int, subprocess.Popen] = {}
    stopping: list[int] = []

    def one(cell: Cell) -> dict:
        if stopping:
            return {"status": "skipped"}
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "onecycle", "fit", "--config", str(cell.folder / "cell.json")]
        with open(cell.folder / "log.txt", "wb") as log:
            try:  # a new session: a terminal's Ctrl-C reaches only this process, which forwards it once
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as err:
                return {"status": "failed", "error": f"could not start {cmd[0]}: {err}"}
            live[cell.index] = proc
            rc = proc.wait()
            live.pop(cell.index, None)
        return _cell_result(cell, rc, time.perf_counter() - start)

    results: dict[int, dict] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, cell): cell for cell in cells}
        try:
            for fut in as_completed(futures):
                results[futures[fut].index] = fut.result()
                if on_done is not None:
                    on_done(futures[fut], results[futures[fut].index])
        except KeyboardInterrupt as err:
            stopping.append(int(getattr(err, "signum", signal.SIGINT)))
            for proc in list(live.values()):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(stopping[0])
            for fut, cell in futures.items():  # each saves and stops; the rest are skipped
                results[cell.index] = fut.result()
    rows = [{"index": c.index, "label": c.label, "folder": str(c.folder), **results[c.index]} for c in cells]
    return rows, (stopping[0] if stopping else None)


def compare(ccfg: CompareConfig, grid: list[tuple[dict[str, Any], FitConfig]], info: dict[str, Any]
            ) -> tuple[Path, int | None]:
    """Run a grid of fits (``runconfig.expand_grid``) under one compare folder, ``ccfg.jobs`` at a
    time, then write its table, overlay plot and report. Returns the folder and the signal that
    stopped it early (None when every run got its turn)."""
    from .checkpoint import atomic_write_text
    from .report import compare_outputs, default_metric
    folder = run_folder(ccfg.out, ccfg.name)
    cells = prepare_cells(folder, grid, ccfg.jobs)
    data = {"config": dataclasses.asdict(ccfg), **info, "metric": ccfg.metric, "target": ccfg.target,
            "versions": versions(), "results": [{"index": c.index, "label": c.label, "folder": str(c.folder),
                                                  "status": "pending"} for c in cells]}
    atomic_write_text(folder / "compare.json", json.dumps(data, indent=2, default=str))
    if not ccfg.quiet:
        print(f"compare: {len(cells)} runs, {ccfg.jobs} at a time, in {folder}", flush=True)

    finished: list[int] = []

    def progress(cell: Cell, res: dict) -> None:
        finished.append(cell.index)
        if ccfg.quiet:
            return
        final = " ".join(f"{k} {v:.4g}" for k, v in res.get("final", {}).items() if k != "train_loss")
        what = f"{final}, {res.get('seconds', res['wall_seconds']):.1f} s" if res["status"] == "finished" else \
            f"{res.get('error') or ''} (log: {cell.folder / 'log.txt'})"
        print(f"[{len(finished)}/{len(cells)}] {cell.title()}: {res['status']} {what}", flush=True)

    results, signum = run_cells(cells, ccfg.jobs, progress)
    data.update(results=results, metric=ccfg.metric or default_metric(folder, results))
    atomic_write_text(folder / "compare.json", json.dumps(data, indent=2, default=str))
    compare_outputs(folder)
    return folder, signum


def _cell_result(cell: Cell, returncode: int, seconds: float) -> dict:
    """The run's own ``result.json``, checked against its exit code: a run that wrote no result
    (it never got going, or was killed) is failed -- or interrupted, when it died of SIGINT or
    SIGTERM -- with the last line of its log as the error."""
    result = read_json(cell.folder / "result.json") or {}
    signalled = returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)
    if "status" not in result:
        result["status"] = "interrupted" if signalled else "failed"
    elif returncode != 0 and result["status"] == "finished" and not signalled:
        result["status"] = "failed"  # it crashed after training, while saving
    if result["status"] == "failed" and not result.get("error"):
        result["error"] = _last_line(cell.folder / "log.txt") or f"exit code {returncode}"
    result.update(returncode=returncode, wall_seconds=seconds)
    return result


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return next((ln for ln in reversed(lines) if ln), "")
