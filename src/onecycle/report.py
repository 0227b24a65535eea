"""What a run folder shows: its plots redrawn from the saved history, its summary (``summarize``:
final and best values), overlays of several runs, and ``report.html``, one self-contained page (an
``htmlpage.Page``) that opens offline and can be mailed as one file.

A run's page opens with a card that says what happened (task, model, optimizer, schedule, the peak LR
and where it came from, the best and final metric with their epochs, where the time went, the command
that reproduces the run); the plots, the per-epoch table and the config (collapsed) follow.

Everything here reads the folder's files (``config.json``, ``history.json``, ``result.json``,
``lr_find.json``, ``compare.json``), so ``onecycle plot FOLDER`` redraws a finished run identically.
The compare page is built in ``compare_report.py``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .htmlpage import Page, fact, fmt_seconds, fmt_value
from .metrics import lower_is_better
from .rundir import read_json

__all__ = ["redraw", "draw_plots", "run_report", "run_facts", "overlay_runs", "summarize", "history", "card",
           "epoch_table", "PLOTS", "best_of"]

# Plots a folder may hold, in the order the report shows them.
PLOTS = (("dashboard.png", "The run at a glance: LR, momentum, losses and metrics against epochs"),
         ("lr_find.png", "LR range test: training loss, validation loss and metrics against the LR"),
         ("lr_mom.png", "Learning rate and momentum"), ("losses.png", "Training and validation loss"),
         ("metrics.png", "Metrics per epoch"), ("grad_stats.png", "Gradient statistics per param group"),
         ("trust_ratios.png", "LARS/LAMB trust ratios per param group"),
         ("compare.png", "Validation loss and metrics per configuration (line: mean; band: min-max over seeds)"),
         ("seeds.png", "Final metric of every seed (one dot each; bar: the configuration's mean)"),
         ("finders.png", "LR finder curves of every run over each test's whole range (the loss its rule reads, "
                         "smoothed and centred); dot: the LR each seed's finder chose"),
         ("overlay.png", "Runs overlaid"))


def best_of(values: Sequence[float], lower: bool) -> tuple[float, int | None]:
    """The best finite value and its epoch (numbered from 1; the first one on a tie)."""
    finite = [(v, e) for e, v in enumerate(values, 1) if v is not None and not math.isnan(v)]
    if not finite:
        return math.nan, None
    return min(finite, key=lambda t: (t[0] if lower else -t[0], t[1]))


def summarize(rec: Any) -> dict[str, Any]:
    """Last-epoch values, the best of each metric with its epoch (from 1), and the headline metric
    (the first metric; the validation loss when there is none)."""
    metric = rec.metric_names[0] if rec.metric_names else "val_loss"
    if not rec.n_epochs:
        return {"epochs_done": 0, "final": {}, "best": {}, "best_epoch": {}, "metric": metric,
                "train_seconds": 0.0}
    final = {"train_loss": rec.train_losses[-1], "val_loss": rec.val_losses[-1],
             **{n: v[-1] for n, v in rec.metrics.items()}}
    series = {"val_loss": rec.val_losses, **rec.metrics}
    bests = {n: best_of(v, not _higher(rec, n)) for n, v in series.items()}
    return {"epochs_done": rec.n_epochs, "final": final, "best": {n: b[0] for n, b in bests.items()},
            "best_epoch": {n: b[1] for n, b in bests.items()}, "metric": metric, "train_seconds": sum(rec.times)}


def _higher(rec: Any, name: str) -> bool:
    """A column's direction: as the history recorded it, else by its name."""
    recorded = getattr(rec, "higher_is_better", {}) or {}
    return bool(recorded[name]) if name in recorded else not lower_is_better(name)


def history(folder: Path) -> Any:
    from .run_callbacks import read_history
    return read_history(folder)


