"""Plots of one run's recorded history: LR and momentum, losses, metrics, the dashboard, extra per-step
series. Inputs are a Recorder or its ``state_dict()``, read by field name. The training loss is drawn
raw (faint) under its centred smoothing (``smoothing.centred``), which has no lag, so at an epoch's
end it reads what the loss was then. Every per-epoch series has its best epoch starred, the best
taken in the metric's own direction (``higher_is_better``, recorded with the history)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ..metrics import lower_is_better, percent_column
from ..smoothing import centred
from .common import epoch_axis, field, figure, is_finite, iter_x, metric_names, save_figure, x_axis

__all__ = ["plot_lr", "plot_losses", "plot_metrics", "plot_dashboard", "plot_series", "higher_is_better"]


def _distinct_groups(group_lrs: Sequence[Sequence[float]]) -> list[tuple[list[int], list[float]]]:
    """Param groups with identical LR histories merged: (group indices, LRs) each."""
    out: list[tuple[list[int], list[float]]] = []
    for g, lrs in enumerate(group_lrs):
        same = next((idx for idx, v in out if v == list(lrs)), None)
        if same is not None:
            same.append(g)
        else:
            out.append(([g], list(lrs)))
    return out


def _groups_label(idx: list[int], n: int) -> str:
    if len(idx) == n and n > 1:
        return f"all {n} groups (identical)"
    if len(idx) == 1:
        return f"group {idx[0]}"
    run = idx == list(range(idx[0], idx[-1] + 1))
    return f"groups {idx[0]}-{idx[-1]}" if run else "groups " + ", ".join(map(str, idx))


def _lr_panel(ax: Any, rec: Any, xs: Sequence[float]) -> None:
    group_lrs = field(rec, "group_lrs", []) or []
    groups = _distinct_groups(group_lrs)
    for idx, lrs in groups:
        ax.plot(xs[:len(lrs)], lrs, lw=1.5, label=_groups_label(idx, len(group_lrs)))
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate" + (" (per param group)" if len(groups) > 1 else ""), fontsize="medium")
    if len(groups) > 1 and min(min(v) for _, v in groups) > 0:
        if max(max(v) for _, v in groups) / min(min(v) for _, v in groups) > 1e3:
            ax.set_yscale("log")
    if len(group_lrs) > 1:
        ax.legend(fontsize="small")


def _mom_panel(ax: Any, rec: Any, xs: Sequence[float], label: str) -> None:
    moms = [math.nan if m is None else m for m in field(rec, "moms", [])]
    if any(is_finite(m) for m in moms):
        ax.plot(xs[:len(moms)], moms, color="tab:orange", lw=1.5)
    else:
        ax.text(0.5, 0.5, "no momentum: the optimizer has none", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel(label)
    ax.set_title(label, fontsize="medium")


def _best(values: Sequence[float], higher: bool) -> tuple[float, int] | None:
    """The best finite value and its epoch (from 1; the earliest on a tie)."""
    finite = [(v, e + 1) for e, v in enumerate(values) if is_finite(v)]
    if not finite:
        return None
    return (max if higher else min)(finite, key=lambda t: t[0])


def higher_is_better(rec: Any, name: str) -> bool:
    """A column's direction: as the history recorded it (``higher_is_better``), else by its name."""
    recorded = field(rec, "higher_is_better", {}) or {}
    return bool(recorded[name]) if name in recorded else not lower_is_better(name)


def _star(ax: Any, best: tuple[float, int]) -> None:
    v, e = best
    ax.plot([e], [v], "*", ms=14, color="gold", mec="black", mew=0.7, zorder=5, gid="best")


def _loss_panel(ax: Any, rec: Any, xs: Sequence[float], skip_start: int = 0, log: bool = False) -> None:
    """Raw training loss faint, its centred smoothing solid, the validation loss per epoch with its best
    epoch starred."""
    losses = field(rec, "losses", [])
    ax.plot(xs[skip_start:len(losses)], losses[skip_start:], color="tab:blue", alpha=0.25, lw=0.8,
            label="training (per step)")
    ax.plot(xs[skip_start:len(losses)], centred(losses)[skip_start:], color="tab:blue", lw=1.8,
            label="training (smoothed, centred)", gid="smooth")
    val = field(rec, "val_losses", []) or []
    best = _best(val, higher=False)
    if best is not None:
        ax.plot(range(1, len(val) + 1), val, "o-", color="tab:orange", ms=4, label="validation", gid="val")
        _star(ax, best)
    if log and any(is_finite(v) and v > 0 for v in losses):
        ax.set_yscale("log")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    title = "losses" + (f": best val_loss {best[0]:.4g} at epoch {best[1]} (\u2605)" if best else "")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")


def _metric_panel(ax: Any, name: str, values: Sequence[float], higher: bool, color: str = "tab:green") -> None:
    """One metric per epoch (an accuracy-like one in percent, as everywhere else), its best epoch (in its
    direction) starred and named in the title."""
    pct = percent_column(name, values)
    values = [v * 100 if pct and is_finite(v) else v for v in values]
    unit = "%" if pct else ""
    ax.plot(range(1, len(values) + 1), values, "o-", color=color, ms=4)
    best = _best(values, higher)
    way = "higher" if higher else "lower"
    title = f"{name} ({way} is better)"
    if best is not None:
        _star(ax, best)
        title = f"{name}: best {best[0]:.4g}{unit} at epoch {best[1]} (\u2605; {way} is better)"
    ax.set_ylabel(name + (" (%)" if pct else ""))
    ax.set_title(title, fontsize="medium")


