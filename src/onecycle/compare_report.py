"""A compare folder's outputs: ``summary.txt`` and ``summary.csv`` (the table, ``compare_table.py``), the
overlay per configuration (``compare.png``: mean line and seed band, from epoch 1), every seed's final
metric as a labelled dot (``seeds.png``), every run's finder curve over its whole range with the LR it
chose (``finders.png``), and ``report.html``: a card (the best configuration and its score, task,
model, epochs, seeds, the command that reproduces the grid), the table (it fits a 1024-px page), the
plots, and every run linked to its own report (which links back).

Read from ``compare.json`` and each cell's files, so ``onecycle plot COMPARE`` redraws it.
"""

from __future__ import annotations

import csv
import html
import io
import json
import shlex
from pathlib import Path
from typing import Any

from .compare_table import (
    best_config,
    compare_groups,
    compare_rows,
    config_rows,
    csv_table,
    default_metric,
    mean_sd_text,
    metric_scale,
    terminal_table,
)
from .htmlpage import Page, fact, fmt_seconds
from .metrics import lower_is_better, percent_column
from .report import PLOTS
from .rundir import read_json

__all__ = ["compare_outputs", "compare_summary", "reproduce", "plot_seeds", "plot_finders",
           "default_metric"]  # default_metric: compare.py reads it here


def compare_outputs(folder: str | Path) -> list[Path]:
    """A compare folder's ``summary.txt``/``summary.csv``, its plots and ``report.html``, from its
    ``compare.json`` and each cell's ``result.json`` (read again: cells resumed or run by hand after
    an interrupted grid count when redrawn)."""
    from .atomic import atomic_write_text
    from .plots import plot_overlay
    folder = Path(folder)
    data = read_json(folder / "compare.json")
    for res in data["results"]:
        res.update(read_json(folder / Path(res["folder"]).name / "result.json") or {})
    header, rows, recs = compare_rows(data, folder)
    atomic_write_text(folder / "summary.txt", terminal_table(data, folder) + "\n")
    csv_header, csv_rows = csv_table(data, folder)
    buf = io.StringIO()
    csv.writer(buf).writerows([csv_header, *csv_rows])
    atomic_write_text(folder / "summary.csv", buf.getvalue())
    written = [folder / "summary.txt", folder / "summary.csv"]
    if any(recs.values()):
        plot_overlay({k: v for k, v in recs.items() if v}, save=folder / "compare.png")
        written.append(folder / "compare.png")
    groups = compare_groups(data, folder)
    if plot_seeds(groups, data["metric"], folder / "seeds.png") is not None:
        written.append(folder / "seeds.png")
    if plot_finders(groups, folder, folder / "finders.png") is not None:
        written.append(folder / "finders.png")
    written.append(_compare_page(folder, data, header, rows))
    return written


def compare_summary(folder: Path) -> list[str]:
    """The lines ``onecycle compare`` ends with: the best configuration, runs and time, the report."""
    data = read_json(folder / "compare.json") or {}
    metric, lines = data.get("metric", "val_loss"), []
    rows = config_rows(data, folder) if data.get("results") else []
    best = best_config(rows, metric)
    if best is not None:
        scale, unit = metric_scale(metric, rows)
        k = len(best.values("metric"))
        lines.append(f"best: {best.title}: {metric} {mean_sd_text(best.mean_sd('metric'), scale, unit)} "
                     f"(mean of {k} run{'s' * (k > 1)})")
    ok = sum(r.get("status") == "finished" for r in data.get("results", []))
    lines.append(f"{ok}/{len(data.get('results', []))} runs finished in {fmt_seconds(data.get('seconds'))}")
    lines.append(f"report: {folder / 'report.html'}")
    return lines


# ---- report.html ---------------------------------------------------------------------------------------
def _first_result(data: dict) -> dict:
    return next((r for r in data["results"] if r.get("task")), data["results"][0] if data["results"] else {})


def reproduce(data: dict) -> str:
    """The command that runs the grid again: its command line as given, less where its folder went
    (``--out``, ``--name``) and ``--quiet``, as a run's reproduce command leaves them out."""
    argv, kept = list(data.get("argv") or []), []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--out", "--name"):
            skip = True
        elif a != "--quiet" and not a.startswith(("--out=", "--name=")):
            kept.append(a)
    return "onecycle " + shlex.join(kept) if kept else ""


def _compare_card(data: dict, folder: Path) -> str:
    metric = data["metric"]
    rows = config_rows(data, folder)
    best, first = best_config(rows, metric), _first_result(data)
    scale, unit = metric_scale(metric, rows)
    facts = []
    if best is not None:
        way = "lower" if lower_is_better(metric) else "higher"
        facts.append(("Best", fact("best.config", best.title, best.title, "b") + f": {metric} "
                      + fact("best.mean", best.mean_sd("metric")[0], mean_sd_text(best.mean_sd("metric"), scale, unit),
                             "b") + f" (mean of {len(best.values('metric'))} seeds; {way} is better)"))
    seeds = sorted({r["seed"] for row in rows for r in row.runs if r["seed"] is not None}, key=str)
    axes = data.get("axes") or {}
    n = first.get("n_params")
    def common(key: str) -> str:  # one value for the whole grid, or the values of its axis
        if key in axes:
            return fact(key, axes[key], ", ".join(map(str, axes[key])) + " (a grid axis)")
        return fact(key, first.get(key), str(first.get(key) or "-"))

    facts += [("Task", common("task")),
              ("Model", common("model") + (f" ({n:,} parameters)" if n and "model" not in axes else "")),
              ("Epochs", common("epochs")),
              ("Seeds", fact("seeds", seeds, ", ".join(map(str, seeds)) or "-")),
              ("Grid", " × ".join(f"{k}: {', '.join(map(str, v))}" for k, v in axes.items() if k != "seed")
               + f" ({len(data['results'])} runs" + (f", {data['config'].get('jobs')} at a time)"
                                                      if (data.get("config") or {}).get("jobs") else ")"))]
    if data.get("seconds"):
        facts.append(("Time", fact("seconds", data["seconds"], fmt_seconds(data["seconds"])) + " in all"))
    if reproduce(data):
        facts.append(("Reproduce", fact("command", reproduce(data), reproduce(data), "pre")))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<section class="card"><dl>{body}</dl></section>'


