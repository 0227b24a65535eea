"""A compare folder's outputs. The terminal table (``summary.txt``, at most 80 columns: one row per
configuration, its seeds pooled as mean ± standard deviation, each seed's value and peak LR on the
line below), ``summary.csv`` (the same in numbers, units in the header), the overlay per
configuration (``compare.png``: mean line and seed band, from epoch 1), every seed's final metric as
a labelled dot (``seeds.png``), every run's finder curve over its whole range with the LR it chose
(``finders.png``), and ``report.html``: a card (the best configuration and its score, task, model,
epochs, seeds, the command that reproduces the grid), the table, the plots, and every run linked to
its own report (which links back).

Read from ``compare.json`` and each cell's files, so ``onecycle plot COMPARE`` redraws it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shlex
import statistics
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .htmlpage import Page, fact, fmt_seconds, fmt_value
from .metrics import lower_is_better, percent_column
from .report import PLOTS, history
from .rundir import read_json

__all__ = ["compare_outputs", "compare_rows", "compare_groups", "default_metric", "text_table", "geo_mean",
           "compare_summary", "config_rows", "csv_table", "plot_seeds", "plot_finders", "WIDTH"]

WIDTH = 80  # the terminal table's width at most


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


def _seed(res: dict, folder: Path) -> Any:
    """A run's seed: its grid label's, else its config's."""
    if "seed" in res.get("label", {}):
        return res["label"]["seed"]
    meta = read_json(folder / Path(res["folder"]).name / "config.json") or {}
    return (meta.get("config") or {}).get("seed")


def _run_row(res: dict, metric: str, target: float | None, folder: Path) -> dict:
    rec = history(folder / Path(res["folder"]).name) if res.get("status") != "skipped" else None
    values = [] if rec is None else rec.val_losses if metric == "val_loss" else rec.metrics.get(metric, [])
    final = res.get("final", {})
    return {"ok": res.get("status") == "finished", "metric": final.get(metric), "val_loss": final.get("val_loss"),
            "to_target": _epochs_to(values, target, lower_is_better(metric)), "seconds": res.get("seconds"),
            "lr": res.get("lr"), "error": res.get("error") or res.get("status"), "rec": rec, "res": res,
            "seed": _seed(res, folder)}


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


# ---- one configuration, its seeds pooled -------------------------------------------------------------
@dataclass
class ConfigRow:
    """A configuration's seeds pooled: the numbers every output of the compare shows."""
    title: str
    runs: list[dict]
    ok: list[dict] = field(init=False)

    def __post_init__(self) -> None:
        self.ok = [r for r in self.runs if r["ok"]]

    def values(self, key: str) -> list[float]:
        return _finite([r[key] for r in self.ok])

    def mean_sd(self, key: str) -> tuple[float, float] | None:
        v = self.values(key)
        return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else math.nan) if v else None

    @property
    def lrs(self) -> list[float]:
        return [v for v in self.values("lr") if v > 0]

    @property
    def reached(self) -> list[int]:
        return [r["to_target"] for r in self.ok if r["to_target"] is not None]

    @property
    def failures(self) -> list[str]:
        return [f"seed {r['seed']}: {r['error']}" if r["seed"] is not None else str(r["error"])
                for r in self.runs if not r["ok"]]


def config_rows(data: dict, folder: Path) -> list[ConfigRow]:
    return [ConfigRow(title, runs) for title, runs in compare_groups(data, folder).items()]


def _scale(metric: str, rows: Sequence[ConfigRow]) -> tuple[float, str]:
    """Percent for an accuracy-like metric (as everywhere else), with its unit."""
    pct = percent_column(metric, [v for r in rows for v in r.values("metric")])
    return (100.0, "%") if pct else (1.0, "")


def _mean_sd_text(ms: tuple[float, float] | None, scale: float, unit: str) -> str:
    if ms is None:
        return "-"
    mean, sd = ms
    digits = 2 if unit == "%" else 4
    if math.isnan(sd):  # one run: no spread to show
        return f"{scale * mean:.{digits}f}{unit}"
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}{unit}"


def _target_text(row: ConfigRow) -> str:
    reached = row.reached
    return f"{statistics.mean(reached):.1f} ({len(reached)}/{len(row.ok)})" if reached else f"never (0/{len(row.ok)})"


def _seeds_text(row: ConfigRow, metric: str, scale: float, unit: str) -> list[str]:
    return [f"seed {r['seed']}: " + (f"{scale * r['metric']:.{2 if unit else 4}f}{unit}"
                                     if isinstance(r["metric"], (int, float)) else "-")
            + (f" (LR {r['lr']:.3g})" if isinstance(r["lr"], (int, float)) else "") for r in row.ok]


