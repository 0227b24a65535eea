"""Plots of one run's recorded history: LR and momentum, losses, metrics, the dashboard, extra per-step
series. Inputs are a Recorder or its ``state_dict()``, read by field name."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ..metrics import lower_is_better
from .common import epoch_axis, field, figure, is_finite, iter_x, metric_names, save_figure, x_axis

__all__ = ["plot_lr", "plot_losses", "plot_metrics", "plot_dashboard", "plot_series"]


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


def _loss_panel(ax: Any, rec: Any, xs: Sequence[float], skip_start: int = 0, log: bool = False) -> None:
    """Raw training loss faint, its recorded smoothing solid, the validation loss per epoch."""
    losses, smooth = field(rec, "losses", []), field(rec, "smooth_losses", [])
    ax.plot(xs[skip_start:len(losses)], losses[skip_start:], color="tab:blue", alpha=0.25, lw=0.8,
            label="training (per step)")
    ax.plot(xs[skip_start:len(smooth)], smooth[skip_start:], color="tab:blue", lw=1.8, label="training (smoothed)")
    val = field(rec, "val_losses", []) or []
    if any(is_finite(v) for v in val):
        ax.plot(range(1, len(val) + 1), val, "o-", color="tab:orange", ms=4, label="validation")
    if log and any(is_finite(v) and v > 0 for v in losses):
        ax.set_yscale("log")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    ax.set_title("losses", fontsize="medium")
    ax.legend(fontsize="small")


def _metric_panel(ax: Any, name: str, values: Sequence[float], color: str = "tab:green") -> None:
    """One metric per epoch, its best epoch starred and named in the title."""
    ax.plot(range(1, len(values) + 1), values, "o-", color=color, ms=4)
    finite = [(v, e + 1) for e, v in enumerate(values) if is_finite(v)]
    title = name
    if finite:
        v, e = (min if lower_is_better(name) else max)(finite, key=lambda t: t[0])  # ties: the earliest
        ax.plot([e], [v], "*", ms=14, color="gold", mec="black", mew=0.7, zorder=5, gid="best")
        title = f"{name}: best {v:.4g} at epoch {e} (\u2605)"
    ax.set_ylabel(name)
    ax.set_title(title, fontsize="medium")


def plot_lr(rec: Any, save: str | os.PathLike | None = None, momentum_label: str = "momentum") -> Any:
    """LR (one line per distinct param group) and momentum (``momentum_label``: "beta1" for Adam-likes)
    side by side, against epochs (iterations for an LR finder's history)."""
    fig, axes = figure(ncols=2, height=3.4)
    xs, unit = iter_x(rec)
    _lr_panel(axes[0][0], rec, xs)
    _mom_panel(axes[0][1], rec, xs, momentum_label)
    for ax in axes[0]:
        x_axis(ax, xs, unit)
    return save_figure(fig, save)


def plot_losses(rec: Any, skip_start: int = 0, save: str | os.PathLike | None = None, log: bool = False) -> Any:
    """Raw (faint) and smoothed training loss per iteration, validation loss per epoch, against epochs."""
    fig, axes = figure(height=3.8)
    xs, unit = iter_x(rec)
    _loss_panel(axes[0][0], rec, xs, skip_start, log)
    x_axis(axes[0][0], xs, unit, len(field(rec, "val_losses", []) or []))
    return save_figure(fig, save)


def plot_metrics(rec: Any, save: str | os.PathLike | None = None) -> Any:
    """Each metric per epoch, one panel each (up to three a row), the best epoch starred."""
    names = metric_names(rec)
    ncols = max(1, min(len(names), 3))
    fig, axes = figure(nrows=max(1, math.ceil(len(names) / ncols)), ncols=ncols, height=3.4)
    metrics = field(rec, "metrics", {}) or {}
    xs, unit = iter_x(rec)  # the losses' extent too: metrics.png and losses.png share their epoch axis
    last = max([len(field(rec, "val_losses", []) or []), *(len(v) for v in metrics.values()),
                *(xs[-1:] if unit == "epoch" else ())])
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            if names:
                fig.delaxes(ax)
            else:
                ax.text(0.5, 0.5, "(no metrics)", ha="center", va="center", transform=ax.transAxes)
            continue
        _metric_panel(ax, names[k], metrics.get(names[k], []))
        epoch_axis(ax, max(last, 1))
    return save_figure(fig, save)


def plot_dashboard(history: Any, momentum_label: str = "momentum", log_loss: bool = False,
                   save: str | os.PathLike | None = None) -> Any:
    """One run at a glance, every panel on one epoch axis (shared): LR (one line per distinct param
    group), momentum (``momentum_label``), training loss raw and smoothed with the validation loss
    (``log_loss``: log y), then each metric with its best epoch starred. ``history``: a Recorder or its
    ``state_dict()``."""
    names = metric_names(history)
    n_panels = 3 + len(names)
    fig, axes = figure(nrows=math.ceil(n_panels / 2), ncols=2, height=3.0, sharex=True)
    xs, unit = iter_x(history)
    flat = list(axes.flat)
    _lr_panel(flat[0], history, xs)
    _mom_panel(flat[1], history, xs, momentum_label)
    _loss_panel(flat[2], history, xs, log=log_loss)
    metrics = field(history, "metrics", {}) or {}
    for ax, name in zip(flat[3:], names):
        _metric_panel(ax, name, metrics.get(name, []))
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    n_epochs = len(field(history, "val_losses", []) or [])
    for ax in flat[:n_panels]:
        ax.tick_params(labelbottom=True)  # every panel keeps its epoch labels
        x_axis(ax, xs, unit, n_epochs)
    return save_figure(fig, save)


def plot_series(rec: Any, prefixes: Sequence[str], log: bool = True,
                save: str | os.PathLike | None = None) -> Any:
    """Extra per-step series (``rec.series``) whose names start with each prefix, one panel each."""
    fig, axes = figure(ncols=len(prefixes), height=3.4)
    series = field(rec, "series", {}) or {}
    for ax, prefix in zip(axes[0], prefixes):
        for name in sorted(k for k in series if k.startswith(prefix)):
            values = series[name]
            ax.plot(range(len(values)), values, label=f"group {name[len(prefix):]}")
        ax.set(xlabel="optimizer step", ylabel=prefix.rstrip("/"), title=prefix.rstrip("/"))
        if log:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize="small")
    return save_figure(fig, save)
