"""Plots of several runs: histories overlaid (per configuration, the mean over its seeds as a line and
their range as a band), each seed's final value as a labelled dot, and the finder curves of a grid's
runs over each test's whole range."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ..metrics import lower_is_better, percent_column
from .common import epoch_axis, field, figure, is_finite, metric_names, own_figure, save_figure

__all__ = ["plot_overlay", "plot_seed_dots", "plot_finder_overlay"]


def _overlay_panel(ax: Any, runs: Sequence[Any], values_of: Any, label: str, color: Any, scale: float) -> None:
    """Per epoch, the mean over ``runs`` (one configuration's seeds) as a line with a dot per epoch;
    with several runs, their min-max as a band. An epoch counts the runs that reached it."""
    series = [[scale * v if is_finite(v) else math.nan for v in values_of(rec)] for rec in runs]
    n = max((len(s) for s in series), default=0)
    epochs, mean, low, high = [], [], [], []
    for e in range(n):
        vals = [s[e] for s in series if e < len(s) and not math.isnan(s[e])]
        if vals:
            epochs.append(e + 1)
            mean.append(sum(vals) / len(vals))
            low.append(min(vals))
            high.append(max(vals))
    k = len(runs)
    ax.plot(epochs, mean, "o-", ms=3, color=color, lw=1.8, label=label, gid="mean")
    if k > 1:
        ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0, gid="band")


def plot_overlay(groups: Any, save: str | os.PathLike | None = None, *, ax: Any = None, fig: Any = None) -> Any:
    """Several runs' recorded histories overlaid: ``groups`` maps a label to one or more recorders
    (e.g. the seeds of one configuration). One panel for the validation loss and one per metric (an
    accuracy-like one in percent), against epochs 1 to the last; each label is one colour, its mean a
    line and its seeds' min-max a band. ``ax``: one Axes per panel; ``fig``: a Figure to add them to."""
    from matplotlib import colormaps
    items = list(groups.items())
    names = list(dict.fromkeys(n for _, runs in items for rec in runs for n in metric_names(rec)))
    panels = [("val_loss", lambda rec: field(rec, "val_losses", []) or [], False)]
    for n in names:
        values = [v for _, runs in items for rec in runs for v in (field(rec, "metrics", {}) or {}).get(n, [])]
        panels.append((n, lambda rec, n=n: (field(rec, "metrics", {}) or {}).get(n, []), percent_column(n, values)))
    rows = math.ceil(len(items) / 3) if ax is None and fig is None else 0  # the legend's, below the panels
    fig, axes = figure(ncols=len(panels), height=3.8 + 0.22 * rows, ax=ax, fig=fig)
    cmap = colormaps["tab10" if len(items) <= 10 else "tab20"]
    for k, (label, runs) in enumerate(items):
        for a, (_, values_of, pct) in zip(axes[0], panels):
            _overlay_panel(a, runs, values_of, label, cmap(k % cmap.N), 100.0 if pct else 1.0)
    for a, (name, _, pct) in zip(axes[0], panels):
        way = "lower" if lower_is_better(name) else "higher"
        a.set(ylabel=name + (" (%)" if pct else ""), title=f"{name} ({way} is better)")
        last = max(a.dataLim.intervalx[1], 1) if a.lines else 1
        epoch_axis(a, last, first=1)
        low, high = a.dataLim.intervaly
        if 0 < low and high > 100 * low:  # a diverged run would flatten every other curve
            a.set_yscale("log")
        a.grid(alpha=0.3)
    sizes = sorted({len(runs) for _, runs in items})
    what = ("1 run each" if sizes == [1] else (f"mean of {sizes[0]} seeds each" if len(sizes) == 1 else
                                                "mean of each one's seeds") + ", shaded: their min-max")
    if own_figure(fig):  # below the panels, in columns: a long legend never hides the curves
        handles, labels = axes[0][0].get_legend_handles_labels()  # one entry per configuration, not per panel
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(items)), fontsize="small",
                   frameon=False, title=what, title_fontsize="small")
    else:  # a caller's figure: in the last Axes, nothing placed outside them
        axes[0][-1].legend(fontsize="small", title=what, title_fontsize="small")
    return save_figure(fig, save)


