"""The LR range test's plot: training loss, validation loss and metrics against the LR, the curves the
suggestion rules read, every rule's LR and the chosen one's band and 1cycle range. Input: an
``LRFindResult`` or its ``to_dict()``, read by field name."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ..checks import check_int, check_number
from ..suggest import ema, rule_name, smoothing_beta, stop_words
from .common import field, figure, is_finite, save_figure

__all__ = ["plot_finder", "finder_ylim"]

CHOSEN = "crimson"
_DASHES = [(0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (2, 3)), (0, (8, 2, 1, 2, 1, 2)), (0, (3, 1))]


def finder_ylim(curve: Sequence[float], raw: Sequence[float] = (), factor: float = 1.5) -> tuple[float, float]:
    """Y-limits of a finder loss panel that leave out the diverged tail: from a little below the
    curve's minimum (the lowest raw point, down to two start heights below it) to ``factor`` times the
    start's height above that minimum (or the data's top, if lower), padded 10% below, 5% above. ``curve``:
    the drawn (smoothed) curve, its first finite point the start; ``raw``: the points around it."""
    c = [v for v in curve if is_finite(v)]
    if not c:
        return 0.0, 1.0
    lo, start = min(c), c[0]
    span = start - lo if start - lo > 1e-12 * max(1.0, abs(lo)) else max(max(c) - lo, 0.1 * abs(lo), 1e-3)
    pts = c + [v for v in raw if is_finite(v)]
    top = min(lo + factor * span, max(pts))
    bottom = max(min(pts), lo - 2 * span)  # raw points below the smoothed minimum stay in view
    pad = 0.05 * (top - bottom or span)
    return bottom - 2 * pad, top + pad  # more room below: the 1cycle bar runs along the bottom


def _range_ylim(values: Sequence[float]) -> tuple[float, float] | None:
    v = [x for x in values if is_finite(x)]
    if not v:
        return None
    lo, hi = min(v), max(v)
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad


def _finder_panels(result: Any) -> list[tuple[str, list[float], list[float], str]]:
    """(label, raw, smoothed, colour) per panel: the smoothed curves are those the rules read."""
    beta = smoothing_beta(field(result, "num_it", 0) or len(field(result, "lrs", [])))
    val = list(field(result, "val_losses", []) or [])
    smooth_val = field(result, "smooth_val_losses", None)
    losses, smooth = list(field(result, "losses", [])), list(field(result, "smooth_losses", []))
    panels = [("training loss", losses, smooth, "tab:blue"),
              ("validation loss", val, list(ema(val, beta) if smooth_val is None else smooth_val), "tab:orange")]
    colors = ["tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"]
    for k, (name, values) in enumerate((field(result, "metrics", {}) or {}).items()):
        panels.append((name, list(values), ema(values, beta), colors[k % len(colors)]))
    return panels


def _chosen(result: Any) -> tuple[str | None, float | None]:
    """The rule whose LR ``result.suggestion`` is (``rule``, or the fallback that answered)."""
    lr, rule = field(result, "suggestion"), field(result, "rule")
    suggestions = field(result, "suggestions", {}) or {}
    if lr is None:
        return None, None
    return (rule if suggestions.get(rule) == lr else next((k for k, v in suggestions.items() if v == lr), rule)), lr


def _on_curve(x: Sequence[float], y: Sequence[float], at: float, log: bool) -> float:
    """The drawn curve's value at LR ``at``, interpolated in log LR (linear LR for a linear sweep)."""
    import numpy as np
    pts = [(a, b) for a, b in zip(x, y) if is_finite(b) and (a > 0 or not log)]
    if not pts or not pts[0][0] <= at <= pts[-1][0]:
        return math.nan
    f = np.log if log else np.asarray
    return float(np.interp(f(at), f([a for a, _ in pts]), [b for _, b in pts]))


def _mark_clipped(ax: Any, x: Sequence[float], raw: Sequence[float], lo: float, hi: float, color: str) -> bool:
    """Points outside the y-limits drawn as carets on the edge they cross."""
    up = [a for a, v in zip(x, raw) if v is not None and (v > hi or v == math.inf)]
    down = [a for a, v in zip(x, raw) if v is not None and (v < lo or v == -math.inf)]
    for xs, y, marker in ((up, hi, "^"), (down, lo, "v")):
        if xs:
            ax.plot(xs, [y] * len(xs), marker, ls="none", ms=4, color=color, alpha=0.7, clip_on=False, gid="clipped")
    return bool(up or down)


