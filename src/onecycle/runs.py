"""The run flow: the LR finder, a fit, or a fit resumed, run into a folder that holds everything about
it, even after a crash or Ctrl-C. The Learner comes from ``runbuild``, the folder from ``rundir``, the
callbacks that keep it up to date from ``run_callbacks`` (and ``integrations.tensorboard``), its
plots and report from ``report``.

A run folder (``<out>/<time>-<name>/``) holds ``config.json`` (the resolved config, library, torch
and git versions; written before anything trains), ``history.json`` with ``epochs.csv`` and
``iterations.csv`` (rewritten at every epoch end), ``last.ckpt`` (the full training state, every
``every`` steps and at each epoch end, within ``ckpt_budget``), PNG plots, ``result.json`` and a self-contained
``report.html``. ``resume_fit(folder)`` continues a run exactly from its checkpoint.

``cli.py`` is the argparse layer over this module, and ``cell.py`` runs each cell of a grid through
it in a warm worker process; nothing else in the package imports it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .callbacks import Callback
from .report import draw_plots, run_report, summarize
from .run_callbacks import SaveHistory, ValidationTimer, save_history
from .runbuild import build_learner
from .runconfig import ConfigError, FindConfig, FitConfig, make_config, parse_lr
from .rundir import RunDir, is_main_process, read_json, read_run_config

__all__ = ["run_find", "run_fit", "resume_fit", "schedules_for", "summary_lines"]


def _say(cfg: FindConfig, *lines: str) -> None:
    if not cfg.quiet and is_main_process():
        print("\n".join(lines), flush=True)


def _lr_find(learn: Any, cfg: FindConfig, run: RunDir) -> Any:
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


def _card_facts(run: RunDir, cfg: FindConfig) -> dict[str, Any]:
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
    # the LRs a 1cycle at the peak runs through: a fit's own div, fastai's 25 for a finder's suggestion
    peak = resolved.get("lr") if isinstance(cfg, FitConfig) else finder.get("suggestion")
    if peak and (not isinstance(cfg, FitConfig) or cfg.schedule in ("cos", "clr_beta")):
        div = cfg.div if isinstance(cfg, FitConfig) else 25.0
        facts["one_cycle"] = [peak / div, peak]
    return facts


def run_find(cfg: FindConfig, started: float | None = None) -> Path:
    """The LR range test in a new run folder: curves (``lr_find.json``), the multi-panel plot,
    every suggestion printed, ``result.json`` and ``report.html``. ``started``: when the process
    started (``time.perf_counter()``), so the time split counts startup too."""
    learn, task = build_learner(cfg)
    run = RunDir.create(cfg, "find", f"find-{task.name}-{cfg.opt}", task, learn, started)
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
    _say(cfg, f"LR suggestion: {res.suggestion:.3g} ({res.rule} rule); 1cycle range {res.suggestion / 25:.3g} up to "
         f"{res.suggestion:.3g} (div 25)" if res.suggestion else "no LR suggestion",
         *summary_lines(result, run.folder), f"run folder: {run.folder}")
    return run.folder


def _save_outputs(run: RunDir, result: dict[str, Any], plots: bool = True) -> None:
    """Draw the plots (timed), then write ``result.json`` with the time split, then ``report.html``
    (which shows it); ``plots=False``: only ``result.json`` (a grid drawing its cells at its end).
    Best effort: never raises."""
    if not run.main:
        return
    start = time.perf_counter()
    if plots:
        _guarded(draw_plots, run.folder)
    run.times["plotting"] += time.perf_counter() - start
    result["time"] = run.time_split()
    result["seconds"] = result["time"]["total"]
    _guarded(run.write_result, result)
    if plots:
        _guarded(run_report, run.folder)


def summary_lines(result: dict[str, Any], folder: Path) -> list[str]:
    """The two or three lines a command ends with: the headline metric (best and final, with their
    epochs), where the time went, the report's path."""
    from .htmlpage import fmt_seconds, fmt_value
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
        parts = ", ".join(f"{k} {v:.3g}" if v < 100 else f"{k} {v:.0f}" for k, v in split.items()
                          if k != "total" and v >= 0.005)
        lines.append(f"{result.get('status', 'done')} in {fmt_seconds(split['total'])}: {parts} s")
    lines.append(f"report: {folder / 'report.html'}")
    return lines


