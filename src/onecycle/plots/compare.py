"""Plots of several runs: histories overlaid (a line per configuration, a band over its seeds), each
seed's final value as a dot, and the finder curves of a grid's runs."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from .common import epoch_axis, field, figure, metric_names, save_figure

__all__ = ["plot_overlay", "plot_seed_dots", "plot_finder_overlay"]


def _overlay_panel(ax: Any, runs: Sequence[Any], values_of: Any, label: str, color: Any) -> None:
    """Mean over ``runs`` per epoch as a line; with several runs, their min-max as a band."""
    series = [values_of(rec) for rec in runs]
    n = max((len(s) for s in series), default=0)
    epochs, mean, low, high = [], [], [], []
    for e in range(n):
        vals = [s[e] for s in series if e < len(s) and not math.isnan(s[e])]
        if vals:
            epochs.append(e + 1)
            mean.append(sum(vals) / len(vals))
            low.append(min(vals))
            high.append(max(vals))
    ax.plot(epochs, mean, "-", color=color, label=label + (f" ({len(runs)} runs)" if len(runs) > 1 else ""))
    if len(runs) > 1:
        ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)


def plot_overlay(groups: Any, save: str | os.PathLike | None = None) -> Any:
    """Several runs' recorded histories overlaid: ``groups`` maps a label to one or more recorders
    (e.g. the seeds of one configuration). One panel for the validation loss and one per metric,
    against epochs (from 1); each label is one colour, its mean a line and its min-max a band."""
    from matplotlib import colormaps
    items = list(groups.items())
    names = list(dict.fromkeys(n for _, runs in items for rec in runs for n in metric_names(rec)))
    panels = [("validation loss", lambda rec: field(rec, "val_losses", []))]
    panels += [(n, lambda rec, n=n: (field(rec, "metrics", {}) or {}).get(n, [])) for n in names]
    fig, axes = figure(ncols=len(panels), height=3.8)
    cmap = colormaps["tab10" if len(items) <= 10 else "tab20"]
    for k, (label, runs) in enumerate(items):
        for ax, (_, values_of) in zip(axes[0], panels):
            _overlay_panel(ax, runs, values_of, label, cmap(k % cmap.N))
    for ax, (title, _) in zip(axes[0], panels):
        ax.set(ylabel=title, title=title)
        epoch_axis(ax, max(ax.dataLim.intervalx[1], 1) if ax.lines else 1)
        low, high = ax.dataLim.intervaly
        if 0 < low and high > 100 * low:  # a diverged run would flatten every other curve
            ax.set_yscale("log")
    axes[0][-1].legend(fontsize="small")
    return save_figure(fig, save)


def plot_seed_dots(rows: Sequence[tuple[str, Sequence[float]]], xlabel: str,
                   save: str | os.PathLike | None = None) -> Any:
    """One row per configuration (``(title, values)``): a dot per seed's value, a bar at their mean,
    in the colours of the other compare plots (row k in ``C{k}``)."""
    fig, axes = figure(height=0.9 + 0.45 * len(rows))
    ax = axes[0][0]
    for y, (k, (_, values)) in enumerate(reversed(list(enumerate(rows)))):
        ax.scatter(list(values), [y] * len(values), s=40, color=f"C{k % 10}", zorder=3, edgecolor="black",
                   linewidth=0.5)
        ax.plot([sum(values) / len(values)] * 2, [y - 0.3, y + 0.3], color=f"C{k % 10}", lw=2.5)
    ax.set_yticks(range(len(rows)), [t for t, _ in reversed(rows)])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, save)


def plot_finder_overlay(curves: dict[str, Sequence[tuple[Sequence[float], Sequence[float], float | None]]],
                        ylabel: str, save: str | os.PathLike | None = None) -> Any:
    """Finder curves against the LR, one colour per configuration (``title -> [(lrs, curve, chosen
    LR), ...]``), a dot on each curve at its chosen LR. The y-axis stops at 1.5x the highest
    starting value, so diverged tails do not squash the dips."""
    import numpy as np
    fig, axes = figure(height=4.2)
    ax = axes[0][0]
    lows, starts = [], []
    for k, (title, items) in enumerate(curves.items()):
        color = f"C{k % 10}"
        for i, (lrs, ys, chosen) in enumerate(items):
            ax.plot(lrs, ys, color=color, lw=1.4, alpha=0.85, label=title if i == 0 else None)
            finite = [y for y in ys if math.isfinite(y)]
            lows.append(min(finite, default=math.nan))
            starts.append(finite[0] if finite else math.nan)
            if chosen and len(lrs) > 1:
                y = float(np.interp(math.log(chosen), np.log(lrs), ys))
                ax.plot([chosen], [y], "o", color=color, markersize=7, markeredgecolor="black", zorder=4)
    ax.set_xscale("log")
    lows, starts = [v for v in lows if math.isfinite(v)], [v for v in starts if math.isfinite(v)]
    low, top = min(lows, default=0.0), 1.5 * max(starts, default=1.0)
    if top > low:
        ax.set_ylim(low - 0.05 * (top - low), top)
    ax.plot([], [], "o", color="white", markeredgecolor="black", label="LR the finder chose (one per seed)")
    ax.set(xlabel="learning rate (log scale)", ylabel=ylabel,
           title="LR range tests: the curve each suggestion rule read")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, save)
