"""What a run or compare folder shows: its plots redrawn from the saved history, a summary table of a
grid of runs, and ``report.html``, one self-contained page (plots embedded as base64 data URIs, no
script, no external URL, so no network request) that opens offline and can be mailed as one file.

A run's page opens with a card that says what happened (task, model, optimizer, schedule, the peak LR
and where it came from, the best and final metric with their epochs, where the time went, the command
that reproduces the run); the plots, the per-epoch table and the config (collapsed) follow.

Everything here reads the folder's files (``config.json``, ``history.json``, ``result.json``,
``lr_find.json``, ``compare.json``), so ``onecycle plot FOLDER`` redraws a finished run identically.
The compare page is built in ``compare_report.py``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import lower_is_better
from .rundir import read_json

__all__ = ["redraw", "draw_plots", "run_report", "overlay_runs", "summarize", "is_fraction",
           "fmt_value", "fmt_seconds", "Page", "PLOTS", "best_of"]

# Plots a folder may hold, in the order the report shows them.
PLOTS = (("dashboard.png", "The run at a glance: LR, momentum, losses and metrics against epochs"),
         ("lr_find.png", "LR range test: training loss, validation loss and metrics against the LR"),
         ("lr_mom.png", "Learning rate and momentum"), ("losses.png", "Training and validation loss"),
         ("metrics.png", "Metrics per epoch"), ("grad_stats.png", "Gradient statistics per param group"),
         ("trust_ratios.png", "LARS/LAMB trust ratios per param group"),
         ("compare.png", "Validation loss and metrics per configuration (line: mean; band: min-max over seeds)"),
         ("seeds.png", "Final metric of every seed (one dot each; bar: the configuration's mean)"),
         ("finders.png", "LR finder curves of every run, as the suggestion rule read them; dot: the LR each "
                         "seed's finder chose"),
         ("overlay.png", "Runs overlaid"))

_FRACTION_WORDS = ("acc", "precision", "recall", "f1", "auroc", "auc", "iou", "dice", "error")


# ---- numbers ---------------------------------------------------------------------------------------
def is_fraction(name: str) -> bool:
    """Accuracy-like metrics (a fraction in [0, 1], shown as a percentage)."""
    low = name.lower()
    return "loss" not in low and any(w in low for w in _FRACTION_WORDS)


def fmt_seconds(s: Any) -> str:
    """A duration with its unit: ``0.42 s``, ``12.3 s``, ``2 min 05 s``."""
    if not isinstance(s, (int, float)) or math.isnan(s):
        return "-"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60):02d} s"


def fmt_value(name: str, v: Any) -> str:
    """``v`` formatted for a column named ``name``: losses to 4 decimals, accuracy-like metrics as a
    percentage to 2 decimals, times with their unit, LRs to 3 significant digits, counts whole."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if math.isnan(v):
        return "nan"
    if name in ("epoch", "iterations", "epochs") or isinstance(v, int) and not is_fraction(name):
        return f"{int(v)}"
    if name in ("time", "seconds") or name.endswith("seconds"):
        return fmt_seconds(v)
    if name == "lr" or name.startswith("lr_"):
        return f"{v:.3g}"
    if is_fraction(name) and -1e-9 <= v <= 1 + 1e-9:
        return f"{100 * v:.2f}%"
    return f"{v:.4f}"


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
    bests = {n: best_of(v, lower_is_better(n)) for n, v in series.items()}
    return {"epochs_done": rec.n_epochs, "final": final, "best": {n: b[0] for n, b in bests.items()},
            "best_epoch": {n: b[1] for n, b in bests.items()}, "metric": metric, "train_seconds": sum(rec.times)}


def history(folder: Path) -> Any:
    from .recorder import Recorder
    path = folder / "history.json"
    return Recorder.load_json(path) if path.exists() else None


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
        from .lr_finder import LRFindResult
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


