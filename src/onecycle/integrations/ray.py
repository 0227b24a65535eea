"""Ray: ``onecycle compare --ray [ADDRESS]`` runs each cell as a Ray task (the optional ``ray`` extra,
imported only here, only when asked for).

``RayBackend`` is a backend of ``compare.run_cells`` like the local ``pool.WorkerPool``: it only
executes. Each cell is one task asking for its CPUs (its torch threads) and, with ``--device cuda``,
one GPU; the task runs ``cell.run_cell``, the local pool's code path, in a Ray worker (a warm process
Ray reuses from task to task). Ray's own retries are off: a task whose worker died (a killed process,
a lost node) comes back as ``died`` and the driver continues it from its checkpoint once, on any node.
``interrupt`` cancels every task in flight: one not started never starts, a running one gets a
KeyboardInterrupt through the SIGINT handler (training saves its checkpoint and stops at its next
step), and the driver waits for it to let go of its run folder before it writes the table.

``address``: ``local`` starts a Ray on this machine and stops it afterwards; ``auto`` or
``host:port`` / ``ray://host:port`` joins that cluster (and leaves it running). Cells write into the
compare folder, which every node must reach at the same path (a shared file system), as must the
folder the command runs in when ``--out`` is relative; every node needs ``onecycle[ray]`` (and the
``data`` extra for the built-in tasks) at the driver's version.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from ..cell import outcome, run_cell
from ..checks import import_extra, install_hint
from ..pool import Event

__all__ = ["RayBackend", "check_ray", "INSTALL"]

INSTALL = install_hint("ray")


def check_ray() -> Any:
    """The ``ray`` module; an ``ImportError`` naming the extra when it is not installed."""
    return import_extra("ray", "ray", "--ray needs the ray package")


def _cell_task(job: dict[str, Any]) -> dict[str, Any]:
    """One cell in a Ray worker: in the driver's working folder, which must be there on this node."""
    folder = Path(job["cwd"], job["folder"])
    if not (folder / "cell.json").exists():
        return outcome("failed", f"{folder / 'cell.json'} is not on node {socket.gethostname()}: the compare folder "
                       "must be on a file system every node reaches at the same path")
    cwd = os.getcwd()
    os.chdir(job["cwd"])
    try:
        return run_cell(folder, job["resume"], job.get("plots", True))
    finally:
        os.chdir(cwd)


class RayBackend:
    """Cells as Ray tasks on a local Ray (``address="local"``) or a cluster (``auto``, an address)."""

    def __init__(self, address: str) -> None:
        ray = self.ray = check_ray()
        self.owned = address == "local" and not ray.is_initialized()
        if self.owned:
            ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        elif not ray.is_initialized():
            ray.init(address=address, configure_logging=False, log_to_driver=False)
        self.task = ray.remote(_cell_task)
        self.inflight: dict[Any, tuple[int, dict[str, Any]]] = {}  # ObjectRef -> (cell, job)
        self.cancelled = False

    def submit(self, key: int, job: dict[str, Any]) -> None:
        job = {**job, "cwd": os.getcwd()}
        ref = self.task.options(num_cpus=job["cpus"], num_gpus=job["gpus"], max_retries=0,
                                name=f"onecycle cell {key}").remote(job)
        self.inflight[ref] = (key, job)

    def running(self) -> list[int]:
        return sorted(key for key, _ in self.inflight.values())

    def wait(self, timeout: float) -> list[Event]:
        if not self.inflight:
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        if ready:  # and whatever else is done by now
            ready, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        return [self._event(ref, *self.inflight.pop(ref)) for ref in ready]

    def _event(self, ref: Any, key: int, job: dict[str, Any]) -> Event:
        from ray import exceptions as rx
        try:
            return Event(key, outcome=self.ray.get(ref))
        except rx.TaskCancelledError:  # interrupted by the driver: the folder says how far it got
            folder = Path(job["cwd"], job["folder"])
            _wait_unlocked(folder)
            return Event(key, outcome=outcome("interrupted" if (folder / "config.json").exists() else "skipped"))
        except rx.RayTaskError as err:  # raised outside the cell's own guard (onecycle missing on a node...)
            return Event(key, outcome=outcome("failed", str(getattr(err, "cause", None) or err).strip()))
        except rx.RayError as err:  # the worker or its node died: the driver may retry
            return Event(key, died=f"its Ray worker died ({type(err).__name__}: {str(err).splitlines()[0][:200]})")

    def interrupt(self, signum: int) -> None:
        """Cancel every task in flight (Ray delivers SIGINT's KeyboardInterrupt to a running one)."""
        for ref in self.inflight:
            self.ray.cancel(ref, force=False)

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def _wait_unlocked(folder: Path, timeout: float = 600.0) -> None:
    """Until the cell's process lets go of its run folder (it holds ``.lock`` while it trains and
    saves): a cancelled task's ``ray.get`` returns before its checkpoint and report are written."""
    try:
        import fcntl
    except ImportError:
        return
    path = folder / ".lock"
    if not path.exists():
        return
    deadline = time.monotonic() + timeout
    with open(path, "a+") as f:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(0.1)
                continue
            fcntl.flock(f, fcntl.LOCK_UN)
            return