# ---- drawing ---------------------------------------------------------------------------------------
def draw_plots(folder: str | Path) -> list[Path]:
    """(Re)draw a run folder's PNGs from ``history.json`` and ``lr_find.json``: the dashboard (one
    figure: LR, momentum, losses, metrics), the finder's plot, gradient statistics and trust ratios
    when recorded."""
    from . import plots
    folder = Path(folder)
    written = []
    rec = history(folder)
    if rec is not None and rec.losses:
        opt = ((read_json(folder / "config.json") or {}).get("config") or {}).get("opt")
        draws = [("dashboard", lambda save: plots.plot_dashboard(rec, plots.momentum_label(opt), save=save))]
        if any(k.startswith("grad_") for k in rec.series):
            draws.append(("grad_stats", rec.plot_grad_stats))
        if any(k.startswith("trust_") for k in rec.series):
            draws.append(("trust_ratios", rec.plot_trust_ratios))
        for name, draw in draws:
            draw(save=folder / f"{name}.png")
            written.append(folder / f"{name}.png")
    if (folder / "lr_find.json").exists():
        from .lr_find_result import LRFindResult
        LRFindResult.load_json(folder / "lr_find.json").plot(save=folder / "lr_find.png")
        written.append(folder / "lr_find.png")
    return written


def redraw(folder: str | Path) -> list[Path]:
    """(Re)draw a run folder's PNGs, then its ``report.html``; returns the files written. (A compare
    folder: ``compare_report.compare_outputs``.)"""
    return [*draw_plots(folder), run_report(folder)]


def run_facts(folder: Path) -> dict[str, Any]:
    """Task, optimizer and peak LR of a run folder (for overlays and their warnings)."""
    meta, result = read_json(folder / "config.json") or {}, read_json(folder / "result.json") or {}
    cfg = meta.get("config", {})
    resolved = meta.get("resolved", {})
    return {"task": result.get("task") or resolved.get("task", {}).get("name") or cfg.get("task"),
            "opt": result.get("opt") or cfg.get("opt"), "lr": result.get("lr", resolved.get("lr")),
            "metric": result.get("metric"), "final": result.get("final", {}), "status": result.get("status"),
            "seconds": result.get("seconds")}


def overlay_runs(folders: Sequence[Path], out: Path) -> tuple[list[Path], list[str]]:
    """Validation loss and metrics of several runs in one plot (``overlay.png``) with a report.
    Returns the files written and warnings (runs of different tasks)."""
    from .plots import plot_overlay
    groups, facts = {}, {}
    for f in folders:
        rec = history(f)
        if rec is None:
            raise ValueError(f"runs: {str(f)!r} holds no history.json")
        groups[f.name], facts[f.name] = [rec], run_facts(f)
    tasks = sorted({str(v["task"]) for v in facts.values()})
    warnings = [f"these runs are of different tasks ({', '.join(tasks)}): their curves do not compare"] \
        if len(tasks) > 1 else []
    plot_overlay(groups, save=out / "overlay.png")
    page = Page(f"Overlay of {len(folders)} runs")
    for w in warnings:
        page.raw(f'<p class="warn">Warning: {html.escape(w)}</p>')
    metric = next((v["metric"] for v in facts.values() if v["metric"]), "val_loss")
    rows = [[name, v["task"], v["opt"], v["lr"], v["status"], v["final"].get("val_loss"), v["final"].get(metric),
             v["seconds"]] for name, v in facts.items()]
    page.table(["run", "task", "optimizer", "peak LR", "status", "final val_loss", f"final {metric}", "time"], rows,
               kinds=["run", "task", "opt", "lr", "status", "val_loss", metric, "seconds"])
    page.image(out / "overlay.png", dict(PLOTS)["overlay.png"])
    return [out / "overlay.png", page.write(out / "report.html")], warnings


# What each part of the time split holds (the card says it under the bar).
TIME_PARTS = {"finder": "the LR range test", "training": "the training batches (forward, backward, optimizer steps)",
              "validation": "the validation passes at epoch ends",
              "plotting": "drawing the PNGs (the report page itself is not counted)",
              "other": "the rest of the wall time: starting Python and importing torch, loading the data, building "
                       "the model, checkpoints, saving the history and the weights"}
TIME_COLORS = {"finder": "#8e6cc9", "training": "#2f7ed8", "validation": "#f28f43", "plotting": "#54a24b",
               "other": "#a0a0a0"}


