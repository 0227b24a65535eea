"""Runs: a Learner built from a run config, and the LR finder, a fit or a grid of fits run into
folders that hold everything about them, even after a crash or Ctrl-C.

A run folder (``<out>/<time>-<name>/``) holds ``config.json`` (the resolved config, library, torch
and git versions; written before anything trains), ``history.json`` with ``epochs.csv`` and
``iterations.csv`` (rewritten at every epoch end), ``last.ckpt`` (the full training state, every
``every`` steps and at each epoch end, within ``ckpt_budget``), PNG plots, ``result.json`` and a self-contained
``report.html``. ``resume_fit(folder)`` continues a run exactly from its checkpoint.

``cli.py`` is the argparse layer over this module; nothing else in the package imports it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .callbacks import Callback
from .report import draw_plots, read_json, run_report, summarize
from .runconfig import ConfigError, FindConfig, FitConfig, is_ref, make_config, parse_lr

__all__ = ["resolve_ref", "build_learner", "run_find", "run_fit", "resume_fit", "read_run_config", "SaveHistory",
           "TensorBoardLogger", "tensorboard_writer", "versions", "run_folder", "ValidationTimer", "process_started",
           "reproduce_command"]


# ---- references to the user's code: package.module:function ------------------------------------
def resolve_ref(ref: str, what: str) -> Callable:
    """The callable ``package.module:function`` names, imported from the current folder too (as
    ``python -m`` would); ``ConfigError`` naming the reference otherwise."""
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise ConfigError(f"{what} {ref!r} must look like package.module:function", what)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"{what} {ref!r}: no module named {err.name!r}", what) from err
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {ref!r}: {obj.__name__!r} has no attribute {part!r}", what)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{what} {ref!r} is not callable (a {type(obj).__name__})", what)
    return obj


def _call_with(fn: Callable, ref: str, what: str, kwargs: dict[str, Any], optional: dict[str, Any]) -> Any:
    """``fn(**kwargs, **optional)``, leaving out ``optional`` keys ``fn`` does not take; a key of
    ``kwargs`` it does not take is a ``ConfigError``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable: pass everything
        params = {}
    var_kw = not params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in kwargs:
        if not var_kw and key not in params:
            raise ConfigError(f"{what}_opts: {what} {ref!r} takes no option {key!r}", f"{what}_opts")
    chosen = {k: v for k, v in optional.items() if var_kw or k in params}
    return _call_checked(fn, ref, what, (), {**kwargs, **chosen})


def _call_checked(fn: Callable, ref: str, what: str, args: tuple, kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)``; a signature that cannot take them is a ``ConfigError`` naming ``what``,
    not a traceback from inside the call."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except ValueError:  # no signature to read (some builtins): the call itself must tell
        try:
            return fn(*args, **kwargs)
        except TypeError as err:
            raise ConfigError(f"{what} {ref!r} cannot be called with {_shown(args, kwargs)}: {err}", what) from err
    except TypeError as err:
        raise ConfigError(f"{what} {ref!r} cannot be called with {_shown(args, kwargs)}: {err}", what) from err
    return fn(*args, **kwargs)


def _shown(args: tuple, kwargs: dict[str, Any]) -> str:
    shown = [*(type(a).__name__ for a in args), *(f"{k}=..." for k in kwargs)]
    return "(" + ", ".join(shown) + ")" if shown else "no arguments"


def load_run_task(cfg: FindConfig) -> Any:
    """The task ``cfg.task`` names, built with ``batch_size`` (when set), ``seed`` (when the
    builder takes one) and ``task_opts``."""
    from .tasks import TASKS, Task
    fn = TASKS[cfg.task] if cfg.task in TASKS else resolve_ref(cfg.task, "task")
    bs = {"batch_size": cfg.batch_size} if cfg.batch_size else {}
    task = _call_with(fn, cfg.task, "task", {**bs, **cfg.task_opts}, {"seed": cfg.seed})
    if not isinstance(task, Task):
        raise ConfigError(f"task {cfg.task!r} returned {type(task).__name__}, not onecycle.tasks.Task", "task")
    return task


def build_model(cfg: FindConfig, task: Any) -> Any:
    from torch import nn

    from .models import create_model
    if not cfg.model and task.model is not None:
        return task.model
    name = cfg.model or task.default_model
    if is_ref(name):
        model = _call_checked(resolve_ref(name, "model"), name, "model", (task.in_shape, task.n_out), cfg.model_opts)
    else:
        try:
            model = create_model(name, task.in_shape, task.n_out, **cfg.model_opts)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model_opts {cfg.model_opts!r} do not fit model {name!r}: {err}", "model_opts") \
                from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} built {type(model).__name__}, not a torch.nn.Module", "model")
    return model


