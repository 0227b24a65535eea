"""Run folders: where a run goes (``<out>/<time>-<name>/``, or an exact ``run_dir``), the lock that
keeps a second process out, its ``config.json`` (the resolved config, versions, the command that
reproduces it) and ``result.json``, and reading them back.

A run's name is one path component (``runconfig.check_name``), so a folder never lands outside
``out``. Under torchrun only rank 0 writes; every rank learns the folder's path from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .runconfig import ConfigError, FindConfig, check_name, make_config

__all__ = ["RunDir", "run_folder", "read_json", "read_run_config", "versions", "is_main_process", "process_started",
           "reproduce_command"]


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (a run that died early)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _git_commit() -> str | None:
    try:  # read-only; the package's own checkout, wherever the command runs
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, Any]:
    import torch

    from . import __version__
    return {"onecycle": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "git": _git_commit()}


def run_folder(out: str, name: str) -> Path:
    """A new folder ``<out>/<time>-<name>`` (suffixed ``-2``, ``-3``... if it exists); ``name`` must be
    one path component (``runconfig.check_name``), so the folder is always directly inside ``out``."""
    base = Path(out) / f"{time.strftime('%Y%m%d-%H%M%S')}-{check_name('name', name)}"
    folder, k = base, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            k += 1
            folder = base.with_name(f"{base.name}-{k}")


def _component(text: str) -> str:
    """A name made from parts (a user task's name among them) as one path component."""
    return "".join("_" if c in "/\\\0" else c for c in text).strip(".") or "run"


def _new_folder(cfg: FindConfig, default_name: str) -> Path:
    if not cfg.run_dir:
        return run_folder(cfg.out, cfg.name or _component(default_name))
    folder = Path(cfg.run_dir)
    if (folder / "config.json").exists():
        raise ConfigError(f"run_dir {cfg.run_dir!r} already holds a run: continue it with --resume {cfg.run_dir}",
                          "run_dir")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def is_main_process() -> bool:
    """Rank 0 under torchrun, else True: the one process that writes and prints."""
    from .distributed import env_world
    return env_world()[0] == 0


def _shared_folder(learn: Any, make: Callable[[], Path]) -> Path:
    """``make()`` on rank 0; under torchrun every rank gets its path (checkpoints, resume)."""
    if learn.world_size == 1:
        return make()
    import torch.distributed as dist
    box = [str(make()) if learn.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


class _FolderLock:
    """An exclusive ``flock`` on the run folder itself (its directory, opened read-only), held while
    this process uses the run, so a second process (say ``--resume`` while the run still trains) is
    refused instead of writing over it. Locking the directory leaves no file behind in a finished
    run; the system drops the lock when the process dies."""

    def __init__(self, folder: Path) -> None:
        import fcntl
        self.fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"run folder {str(folder)!r} is in use by another onecycle process", "run_dir") from None

    def close(self) -> None:
        os.close(self.fd)  # closing the descriptor releases the lock


def _lock_folder(folder: Path) -> _FolderLock | None:
    """The folder's lock (``_FolderLock``); None where there is no ``fcntl`` (Windows: no lock)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return None
    return _FolderLock(folder)


class RunDir:
    """A run folder and its ``config.json`` (rewritten when something gets resolved, e.g. the LR)."""

    def __init__(self, folder: Path, meta: dict[str, Any], started: float | None = None) -> None:
        self.folder, self.meta = folder, meta
        self.main = is_main_process()  # under torchrun only rank 0 writes the folder
        self._lock = _lock_folder(folder) if self.main else None
        # Where this process's time went (seconds); "other" (startup, data, checkpoints, saving) is
        # the rest of the wall time since ``started`` (a time.perf_counter() value).
        self.started = time.perf_counter() if started is None else started
        self.times = {"finder": 0.0, "training": 0.0, "validation": 0.0, "plotting": 0.0}

    def time_split(self) -> dict[str, float]:
        """This process's time split, added to what an earlier process of the same run (a resume)
        recorded in ``result.json``; ``total`` is their sum."""
        now = {**self.times, "total": time.perf_counter() - self.started}
        now["other"] = max(0.0, now["total"] - sum(self.times.values()))
        old = (read_json(self.folder / "result.json") or {}).get("time") or {}
        return {k: round(now[k] + float(old.get(k, 0.0)), 4) for k in ("total", *self.times, "other")}

    @classmethod
    def create(cls, cfg: FindConfig, command: str, default_name: str, task: Any, learn: Any,
               started: float | None = None) -> RunDir:
        folder = _shared_folder(learn, lambda: _new_folder(cfg, default_name))
        n_params = sum(p.numel() for p in learn.model.parameters())
        resolved = {"task": {"name": task.name, "in_shape": list(task.in_shape), "n_out": task.n_out,
                             **{k: v for k, v in task.info.items() if isinstance(v, (int, float))}},
                    "model": type(learn.model).__name__, "n_params": n_params,
                    "model_name": cfg.model or (task.default_model if task.model is None
                                                else type(learn.model).__name__),
                    "metrics": list(learn.recorder.metric_names)}
        meta = {"command": command, "config": dataclasses.asdict(cfg), "resolved": resolved,
                "versions": versions(), "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "reproduce": reproduce_command(command, cfg)}
        run = cls(folder, meta, started)
        run.write()
        return run

    def write(self) -> None:
        if self.main:
            atomic_write_text(self.folder / "config.json", json.dumps(self.meta, indent=2, default=str))

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def write_result(self, result: dict[str, Any]) -> None:
        if self.main:
            atomic_write_text(self.folder / "result.json", json.dumps(result, indent=2, default=str))


def process_started() -> float:
    """When this process started, as a ``time.perf_counter()`` value (so a run's time counts the
    interpreter's startup and imports); now, where the system does not say (no ``/proc``)."""
    now = time.perf_counter()
    try:
        fields_ = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
        age = since_boot - int(fields_[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in ticks
    except (OSError, ValueError, IndexError):
        return now
    return now - age if 0 <= age < 3600 else now


def reproduce_command(command: str, cfg: FindConfig) -> str:
    """The command line that runs ``cfg`` again: every option whose value differs from the default
    it would get (the task's defaults included); where the run folder goes is left out."""
    import shlex
    from dataclasses import fields
    base = {"task": "mnist1d", "name": "demo"} if command == "demo" else {}
    ref = make_config(type(cfg), [("defaults", {**base, "task": cfg.task})])  # the task's defaults
    bare = make_config(type(cfg), [("defaults", base)])  # what the command runs without --task
    args = ["onecycle", command]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("out", "name", "run_dir", "quiet") or value == getattr(ref if f.name != "task" else bare, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            args += [flag, *(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in value.items())]
        elif isinstance(value, list):
            args += [flag, *(repr(v) for v in value)]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return shlex.join(args)


def read_run_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"resume: {str(folder)!r} is not a run folder (no config.json)", "resume") from None
    if meta.get("command") not in ("fit", "demo"):
        raise ConfigError(f"resume: {str(folder)!r} holds a {meta.get('command')!r} run, not a fit", "resume")
    return meta
