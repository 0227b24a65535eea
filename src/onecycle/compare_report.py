"""A compare folder's outputs: the table (one row per configuration, the seeds pooled: mean and spread
of the metric, every seed's value, epochs to a target, time, the peak LR as a geometric mean with its
range), ``summary.txt``/``summary.csv``, the overlay per configuration (``compare.png``), every seed's
final metric as a dot (``seeds.png``), the finder curves of every run with each seed's chosen LR
(``finders.png``), and ``report.html`` linking every run's own report.

Read from ``compare.json`` and each cell's files, so ``onecycle plot COMPARE`` redraws it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .htmlpage import Page, fmt_seconds, fmt_value, is_fraction
from .metrics import lower_is_better
from .report import PLOTS, history
from .rundir import read_json

__all__ = ["compare_outputs", "compare_rows", "compare_groups", "default_metric", "text_table", "geo_mean",
           "compare_summary", "plot_seeds", "plot_finders"]


def geo_mean(values: Sequence[float]) -> float:
    """The geometric mean: the centre of LRs, which spread on a log scale (an arithmetic mean of
    1e-3 and 1e-1 is 0.05, an LR no run used; the geometric one is 1e-2)."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _epochs_to(values: Sequence[float], target: float | None, lower: bool) -> int | None:
    if target is None:
        return None
    for e, v in enumerate(values, 1):
        if (v <= target) if lower else (v >= target):
            return e
    return None


def _finite(values: Sequence[Any]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]


def _mean_sd(name: str, values: list[Any]) -> str:
    values = _finite(values)
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    if is_fraction(name) and all(0 <= v <= 1 for v in values):
        return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}%"
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def _lr_cell(lrs: list[Any]) -> str:
    lrs = [v for v in _finite(lrs) if v > 0]
    if not lrs:
        return "-"
    g = geo_mean(lrs)
    return f"{g:.3g}" if min(lrs) == max(lrs) else f"{g:.3g} ({min(lrs):.3g} to {max(lrs):.3g})"


def _run_row(res: dict, metric: str, target: float | None, folder: Path) -> dict:
    rec = history(folder / Path(res["folder"]).name) if res.get("status") != "skipped" else None
    values = [] if rec is None else rec.val_losses if metric == "val_loss" else rec.metrics.get(metric, [])
    final = res.get("final", {})
    return {"ok": res.get("status") == "finished", "metric": final.get(metric), "val_loss": final.get("val_loss"),
            "to_target": _epochs_to(values, target, lower_is_better(metric)), "seconds": res.get("seconds"),
            "lr": res.get("lr"), "error": res.get("error") or res.get("status"), "rec": rec, "res": res}


def default_metric(folder: Path, results: Sequence[dict]) -> str:
    """The first metric of the first run that recorded one; ``val_loss`` when none did."""
    for res in results:
        rec = history(folder / Path(res["folder"]).name)
        if rec is not None and rec.metric_names:
            return rec.metric_names[0]
    return "val_loss"


def config_title(label: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in label.items() if k != "seed") or "all"


def compare_groups(data: dict, folder: Path) -> dict[str, list[dict]]:
    """Each configuration's runs (its seeds), in grid order."""
    groups: dict[str, list[dict]] = {}
    for res in data["results"]:
        groups.setdefault(config_title(res["label"]), []).append(_run_row(res, data["metric"], data.get("target"),
                                                                           folder))
    return groups