def _compare_page(folder: Path, data: dict, header: list[str], rows: list[list[Any]]) -> Path:
    page = Page(f"onecycle compare: {folder.name}")
    page.raw(_compare_card(data, folder))
    page.para(f"{len(data['results'])} runs; metric {data['metric']}"
              + (f", target {data['target']}" if data.get("target") is not None else "")
              + "; mean ± standard deviation over seeds; the peak LR as the geometric mean of the seeds' LRs.")
    if "per seed" in header:  # one seed a line
        k = header.index("per seed")
        rows = [[*r[:k], ("html", "<br>".join(f'<span style="white-space:nowrap">{html.escape(p)}</span>'
                                              for p in r[k].replace(", seed ", "\0seed ").split("\0"))),
                 *r[k + 1:]] for r in rows]
    if "peak LR (geo. mean, range)" in header:  # the range under the mean: the table fits a 1024-px page
        k = header.index("peak LR (geo. mean, range)")
        rows = [[*r[:k], ("html", html.escape(r[k]).replace(" (", " <br>(")), *r[k + 1:]] for r in rows]
    page.table(header, rows, kinds=["text"] * len(header), wrap=True)
    for name in ("seeds.png", "compare.png", "finders.png"):
        if (folder / name).exists():
            page.image(folder / name, dict(PLOTS)[name])
    page.heading("Runs")
    metric, run_rows, links = data["metric"], [], []
    for res in data["results"]:
        name = Path(res["folder"]).name
        title = " ".join(f"{k}={v}" for k, v in res["label"].items()) or name
        final = res.get("final", {})
        run_rows.append([title, res.get("status", "-"), f"{res.get('epochs_done', '-')}/{res.get('epochs', '-')}",
                         final.get(metric), final.get("val_loss"), res.get("lr"), res.get("seconds"),
                         res.get("error") or "-"])
        links.append(f"{name}/report.html" if (folder / name / "report.html").exists() else "")
    page.table(["run (its report)", "status", "epochs", f"final {metric}", "final val_loss", "peak LR", "time",
                "error"], run_rows, links, kinds=["run", "status", "epochs", metric, "val_loss", "lr", "seconds",
                                                  "error"], wrap=True)
    page.heading("Grid")
    page.details("the compare's config, axes and base options",
                 json.dumps({k: data[k] for k in ("config", "axes", "base", "argv") if k in data}, indent=2))
    return page.write(folder / "report.html")


# ---- the data of compare's own figures (onecycle.plots draws them) --------------------------------
def plot_seeds(groups: dict[str, list[dict]], metric: str, save: Path) -> Any:
    """One row per configuration: a dot per seed's final ``metric``, labelled with its seed, a bar at
    their mean."""
    from .plots import plot_seed_dots
    rows = [(t, [r["metric"] for r in runs if r["ok"] and isinstance(r["metric"], (int, float))],
             [f"seed {r['seed']}" for r in runs if r["ok"] and isinstance(r["metric"], (int, float))])
            for t, runs in groups.items()]
    rows = [r for r in rows if r[1]]
    if not rows:
        return None
    pct = percent_column(metric, [x for _, v, _ in rows for x in v])
    label = f"final {metric}" + (" (%)" if pct else "") + (
        "  (lower is better)" if lower_is_better(metric) else "  (higher is better)")
    return plot_seed_dots([(t, [x * (100.0 if pct else 1.0) for x in v], s) for t, v, s in rows], label, save)


def _finder_curves(runs: list[dict], folder: Path) -> list[tuple[list[float], list[float], float | None, str]]:
    """(LRs, the curve its rule read, smoothed and centred, over the whole test, the LR it chose, which
    curve) for each seed that ran the finder."""
    from .lr_find_result import LRFindResult
    from .smoothing import range_test_curve
    out = []
    for r in runs:
        path = folder / Path(r["res"]["folder"]).name / "lr_find.json"
        if not path.exists():
            continue
        res = LRFindResult.load_json(path)
        val = res.rule.startswith("val_")
        curve = range_test_curve(res.val_losses if val else res.losses)
        out.append((res.lrs, curve, res.suggestion, "validation" if val else "training"))
    return out


def plot_finders(groups: dict[str, list[dict]], folder: Path, save: Path) -> Any:
    """Every run's finder curve (the loss its rule read) against the LR over the whole test, one colour
    per configuration, with a dot where each seed's finder chose its LR."""
    from .plots import plot_finder_overlay
    curves = {t: c for t, runs in groups.items() if (c := _finder_curves(runs, folder))}
    if not curves:
        return None
    kinds = sorted({kind for items in curves.values() for *_, kind in items})
    return plot_finder_overlay({t: [c[:3] for c in items] for t, items in curves.items()},
                               f"{' / '.join(kinds)} loss", save)
