"""What a run or compare folder shows: its plots redrawn from the saved history, a summary table of a
grid of runs, and ``report.html``, one self-contained page (plots embedded as base64 data URIs, no
script, no network) that opens in any browser and can be mailed as one file.

Everything here reads the folder's files (``config.json``, ``history.json``, ``result.json``,
``lr_find.json``, ``compare.json``), so ``onecycle plot FOLDER`` redraws a finished run identically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["redraw", "run_report", "compare_outputs", "overlay_runs", "summarize", "lower_is_better",
           "compare_rows", "default_metric", "text_table", "read_json"]

# Plots a run folder may hold, in the order the report shows them.
PLOTS = (("lr_find.png", "LR range test: training loss, validation loss and metrics against the LR"),
         ("lr_mom.png", "Learning rate and momentum"), ("losses.png", "Training and validation loss"),
         ("metrics.png", "Metrics per epoch"), ("grad_stats.png", "Gradient statistics per param group"),
         ("trust_ratios.png", "LARS/LAMB trust ratios per param group"),
         ("compare.png", "Validation loss and metrics per configuration (mean, band: min-max over seeds)"),
         ("overlay.png", "Runs overlaid"))


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or metric in ("perplexity", "bits_per_char", "error")


def summarize(rec: Any) -> dict[str, Any]:
    """Last-epoch values and the best of each metric in a recorder's history."""
    if not rec.n_epochs:
        return {"epochs_done": 0, "final": {}, "best": {}, "train_seconds": 0.0}
    final = {"train_loss": rec.train_losses[-1], "val_loss": rec.val_losses[-1],
             **{n: v[-1] for n, v in rec.metrics.items()}}
    best = {"val_loss": min(rec.val_losses),
            **{n: (min(v) if lower_is_better(n) else max(v)) for n, v in rec.metrics.items()}}
    return {"epochs_done": rec.n_epochs, "final": final, "best": best, "train_seconds": sum(rec.times)}


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (a run that died early)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _history(folder: Path) -> Any:
    from .recorder import Recorder
    path = folder / "history.json"
    return Recorder.load_json(path) if path.exists() else None


# ---- redrawing -------------------------------------------------------------------------------------
def redraw(folder: str | Path) -> list[Path]:
    """(Re)draw a run folder's PNGs from ``history.json`` and ``lr_find.json``, then its
    ``report.html``; a compare folder gets its table, overlay and report. Returns the files written."""
    folder = Path(folder)
    if (folder / "compare.json").exists():
        return compare_outputs(folder)
    written = []
    rec = _history(folder)
    if rec is not None and rec.losses:
        plots = [("lr_mom", rec.plot_lr), ("losses", rec.plot_losses), ("metrics", rec.plot_metrics)]
        if any(k.startswith("grad_") for k in rec.series):
            plots.append(("grad_stats", rec.plot_grad_stats))
        if any(k.startswith("trust_") for k in rec.series):
            plots.append(("trust_ratios", rec.plot_trust_ratios))
        for name, draw in plots:
            draw(save=folder / f"{name}.png")
            written.append(folder / f"{name}.png")
    if (folder / "lr_find.json").exists():
        from .lr_finder import LRFindResult
        LRFindResult.load_json(folder / "lr_find.json").plot(save=folder / "lr_find.png")
        written.append(folder / "lr_find.png")
    written.append(run_report(folder))
    return written


def overlay_runs(folders: Sequence[Path], out: Path) -> list[Path]:
    """Validation loss and metrics of several runs in one plot (``overlay.png``) with a report."""
    from .plots import plot_overlay
    groups = {}
    for f in folders:
        rec = _history(f)
        if rec is None:
            raise ValueError(f"runs: {str(f)!r} holds no history.json")
        groups[f.name] = [rec]
    plot_overlay(groups, save=out / "overlay.png")
    rows = [[f.name, *_final_cells(read_json(f / "result.json") or {})] for f in folders]
    page = _Page(f"Overlay of {len(folders)} runs")
    page.table(["run", "status", "epochs", "final val_loss", "final metrics", "seconds"], rows)
    page.image(out / "overlay.png", dict(PLOTS)["overlay.png"])
    return [out / "overlay.png", page.write(out / "report.html")]