def compare_rows(data: dict, folder: Path) -> tuple[list[str], list[list[Any]], dict[str, list]]:
    """The summary table of a compare folder, one row per configuration (the seeds pooled), and
    the recorders of each configuration's finished runs (for the overlay)."""
    metric, target = data["metric"], data.get("target")
    header = ["configuration", "runs ok", f"final {metric}", "per seed", "final val_loss",
              f"epochs to {metric} {'<=' if lower_is_better(metric) else '>='} {target}", "time/run",
              "peak LR (geo. mean, range)", "failures"]
    rows, recs = [], {}
    for title, runs in compare_groups(data, folder).items():
        ok = [r for r in runs if r["ok"]]
        reached = [r["to_target"] for r in ok if r["to_target"] is not None]
        to_target = f"{statistics.mean(reached):.1f} ({len(reached)}/{len(ok)})" if reached else f"never (0/{len(ok)})"
        fails = sorted({str(r["error"]) for r in runs if not r["ok"]})
        seconds = _finite([r["seconds"] for r in ok])
        rows.append([title, f"{len(ok)}/{len(runs)}", _mean_sd(metric, [r["metric"] for r in ok]),
                     ", ".join(fmt_value(metric, r["metric"]) for r in ok) or "-",
                     _mean_sd("val_loss", [r["val_loss"] for r in ok]), to_target,
                     fmt_seconds(statistics.mean(seconds)) if seconds else "-",
                     _lr_cell([r["lr"] for r in ok]), "; ".join(fails) or "-"])
        recs[title] = [r["rec"] for r in ok if r["rec"] is not None and r["rec"].n_epochs]
    if target is None:  # no target, no column
        header, rows = header[:5] + header[6:], [r[:5] + r[6:] for r in rows]
    return header, rows, recs


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    atomic_write_text(folder / "summary.txt", text_table(header, rows) + "\n")
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
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
    scored = [(statistics.mean(v), title, len(v)) for title, runs in compare_groups(data, folder).items()
              if (v := _finite([r["metric"] for r in runs if r["ok"]]))]
    if scored:
        mean, title, k = (min if lower_is_better(metric) else max)(scored)
        lines.append(f"best: {title}: {metric} {fmt_value(metric, mean)} (mean of {k} run{'s' * (k > 1)})")
    ok = sum(r.get("status") == "finished" for r in data.get("results", []))
    lines.append(f"{ok}/{len(data.get('results', []))} runs finished in {fmt_seconds(data.get('seconds'))}")
    lines.append(f"report: {folder / 'report.html'}")
    return lines


def _compare_page(folder: Path, data: dict, header: list[str], rows: list[list[Any]]) -> Path:
    page = Page(f"onecycle compare: {folder.name}")
    page.para(f"{len(data['results'])} runs; metric {data['metric']}"
              + (f", target {data['target']}" if data.get("target") is not None else "")
              + "; mean ± standard deviation over seeds; the peak LR as the geometric mean of the seeds' LRs"
              + (f"; {fmt_seconds(data['seconds'])} in all" if data.get("seconds") else ""))
    page.table(header, rows, kinds=["text"] * len(header))
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
                                                  "error"])
    page.heading("Grid")
    page.details("the compare's config, axes and base options",
                 json.dumps({k: data[k] for k in ("config", "axes", "base", "argv") if k in data}, indent=2))
    return page.write(folder / "report.html")


# ---- the data of compare's own figures (onecycle.plots draws them) --------------------------------
def plot_seeds(groups: dict[str, list[dict]], metric: str, save: Path) -> Any:
    """One row per configuration: a dot per seed's final ``metric``, a bar at their mean."""
    from .plots import plot_seed_dots
    rows = [(t, v) for t, runs in groups.items() if (v := _finite([r["metric"] for r in runs if r["ok"]]))]
    if not rows:
        return None
    pct = is_fraction(metric) and all(0 <= x <= 1 for _, v in rows for x in v)
    label = f"final {metric}" + (" (%)" if pct else "") + (
        "  (lower is better)" if lower_is_better(metric) else "  (higher is better)")
    return plot_seed_dots([(t, [x * (100.0 if pct else 1.0) for x in v]) for t, v in rows], label, save)


def _finder_curves(runs: list[dict], folder: Path) -> list[tuple[list[float], list[float], float | None, str]]:
    """(LRs, the curve its rule read, the LR it chose, which curve) for each seed that ran the finder."""
    from .lr_find_result import LRFindResult
    out = []
    for r in runs:
        path = folder / Path(r["res"]["folder"]).name / "lr_find.json"
        if not path.exists():
            continue
        res = LRFindResult.load_json(path)
        n = len(res.lrs)
        cut = slice(min(n // 10, max(n - 2, 0)), max(n - 5, min(n // 10, max(n - 2, 0)) + 2))
        val = res.rule.startswith("val_")
        curve = res.smooth_val_losses if val else res.smooth_losses
        out.append((res.lrs[cut], curve[cut], res.suggestion, "validation" if val else "training"))
    return out


def plot_finders(groups: dict[str, list[dict]], folder: Path, save: Path) -> Any:
    """Every run's finder curve (the smoothed loss its rule read) against the LR, one colour per
    configuration, with a dot where each seed's finder chose its LR."""
    from .plots import plot_finder_overlay
    curves = {t: c for t, runs in groups.items() if (c := _finder_curves(runs, folder))}
    if not curves:
        return None
    kinds = sorted({kind for items in curves.values() for *_, kind in items})
    return plot_finder_overlay({t: [c[:3] for c in items] for t, items in curves.items()},
                               f"smoothed {' / '.join(kinds)} loss", save)