def build_learner(cfg: FindConfig) -> tuple[Any, Any]:
    """(Learner, Task) for ``cfg``: the seed is set before the data and the model are made."""
    import torch

    from .learner import Learner
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = load_run_task(cfg)
    model = build_model(cfg, task)
    learn = Learner(model, task.train_dl, task.valid_dl, task.loss_fn, opt=cfg.opt, metrics=task.metrics,
                    wd=cfg.wd, clip=cfg.clip or None, quiet=cfg.quiet)
    return learn, task


# ---- run folders -------------------------------------------------------------------------------
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
    """A new folder ``<out>/<time>-<name>`` (suffixed ``-2``, ``-3``... if it exists)."""
    base = Path(out) / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    folder, k = base, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            k += 1
            folder = base.with_name(f"{base.name}-{k}")


def _new_folder(cfg: FindConfig, default_name: str) -> Path:
    if not cfg.run_dir:
        return run_folder(cfg.out, cfg.name or default_name)
    folder = Path(cfg.run_dir)
    if (folder / "config.json").exists():
        raise ConfigError(f"run_dir {cfg.run_dir!r} already holds a run: continue it with --resume {cfg.run_dir}",
                          "run_dir")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _main_process() -> bool:
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


def _lock_folder(folder: Path) -> Any:
    """An exclusive lock on ``folder/.lock`` held while this process uses the run, so a second
    process (say ``--resume`` while the run still trains) is refused instead of writing over it.
    The system drops the lock when the process dies. Not on Windows (no ``fcntl``): no lock."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(folder / ".lock", "a+")  # noqa: SIM115  (kept open: the lock lives as long as the file)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError(f"run folder {str(folder)!r} is in use by another onecycle process", "run_dir") from None
    return f


class _Run:
    """A run folder and its ``config.json`` (rewritten when something gets resolved, e.g. the LR)."""

    def __init__(self, folder: Path, meta: dict[str, Any], started: float | None = None) -> None:
        self.folder, self.meta = folder, meta
        self.main = _main_process()  # under torchrun only rank 0 writes the folder
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
               started: float | None = None) -> _Run:
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
        from .atomic import atomic_write_text
        if self.main:
            atomic_write_text(self.folder / "config.json", json.dumps(self.meta, indent=2, default=str))

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def write_result(self, result: dict[str, Any]) -> None:
        from .atomic import atomic_write_text
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


def _say(cfg: FindConfig, *lines: str) -> None:
    if not cfg.quiet and _main_process():
        print("\n".join(lines), flush=True)


def _lr_find(learn: Any, cfg: FindConfig, run: _Run) -> Any:
    """The LR range test; its curves and plot go into the run folder (lr_find prints every suggestion)."""
    kw = {"rule": cfg.rule} if cfg.rule else {}
    start = time.perf_counter()
    res = learn.lr_find(start_lr=cfg.start_lr, end_lr=cfg.end_lr, num_it=cfg.num_it, runs=cfg.finder_runs, **kw)
    run.times["finder"] += time.perf_counter() - start
    if run.main:
        res.save_json(run.folder / "lr_find.json")
    run.meta["resolved"]["lr_find"] = {"suggestions": res.suggestions, "rule": res.rule, "suggestion": res.suggestion,
                                       "stop_reason": res.stop_reason, "notes": res.notes}
    run.write()
    return res  # its summary was printed by lr_find (unless quiet)


def _card_facts(run: _Run, cfg: FindConfig) -> dict[str, Any]:
    """What the report's card shows besides the results: task, model, optimizer, schedule, where the
    peak LR came from, the command that reproduces the run."""
    from .suggest import rule_name
    resolved = run.meta["resolved"]
    finder = resolved.get("lr_find") or {}
    given = getattr(cfg, "lr", "auto") != "auto"
    facts = {"task": resolved["task"]["name"], "model": cfg.model or resolved.get("model_name") or resolved["model"],
             "n_params": resolved["n_params"], "opt": cfg.opt, "wd": cfg.wd,
             "lr_source": f"the command line (--lr {cfg.lr})" if given else
             f"the LR finder: {rule_name(finder['rule'])}" if finder.get("rule") else "the LR finder",
             "command": run.meta.get("reproduce", "")}
    if isinstance(cfg, FitConfig):
        facts["schedule"] = cfg.schedule
    return facts


def run_find(cfg: FindConfig, started: float | None = None) -> Path:
    """The LR range test in a new run folder: curves (``lr_find.json``), the multi-panel plot,
    every suggestion printed, ``result.json`` and ``report.html``. ``started``: when the process
    started (``time.perf_counter()``), so the time split counts startup too."""
    learn, task = build_learner(cfg)
    run = _Run.create(cfg, "find", f"find-{task.name}-{cfg.opt}", task, learn, started)
    run.times = {"finder": 0.0, "plotting": 0.0}  # nothing trains
    status, res = "failed", None
    try:
        res = _lr_find(learn, cfg, run)
        status = "finished"
    finally:
        found = run.meta["resolved"].get("lr_find", {})
        _save_outputs(run, {"status": status, "suggestion": found.get("suggestion"), "lr": found.get("suggestion"),
                            **_card_facts(run, cfg)})
        run.close()
    _barrier(learn)
    result = read_json(run.folder / "result.json") or {}
    _say(cfg, f"LR suggestion: {res.suggestion:.3g} ({res.rule} rule)" if res.suggestion else "no LR suggestion",
         *summary_lines(result, run.folder), f"run folder: {run.folder}")
    return run.folder


def _save_outputs(run: _Run, result: dict[str, Any]) -> None:
    """Draw the plots (timed), then write ``result.json`` with the time split, then ``report.html``
    (which shows it). Best effort: never raises."""
    if not run.main:
        return
    start = time.perf_counter()
    _guarded(draw_plots, run.folder)
    run.times["plotting"] += time.perf_counter() - start
    result["time"] = run.time_split()
    result["seconds"] = result["time"]["total"]
    _guarded(run.write_result, result)
    _guarded(run_report, run.folder)


def summary_lines(result: dict[str, Any], folder: Path) -> list[str]:
    """The two or three lines a command ends with: the headline metric (best and final, with their
    epochs), where the time went, the report's path."""
    from .report import fmt_seconds, fmt_value
    lines = []
    metric = result.get("metric")
    best, final = result.get("best", {}), result.get("final", {})
    if metric in best:
        epochs = result.get("best_epoch", {})
        text = (f"{metric}: best {fmt_value(metric, best[metric])} (epoch {epochs.get(metric, '-')}), "
                f"final {fmt_value(metric, final.get(metric))} (epoch {result.get('epochs_done')})")
        if metric != "val_loss" and "val_loss" in final:
            text += f"; val_loss final {fmt_value('val_loss', final['val_loss'])}"
        lines.append(text)
    split = result.get("time") or {}
    if split:
        parts = ", ".join(f"{k} {fmt_seconds(v)}" for k, v in split.items() if k != "total" and v >= 0.005)
        lines.append(f"{result.get('status', 'done')} in {fmt_seconds(split['total'])} ({parts})")
    lines.append(f"report: {folder / 'report.html'}")
    return lines