# ---- HTML --------------------------------------------------------------------------------------------
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;"
    "line-height:1.4}h1{font-size:1.45em;margin:.2em 0 .6em}h2{font-size:1.15em;margin:1.6em 0 .4em;"
    "border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0;font-size:14px}"
    "td,th{border:1px solid #d4d4d4;padding:3px 9px;text-align:right;font-variant-numeric:tabular-nums;"
    "white-space:nowrap}td.t{white-space:normal}"
    "th{background:#f3f3f3}td:first-child,th:first-child,td.t,th.t{text-align:left}tr.best td{background:#eef7ee}"
    "figure{margin:1em 0}img{display:block;max-width:100%;height:auto}figcaption{color:#555;font-size:13px}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12.5px}"
    ".card{border:1px solid #cfd8e3;background:#f8fafc;border-radius:8px;padding:1em 1.3em;margin:0 0 1em}"
    ".card dl{display:grid;grid-template-columns:8.5em 1fr;gap:.45em 1em;margin:0}.card dt{color:#555}"
    ".card dd{margin:0}.card b{font-size:1.1em}.card pre{margin:0;padding:.4em .6em;white-space:pre-wrap;"
    "word-break:break-all;background:#fff;border:1px solid #ddd;user-select:all}"
    ".status{display:inline-block;padding:0 .5em;border-radius:4px;font-size:.8em;vertical-align:middle;"
    "background:#dfd;color:#161}.status.failed,.status.interrupted{background:#fdd;color:#911}"
    ".bar{display:flex;height:14px;border-radius:3px;overflow:hidden;margin:.3em 0;max-width:640px}"
    ".bar span{display:block;height:100%}.key{display:inline-block;width:.8em;height:.8em;margin:0 .25em 0 .7em;"
    "vertical-align:-.05em;border-radius:2px}.key:first-child{margin-left:0}.muted{color:#666}"
    ".warn{background:#fff4d6;border:1px solid #e5c46b;padding:.5em .8em;border-radius:4px}"
    "details summary{cursor:pointer;color:#345}")
TIME_COLORS = {"finder": "#8e6cc9", "training": "#2f7ed8", "validation": "#f28f43", "plotting": "#54a24b",
               "other": "#a0a0a0"}


def fact(key: str, value: Any, text: str, tag: str = "span") -> str:
    """A value shown as ``text`` that carries the exact ``value`` of ``result.json``'s ``key`` (as JSON)."""
    value = html.escape(json.dumps(value), quote=True)
    return f'<{tag} data-key="{html.escape(key)}" data-value="{value}">{html.escape(text)}</{tag}>'


class Page:
    """A self-contained HTML page built from headings, tables, images and preformatted text."""

    def __init__(self, title: str, status: str | None = None) -> None:
        badge = f' <span class="status {html.escape(status)}">{html.escape(status)}</span>' if status else ""
        self.title, self.parts = title, [f"<h1>{html.escape(title)}{badge}</h1>"]

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def para(self, text: str, cls: str = "") -> None:
        self.parts.append(f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], links: Sequence[str] | None = None,
              kinds: Sequence[str] | None = None, best_row: int | None = None) -> None:
        """``kinds[i]``: the column name that picks column ``i``'s number format (its header by default);
        a cell may be ready markup as ``("html", markup)``."""
        kinds = list(kinds or header)
        text = [isinstance(v, str) and not _numeric(v) for v in rows[0]] if rows else [False] * len(header)
        head = "".join(f'<th class="t">{html.escape(str(h))}</th>' if t else f"<th>{html.escape(str(h))}</th>"
                       for h, t in zip(header, text))
        body = []
        for i, row in enumerate(rows):
            cells = [v[1] if isinstance(v, tuple) and v[:1] == ("html",) else html.escape(fmt_value(k, v))
                     for k, v in zip(kinds, row)]
            if links and links[i]:
                cells[0] = f'<a href="{html.escape(links[i])}">{cells[0]}</a>'
            words = [isinstance(v, str) and not _numeric(v) for v in row]  # text reads from the left
            cls = ' class="best"' if i == best_row else ""
            body.append(f"<tr{cls}>" + "".join(f'<td class="t">{c}</td>' if w else f"<td>{c}</td>"
                                               for c, w in zip(cells, words)) + "</tr>")
        self.parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")

    def image(self, path: Path, caption: str) -> None:
        """A PNG embedded as a data URI, shown at its natural size (a 2x PNG at half its pixels, so it
        is sharp on a 2x display) and never wider than the column."""
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"{path} is not a PNG file")
        width = png_css_width(data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self.parts.append(f'<figure><img src="{uri}" width="{width}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def details(self, summary: str, text: str) -> None:
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre>"
                          "</details>")

    def write(self, path: Path) -> Path:
        from .atomic import atomic_write_text
        page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
                f"<body>{''.join(self.parts)}</body></html>\n")
        atomic_write_text(path, page)
        return path


def _numeric(text: str) -> bool:
    """A cell that starts as a number does (``0.93 ± 0.01``, ``91.00%``, ``2/3``, ``10.7 s``): aligned right."""
    return bool(text) and text[0] in "0123456789-+."