# ---- fit -------------------------------------------------------------------------------------------
def schedules_for(cfg: FitConfig, steps_per_epoch: int) -> tuple[Callable, Callable | None]:
    """(LR multiplier, momentum) schedules of progress for ``cfg.schedule``. A schedule-free
    optimizer's ``const`` is a linear warmup over ``warmup_pct``, then constant."""
    from . import schedules as S
    from .optim.extras import SCHEDULE_FREE
    moms = tuple(cfg.moms) if cfg.moms else None
    if cfg.opt in SCHEDULE_FREE:  # runconfig allows const only
        return S.wsd(cfg.warmup_pct, 0.0), None
    if cfg.schedule in ("wsd", "warmup_cos"):
        return (S.wsd(cfg.warmup_pct, cfg.decay_pct, cfg.decay) if cfg.schedule == "wsd" else
                S.warmup_cos(cfg.warmup_pct, 1 / cfg.div_final)), None
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


def _peaks(learn: Any, cfg: FitConfig, run: RunDir) -> list[float]:
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


def _fit_callbacks(cfg: FitConfig, run: RunDir, timer: ValidationTimer) -> list[Callback]:
    from .callbacks import GradStats
    cbs: list[Callback] = [timer, *([GradStats()] if cfg.grad_stats else [])]
    if not run.main:
        return cbs
    folder = run.folder
    cbs.append(SaveHistory(folder))
    if cfg.tensorboard:
        from .integrations.tensorboard import TensorBoardLogger, tensorboard_writer
        cbs.append(TensorBoardLogger(tensorboard_writer(folder / "tensorboard")))
    return cbs


def _check_tensorboard() -> None:
    """``--tensorboard`` without the package: a ``ConfigError`` naming the extra."""
    from .integrations.tensorboard import INSTALL, check_tensorboard
    try:
        check_tensorboard()
    except ImportError as err:
        raise ConfigError(f"tensorboard: --tensorboard needs the tensorboard package: {INSTALL}", "tensorboard") \
            from err


def run_fit(cfg: FitConfig, command: str = "fit", started: float | None = None, plots: bool = True) -> Path:
    """Train ``cfg`` in a new run folder; returns the folder. ``KeyboardInterrupt`` (Ctrl-C, or
    ``TrainingInterrupted`` with ``.signum`` for SIGTERM) propagates after everything is saved.
    ``started``: when the process started (``time.perf_counter()``): the time split counts startup.
    ``plots=False``: no PNGs or report (``report.redraw`` draws them later)."""
    if cfg.tensorboard:
        _check_tensorboard()  # before the data is loaded: a missing package fails at once
    learn, task = build_learner(cfg)
    model = cfg.model or task.default_model
    run = RunDir.create(cfg, command, f"{task.name}-{model}-{cfg.opt}-{cfg.schedule}" if command == "fit" else command,
                      task, learn, started)
    return _train(learn, task, cfg, run, resume=False, plots=plots)


def resume_fit(folder: str | os.PathLike, quiet: bool | None = None, threads: int | None = None,
               started: float | None = None, plots: bool = True) -> Path:
    """Continue the run in ``folder`` exactly: same config, same peak LR, from ``last.ckpt`` (from
    the start when it has none, e.g. interrupted during the finder)."""
    folder = Path(folder)
    meta = read_run_config(folder)
    overrides = {k: v for k, v in (("quiet", quiet), ("threads", threads)) if v is not None}
    cfg = make_config(FitConfig, [(str(folder / "config.json"), meta["config"]), ("command line", overrides)])
    run = RunDir(folder, meta, started)
    try:
        learn, task = build_learner(cfg)
    except BaseException:
        run.close()
        raise
    run.meta.setdefault("resumed", []).append(time.strftime("%Y-%m-%d %H:%M:%S"))
    run.write()
    from .resume import CKPT_NAME
    return _train(learn, task, cfg, run, resume=(folder / CKPT_NAME).exists(), plots=plots)


def _train(learn: Any, task: Any, cfg: FitConfig, run: RunDir, resume: bool, plots: bool = True) -> Path:
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
        _finish(learn, run, cfg, status, error, signum, plots)
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


def _finish(learn: Any, run: RunDir, cfg: FitConfig, status: str, error: str | None, signum: int | None,
            plots: bool = True) -> None:
    """Save what exists: history, plots, result, report. Never raises (the run's own error matters)."""
    if not run.main:
        return
    rec = learn.recorder
    _guarded(save_history, run.folder, rec)
    result = {"status": status, "error": error, "signal": signum, "epochs": cfg.epochs,
              "lr": run.meta["resolved"].get("lr"), **_card_facts(run, cfg), **summarize(rec)}
    _save_outputs(run, result, plots)


def _guarded(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # saving is best effort on the way out: report, keep the first error
        print(f"onecycle: could not {getattr(fn, '__name__', fn)}: {type(err).__name__}: {err}", file=sys.stderr)
        return None