# ---- callbacks the command line adds -------------------------------------------------------------
class SaveHistory(Callback):
    """Rewrites ``history.json``, ``epochs.csv`` and ``iterations.csv`` at every epoch end, so a run
    that dies keeps its history up to its last finished epoch."""
    order = 150  # after the per-step statistics are flushed into the recorder

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def after_epoch(self, learn: Any) -> None:
        learn.recorder.save_json(self.folder / "history.json")
        learn.recorder.save_csv(self.folder)


class ValidationTimer(Callback):
    """Seconds spent validating in the epochs this process completed (``before_validate`` to
    ``after_validate``); the rest of those epochs' recorded times is training."""
    order = 1000  # last before validating is the closest to it

    def before_fit(self, learn: Any) -> None:
        self.first_epoch, self.validation, self._pending = learn.recorder.n_epochs, 0.0, 0.0

    def before_validate(self, learn: Any) -> None:
        self._start = time.perf_counter()

    def after_validate(self, learn: Any) -> None:
        self._pending = time.perf_counter() - self._start

    def after_epoch(self, learn: Any) -> None:  # only epochs the recorder holds count
        self.validation, self._pending = self.validation + self._pending, 0.0

    def training(self, rec: Any) -> float:
        return max(0.0, sum(rec.times[self.first_epoch:]) - self.validation)


def _check_tensorboard() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401  (imported lazily: an optional extra)
    except ImportError as err:
        raise ConfigError("tensorboard: --tensorboard needs the tensorboard package: "
                          "pip install 'onecycle[tensorboard]'", "tensorboard") from err