def _grid(n: int, per_row: int, height: float, ax: Any, fig: Any, **kw: Any) -> tuple[Any, list[Any]]:
    """``n`` panels, ``per_row`` a row, in a figure made here (extra cells removed), or exactly ``n``
    Axes of the caller's (``ax``), or added to the caller's ``fig``."""
    if ax is not None:
        made, axes = figure(1, n, height, ax=ax)
        return made, list(axes.flat)
    ncols = max(1, min(n, per_row))
    made, axes = figure(max(1, math.ceil(n / ncols)), ncols, height, fig=fig, **kw)
    flat = list(axes.flat)
    for extra in flat[n:]:
        made.delaxes(extra)
    return made, flat[:n]


def plot_lr(rec: Any, save: str | os.PathLike | None = None, momentum_label: str = "momentum", *,
            ax: Any = None, fig: Any = None) -> Any:
    """LR (one line per distinct param group) and momentum (``momentum_label``: "beta1" for Adam-likes)
    side by side, against epochs (iterations for an LR finder's history). ``ax``: two Axes to draw in;
    ``fig``: a Figure to add them to."""
    fig, axes = _grid(2, 2, 3.4, ax, fig)
    xs, unit = iter_x(rec)
    _lr_panel(axes[0], rec, xs)
    _mom_panel(axes[1], rec, xs, momentum_label)
    for a in axes:
        x_axis(a, xs, unit)
    return save_figure(fig, save)


def plot_losses(rec: Any, skip_start: int = 0, save: str | os.PathLike | None = None, log: bool = False, *,
                ax: Any = None, fig: Any = None) -> Any:
    """Raw (faint) and smoothed (centred) training loss per iteration, validation loss per epoch with
    its best starred, against epochs. ``ax``: an Axes to draw in; ``fig``: a Figure to add it to."""
    fig, axes = _grid(1, 1, 3.8, ax, fig)
    xs, unit = iter_x(rec)
    _loss_panel(axes[0], rec, xs, skip_start, log)
    x_axis(axes[0], xs, unit, len(field(rec, "val_losses", []) or []))
    return save_figure(fig, save)


def plot_metrics(rec: Any, save: str | os.PathLike | None = None, *, ax: Any = None, fig: Any = None) -> Any:
    """Each metric per epoch, one panel each (up to three a row), the best epoch starred. ``ax``: one
    Axes per metric; ``fig``: a Figure to add them to."""
    names = metric_names(rec)
    fig, axes = _grid(max(1, len(names)), 3, 3.4, ax, fig)
    metrics = field(rec, "metrics", {}) or {}
    xs, unit = iter_x(rec)  # the losses' extent too: metrics.png and losses.png share their epoch axis
    last = max([len(field(rec, "val_losses", []) or []), *(len(v) for v in metrics.values()),
                *(xs[-1:] if unit == "epoch" else ())])
    if not names:
        axes[0].text(0.5, 0.5, "(no metrics)", ha="center", va="center", transform=axes[0].transAxes)
    for a, name in zip(axes, names):
        _metric_panel(a, name, metrics.get(name, []), higher_is_better(rec, name))
        epoch_axis(a, max(last, 1))
    return save_figure(fig, save)


def plot_dashboard(history: Any, momentum_label: str = "momentum", log_loss: bool = False,
                   save: str | os.PathLike | None = None, *, ax: Any = None, fig: Any = None) -> Any:
    """One run at a glance, every panel on one epoch axis (shared): LR (one line per distinct param
    group), momentum (``momentum_label``), training loss raw and smoothed with the validation loss
    (``log_loss``: log y), then each metric; every per-epoch series with its best epoch starred.
    ``history``: a Recorder or its ``state_dict()``. ``ax``: 3 + (number of metrics) Axes to draw in;
    ``fig``: a Figure to add them to."""
    names = metric_names(history)
    fig, axes = _grid(3 + len(names), 2, 3.0, ax, fig, sharex=True)
    xs, unit = iter_x(history)
    _lr_panel(axes[0], history, xs)
    _mom_panel(axes[1], history, xs, momentum_label)
    _loss_panel(axes[2], history, xs, log=log_loss)
    metrics = field(history, "metrics", {}) or {}
    for a, name in zip(axes[3:], names):
        _metric_panel(a, name, metrics.get(name, []), higher_is_better(history, name))
    n_epochs = len(field(history, "val_losses", []) or [])
    for a in axes:
        a.tick_params(labelbottom=True)  # every panel keeps its epoch labels
        x_axis(a, xs, unit, n_epochs)
    return save_figure(fig, save)


def plot_series(rec: Any, prefixes: Sequence[str], log: bool = True, save: str | os.PathLike | None = None, *,
                ax: Any = None, fig: Any = None) -> Any:
    """Extra per-step series (``rec.series``) whose names start with each prefix, one panel each.
    ``ax``: one Axes per prefix; ``fig``: a Figure to add them to."""
    fig, axes = _grid(len(prefixes), len(prefixes), 3.4, ax, fig)
    series = field(rec, "series", {}) or {}
    for a, prefix in zip(axes, prefixes):
        for name in sorted(k for k in series if k.startswith(prefix)):
            values = series[name]
            a.plot(range(len(values)), values, label=f"group {name[len(prefix):]}")
        a.set(xlabel="optimizer step", ylabel=prefix.rstrip("/"), title=prefix.rstrip("/"))
        if log:
            a.set_yscale("log")
        if a.lines:
            a.legend(fontsize="small")
    return save_figure(fig, save)
