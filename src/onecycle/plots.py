"""Every matplotlib import lives here; each function draws recorded data and returns a Figure.

Figures are made with ``matplotlib.figure.Figure`` directly, not pyplot: no global state, no GUI
backend, so plotting works headless and in worker processes. ``save=path`` writes a PNG too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["plot_lr", "plot_losses", "plot_metrics", "plot_series", "save_figure"]


def _figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, **kw: Any):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike | None, dpi: int = 100) -> Any:
    """Write ``fig`` as PNG atomically (temporary file then rename) when ``path`` is given."""
    if path is not None:
        import io

        from .recorder import atomic_write_bytes
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
