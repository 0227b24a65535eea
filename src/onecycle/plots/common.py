"""What every plot shares: the figure (``WIDTH`` inches, constrained layout, no pyplot), saving it
atomically, reading fields of plain data, and the epoch axis.

Epochs are numbered from 1. Epoch ``k``'s values sit at x = k; iteration ``i`` of an epoch of ``n``
iterations at ``k - 1 + (i + 1) / n`` (``iteration_epochs``), so per-iteration and per-epoch series
share one axis and an epoch's last iteration sits with its validation point.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["WIDTH", "DPI", "field", "is_finite", "figure", "own_figure", "save_figure", "momentum_label",
           "metric_names",
           "iteration_epochs", "epoch_ticks", "epoch_axis", "iter_x", "x_axis"]

WIDTH, DPI = 11.0, 200


def field(data: Any, name: str, default: Any = None) -> Any:
    """A field of plain data: a mapping's key or an object's attribute."""
    return data.get(name, default) if isinstance(data, Mapping) else getattr(data, name, default)


def is_finite(v: Any) -> bool:
    """A number that is neither None nor inf nor nan."""
    return v is not None and math.isfinite(v)


def figure(nrows: int = 1, ncols: int = 1, height: float = 3.0, *, ax: Any = None, fig: Any = None,
           **kw: Any) -> tuple[Any, Any]:
    """A figure ``WIDTH`` inches wide, ``height`` per row, and its ``(nrows, ncols)`` grid of axes. A
    caller's drawing surface instead, as matplotlib users expect: ``ax`` (one Axes, or as many as the
    plot has panels: a list or ``fig.subplots(...)``'s array), or ``fig`` (a Figure the panels are
    added to). The figure made here shows itself in a notebook (``display.Figure``)."""
    n = nrows * ncols
    if ax is not None and fig is not None:
        raise ValueError("pass ax (Axes to draw in) or fig (a Figure to add them to), not both")
    if ax is not None:
        import numpy as np
        from matplotlib.axes import Axes
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if not all(isinstance(a, Axes) for a in axes):
            raise TypeError(f"ax must be a matplotlib Axes or a sequence of them, got {ax!r}")
        if len(axes) != n:
            raise ValueError(f"ax: this plot draws {n} panel{'s' * (n > 1)}, got {len(axes)} Axes")
        return axes[0].figure, np.asarray(axes, dtype=object).reshape(nrows, ncols)
    if fig is not None:
        from matplotlib.figure import Figure, SubFigure
        if not isinstance(fig, Figure | SubFigure):
            raise TypeError(f"fig must be a matplotlib Figure, got {fig!r}")
        return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)
    from .display import Figure as ShownFigure
    made = ShownFigure(figsize=(WIDTH, height * nrows), layout="constrained")
    made._onecycle_made = True  # our own: its legend may go outside the axes
    return made, made.subplots(nrows, ncols, squeeze=False, **kw)


def own_figure(fig: Any) -> bool:
    """Whether ``figure`` made ``fig`` (rather than a caller passing ``ax``/``fig``)."""
    return bool(getattr(fig, "_onecycle_made", False))


def save_figure(fig: Any, path: str | os.PathLike | None, dpi: int = DPI) -> Any:
    """Write ``fig`` atomically (temporary file then rename) when ``path`` is given: SVG for a
    ``.svg`` name, else PNG at ``dpi`` (200: sharp on a 2x display)."""
    if path is not None:
        from ..atomic import atomic_write_bytes
        buf = io.BytesIO()
        fig.savefig(buf, format="svg" if str(path).lower().endswith(".svg") else "png", dpi=dpi)
        atomic_write_bytes(path, buf.getvalue())
    return fig


def momentum_label(opt: str | None) -> str:
    """What the momentum schedule drives for an optimizer name: ``beta1`` for Adam-likes."""
    return "beta1" if opt and any(k in str(opt).lower() for k in ("adam", "lamb", "lion")) else "momentum"


def metric_names(rec: Any) -> list[str]:
    """The metric columns of a history: its ``metric_names``, else its ``metrics``' keys."""
    return list(field(rec, "metric_names", None) or (field(rec, "metrics", {}) or {}))


# ---- the epoch axis ------------------------------------------------------------------------------------
def iteration_epochs(n_iters: int, epoch_iters: Sequence[int]) -> list[float]:
    """Where each of ``n_iters`` iterations sits on the epoch axis (see the module doc). ``epoch_iters``:
    iterations done at each epoch's end. Iterations after the last whole epoch continue at its length."""
    xs: list[float] = []
    start, ends = 0, [int(e) for e in epoch_iters]
    for k, end in enumerate(ends):
        xs += [k + (i - start + 1) / (end - start) for i in range(start, min(end, n_iters))]
        start = max(start, end)
    if n_iters > start:
        n = (ends[-1] - (ends[-2] if len(ends) > 1 else 0)) if ends else n_iters
        xs += [len(ends) + (i - start + 1) / max(n, 1) for i in range(start, n_iters)]
    return xs


def epoch_ticks(n: int) -> list[int]:
    """Whole epochs from 1 to ``n`` (the last always), thinned to about a dozen: 1, the multiples of a
    round step, and ``n`` (a multiple closer to ``n`` than half a step gives way to it)."""
    step = next((s for s in (1, 2, 5, 10, 20, 25, 50, 100, 250, 500, 1000) if n / s <= 12), math.ceil(n / 12))
    ticks = {1, n, *range(step, n + 1, step)}
    return sorted(t for t in ticks if t in (1, n) or n - t >= step / 2 or step == 1)


def epoch_axis(ax: Any, last: float, first: int = 0) -> None:
    """Whole-number ticks from 1 (``epoch_ticks``); the axis runs from 0 (training's start, for
    per-step data), or from ``first`` = 1 for per-epoch data alone (nothing sits left of epoch 1)."""
    n = max(1, math.ceil(last - 1e-9))
    ticks = epoch_ticks(n)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    pad = 0.03 * max(n - first, 1) + 0.05
    ax.set_xlim(first - (pad if first else 0), n + pad)
    ax.set_xlabel("epoch")


def iter_x(rec: Any) -> tuple[list[float], str]:
    """Per-iteration x: epochs when the history has whole epochs, else iterations."""
    n, ends = len(field(rec, "losses", []) or field(rec, "moms", [])), field(rec, "epoch_iters", [])
    return (iteration_epochs(n, ends), "epoch") if ends else ([float(i) for i in range(n)], "iteration")


def x_axis(ax: Any, xs: Sequence[float], unit: str, n_epochs: int = 0) -> None:
    """The epoch axis (per-epoch data, or iterations placed on epochs), else a plain ``unit`` axis."""
    if unit == "epoch" or n_epochs:
        epoch_axis(ax, max([*xs, n_epochs, 1]))
    else:
        ax.set_xlabel(unit)