def _lr_text(row: ConfigRow, with_range: bool = True) -> str:
    lrs = row.lrs
    if not lrs:
        return "-"
    g = geo_mean(lrs)
    if min(lrs) == max(lrs) or not with_range:
        return f"{g:.3g}"
    return f"{g:.3g} ({min(lrs):.3g} to {max(lrs):.3g})"


def compare_rows(data: dict, folder: Path) -> tuple[list[str], list[list[Any]], dict[str, list]]:
    """The report's table, one row per configuration (the seeds pooled, each seed named), and the
    recorders of each configuration's finished runs (for the overlay)."""
    metric, target = data["metric"], data.get("target")
    rows_ = config_rows(data, folder)
    scale, unit = _scale(metric, rows_)
    header = ["configuration", "runs ok", f"final {metric}", "per seed", "final val_loss",
              f"epochs to {metric} {'<=' if lower_is_better(metric) else '>='} {target}", "time/run",
              "peak LR (geo. mean, range)", "failures"]
    rows, recs = [], {}
    for row in rows_:
        seconds = row.values("seconds")
        rows.append([row.title, f"{len(row.ok)}/{len(row.runs)}", _mean_sd_text(row.mean_sd("metric"), scale, unit),
                     ", ".join(_seeds_text(row, metric, scale, unit)) or "-",
                     _mean_sd_text(row.mean_sd("val_loss"), 1.0, ""), _target_text(row),
                     fmt_seconds(statistics.mean(seconds)) if seconds else "-", _lr_text(row),
                     "; ".join(row.failures) or "-"])
        recs[row.title] = [r["rec"] for r in row.ok if r["rec"] is not None and r["rec"].n_epochs]
    keep = [i for i, h in enumerate(header) if not (i == 5 and target is None)
            and not (h == "failures" and all(r[i] == "-" for r in rows))]
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows], recs