def tensorboard_writer(log_dir: str | os.PathLike) -> Any:
    _check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(log_dir))


class TensorBoardLogger(Callback):
    """Logs every recorded scalar to TensorBoard at each epoch end: the epoch's iterations (LR per
    group, momentum, loss), per-step series (gradient statistics, trust ratios), and the epoch's
    losses, metrics and time. Only what is new since the last epoch, so a resumed run continues."""
    order = 200

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def before_fit(self, learn: Any) -> None:
        rec = learn.recorder  # already restored on a resume: start after what is there
        self._iters, self._epochs = len(rec.losses), rec.n_epochs
        self._series = {k: len(v) for k, v in rec.series.items()}

    def after_epoch(self, learn: Any) -> None:
        rec, add = learn.recorder, self.writer.add_scalar
        for i in range(self._iters, len(rec.losses)):
            for g, lrs in enumerate(rec.group_lrs):
                add(f"lr/group_{g}", lrs[i], i)
            if rec.moms[i] is not None:
                add("momentum", rec.moms[i], i)
            add("loss/train_iter", rec.losses[i], i)
        for name, values in rec.series.items():
            for i in range(self._series.get(name, 0), len(values)):
                add(name, values[i], i)
            self._series[name] = len(values)
        for e in range(self._epochs, rec.n_epochs):
            add("loss/train", rec.train_losses[e], e + 1)
            add("loss/valid", rec.val_losses[e], e + 1)
            for name in rec.metric_names:
                add(f"metrics/{name}", rec.metrics[name][e], e + 1)
            add("time/epoch_seconds", rec.times[e], e + 1)
        self._iters, self._epochs = len(rec.losses), rec.n_epochs
        self.writer.flush()

    def after_fit(self, learn: Any) -> None:
        self.writer.flush()


# ---- fit -------------------------------------------------------------------------------------------
def schedules_for(cfg: FitConfig, steps_per_epoch: int) -> tuple[Callable, Callable | None]:
    """(LR multiplier, momentum) schedules of progress for ``cfg.schedule``."""
    from . import schedules as S
    moms = tuple(cfg.moms) if cfg.moms else None
    if cfg.schedule == "cos":
        policy = S.cos_one_cycle(cfg.div, cfg.div_final, cfg.pct_start, moms)
    elif cfg.schedule == "clr_beta":
        policy = S.clr_beta(cfg.epochs * steps_per_epoch, cfg.div, cfg.anneal_pct, *(moms or ()))
    elif cfg.schedule == "const":
        return S.const(1.0), None
    elif cfg.schedule == "step":
        return S.step(cfg.milestones, cfg.gamma), None
    else:
        return S.triangular(cfg.div, cfg.cycles), None
    return policy.lr, policy.mom


def _peaks(learn: Any, cfg: FitConfig, run: _Run) -> list[float]:
    """Each param group's peak LR: from ``config.json`` when resuming, else from ``--lr`` (the
    finder's suggestion for ``auto``); recorded before training so a resume uses the same."""
    from .optim.groups import spread_lrs
    peaks = run.meta["resolved"].get("peaks")
    if peaks is not None:
        return peaks
    lr = parse_lr(cfg.lr)
    if lr == "auto":
        _lr_find(learn, cfg, run)
        lr = learn.suggested_lr
        if lr is None:
            raise ValueError("the LR finder could not suggest an LR (see lr_find.png): pass --lr")
    peaks = spread_lrs(lr, len(learn.layer_groups()))
    run.meta["resolved"].update(peaks=peaks, lr=peaks[-1])
    run.write()
    _say(cfg, f"training {cfg.epochs} epochs, schedule {cfg.schedule}, peak LR {peaks[-1]:.3g}"
         + (f" (groups {', '.join(f'{p:.3g}' for p in peaks)})" if len(set(peaks)) > 1 else ""))
    return peaks


def _fit_callbacks(cfg: FitConfig, run: _Run, timer: ValidationTimer) -> list[Callback]:
    from .callbacks import GradStats
    cbs: list[Callback] = [timer, *([GradStats()] if cfg.grad_stats else [])]
    if not run.main:
        return cbs
    folder = run.folder
    cbs.append(SaveHistory(folder))
    if cfg.tensorboard:
        cbs.append(TensorBoardLogger(tensorboard_writer(folder / "tensorboard")))
    return cbs