# ---- the run page ------------------------------------------------------------------------------------
def _time_split(split: dict[str, float]) -> str:
    """The time split as a stacked bar and a legend whose numbers carry ``result.json``'s values."""
    total = split.get("total") or 0.0
    parts = [(k, split.get(k, 0.0)) for k in TIME_COLORS if k in split]
    bar = "".join(f'<span style="width:{100 * v / total:.2f}%;background:{TIME_COLORS[k]}" '
                  f'title="{k} {fmt_seconds(v)}"></span>' for k, v in parts if total > 0 and v > 0)
    legend = "".join(f'<span class="key" style="background:{TIME_COLORS[k]}"></span>{k} '
                     + fact(f"time.{k}", v, fmt_seconds(v)) for k, v in parts)
    explain = " ".join(f"{k}: {TIME_PARTS[k]}." for k, _ in parts)
    return (fact("time.total", total, fmt_seconds(total), "b") + " in all"
            + f'<div class="bar">{bar}</div><div>{legend}</div><div class="muted small">{html.escape(explain)}</div>')


def _metric_line(result: dict, which: str, name: str) -> str:
    value = result.get(which, {}).get(name)
    if which == "best":
        epoch = result.get("best_epoch", {}).get(name)
        where = " at epoch " + fact(f"best_epoch.{name}", epoch, fmt_value("epoch", epoch)) if epoch else ""
    else:
        where = " at epoch " + fact("epochs_done", result.get("epochs_done"), str(result.get("epochs_done")))
    return f"{html.escape(name)} " + fact(f"{which}.{name}", value, fmt_value(name, value), "b") + where


def card(result: dict, grid: tuple[str, str] | None = None) -> str:
    """The box at the top of a run's report: what ran, with what LR (and the 1cycle range it gives),
    what came out, where the time went (each part named), and how to run it again; ``grid``: (the
    compare's name, this cell's configuration) when the run is a cell of one, linked back. Every number
    carries ``result.json``'s value in ``data-value``."""
    rows = []
    if "task" in result:
        rows.append(("Task", fact("task", result["task"], str(result["task"]))))
        model = fact("model", result.get("model"), str(result.get("model")))
        n = result.get("n_params")
        rows.append(("Model", model + (f" ({fact('n_params', n, f'{n:,}')} parameters)" if n else "")))
        opt = fact("opt", result.get("opt"), str(result.get("opt")))
        opt += f", weight decay {result['wd']:g}" if result.get("wd") else ""
        if result.get("schedule"):
            opt += "; schedule " + fact("schedule", result["schedule"], result["schedule"])
            opt += f", {result.get('epochs_done')}/{result.get('epochs')} epochs"
        rows.append(("Optimizer", opt))
    lr = result.get("lr")
    if lr is not None:
        rows.append(("Peak LR" if result.get("schedule") else "LR suggestion",
                     fact("lr", lr, fmt_value("lr", lr), "b") + " from "
                     + fact("lr_source", result.get("lr_source", "-"), str(result.get("lr_source", "-")))))
    if lr is not None and result.get("one_cycle"):
        low, peak = result["one_cycle"]
        rows.append(("1cycle range", "from " + fact("one_cycle", result["one_cycle"], f"{low:.3g} up to {peak:.3g}")
                     + f", then down (the peak / div {peak / low:.3g} up to the peak)"))
    metric = result.get("metric")
    if metric and metric in result.get("best", {}):
        also = [n for n in ("val_loss",) if n != metric and n in result["best"]]
        rows.append(("Best", " · ".join(_metric_line(result, "best", n) for n in [metric, *also])))
        rows.append(("Final", " · ".join(_metric_line(result, "final", n) for n in [metric, *also])))
    if result.get("error"):
        rows.append(("Error", fact("error", result["error"], result["error"])))
    if result.get("time"):
        rows.append(("Time", _time_split(result["time"])))
    if result.get("command"):
        rows.append(("Reproduce", fact("command", result["command"], result["command"], "pre")))
    if grid:
        rows.insert(0, ("Grid", f'<a href="../report.html">{html.escape(grid[0])}</a>: this run is '
                                f"{html.escape(grid[1])}"))
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<section class="card"><dl>{body}</dl></section>'