def _finder_curve(ax: Any, lrs: Sequence[float], raw: list[float], smooth: list[float], window: slice,
                  smoothed: bool, color: str) -> tuple[list[float], list[float], list[float]] | None:
    """Raw points faint and the smoothed curve solid (the raw curve as a line when not ``smoothed``),
    cut to ``window`` after smoothing the whole curve. Returns (x, drawn y, raw y) or None."""
    x, r, s = list(lrs)[window], raw[window], (smooth if smoothed else raw)[window]
    if not r:
        ax.text(0.5, 0.5, "no points (with_valid=False, or none recorded)", ha="center", va="center",
                transform=ax.transAxes)
        return None
    if smoothed:
        ax.plot(x, r, ".", ms=3, alpha=0.3, color=color, gid="raw")
    ax.plot(x, s, color=color, lw=1.8, gid="curve")
    return x, s, r


def _kept_steps(curve: Sequence[float], top: float) -> int:
    """How many steps the training curve stays in range: up to where it climbs past ``top`` after its minimum."""
    finite = [(v, i) for i, v in enumerate(curve) if is_finite(v)]
    low = min(finite)[1] if finite else 0
    return next((i for i in range(low, len(curve)) if not (is_finite(curve[i]) and curve[i] <= top)), len(curve))


def _finder_limits(axes: Sequence[Any], curves: list, factor: float) -> bool:
    """Loss panels: ``finder_ylim``; metric panels: the range over the steps the training loss kept in
    range. Points outside are marked on the edge; True when any was."""
    clipped, kept = False, None
    for k, (ax, drawn) in enumerate(zip(axes, curves)):
        if drawn is None:
            continue
        x, s, r = drawn
        if k < 2:
            lo, hi = finder_ylim(s, r, factor)
            kept = _kept_steps(s, hi) if k == 0 else kept
        else:
            cut = len(s) if kept is None else max(kept, 1)
            lo, hi = _range_ylim(list(s[:cut]) + list(r[:cut])) or ax.get_ylim()
        ax.set_ylim(lo, hi)
        clipped |= _mark_clipped(ax, x, r, lo, hi, ax.lines[-1].get_color())
    return clipped


def _finder_marks(ax: Any, result: Any, drawn: Any, log: bool, band: float, div: float) -> None:
    """Every rule's LR as a line: the chosen one in colour with a marker on the drawn curve, its band of
    good LRs shaded and its 1cycle range as a bar along the bottom; the others grey and thin."""
    chosen_rule, chosen = _chosen(result)
    others = [(k, v) for k, v in (field(result, "suggestions", {}) or {}).items() if v is not None and k != chosen_rule]
    for (_, lr), dash in zip(others, _DASHES * 2):
        ax.axvline(lr, color="0.5", lw=0.9, ls=dash, zorder=1)
    if chosen is None:
        return
    ax.axvspan(chosen / band, chosen * band, color=CHOSEN, alpha=0.1, lw=0, zorder=0, gid="band")
    ax.axvspan(chosen / div, chosen, ymin=0, ymax=0.04, color=CHOSEN, alpha=0.4, lw=0, gid="one_cycle")
    ax.axvline(chosen, color=CHOSEN, lw=1.0, alpha=0.8, zorder=2)
    if drawn is not None:
        y = _on_curve(drawn[0], drawn[1], chosen, log)
        if is_finite(y):
            ax.plot([chosen], [y], "o", ms=8, mfc=CHOSEN, mec="white", mew=1.2, zorder=6, gid="suggestion")


