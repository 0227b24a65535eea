"""``onecycle compare``: a grid of fits, each in its own process and run folder under one compare
folder, ``jobs`` at a time; then one table (mean and spread over seeds, epochs to a target, wall
time) and its plots and report (``compare_report.compare_outputs``). While the cells run, one status
line says how many are done, running and queued, the epoch each running cell is in, and an ETA.

Each cell runs as ``python -m onecycle fit --config <cell>/cell.json`` in a process of its own, so a
cell that fails -- an exception, a crash, a kill -- is reported and the others go on. ``onecycle fit
--resume <cell>`` continues an interrupted cell; ``--config <cell>/cell.json --run-dir NEW`` reruns it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .htmlpage import fmt_seconds, fmt_value
from .runconfig import CompareConfig, FitConfig
from .rundir import read_json, run_folder, versions

__all__ = ["Cell", "prepare_cells", "run_cells", "compare", "LiveStatus"]


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
    from .atomic import atomic_write_text
    threads = max(1, (os.cpu_count() or 1) // jobs)
    cells = []
    for i, (label, cfg) in enumerate(grid):
        run_dir = folder / f"{i:03d}-{_slug(label)}"
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir), quiet=False, threads=cfg.threads or threads)
        run_dir.mkdir(parents=True)
        atomic_write_text(run_dir / "cell.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        cells.append(Cell(i, label, cfg))
    return cells


def run_cells(cells: list[Cell], jobs: int, on_done: Callable[[Cell, dict], None] | None = None,
              on_tick: Callable[[list[int]], None] | None = None, poll: float = 0.5
              ) -> tuple[list[dict], int | None]:
    """Run every cell as ``python -m onecycle fit`` in its own process (its output in ``log.txt``),
    ``jobs`` at a time. A failing cell is recorded and the others go on. ``on_tick(running)`` gets
    the indices of the running cells every ``poll`` seconds. On Ctrl-C or SIGTERM the running cells
    get the same signal (each saves and stops resumably), the rest are skipped.
    Returns one result per cell and the signal that stopped the grid (None if none did)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
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
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=poll, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: futures[f].index):
                    results[futures[fut].index] = fut.result()
                    if on_done is not None:
                        on_done(futures[fut], results[futures[fut].index])
                if on_tick is not None and pending:
                    on_tick(sorted(live))
        except KeyboardInterrupt as err:
            stopping.append(int(getattr(err, "signum", signal.SIGINT)))
            for proc in list(live.values()):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(stopping[0])
            for fut, cell in futures.items():  # each saves and stops; the rest are skipped
                results[cell.index] = fut.result()
    rows = [{"index": c.index, "label": c.label, "folder": str(c.folder), **results[c.index]} for c in cells]
    return rows, (stopping[0] if stopping else None)


def _epochs_done(folder: Path) -> int:
    """Epochs a running cell has finished: the rows of its ``epochs.csv`` (rewritten at each epoch end)."""
    try:
        with open(folder / "epochs.csv", encoding="utf-8") as f:
            return max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        return 0