def plot_seed_dots(rows: Sequence[tuple[str, Sequence[float]] | tuple[str, Sequence[float], Sequence[str]]],
                   xlabel: str, save: str | os.PathLike | None = None, *, ax: Any = None, fig: Any = None) -> Any:
    """One row per configuration (``(title, values)`` or ``(title, values, labels)``): a dot per seed's
    value, named by its label (``seed 0``) when given, a bar at their mean, in the colours of the other
    compare plots (row k in ``C{k}``). ``ax``: an Axes to draw in; ``fig``: a Figure to add it to."""
    fig, axes = figure(height=0.9 + 0.45 * len(rows), ax=ax, fig=fig)
    a = axes[0][0]
    for y, (k, row) in enumerate(reversed(list(enumerate(rows)))):
        values = list(row[1])
        a.scatter(values, [y] * len(values), s=40, color=f"C{k % 10}", zorder=3, edgecolor="black", linewidth=0.5)
        a.plot([sum(values) / len(values)] * 2, [y - 0.3, y + 0.3], color=f"C{k % 10}", lw=2.5)
        for v, text in _labels_by_value(values, row[2] if len(row) > 2 else ()):
            a.annotate(text, (v, y), xytext=(0, 7), textcoords="offset points", ha="center", va="bottom",
                       fontsize=8, color="0.25", gid="seed_label")
    a.set_yticks(range(len(rows)), [row[0] for row in reversed(rows)])
    a.set_ylim(-0.6, len(rows) - 0.2)
    a.set_xlabel(xlabel)
    a.grid(axis="x", alpha=0.3)
    return save_figure(fig, save)


def _labels_by_value(values: Sequence[float], labels: Sequence[str]) -> list[tuple[float, str]]:
    """One label per distinct value: seeds that ended on the same value (an accuracy on a small
    validation set often does) share one, ``seeds 0, 1``, rather than print over each other."""
    named: dict[float, list[str]] = {}
    for v, text in zip(values, labels):
        named.setdefault(v, []).append(text)
    return [(v, texts[0] if len(texts) == 1 else
             "seeds " + ", ".join(t.removeprefix("seed ") for t in texts) if all(t.startswith("seed ") for t in texts)
             else ", ".join(texts)) for v, texts in named.items()]


def plot_finder_overlay(curves: dict[str, Sequence[tuple[Sequence[float], Sequence[float], float | None]]],
                        ylabel: str, save: str | os.PathLike | None = None, *, ax: Any = None,
                        fig: Any = None) -> Any:
    """Finder curves against the LR over each test's whole range, one colour per configuration
    (``title -> [(lrs, curve, chosen LR), ...]``), a dot on each curve at its chosen LR and a caret on
    the top edge where a curve leaves the plot. The y-axis stops at 1.5x the highest starting value,
    so diverged tails do not squash the dips. ``ax``: an Axes; ``fig``: a Figure to add it to."""
    import numpy as np
    fig, axes = figure(height=4.2, ax=ax, fig=fig)
    a = axes[0][0]
    lows, starts = [], []
    drawn: dict[tuple, str] = {}  # a configuration's tests -> its title
    for k, (title, items) in enumerate(curves.items()):
        color = f"C{k % 10}"
        # configurations that differ after the finder (a schedule) run the same tests: dashed over the first
        key = tuple((tuple(lrs), tuple(y if is_finite(y) else None for y in ys)) for lrs, ys, _ in items)
        same = drawn.setdefault(key, title)
        label = title if same == title else f"{title} (dashed: the same tests as {same})"
        for i, (lrs, ys, chosen) in enumerate(items):
            ys = [y if is_finite(y) else math.nan for y in ys]
            a.plot(lrs, ys, color=color, lw=1.4, alpha=0.85, label=label if i == 0 else None, gid="finder",
                   ls="-" if same == title else (0, (4, 4)))
            finite = [y for y in ys if math.isfinite(y)]
            lows.append(min(finite, default=math.nan))
            starts.append(finite[0] if finite else math.nan)
            good = [(x, y) for x, y in zip(lrs, ys) if math.isfinite(y) and x > 0]
            if chosen and len(good) > 1:
                y = float(np.interp(math.log(chosen), np.log([x for x, _ in good]), [y for _, y in good]))
                a.plot([chosen], [y], "o", color=color, markersize=7, markeredgecolor="black", zorder=4,
                       gid="chosen")
    a.set_xscale("log")
    lows, starts = [v for v in lows if math.isfinite(v)], [v for v in starts if math.isfinite(v)]
    low, top = min(lows, default=0.0), 1.5 * max(starts, default=1.0)
    if top > low:
        a.set_ylim(low - 0.05 * (top - low), top)
        for line in [ln for ln in a.lines if ln.get_gid() == "finder"]:  # where a curve leaves the plot
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            out = np.flatnonzero(np.isfinite(y) & (y > top))
            if len(out):
                a.plot([x[out[0]]], [top], "^", color=line.get_color(), ms=6, clip_on=False, gid="off_top")
    a.plot([], [], "o", color="white", markeredgecolor="black", label="LR the finder chose (one per seed)")
    if any(ln.get_gid() == "off_top" for ln in a.lines):
        a.plot([], [], "^", color="0.3", ls="none", label="where a curve leaves the plot (diverging)")
    a.set(xlabel="learning rate (log scale)", ylabel=ylabel,
          title="LR range tests, each over its whole range (smoothed, centred)")
    a.grid(alpha=0.3)
    a.legend(fontsize="small")
    if not own_figure(fig):
        a.set_title(a.get_title(), fontsize="medium")
    return save_figure(fig, save)