def _finder_legend(fig: Any, result: Any, smoothed: bool, band: float, div: float, clipped: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    beta = smoothing_beta(field(result, "num_it", 0) or len(field(result, "lrs", [])))
    handles = [Line2D([], [], ls="none", marker=".", color="0.3", alpha=0.5, label="raw, one point per step")]
    if smoothed:
        handles.append(Line2D([], [], color="0.3", lw=1.8,
                              label=f"smoothed as the rules read it (EMA, beta {beta:.2f})"))
    chosen_rule, chosen = _chosen(result)
    if chosen is not None:
        handles += [Line2D([], [], color=CHOSEN, marker="o", mfc=CHOSEN, mec="white",
                           label=f"chosen: {rule_name(chosen_rule)} = {chosen:.3g}"),
                    Patch(color=CHOSEN, alpha=0.15, label=f"good LRs: {chosen / band:.2g} to {chosen * band:.2g} "
                                                          f"(x{band:g} either side)"),
                    Patch(color=CHOSEN, alpha=0.45, label=f"1cycle range: {chosen / div:.2g} up to the peak "
                                                          f"{chosen:.3g} (div {div:g})")]
    others = [(k, v) for k, v in (field(result, "suggestions", {}) or {}).items() if v is not None and k != chosen_rule]
    handles += [Line2D([], [], color="0.5", lw=0.9, ls=dash, label=f"{rule_name(k)}: {v:.2g}")
                for (k, v), dash in zip(others, _DASHES * 2)]
    if clipped:
        handles.append(Line2D([], [], ls="none", marker="^", color="0.3", label="points off the scale (clipped)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small", frameon=False)


def plot_finder(result: Any, smoothed: bool = True, n_skip: int = 0, n_skip_end: int = 0,
                save: str | os.PathLike | None = None, *, ylim_factor: float = 1.5, band: float = 2.0,
                div: float = 25.0) -> Any:
    """An LR range test (``LRFindResult`` or its ``to_dict()``): training loss, validation loss and each
    metric in stacked panels against the LR (log for an exponential sweep): every step, so the x-axis
    reaches the LR the title says the test stopped at and every rule's line is in view (fastai 0.7's
    ``sched.plot`` left out the first ``n_skip=10`` and last ``n_skip_end=5``; pass them for that).

    Drawn: raw points faint; the smoothed curves the rules and the divergence stop read
    (``smooth_losses``, ``smooth_val_losses``; metrics with the same EMA). Loss panels' y-limits leave
    out the diverged tail (``finder_ylim``: ``ylim_factor`` times the start's height above the minimum);
    points beyond are carets on the edge. The chosen suggestion is a marker on the curve in every panel,
    with a band of good LRs (``band`` times either side: one run's suggestion moves by ~1.25x with the
    data order alone, and for ``val_min`` the band's top is the validation minimum itself) and the 1cycle
    range it implies (peak/``div`` to the peak) as a bar along the bottom. Other rules: grey lines. One
    legend for the figure; the title says why the test stopped."""
    check_int("n_skip", n_skip, 0)
    check_int("n_skip_end", n_skip_end, 0)
    for name, v, low in (("ylim_factor", ylim_factor, 0.0), ("band", band, 1.0), ("div", div, 1.0)):
        check_number(name, v, low=low, low_open=True)
    lrs = list(field(result, "lrs", []))
    window = slice(n_skip, max(len(lrs) - n_skip_end, n_skip))
    log = field(result, "step_mode", "exp") == "exp"
    panels = _finder_panels(result)
    fig, axes = figure(nrows=len(panels), height=2.4, sharex=True)
    axes = list(axes[:, 0])
    curves = []
    for ax, (label, raw, smooth, color) in zip(axes, panels):
        curves.append(_finder_curve(ax, lrs, raw, smooth, window, smoothed, color))
        ax.set_ylabel(label)
    clipped = _finder_limits(axes, curves, ylim_factor)
    for ax, drawn in zip(axes, curves):
        _finder_marks(ax, result, drawn, log, band, div)
    if log and lrs[window]:
        from matplotlib.ticker import LogLocator, NullFormatter
        axes[0].set_xscale("log")
        axes[0].xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 8 a decade cost more to lay out than to read
        axes[0].xaxis.set_minor_formatter(NullFormatter())
    if lrs[window]:
        low, high = lrs[window][0], lrs[window][-1]
        pad = (high / low) ** 0.02 if log and low > 0 else None
        axes[0].set_xlim(*((low / pad, high * pad) if pad else (low - 0.02 * (high - low), high + 0.02 * (high - low))))
    axes[-1].set_xlabel("learning rate" + (" (log scale)" if log else ""))
    _finder_legend(fig, result, smoothed, band, div, clipped)
    stop = stop_words(field(result, "stop_reason", "") or "", lrs, field(result, "num_it", 0))
    fig.suptitle("LR range test: " + stop, fontsize="medium")
    return save_figure(fig, save)