def png_css_width(data: bytes) -> int:
    """A PNG's width in CSS pixels: its pixels at 100 dpi, matplotlib's 1x (its ``pHYs`` chunk holds
    the dpi it was saved at: a 2x PNG has 200)."""
    width = struct.unpack(">I", data[16:20])[0]
    at = data.find(b"pHYs")
    if at > 0:
        per_metre, unit = struct.unpack(">I", data[at + 4:at + 8])[0], data[at + 12]
        if unit == 1 and per_metre > 0:
            return max(1, round(width * 100 / (per_metre * 0.0254)))
    return width


# ---- the run page ------------------------------------------------------------------------------------
def _time_split(split: dict[str, float]) -> str:
    """The time split as a stacked bar and a legend whose numbers carry ``result.json``'s values."""
    total = split.get("total") or 0.0
    parts = [(k, split.get(k, 0.0)) for k in TIME_COLORS if k in split]
    bar = "".join(f'<span style="width:{100 * v / total:.2f}%;background:{TIME_COLORS[k]}" '
                  f'title="{k} {fmt_seconds(v)}"></span>' for k, v in parts if total > 0 and v > 0)
    legend = "".join(f'<span class="key" style="background:{TIME_COLORS[k]}"></span>{k} '
                     + fact(f"time.{k}", v, fmt_seconds(v)) for k, v in parts)
    return (fact("time.total", total, fmt_seconds(total), "b") + " in all"
            + f'<div class="bar">{bar}</div><div>{legend}</div>')


def _metric_line(result: dict, which: str, name: str) -> str:
    value = result.get(which, {}).get(name)
    if which == "best":
        epoch = result.get("best_epoch", {}).get(name)
        where = " at epoch " + fact(f"best_epoch.{name}", epoch, fmt_value("epoch", epoch)) if epoch else ""
    else:
        where = " at epoch " + fact("epochs_done", result.get("epochs_done"), str(result.get("epochs_done")))
    return f"{html.escape(name)} " + fact(f"{which}.{name}", value, fmt_value(name, value), "b") + where


def card(result: dict) -> str:
    """The box at the top of a run's report: what ran, with what LR, what came out, where the time
    went, and how to run it again. Every number carries ``result.json``'s value in ``data-value``."""
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
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<section class="card"><dl>{body}</dl></section>'


def epoch_table(rec: Any) -> tuple[list[str], list[list[Any]], int | None]:
    """The per-epoch table, epochs numbered from 1, and the row of the headline metric's best epoch."""
    names = list(rec.metric_names)
    header = ["epoch", "train_loss", "val_loss", *names, "time"]
    rows = [[e + 1, rec.train_losses[e], rec.val_losses[e], *[rec.metrics[n][e] for n in names], rec.times[e]]
            for e in range(rec.n_epochs)]
    metric = names[0] if names else "val_loss"
    _, best = best_of(rec.metrics[metric] if names else rec.val_losses, lower_is_better(metric))
    return header, rows, None if best is None else best - 1


def _finder_table(page: Page, finder: dict, folder: Path) -> None:
    from .suggest import RULE_NAMES, stop_words
    rules = list(finder["suggestions"])
    rows = [[k, v, RULE_NAMES.get(k, ""), "← chosen" if k == finder.get("rule") else ""]
            for k, v in finder["suggestions"].items()]
    chosen = rules.index(finder["rule"]) if finder.get("rule") in rules else None
    page.table(["rule", "LR", "what it reads", ""], rows, kinds=["rule", "lr", "", ""], best_row=chosen)
    if finder.get("stop_reason"):
        data = read_json(folder / "lr_find.json") or {}
        page.para(f"The range test {stop_words(finder['stop_reason'], data.get('lrs', []), data.get('num_it', 0))}.",
                  "muted")
    for note in finder.get("notes", []):
        page.para(f"Note: {note}", "muted")


def run_report(folder: str | Path) -> Path:
    """``report.html`` of a run folder: the card, the plots, the per-epoch table, the finder's
    suggestions, the config (collapsed)."""
    folder = Path(folder)
    meta, result = read_json(folder / "config.json") or {}, read_json(folder / "result.json") or {}
    page = Page(f"onecycle {meta.get('command', 'run')}: {folder.name}", result.get("status", "unknown"))
    page.raw(card(result))
    for name, caption in PLOTS:
        if (folder / name).exists():
            page.image(folder / name, caption)
    rec = history(folder)
    if rec is not None and rec.n_epochs:
        page.heading("Per epoch")
        header, rows, best = epoch_table(rec)
        page.table(header, rows, best_row=best)
    finder = meta.get("resolved", {}).get("lr_find")
    if finder:
        page.heading("LR finder suggestions")
        _finder_table(page, finder, folder)
    page.heading("Config")
    page.details("config.json: the resolved config, versions and command line", json.dumps(meta, indent=2))
    return page.write(folder / "report.html")