def epoch_table(rec: Any) -> tuple[list[str], list[list[Any]], int | None, list[tuple[int, int]]]:
    """The per-epoch table, epochs numbered from 1, the row of the headline metric's best epoch, and
    (row, column) of every loss's and metric's best epoch, each in its own direction."""
    names = list(rec.metric_names)
    header = ["epoch", "train_loss", "val_loss", *names, "time"]
    rows = [[e + 1, rec.train_losses[e], rec.val_losses[e], *[rec.metrics[n][e] for n in names], rec.times[e]]
            for e in range(rec.n_epochs)]
    series = {"train_loss": rec.train_losses, "val_loss": rec.val_losses, **rec.metrics}
    cells = []
    for col, name in enumerate(header[1:-1], 1):
        _, epoch = best_of(series[name], not _higher(rec, name))
        if epoch is not None:
            cells.append((epoch - 1, col))
    metric = names[0] if names else "val_loss"
    _, best = best_of(rec.metrics[metric] if names else rec.val_losses, not _higher(rec, metric))
    return header, rows, None if best is None else best - 1, cells


def _finder_table(page: Page, finder: dict, folder: Path) -> None:
    from .suggest import RULE_NAMES, in_flat_region, stop_words
    data = read_json(folder / "lr_find.json") or {}
    lrs, losses = data.get("lrs", []), [math.nan if v is None else v for v in data.get("losses", [])]
    rules = list(finder["suggestions"])
    rows = [[k, v, RULE_NAMES.get(k, ""), "← chosen" if k == finder.get("rule") else
             "in the flat region: the loss had not started to fall" if in_flat_region(v, lrs, losses) else ""]
            for k, v in finder["suggestions"].items()]
    chosen = rules.index(finder["rule"]) if finder.get("rule") in rules else None
    page.table(["rule", "LR", "what it reads", ""], rows, kinds=["rule", "lr", "", ""], best_row=chosen)
    if finder.get("stop_reason"):
        page.para(f"The range test {stop_words(finder['stop_reason'], lrs, data.get('num_it', 0))}.", "muted")
    for note in finder.get("notes", []):
        page.para(f"Note: {note}", "muted")


def _grid_of(folder: Path) -> tuple[str, str] | None:
    """(the compare's folder name, this cell's label) when ``folder`` is a cell of a compare."""
    data = read_json(folder.parent / "compare.json")
    if not data:
        return None
    label = next((r.get("label", {}) for r in data.get("results", []) if Path(r.get("folder", "")).name == folder.name),
                 None)
    if label is None:
        return None
    return folder.parent.name, " ".join(f"{k}={v}" for k, v in label.items()) or folder.name


def run_report(folder: str | Path) -> Path:
    """``report.html`` of a run folder: the card, the plots, the per-epoch table, the finder's
    suggestions, the config (collapsed)."""
    folder = Path(folder)
    meta, result = read_json(folder / "config.json") or {}, read_json(folder / "result.json") or {}
    page = Page(f"onecycle {meta.get('command', 'run')}: {folder.name}", result.get("status", "unknown"))
    page.raw(card(result, _grid_of(folder)))
    for name, caption in PLOTS:
        if (folder / name).exists():
            page.image(folder / name, caption)
    rec = history(folder)
    if rec is not None and rec.n_epochs:
        page.heading("Per epoch")
        header, rows, best, cells = epoch_table(rec)
        page.table(header, rows, best_row=best, best_cells=cells)
        page.para("\u2605: the best epoch of each column (the lowest loss, the highest accuracy: each metric "
                  "in its own direction); the shaded row: the best epoch of the headline metric.", "muted")
    finder = meta.get("resolved", {}).get("lr_find")
    if finder:
        page.heading("LR finder suggestions")
        _finder_table(page, finder, folder)
    page.heading("Config")
    page.details("config.json: the resolved config, versions and command line", json.dumps(meta, indent=2))
    return page.write(folder / "report.html")