# ---- HTML --------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


class _Page:
    """A self-contained HTML page built from headings, tables, images and preformatted text."""

    def __init__(self, title: str) -> None:
        self.title, self.parts = title, [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def para(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], links: Sequence[str] | None = None) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = []
        for i, row in enumerate(rows):
            cells = [html.escape(_fmt(v)) for v in row]
            if links and links[i]:
                cells[0] = f'<a href="{html.escape(links[i])}">{cells[0]}</a>'
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        self.parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")

    def image(self, path: Path, caption: str) -> None:
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"{path} is not a PNG file")
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self.parts.append(f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def write(self, path: Path) -> Path:
        from .checkpoint import atomic_write_text
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
                 "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
                 "td:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}"
                 "figcaption{color:#555;font-size:13px}pre{background:#f6f6f6;padding:1em;overflow-x:auto}")
        page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
                f"</title><style>{style}</style></head><body>{''.join(self.parts)}</body></html>\n")
        atomic_write_text(path, page)
        return path


def _final_cells(result: dict) -> list[Any]:
    final = result.get("final", {})
    metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in final.items() if k not in ("train_loss", "val_loss"))
    done = f"{result.get('epochs_done', '-')}/{result.get('epochs', '-')}"
    return [result.get("status", "-"), done, final.get("val_loss"), metrics or "-", result.get("seconds")]


def run_report(folder: str | Path) -> Path:
    """``report.html`` of a run folder: results, finder suggestions, plots, per-epoch table, config."""
    folder = Path(folder)
    meta, result = read_json(folder / "config.json") or {}, read_json(folder / "result.json") or {}
    page = _Page(f"onecycle {meta.get('command', 'run')}: {folder.name}")
    page.para(f"status: {result.get('status', 'unknown')}" + (f" ({result['error']})" if result.get("error") else ""))
    if result.get("final"):
        page.heading("Results")
        keys = list(result["final"])
        page.table(["", *keys], [["final", *result["final"].values()],
                                 ["best", *[result.get("best", {}).get(k) for k in keys]]])
        page.para(f"epochs {result.get('epochs_done')}/{result.get('epochs')}, peak LR {_fmt(result.get('lr'))}, "
                  f"{_fmt(result.get('seconds'))} s")
    finder = meta.get("resolved", {}).get("lr_find")
    if finder:
        page.heading("LR finder suggestions")
        page.table(["rule", "LR", ""], [[k, v, "suggestion" if k == finder.get("rule") else ""]
                                       for k, v in finder["suggestions"].items()])
    page.heading("Plots")
    for name, caption in PLOTS:
        if (folder / name).exists():
            page.image(folder / name, caption)
    rec = _history(folder)
    if rec is not None and rec.n_epochs:
        page.heading("Per epoch")
        header, rows = rec.epoch_rows()
        page.table(header, rows)
    page.heading("Config")
    page.pre(json.dumps(meta, indent=2))
    return page.write(folder / "report.html")


# ---- compare -----------------------------------------------------------------------------------------
def _epochs_to(values: Sequence[float], target: float | None, lower: bool) -> int | None:
    if target is None:
        return None
    for e, v in enumerate(values, 1):
        if (v <= target) if lower else (v >= target):
            return e
    return None


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def _run_row(res: dict, metric: str, target: float | None, folder: Path) -> dict:
    rec = _history(folder / Path(res["folder"]).name) if res.get("status") != "skipped" else None
    values = [] if rec is None else rec.val_losses if metric == "val_loss" else rec.metrics.get(metric, [])
    final = res.get("final", {})
    return {"ok": res.get("status") == "finished", "metric": final.get(metric), "val_loss": final.get("val_loss"),
            "to_target": _epochs_to(values, target, lower_is_better(metric)), "seconds": res.get("seconds"),
            "lr": res.get("lr"), "error": res.get("error") or res.get("status"), "rec": rec}


def default_metric(folder: Path, results: Sequence[dict]) -> str:
    """The first metric of the first run that recorded one; ``val_loss`` when none did."""
    for res in results:
        rec = _history(folder / Path(res["folder"]).name)
        if rec is not None and rec.metric_names:
            return rec.metric_names[0]
    return "val_loss"


