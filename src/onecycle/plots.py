"""Every matplotlib import lives here; each function draws recorded data and returns a Figure.

Figures are made with ``matplotlib.figure.Figure`` directly, not pyplot: no global state, no GUI
backend, so plotting works headless and in worker processes. ``save=path`` writes a PNG too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["plot_lr", "plot_losses", "plot_metrics", "plot_series", "plot_finder", "save_figure"]


def _figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, **kw: Any):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike | None, dpi: int = 100) -> Any:
    """Write ``fig`` as PNG atomically (temporary file then rename) when ``path`` is given."""
    if path is not None:
        import io

        from .checkpoint import atomic_write_bytes
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        atomic_write_bytes(path, buf.getvalue())
    return fig


def plot_lr(rec: Any, save: str | os.PathLike | None = None) -> Any:
    """LR of every param group and momentum against iterations, side by side."""
    fig, axes = _figure(ncols=2)
    ax_lr, ax_mom = axes[0]
    for g, lrs in enumerate(rec.group_lrs):
        ax_lr.plot(range(len(lrs)), lrs, label=f"group {g}")
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="learning rate")
    if len(rec.group_lrs) > 1:
        ax_lr.legend()
    moms = [m if m is not None else math.nan for m in rec.moms]
    ax_mom.plot(range(len(moms)), moms, color="tab:orange")
    ax_mom.set(xlabel="iteration", ylabel="momentum", title="momentum")
    return save_figure(fig, save)


def _epoch_x(rec: Any) -> list[int]:
    return list(rec.epoch_iters)


def plot_losses(rec: Any, skip_start: int = 0, save: str | os.PathLike | None = None) -> Any:
    """Raw (faint) and smoothed training loss per iteration, validation loss per epoch."""
    fig, axes = _figure()
    ax = axes[0][0]
    x = range(skip_start, len(rec.losses))
    ax.plot(x, rec.losses[skip_start:], alpha=0.25, color="tab:blue")
    ax.plot(x, rec.smooth_losses[skip_start:], color="tab:blue", label="train (smoothed)")
    if any(not math.isnan(v) for v in rec.val_losses):
        ax.plot(_epoch_x(rec), rec.val_losses, "o-", color="tab:orange", label="validation")
    ax.set(xlabel="iteration", ylabel="loss", title="losses")
    ax.legend()
    return save_figure(fig, save)


def plot_metrics(rec: Any, save: str | os.PathLike | None = None) -> Any:
    """Each metric per epoch, one panel each."""
    names = list(rec.metric_names) or ["(no metrics)"]
    fig, axes = _figure(ncols=len(names))
    for ax, name in zip(axes[0], names):
        values = rec.metrics.get(name, [])
        ax.plot(range(1, len(values) + 1), values, "o-")
        ax.set(xlabel="epoch", title=name)
    return save_figure(fig, save)


def plot_series(rec: Any, prefixes: Sequence[str], log: bool = True,
                save: str | os.PathLike | None = None) -> Any:
    """Extra per-step series (``rec.series``) whose names start with each prefix, one panel each."""
    fig, axes = _figure(ncols=len(prefixes))
    for ax, prefix in zip(axes[0], prefixes):
        for name in sorted(k for k in rec.series if k.startswith(prefix)):
            values = rec.series[name]
            ax.plot(range(len(values)), values, label=f"group {name[len(prefix):]}")
        ax.set(xlabel="step", title=prefix.rstrip("/"))
        if log:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend()
    return save_figure(fig, save)


def _finder_panel(ax: Any, lrs: Sequence[float], values: Sequence[float], window: slice, smoothed: bool,
                  title: str, color: str) -> None:
    """One finder curve against the LR: raw points faint, the smoothed curve (EMA) solid."""
    from .suggest import SmoothLoss
    if not values:
        ax.text(0.5, 0.5, "no points (with_valid=False, or none recorded)", ha="center", va="center",
                transform=ax.transAxes)
    else:
        x = list(lrs)[window]
        if smoothed:  # smooth the whole curve, then cut: the cut points still warm the average up
            s = SmoothLoss()
            ax.plot(x, list(values)[window], ".", alpha=0.25, color=color, markersize=3)
            ax.plot(x, [s.add(v) for v in values][window], color=color)
        else:
            ax.plot(x, list(values)[window], color=color)
    ax.set_ylabel(title)


def plot_finder(result: Any, smoothed: bool = True, n_skip: int = 10, n_skip_end: int = 5,
                save: str | os.PathLike | None = None) -> Any:
    """An LR finder result (``LRFindResult``): training loss, validation loss and each metric in
    stacked panels sharing the LR axis (log for an exponential sweep), without the first ``n_skip``
    and last ``n_skip_end`` points; each suggestion is a dashed line, the chosen one thicker."""
    for name, v in (("n_skip", n_skip), ("n_skip_end", n_skip_end)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    names = list(result.metrics)
    panels = [("train loss", result.losses), ("validation loss", result.val_losses)]
    panels += [(n, result.metrics[n]) for n in names]
    fig, axes = _figure(nrows=len(panels), width=6.0, height=2.4, sharex=True)
    n = len(result.lrs)
    window = slice(n_skip, max(n - n_skip_end, n_skip))
    colors = ["tab:blue", "tab:orange"] + ["tab:green"] * len(names)
    for ax, (title, values), color in zip(axes[:, 0], panels, colors):
        _finder_panel(ax, result.lrs, values, window, smoothed, title, color)
        if result.step_mode == "exp" and result.lrs[window]:
            ax.set_xscale("log")
    marks = [(k, v) for k, v in result.suggestions.items() if v is not None]
    palette = ["tab:red", "tab:purple", "tab:brown", "tab:gray", "tab:olive", "tab:cyan", "tab:pink"]
    for (name, lr), color in zip(marks, palette * (len(marks) // len(palette) + 1)):
        width = 2.0 if name == result.rule else 1.0
        for i, ax in enumerate(axes[:, 0]):
            ax.axvline(lr, ls="--", lw=width, color=color, label=f"{name} {lr:.2g}" if i == 0 else None)
    if marks:
        axes[0][0].legend(fontsize="small")
    axes[-1][0].set_xlabel("learning rate")
    axes[0][0].set_title(f"LR finder: {result.stop_reason}" if result.stop_reason else "LR finder", fontsize=9)
    return save_figure(fig, save)


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
    against epochs; each label is one colour, its mean a line and its min-max a band."""
    from matplotlib import colormaps
    items = list(groups.items())
    names = list(dict.fromkeys(n for _, runs in items for rec in runs for n in rec.metric_names))
    panels = [("validation loss", lambda rec: rec.val_losses)]
    panels += [(n, lambda rec, n=n: rec.metrics.get(n, [])) for n in names]
    fig, axes = _figure(ncols=len(panels), width=5.0, height=3.8)
    cmap = colormaps["tab10" if len(items) <= 10 else "tab20"]
    for k, (label, runs) in enumerate(items):
        for ax, (_, values_of) in zip(axes[0], panels):
            _overlay_panel(ax, runs, values_of, label, cmap(k % cmap.N))
    from matplotlib.ticker import MaxNLocator
    for ax, (title, _) in zip(axes[0], panels):
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        low, high = ax.dataLim.intervaly
        if 0 < low and high > 100 * low:  # a diverged run would flatten every other curve
            ax.set_yscale("log")
    axes[0][-1].legend(fontsize="small")
    return save_figure(fig, save)


__all__ += ["plot_overlay"]