class LiveStatus:
    """The compare's status line: cells done, running (with the epoch each is in) and queued, and an
    ETA. On a terminal one line is rewritten in place; elsewhere (a log) a line is printed when the
    counts or a cell's epoch change."""

    def __init__(self, cells: list[Cell], jobs: int, stream: Any = None) -> None:
        self.cells, self.jobs = {c.index: c for c in cells}, jobs
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start, self.started_at, self.walls = time.perf_counter(), {}, []
        self.done, self._last = 0, ""

    def cell_done(self, cell: Cell, res: dict, line: str) -> None:
        self.done += 1
        self.walls.append(res.get("wall_seconds", 0.0))
        self.started_at.pop(cell.index, None)
        self._print(line, final=True)

    def eta(self, running: dict[int, int]) -> float | None:
        """Seconds left: each running cell's remaining time plus the queued cells' at the mean time a
        cell takes (the finished cells'; before any has finished, the running cells' epoch pace),
        shared over the jobs. None until there is anything to go by."""
        now = time.perf_counter()
        elapsed = {i: now - self.started_at[i] for i in running}
        paced = {i: elapsed[i] * self.cells[i].cfg.epochs / k for i, k in running.items() if k}
        per_cell = statistics.mean(self.walls) if self.walls else statistics.mean(paced.values()) if paced else None
        if per_cell is None:
            return None
        left = sum(max((per_cell if self.walls or i not in paced else paced[i]) - elapsed[i], 0.0) for i in running)
        queued = len(self.cells) - self.done - len(running)
        return (left + queued * per_cell) / max(1, min(self.jobs, len(self.cells) - self.done))

    def tick(self, running: list[int]) -> None:
        for i in running:
            self.started_at.setdefault(i, time.perf_counter())
        epochs = {i: _epochs_done(self.cells[i].folder) for i in running}
        states = []
        for i, k in epochs.items():
            cfg = self.cells[i].cfg
            finder = k == 0 and cfg.lr == "auto" and not (self.cells[i].folder / "lr_find.json").exists()
            doing = "LR finder" if finder else f"epoch {k + 1}/{cfg.epochs}" if k < cfg.epochs else "saving, plotting"
            states.append(f"{self.cells[i].title()}: {doing}")
        queued = len(self.cells) - self.done - len(running)
        what = f"{self.done}/{len(self.cells)} done, {len(running)} running, {queued} queued"
        what += f" | {'; '.join(states)}" if states else ""
        if not self.tty and what == self._last:
            return
        self._last = what
        eta = self.eta(epochs)
        self._print(f"[{fmt_seconds(time.perf_counter() - self.start)}] {what} | ETA "
                    + (fmt_seconds(eta) if eta is not None else "?"))

    def _print(self, line: str, final: bool = False) -> None:
        if self.tty:  # rewrite the status line; a finished cell's line stays above it
            width = shutil.get_terminal_size().columns - 1
            print("\r\033[K" + (line if final else line[:width]), end="\n" if final else "", file=self.stream,
                  flush=True)
        else:
            print(line, file=self.stream, flush=True)


def compare(ccfg: CompareConfig, grid: list[tuple[dict[str, Any], FitConfig]], info: dict[str, Any]
            ) -> tuple[Path, int | None]:
    """Run a grid of fits (``runconfig.expand_grid``) under one compare folder, ``ccfg.jobs`` at a
    time, then write its table, plots and report. Returns the folder and the signal that stopped it
    early (None when every run got its turn)."""
    from .atomic import atomic_write_text
    from .compare_report import compare_outputs, default_metric
    start = time.perf_counter()
    folder = run_folder(ccfg.out, ccfg.name)
    cells = prepare_cells(folder, grid, ccfg.jobs)
    data = {"config": dataclasses.asdict(ccfg), **info, "metric": ccfg.metric, "target": ccfg.target,
            "versions": versions(), "results": [{"index": c.index, "label": c.label, "folder": str(c.folder),
                                                  "status": "pending"} for c in cells]}
    atomic_write_text(folder / "compare.json", json.dumps(data, indent=2, default=str))
    status = None if ccfg.quiet else LiveStatus(cells, ccfg.jobs)
    if status is not None:
        print(f"compare: {len(cells)} runs, {ccfg.jobs} at a time, in {folder}", flush=True)

    def progress(cell: Cell, res: dict) -> None:
        if status is None:
            return
        final = ", ".join(f"{k} {fmt_value(k, v)}" for k, v in res.get("final", {}).items() if k != "train_loss")
        what = f"{final}, {fmt_seconds(res.get('seconds', res['wall_seconds']))}" if res["status"] == "finished" \
            else f"{res.get('error') or ''} (log: {cell.folder / 'log.txt'})"
        status.cell_done(cell, res, f"[{status.done + 1}/{len(cells)}] {cell.title()}: {res['status']} {what}")

    results, signum = run_cells(cells, ccfg.jobs, progress, None if status is None else status.tick)
    data.update(results=results, metric=ccfg.metric or default_metric(folder, results),
                seconds=time.perf_counter() - start)
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