def compare_rows(data: dict, folder: Path) -> tuple[list[str], list[list[Any]], dict[str, list]]:
    """The summary table of a compare folder, one row per configuration (the seeds pooled), and
    the recorders of each configuration's finished runs (for the overlay)."""
    metric, target = data["metric"], data.get("target")
    groups: dict[str, list[dict]] = {}
    for res in data["results"]:
        title = " ".join(f"{k}={v}" for k, v in res["label"].items() if k != "seed") or "all"
        groups.setdefault(title, []).append(_run_row(res, metric, target, folder))
    header = ["configuration", "runs ok", f"final {metric}", "final val_loss",
              f"epochs to {metric} {'<=' if lower_is_better(metric) else '>='} {target}" if target is not None
              else "epochs to target", "seconds/run", "peak LR", "failures"]
    rows, recs = [], {}
    for title, runs in groups.items():
        ok = [r for r in runs if r["ok"]]
        reached = [r["to_target"] for r in ok if r["to_target"] is not None]
        to_target = "-" if target is None else (f"{statistics.mean(reached):.1f} ({len(reached)}/{len(ok)})"
                                                 if reached else f"never (0/{len(ok)})")
        fails = sorted({r["error"] for r in runs if not r["ok"]})
        rows.append([title, f"{len(ok)}/{len(runs)}", _mean_sd([r["metric"] for r in ok]),
                     _mean_sd([r["val_loss"] for r in ok]), to_target,
                     _mean_or_dash([r["seconds"] for r in ok], "{:.1f}"),
                     _mean_or_dash([r["lr"] for r in ok], "{:.3g}"),
                     "; ".join(fails) or "-"])
        recs[title] = [r["rec"] for r in ok if r["rec"] is not None and r["rec"].n_epochs]
    return header, rows, recs


def _mean_or_dash(values: list, fmt: str) -> str:
    values = [v for v in values if isinstance(v, (int, float))]
    return fmt.format(statistics.mean(values)) if values else "-"


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compare_outputs(folder: str | Path) -> list[Path]:
    """A compare folder's ``summary.txt``/``summary.csv`` (the table), ``compare.png`` (overlay per
    configuration) and ``report.html``, from its ``compare.json`` and each cell's ``result.json``
    (read again: cells resumed or run by hand after an interrupted grid count when redrawn)."""
    from .checkpoint import atomic_write_text
    from .plots import plot_overlay
    folder = Path(folder)
    data = read_json(folder / "compare.json")
    for res in data["results"]:
        res.update(read_json(folder / Path(res["folder"]).name / "result.json") or {})
    header, rows, recs = compare_rows(data, folder)
    table = text_table(header, rows)
    atomic_write_text(folder / "summary.txt", table + "\n")
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    atomic_write_text(folder / "summary.csv", buf.getvalue())
    written = [folder / "summary.txt", folder / "summary.csv"]
    if any(recs.values()):
        plot_overlay({k: v for k, v in recs.items() if v}, save=folder / "compare.png")
        written.append(folder / "compare.png")
    written.append(_compare_page(folder, data, header, rows))
    return written


def _compare_page(folder: Path, data: dict, header: list[str], rows: list[list[Any]]) -> Path:
    page = _Page(f"onecycle compare: {folder.name}")
    page.para(f"{len(data['results'])} runs; metric {data['metric']}"
              + (f", target {data['target']}" if data.get("target") is not None else "")
              + "; mean ± standard deviation over seeds")
    page.table(header, rows)
    if (folder / "compare.png").exists():
        page.image(folder / "compare.png", dict(PLOTS)["compare.png"])
    page.heading("Runs")
    run_rows, links = [], []
    for res in data["results"]:
        name = Path(res["folder"]).name
        title = " ".join(f"{k}={v}" for k, v in res["label"].items()) or name
        run_rows.append([title, *_final_cells(res)])
        links.append(f"{name}/report.html" if (folder / name / "report.html").exists() else "")
    page.table(["run", "status", "epochs", "final val_loss", "final metrics", "seconds"], run_rows, links)
    page.heading("Grid")
    page.pre(json.dumps({k: data[k] for k in ("config", "axes", "base") if k in data}, indent=2))
    return page.write(folder / "report.html")
