"""The local backend of ``onecycle compare``: a pool of warm worker processes, each importing torch and
onecycle once and then running cell after cell (``cell.run_cell``, each isolated from the last).

``WorkerPool`` only executes: ``submit`` hands a cell to an idle worker (starting one when none is
idle), ``wait`` returns what happened (a cell's outcome, or its worker's death), ``interrupt``
forwards a stop signal to the busy workers. What to run next, retries and cancelling are the
driver's (``compare.run_cells``), the same for the Ray backend (``integrations/ray.py``).

Workers are started with ``spawn`` (a fresh interpreter: nothing of the driver's torch state, threads
or locks is inherited) in a session of their own, so a Ctrl-C typed in the terminal reaches only the
driver, which forwards it once, to the workers that are running a cell. A worker that dies is
replaced by a new one when a cell next needs it; the others never notice.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["WorkerPool", "Event", "died_message"]


@dataclass
class Event:
    """What ``wait`` reports: ``outcome`` (``cell.outcome``) when the cell ended, else ``died`` says
    how its worker died."""
    key: int
    outcome: dict[str, Any] | None = None
    died: str | None = None


def died_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"its worker process died (killed by {name})"
    return f"its worker process died (exit code {exitcode})"


def _worker(conn: Connection) -> None:
    """A worker's life: import once, then run each cell it is sent until it is sent None."""
    if hasattr(os, "setsid"):
        os.setsid()  # its own session: the terminal's Ctrl-C reaches the driver only, which forwards it
    from . import cell
    signal.signal(signal.SIGINT, cell.request_stop)  # between cells; run_cell installs its own
    signal.signal(signal.SIGTERM, cell.request_stop)
    with contextlib.suppress(ImportError):
        from . import report, runs  # noqa: F401  (warm: the first cell does not pay for these imports)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if job is None:
            return
        try:
            result = cell.run_cell(job["folder"], job["resume"], job.get("plots", True))
        except Exception as err:  # a fault outside the cell's own guard: reported, the worker goes on
            result = cell.outcome("failed", f"{type(err).__name__}: {err}")
        conn.send(result)


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        # not a daemon: a cell's DataLoader may start worker processes of its own
        self.proc = ctx.Process(target=_worker, args=(child,), daemon=False, name="onecycle-worker")
        self.proc.start()
        child.close()
        self.key: int | None = None  # the cell it runs; None: idle


class WorkerPool:
    """Up to ``size`` worker processes; ``size`` of them start at once, so their imports overlap the
    driver's own work."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ctx = multiprocessing.get_context("spawn")
        self.workers = [_Worker(self.ctx) for _ in range(size)]

    def running(self) -> list[int]:
        return sorted(w.key for w in self.workers if w.key is not None)

    def submit(self, key: int, job: dict[str, Any]) -> None:
        """Run ``cell.run_cell(**job)`` on an idle worker (a new one if the idle ones died)."""
        idle = [w for w in self.workers if w.key is None]
        if not idle:
            raise RuntimeError(f"no idle worker for cell {key}: the pool has {self.size}, all busy")
        worker = next((w for w in idle if w.proc.is_alive()), None)
        if worker is None:
            self.workers.remove(idle[0])
            worker = _Worker(self.ctx)
            self.workers.append(worker)
        worker.key = key
        try:
            worker.conn.send(job)
        except (BrokenPipeError, OSError):  # died while idle: the next wait reports it
            pass

    def wait(self, timeout: float) -> list[Event]:
        """The cells that ended, or whose worker died, within ``timeout`` seconds."""
        busy = {w.conn: w for w in self.workers if w.key is not None}
        if not busy:
            return []
        ready = wait([*busy, *(w.proc.sentinel for w in busy.values())], timeout)
        events = []
        for w in busy.values():
            if w.conn not in ready and w.proc.sentinel not in ready:
                continue
            key, w.key = w.key, None
            try:
                events.append(Event(key, outcome=w.conn.recv()))
            except (EOFError, OSError):  # nothing came back: the process is gone
                w.proc.join(5)
                events.append(Event(key, died=died_message(w.proc.exitcode)))
        return events

    def interrupt(self, signum: int) -> None:
        """Send ``signum`` to every worker running a cell: each saves and stops at its next step."""
        for w in self.workers:
            if w.key is not None and w.proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signum)

    def close(self) -> None:
        """Tell the idle workers to leave and wait for them; a busy one (only after an error in the
        driver) is terminated: SIGTERM, which saves its cell as a Ctrl-C would."""
        for w in self.workers:
            if w.key is None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    w.conn.send(None)
            elif w.proc.is_alive():
                w.proc.terminate()
        for w in self.workers:
            w.proc.join(60)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
