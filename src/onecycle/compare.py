"""``onecycle compare``: a grid of fits, each in a run folder of its own under one compare folder,
``jobs`` at a time; then one table (mean and spread over seeds, epochs to a target, wall time) and its
plots and report (``compare_report.compare_outputs``). While the cells run, a status line
(``gridstatus.LiveStatus``) says how many are done, running and queued, the epoch each running cell
is in, and an ETA.

The cells run on a backend that only executes (``submit``, ``wait``, ``running``, ``interrupt``,
``close``): the local pool of warm worker processes (``pool.WorkerPool``, the default) or Ray tasks
(``integrations.ray.RayBackend``, ``--ray [ADDRESS]``). Both run ``cell.run_cell`` on the cell's
folder, and ``run_cells`` here decides the rest the same way for both: which cell goes next; a cell
whose worker died is continued from its checkpoint once, on another worker, then counted as failed;
a cell's own error is its row's failure and the others go on; Ctrl-C or SIGTERM skips the cells not
started while the running ones save and stop. ``onecycle fit --resume <cell>`` continues an
interrupted cell; ``--config <cell>/cell.json`` runs a skipped one.

Cells write into the compare folder themselves, wherever they run: on a Ray cluster it must be on a
file system every node reaches at the same path (the README says why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .cell import outcome
from .gridstatus import LiveStatus
from .htmlpage import fmt_seconds, fmt_value
from .runconfig import CompareConfig, FitConfig
from .rundir import read_json, run_folder, versions

__all__ = ["Cell", "Backend", "prepare_cells", "run_cells", "compare", "LiveStatus"]


class Backend(Protocol):
    """What runs cells: ``pool.WorkerPool`` or ``integrations.ray.RayBackend``."""

    def submit(self, key: int, job: dict[str, Any]) -> None: ...
    def wait(self, timeout: float) -> list[Any]: ...  # pool.Event: key, outcome or died
    def running(self) -> list[int]: ...
    def interrupt(self, signum: int) -> None: ...
    def close(self) -> None: ...


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
              on_tick: Callable[[list[int]], None] | None = None, poll: float = 0.5, backend: Backend | None = None,
              on_retry: Callable[[Cell, str], None] | None = None, plots: bool = True
              ) -> tuple[list[dict], int | None]:
    """Run every cell on ``backend`` (a local ``WorkerPool`` by default), ``jobs`` at a time, then
    close it. A cell whose worker died is continued from its checkpoint once (``on_retry(cell, why)``),
    then failed; ``on_done(cell, result)`` as each ends; ``on_tick(running)`` every ``poll`` seconds.
    On Ctrl-C or SIGTERM the running cells get the signal (each saves and stops resumably) and the
    rest are skipped. ``plots=False``: the cells draw nothing (``draw = "end"``). Returns one result
    per cell, and the signal that stopped the grid (None if none did)."""
    if backend is None:
        from .pool import WorkerPool
        backend = WorkerPool(min(jobs, len(cells)))
    by_index = {c.index: c for c in cells}
    queue: list[tuple[Cell, bool]] = [(c, False) for c in cells]  # (cell, continue it from its checkpoint)
    started: dict[int, float] = {}
    attempts: dict[int, int] = {}
    results: dict[int, dict] = {}
    stopping: list[int] = []

    def finish(cell: Cell, out: dict) -> None:
        seconds = time.perf_counter() - started.get(cell.index, time.perf_counter())
        results[cell.index] = _cell_result(cell, out, seconds, attempts.get(cell.index, 0))
        if on_done is not None:
            on_done(cell, results[cell.index])

    def handle(event: Any) -> None:
        cell = by_index[event.key]
        if event.died is None:
            finish(cell, event.outcome)
        elif attempts[cell.index] < 2 and not stopping:
            if on_retry is not None:
                on_retry(cell, event.died)
            queue.insert(0, (cell, True))
        else:
            finish(cell, outcome("failed", event.died + (", twice" if attempts[cell.index] > 1 else "")))

    def fill() -> None:
        while queue and not stopping and len(backend.running()) < jobs:
            with _signals_deferred():  # a cell is handed over whole, or not at all
                cell, resume = queue.pop(0)
                started.setdefault(cell.index, time.perf_counter())
                attempts[cell.index] = attempts.get(cell.index, 0) + 1
                backend.submit(cell.index, {**_job(cell, resume), "plots": plots})

    try:
        while queue or backend.running():
            try:
                fill()
                events = backend.wait(poll)
                with _signals_deferred():
                    for event in events:
                        handle(event)
                fill()  # at once: a free worker never waits for the next poll
                if stopping:
                    for cell, _ in queue:  # not started: skipped (a retry not started: interrupted)
                        finish(cell, outcome("interrupted" if cell.index in attempts else "skipped"))
                    queue.clear()
                if on_tick is not None and backend.running():
                    on_tick(backend.running())
            except KeyboardInterrupt as err:  # each one is forwarded: a second stops the cells at once
                stopping.append(int(getattr(err, "signum", signal.SIGINT)))
                backend.interrupt(stopping[-1])
    finally:
        backend.close()
    for cell in cells:  # an event lost to a signal mid-way: the cell's folder tells
        if cell.index not in results:
            finish(cell, outcome("interrupted" if cell.index in attempts else "skipped"))
    rows = [{"index": c.index, "label": c.label, "folder": str(c.folder), **results[c.index]} for c in cells]
    return rows, (stopping[0] if stopping else None)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back (and raised right after) while the driver's bookkeeping changes,
    so a Ctrl-C never lands between a cell leaving the queue and its worker getting it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _job(cell: Cell, resume: bool) -> dict[str, Any]:
    """What ``cell.run_cell`` gets, and the resources the cell asks a Ray cluster for."""
    return {"folder": str(cell.folder), "resume": resume, "cpus": max(1, cell.cfg.threads),
            "gpus": 1 if cell.cfg.device.startswith("cuda") else 0}


def make_backend(ccfg: CompareConfig, n_cells: int) -> Backend:
    """The local pool (``ray_address`` empty) or Ray (``local``: a Ray started here and stopped
    afterwards; ``auto`` or an address: that cluster)."""
    if not ccfg.ray_address:
        from .pool import WorkerPool
        return WorkerPool(min(ccfg.jobs, n_cells))
    from .integrations.ray import RayBackend
    return RayBackend(ccfg.ray_address)


def _check_backend(ccfg: CompareConfig) -> None:
    """Before any folder is made: ``--ray`` without the package is a ``ConfigError`` naming the extra."""
    if ccfg.ray_address:
        from .integrations.ray import check_ray
        from .runconfig import ConfigError
        try:
            check_ray()
        except ImportError as err:
            raise ConfigError(f"ray_address: {err}", "ray_address") from err


def compare(ccfg: CompareConfig, grid: list[tuple[dict[str, Any], FitConfig]], info: dict[str, Any]
            ) -> tuple[Path, int | None]:
    """Run a grid of fits (``runconfig.expand_grid``) under one compare folder, ``ccfg.jobs`` at a
    time, then write its table, plots and report. Returns the folder and the signal that stopped it
    early (None when every run got its turn)."""
    from .atomic import atomic_write_text
    from .compare_report import compare_outputs, default_metric
    start = time.perf_counter()
    _check_backend(ccfg)
    folder = run_folder(ccfg.out, ccfg.name)
    cells = prepare_cells(folder, grid, ccfg.jobs)
    backend = make_backend(ccfg, len(cells))  # the workers start here: their imports overlap what follows
    data = {"config": dataclasses.asdict(ccfg), **info, "metric": ccfg.metric, "target": ccfg.target,
            "versions": versions(), "results": [{"index": c.index, "label": c.label, "folder": str(c.folder),
                                                  "status": "pending"} for c in cells]}
    atomic_write_text(folder / "compare.json", json.dumps(data, indent=2, default=str))
    status = None if ccfg.quiet else LiveStatus(cells, ccfg.jobs)
    if status is not None:
        where = f"on Ray ({ccfg.ray_address})" if ccfg.ray_address else "in local worker processes"
        print(f"compare: {len(cells)} runs, {ccfg.jobs} at a time {where}, in {folder}", flush=True)

    def progress(cell: Cell, res: dict) -> None:
        if status is None:
            return
        final = ", ".join(f"{k} {fmt_value(k, v)}" for k, v in res.get("final", {}).items() if k != "train_loss")
        what = f"{final}, {fmt_seconds(res.get('seconds', res['wall_seconds']))}" if res["status"] == "finished" \
            else f"{res.get('error') or ''} (log: {cell.folder / 'log.txt'})"
        status.cell_done(cell, res, f"[{status.done + 1}/{len(cells)}] {cell.title()}: {res['status']} {what}")

    def retry(cell: Cell, why: str) -> None:
        if status is not None:
            status.note(f"{cell.title()}: {why}; continuing it from its checkpoint on another worker")

    results, signum = run_cells(cells, ccfg.jobs, progress, None if status is None else status.tick,
                                backend=backend, on_retry=retry, plots=ccfg.draw == "cells")
    if ccfg.draw == "end":
        _draw_cells(results, status is not None)
    data.update(results=results, metric=ccfg.metric or default_metric(folder, results),
                seconds=time.perf_counter() - start)
    atomic_write_text(folder / "compare.json", json.dumps(data, indent=2, default=str))
    compare_outputs(folder)
    return folder, signum


def _draw_cells(results: list[dict], say: bool) -> None:
    """``draw = "end"``: every cell's PNGs and report, drawn here, one after another, once the cells
    are done (a cell that wrote no history has nothing to draw)."""
    from .report import redraw
    from .run_callbacks import has_history
    folders = [Path(r["folder"]) for r in results if r.get("status") != "skipped" and has_history(r["folder"])]
    if say:
        print(f"drawing the plots and reports of {len(folders)} runs", flush=True)
    for folder in folders:
        try:
            redraw(folder)
        except Exception as err:  # best effort, as a run's own drawing is
            print(f"onecycle compare: could not draw {folder}: {type(err).__name__}: {err}", flush=True)


def _cell_result(cell: Cell, out: dict, seconds: float, attempts: int) -> dict:
    """The run's own ``result.json``, checked against what its worker reported: a run that wrote no
    result (it never got going, or its worker died) takes the worker's status, with the last line of
    its log as the error when it has none."""
    if out["status"] == "skipped":
        return {"status": "skipped", "wall_seconds": 0.0}
    result = read_json(cell.folder / "result.json") or {}
    if "status" not in result:
        result["status"] = "failed" if out["status"] == "finished" else out["status"]
    elif out["status"] == "failed" and result["status"] == "finished":
        result["status"] = "failed"  # it crashed after training, while saving
    if result["status"] == "failed":
        result["error"] = out.get("error") or result.get("error") or _last_line(cell.folder / "log.txt") or \
            "no result.json"
    result.update(wall_seconds=seconds, attempts=attempts)
    return result


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return next((ln for ln in reversed(lines) if ln), "")