def run_fit(cfg: FitConfig, command: str = "fit", started: float | None = None) -> Path:
    """Train ``cfg`` in a new run folder; returns the folder. ``KeyboardInterrupt`` (Ctrl-C, or
    ``TrainingInterrupted`` with ``.signum`` for SIGTERM) propagates after everything is saved.
    ``started``: when the process started (``time.perf_counter()``): the time split counts startup."""
    if cfg.tensorboard:
        _check_tensorboard()  # before the data is loaded: a missing package fails at once
    learn, task = build_learner(cfg)
    model = cfg.model or task.default_model
    run = _Run.create(cfg, command, f"{task.name}-{model}-{cfg.opt}-{cfg.schedule}" if command == "fit" else command,
                      task, learn, started)
    return _train(learn, task, cfg, run, resume=False)


def read_run_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"resume: {str(folder)!r} is not a run folder (no config.json)", "resume") from None
    if meta.get("command") not in ("fit", "demo"):
        raise ConfigError(f"resume: {str(folder)!r} holds a {meta.get('command')!r} run, not a fit", "resume")
    return meta


def resume_fit(folder: str | os.PathLike, quiet: bool | None = None, threads: int | None = None,
               started: float | None = None) -> Path:
    """Continue the run in ``folder`` exactly: same config, same peak LR, from ``last.ckpt`` (from
    the start when it has none, e.g. interrupted during the finder)."""
    folder = Path(folder)
    meta = read_run_config(folder)
    overrides = {k: v for k, v in (("quiet", quiet), ("threads", threads)) if v is not None}
    cfg = make_config(FitConfig, [(str(folder / "config.json"), meta["config"]), ("command line", overrides)])
    run = _Run(folder, meta, started)
    try:
        learn, task = build_learner(cfg)
    except BaseException:
        run.close()
        raise
    run.meta.setdefault("resumed", []).append(time.strftime("%Y-%m-%d %H:%M:%S"))
    run.write()
    from .resume import CKPT_NAME
    return _train(learn, task, cfg, run, resume=(folder / CKPT_NAME).exists())


def _train(learn: Any, task: Any, cfg: FitConfig, run: _Run, resume: bool) -> Path:
    status, error, signum = "failed", None, None
    timer = ValidationTimer()
    timer.before_fit(learn)  # in case the fit fails before it starts
    try:
        peaks = _peaks(learn, cfg, run)
        lr_sched, mom_sched = schedules_for(cfg, len(task.train_dl))
        learn.fit_sched(cfg.epochs, peaks, lr_sched, mom_sched, callbacks=_fit_callbacks(cfg, run, timer),
                        checkpoint_dir=run.folder, every=cfg.every or None, ckpt_budget=cfg.ckpt_budget or None,
                        resume=resume)
        status = "finished"
        if run.main:
            learn.save(run.folder / "model.pt")
    except KeyboardInterrupt as err:
        status, signum = "interrupted", getattr(err, "signum", signal.SIGINT)
        if not cfg.quiet and run.main:
            print(f"\ninterrupted by {signal.Signals(signum).name}: the run is saved in {run.folder}; continue it "
                  f"with: onecycle fit --resume {run.folder}", file=sys.stderr, flush=True)
        raise
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        run.times["training"] += timer.training(learn.recorder)
        run.times["validation"] += timer.validation
        _finish(learn, run, cfg, status, error, signum)
        run.close()
    _barrier(learn)
    _say(cfg, *summary_lines(read_json(run.folder / "result.json") or {}, run.folder), f"run folder: {run.folder}")
    return run.folder


def _barrier(learn: Any) -> None:
    """Under torchrun, the ranks leave together once rank 0 has written the folder (a rank that
    exits first tears its process group down under the others). Never on an error path."""
    if learn.world_size > 1:
        import torch.distributed as dist
        dist.barrier()


def _finish(learn: Any, run: _Run, cfg: FitConfig, status: str, error: str | None, signum: int | None) -> None:
    """Save what exists: history, plots, result, report. Never raises (the run's own error matters)."""
    if not run.main:
        return
    rec = learn.recorder
    _guarded(rec.save_json, run.folder / "history.json")
    _guarded(rec.save_csv, run.folder)
    result = {"status": status, "error": error, "signal": signum, "epochs": cfg.epochs,
              "lr": run.meta["resolved"].get("lr"), **_card_facts(run, cfg), **summarize(rec)}
    _save_outputs(run, result)


def _guarded(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # saving is best effort on the way out: report, keep the first error
        print(f"onecycle: could not {getattr(fn, '__name__', fn)}: {type(err).__name__}: {err}", file=sys.stderr)
        return None
