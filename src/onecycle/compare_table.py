"""A compare folder's table: each configuration's runs (its seeds) pooled (``ConfigRow``) and shown as
the report's table (``compare_rows``), the terminal's (``terminal_table``: at most 80 columns, each
seed's value and peak LR on the line below its configuration, the configuration wrapping between its
words), and ``summary.csv`` (``csv_table``: plain numbers, a column per seed, units in the header).
An accuracy-like metric is in percent throughout; the best configuration follows the metric's
direction. ``compare_report.py`` writes these and the plots and page around them.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .htmlpage import fmt_seconds, fmt_value
from .metrics import lower_is_better, percent_column
from .report import history
from .rundir import read_json

__all__ = ["ConfigRow", "compare_groups", "config_rows", "compare_rows", "default_metric", "text_table",
           "terminal_table", "csv_table", "best_config", "mean_sd_text", "metric_scale", "geo_mean", "WIDTH"]

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


def metric_scale(metric: str, rows: Sequence[ConfigRow]) -> tuple[float, str]:
    """Percent for an accuracy-like metric (as everywhere else), with its unit."""
    pct = percent_column(metric, [v for r in rows for v in r.values("metric")])
    return (100.0, "%") if pct else (1.0, "")


def mean_sd_text(ms: tuple[float, float] | None, scale: float, unit: str) -> str:
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
    scale, unit = metric_scale(metric, rows_)
    header = ["configuration", "runs ok", f"final {metric}", "per seed", "final val_loss",
              f"epochs to {metric} {'<=' if lower_is_better(metric) else '>='} {target}", "time/run",
              "peak LR (geo. mean, range)", "failures"]
    rows, recs = [], {}
    for row in rows_:
        seconds = row.values("seconds")
        rows.append([row.title, f"{len(row.ok)}/{len(row.runs)}", mean_sd_text(row.mean_sd("metric"), scale, unit),
                     ", ".join(_seeds_text(row, metric, scale, unit)) or "-",
                     mean_sd_text(row.mean_sd("val_loss"), 1.0, ""), _target_text(row),
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
    scale, unit = metric_scale(metric, rows_)
    header = ["configuration", "ok", metric, "val_loss", "time/run", "peak LR"]  # mean ± sd over seeds
    if target is not None:
        header.insert(4, f"to {fmt_value(metric, target) if unit else target}")
    rows, notes = [], []
    for row in rows_:
        seconds = row.values("seconds")
        cells = [row.title, f"{len(row.ok)}/{len(row.runs)}", mean_sd_text(row.mean_sd("metric"), scale, unit),
                 mean_sd_text(row.mean_sd("val_loss"), 1.0, ""),
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
    scale, unit = metric_scale(metric, rows_)
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


def best_config(rows: Sequence[ConfigRow], metric: str) -> ConfigRow | None:
    scored = [r for r in rows if r.mean_sd("metric")]
    if not scored:
        return None
    pick = min if lower_is_better(metric) else max
    return pick(scored, key=lambda r: r.mean_sd("metric")[0])