# ---- the terminal table: 80 columns ------------------------------------------------------------------
def _fit_widths(cells: list[list[str]], width: int, wrap_col: int) -> list[int]:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    over = sum(widths) + 2 * (len(widths) - 1) - width
    if over > 0:  # the configuration column wraps between its words, down to its longest word
        longest = max(len(w) for r in cells for w in r[wrap_col].split() or [""])
        widths[wrap_col] = max(longest, widths[wrap_col] - over)
    return widths


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[Sequence[str]] = (),
               width: int = WIDTH) -> str:
    """A plain-text table; the first column wraps to keep lines within ``width``; ``notes[i]``: lines
    printed under row ``i`` (indented, wrapped to ``width``)."""
    cells = [list(map(str, header))] + [[str(v) for v in row] for row in rows]
    widths = _fit_widths(cells, width, 0)
    lines = []
    for k, row in enumerate(cells):
        parts = [textwrap.wrap(c, widths[i], break_long_words=False) or [""] if i == 0 else [c]
                 for i, c in enumerate(row)]
        for j in range(max(len(p) for p in parts)):
            lines.append("  ".join((p[j] if j < len(p) else "").ljust(w) for p, w in zip(parts, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
        elif notes and k - 1 < len(notes) and notes[k - 1]:
            lines += _pack(notes[k - 1], width)
    return "\n".join(lines)


def _pack(items: Sequence[str], width: int, indent: str = "    ", sep: str = "   ") -> list[str]:
    """``items`` on indented lines within ``width``, whole items per line (a seed's value and its LR
    stay together); an item longer than a line wraps on its own."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(sep) + len(item) <= width:
            lines[-1] += sep + item
        else:
            lines += textwrap.wrap(item, width, initial_indent=indent, subsequent_indent=indent + "  ")
    return lines


def terminal_table(data: dict, folder: Path) -> str:
    """``summary.txt``: what ``onecycle compare`` prints, within 80 columns."""
    metric, target = data["metric"], data.get("target")
    rows_ = config_rows(data, folder)
    scale, unit = _scale(metric, rows_)
    header = ["configuration", "ok", metric, "val_loss", "time/run", "peak LR"]  # mean ± sd over seeds
    if target is not None:
        header.insert(4, f"to {fmt_value(metric, target) if unit else target}")
    rows, notes = [], []
    for row in rows_:
        seconds = row.values("seconds")
        cells = [row.title, f"{len(row.ok)}/{len(row.runs)}", _mean_sd_text(row.mean_sd("metric"), scale, unit),
                 _mean_sd_text(row.mean_sd("val_loss"), 1.0, ""),
                 fmt_seconds(statistics.mean(seconds)) if seconds else "-", _lr_text(row, with_range=False)]
        if target is not None:
            cells.insert(4, _target_text(row))
        rows.append(cells)
        notes.append([*_seeds_text(row, metric, scale, unit), *(f"failed: {f}" for f in row.failures)])
    return text_table(header, rows, notes)


def csv_table(data: dict, folder: Path) -> tuple[list[str], list[list[Any]]]:
    """``summary.csv``: one row per configuration in plain numbers (no ``±``, no ``%`` sign), each header
    naming its unit; a column per seed; failures as text."""
    metric, target = data["metric"], data.get("target")
    rows_ = config_rows(data, folder)
    scale, unit = _scale(metric, rows_)
    u = f" ({unit})" if unit else ""
    seeds = list(dict.fromkeys(r["seed"] for row in rows_ for r in row.runs))
    header = ["configuration", "runs", "runs ok", f"final {metric} mean{u}", f"final {metric} sd{u}",
              "final val_loss mean", "final val_loss sd"]
    header += [f"epochs to {metric} {target} (mean)", "runs reaching the target"] if target is not None else []
    header += ["time per run (s)", "peak LR geometric mean", "peak LR min", "peak LR max"]
    header += [f"final {metric} seed {s}{u}" for s in seeds] + ["failures"]
    out = []
    for row in rows_:
        m, v = row.mean_sd("metric"), row.mean_sd("val_loss")
        cells: list[Any] = [row.title, len(row.runs), len(row.ok), *((scale * m[0], scale * m[1]) if m else ("", "")),
                            *(v if v else ("", ""))]
        if target is not None:
            cells += [statistics.mean(row.reached) if row.reached else "", len(row.reached)]
        lrs, secs = row.lrs, row.values("seconds")
        cells += [statistics.mean(secs) if secs else "", *((geo_mean(lrs), min(lrs), max(lrs)) if lrs else ("",) * 3)]
        by_seed = {r["seed"]: r["metric"] for r in row.ok if isinstance(r["metric"], (int, float))}
        cells += [scale * by_seed[s] if s in by_seed else "" for s in seeds] + ["; ".join(row.failures)]
        out.append(["" if isinstance(c, float) and math.isnan(c) else c for c in cells])
    return header, out


def _best(rows: Sequence[ConfigRow], metric: str) -> ConfigRow | None:
    scored = [r for r in rows if r.mean_sd("metric")]
    if not scored:
        return None
    pick = min if lower_is_better(metric) else max
    return pick(scored, key=lambda r: r.mean_sd("metric")[0])


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
    best = _best(rows, metric)
    if best is not None:
        scale, unit = _scale(metric, rows)
        k = len(best.values("metric"))
        lines.append(f"best: {best.title}: {metric} {_mean_sd_text(best.mean_sd('metric'), scale, unit)} "
                     f"(mean of {k} run{'s' * (k > 1)})")
    ok = sum(r.get("status") == "finished" for r in data.get("results", []))
    lines.append(f"{ok}/{len(data.get('results', []))} runs finished in {fmt_seconds(data.get('seconds'))}")
    lines.append(f"report: {folder / 'report.html'}")
    return lines


# ---- report.html ---------------------------------------------------------------------------------------
def _first_result(data: dict) -> dict:
    return next((r for r in data["results"] if r.get("task")), data["results"][0] if data["results"] else {})


def reproduce(data: dict) -> str:
    """The command that runs the grid again (its command line as given)."""
    argv = list(data.get("argv") or [])
    if not argv:
        return ""
    return "onecycle " + shlex.join(a for a in argv if a not in ("--quiet",))


def _compare_card(data: dict, folder: Path) -> str:
    metric = data["metric"]
    rows = config_rows(data, folder)
    best, first = _best(rows, metric), _first_result(data)
    scale, unit = _scale(metric, rows)
    facts = []
    if best is not None:
        way = "lower" if lower_is_better(metric) else "higher"
        facts.append(("Best", fact("best.config", best.title, best.title, "b") + f": {metric} "
                      + fact("best.mean", best.mean_sd("metric")[0], _mean_sd_text(best.mean_sd("metric"), scale, unit),
                             "b") + f" (mean of {len(best.values('metric'))} seeds; {way} is better)"))
    seeds = sorted({r["seed"] for row in rows for r in row.runs if r["seed"] is not None}, key=str)
    axes = data.get("axes") or {}
    model = first.get("model")
    n = first.get("n_params")
    facts += [("Task", fact("task", first.get("task"), str(first.get("task", "-")))),
              ("Model", fact("model", model, str(model or "-")) + (f" ({n:,} parameters)" if n else "")),
              ("Epochs", fact("epochs", first.get("epochs"), str(first.get("epochs", "-")))),
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
