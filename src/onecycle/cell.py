"""One cell of a grid, run inside a warm worker process (the local pool's, ``pool.py``, or a Ray
worker's, ``integrations/ray.py``: the same function on both): ``run_cell(folder)`` trains the fit
that ``folder/cell.json`` describes into ``folder``, or continues it from its checkpoint
(``resume=True``: a retry after a worker died), exactly as ``onecycle fit --config cell.json`` (or
``--resume``) would in a process of its own.

A worker runs many cells, so each one is isolated from the ones before it: its output (Python's and
the C libraries', through file descriptors 1 and 2) goes to ``folder/log.txt``; its seed is set in
torch, numpy and ``random`` before anything is built; its torch threads are its config's; its
``sys.argv`` is the command it stands for; SIGINT and SIGTERM stop it as they stop ``onecycle fit``
(training saves a checkpoint and stops at the next step); and whatever it changed in the process
(torch's threads, default dtype, grad mode and deterministic flag, the working folder, the signal
handlers) is put back afterwards. An exception is caught and returned as the cell's error; only a
crash of the process itself (a segfault, a kill) reaches the pool, which retries the cell once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["run_cell", "outcome", "request_stop"]

_STOP: list[int] = []  # a stop signal that reached the worker between cells, before its cell began


def request_stop(signum: int, frame: Any = None) -> None:
    """The worker's SIGINT/SIGTERM handler between cells: the cell it was just handed is not started."""
    _STOP.append(signum)


def outcome(status: str, error: str | None = None, signum: int | None = None) -> dict[str, Any]:
    """What a worker reports for a cell: ``status`` is finished, failed, interrupted or skipped."""
    return {"status": status, "error": error, "signal": signum}


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` (``print``, tracebacks), and file descriptors 1 and 2
    (C-level output), into ``path``."""
    streams = sys.stdout, sys.stderr
    for stream in streams:
        stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    log = open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = log
        yield
    finally:
        log.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        log.close()
        for f in (fd, *saved):
            os.close(f)


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Put back what a cell may change in the worker's process."""
    import torch
    kept = (os.getcwd(), list(sys.argv), torch.get_num_threads(), torch.get_default_dtype(),
            torch.is_grad_enabled(), torch.are_deterministic_algorithms_enabled())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        cwd, argv, threads, dtype, grad, deterministic = kept
        os.chdir(cwd)
        sys.argv[:] = argv
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.use_deterministic_algorithms(deterministic)
        for s, h in handlers.items():
            signal.signal(s, h)


def _interrupt(signum: int, frame: Any) -> None:
    from .checkpointer import TrainingInterrupted
    raise TrainingInterrupted(signum)  # a KeyboardInterrupt carrying its signal, as onecycle fit raises


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_cell(folder: str | os.PathLike, resume: bool = False, plots: bool = True) -> dict[str, Any]:
    """Train the cell in ``folder`` (``cell.json``), or continue it from ``last.ckpt`` when
    ``resume``; ``plots=False``: without its PNGs and report (the grid draws them at its end).
    Returns ``outcome(...)``. Never raises for the cell's own errors."""
    folder = Path(folder)
    if _STOP:  # stopped before it began: the driver counts it as not run
        return outcome("skipped", signum=_STOP.pop())
    if not (folder / "cell.json").is_file():
        return outcome("failed", f"{folder}: no cell.json (not a grid's cell, or not reachable from here)")
    start = time.perf_counter()
    with _process_state_kept(), _output_to(folder / "log.txt"):
        if resume:
            print("onecycle: the worker running this cell died; continuing it from its checkpoint", flush=True)
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return _run(folder, resume, plots, start)
        except KeyboardInterrupt as err:
            return outcome("interrupted", signum=int(getattr(err, "signum", signal.SIGINT)))
        except Exception as err:  # the cell's error, in its log and in the table; the worker goes on
            traceback.print_exc()
            return outcome("failed", f"{type(err).__name__}: {err}")


def _run(folder: Path, resume: bool, plots: bool, start: float) -> dict[str, Any]:
    from .runconfig import ConfigError, FitConfig, make_config
    from .runs import resume_fit, run_fit
    path = folder / "cell.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cfg = make_config(FitConfig, [(str(path), data)])
    except (OSError, ValueError) as err:
        print(f"onecycle fit: error: {err}", file=sys.stderr)
        return outcome("failed", str(err))
    sys.argv[:] = ["onecycle", "fit", *(("--resume", str(folder)) if resume else ("--config", str(path)))]
    _seed_everything(cfg.seed)
    try:
        if resume and (folder / "config.json").exists():
            resume_fit(folder, started=start, plots=plots)
        else:
            run_fit(cfg, started=start, plots=plots)
    except ConfigError as err:
        print(f"onecycle fit: error: {err}", file=sys.stderr)
        return outcome("failed", str(err))
    return outcome("finished")
