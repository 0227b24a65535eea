"""The LR range test's plot: training loss, validation loss and metrics against the LR, each a faint
cloud of raw points under its zero-phase smoothing (``smoothing.range_test_curve``: it sits on the
data), every rule's LR as a line of its own colour named at the top, the chosen one's band of good
LRs and its 1cycle range, and the flat start of the training loss when a rule answered there.

The suggestion rules read the causal EMA recorded as the test ran (``suggest.suggest``; moving them
to the centred curve measured no better, see the README), so a rule's line need not sit at a drawn
curve's turning point: ``val_min`` is half the LR of the lagging EMA's minimum.
Input: an ``LRFindResult`` or its ``to_dict()``, read by field name."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ..checks import check_int, check_number
from ..metrics import lower_is_better, percent_column
from ..smoothing import range_test_curve, smoothing_beta
from ..suggest import RULE_NAMES, flat_end, stop_words
from .common import field, figure, is_finite, own_figure, save_figure

__all__ = ["plot_finder", "finder_ylim", "RULE_COLORS"]

CHOSEN = "crimson"
# One colour and dash per rule, the same in every plot; the chosen rule is drawn in CHOSEN instead.
RULE_COLORS = {"valley": "#8c564b", "slide": "#6b6b6b", "minimum": "#8a8a00", "steep": "#1496a8",
               "val_steep": "#7b4fb0", "val_min": "#d0409a"}
_DASHES = {"valley": (0, (5, 2)), "slide": (0, (1, 1.5)), "minimum": (0, (6, 2, 1, 2)), "steep": (0, (3, 2)),
           "val_steep": (0, (8, 2, 1, 2, 1, 2)), "val_min": (0, (4, 1, 1, 1))}
_PANEL_COLORS = ["tab:green", "#2a7f9e", "tab:brown", "#555555"]
_SAME = 0.02  # rules closer than this many decades share one line and one label
_LABEL_GAP = 0.15  # decades: a neighbour closer than this takes the label to the other side of the line


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


def _directions(result: Any) -> dict[str, bool]:
    """Whether higher is better, per metric: as recorded, else by the metric's name."""
    recorded = field(result, "higher_is_better", {}) or {}
    return {n: bool(recorded.get(n, not lower_is_better(n))) for n in (field(result, "metrics", {}) or {})}


def _finder_panels(result: Any) -> list[tuple[str, list[float], list[float], str]]:
    """(label, raw, smoothed, colour) per panel, each curve smoothed towards its own best."""
    val = [math.nan if v is None else v for v in field(result, "val_losses", []) or []]
    losses = list(field(result, "losses", []))
    panels = [("training loss", losses, range_test_curve(losses), "tab:blue"),
              ("validation loss", val, range_test_curve(val), "tab:orange")]
    higher = _directions(result)
    for k, (name, values) in enumerate((field(result, "metrics", {}) or {}).items()):
        values = [math.nan if v is None else v for v in values]
        lower = not higher[name]
        if percent_column(name, values):  # in percent, as everywhere else a person reads it
            name, values = f"{name} (%)", [100.0 * v for v in values]
        panels.append((name, values, range_test_curve(values, lower=lower),
                       _PANEL_COLORS[k % len(_PANEL_COLORS)]))
    return panels


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
    if not r or not any(is_finite(v) for v in r):
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


def _chosen(result: Any) -> tuple[str | None, float | None]:
    """The rule whose LR ``result.suggestion`` is (``rule``; an older result's fallback found by value)."""
    lr, rule = field(result, "suggestion"), field(result, "rule")
    suggestions = field(result, "suggestions", {}) or {}
    if lr is None:
        return None, None
    return (rule if suggestions.get(rule) == lr else next((k for k, v in suggestions.items() if v == lr), rule)), lr


def _rule_lines(result: Any, log: bool) -> list[tuple[list[str], float]]:
    """The rules that answered, by LR; rules within ``_SAME`` decades of each other share a line (the
    chosen one always has its own)."""
    chosen_rule, _ = _chosen(result)
    found = sorted(((v, k) for k, v in (field(result, "suggestions", {}) or {}).items() if v is not None))
    lines: list[tuple[list[str], float]] = []
    for lr, rule in found:
        prev = lines[-1] if lines else None
        near = prev is not None and chosen_rule not in (rule, *prev[0]) and (
            abs(math.log10(lr / prev[1])) < _SAME if log and lr > 0 and prev[1] > 0 else lr == prev[1])
        if near:
            prev[0].append(rule)
        else:
            lines.append(([rule], lr))
    return lines


def _label_sides(lrs: Sequence[float], log: bool) -> list[str]:
    """Which side of its line each label goes ("left"/"right" as matplotlib's ``ha``): right, unless
    the next line is too close for it, then left."""
    def gap(a: float, b: float) -> float:
        return abs(math.log10(b / a)) if log and a > 0 and b > 0 else math.inf
    return ["right" if k + 1 < len(lrs) and gap(lr, lrs[k + 1]) < _LABEL_GAP else "left"
            for k, lr in enumerate(lrs)]


def _finder_marks(axes: Sequence[Any], result: Any, curves: list, log: bool, band: float, div: float,
                  flat: float | None) -> None:
    """Every rule's LR as a line in its colour, named at the top of the first panel; the chosen one in
    crimson with a marker on each drawn curve, its band of good LRs shaded and its 1cycle range as a
    bar along the bottom; the flat start of the training loss shaded when a rule answered in it."""
    chosen_rule, chosen = _chosen(result)
    lines = _rule_lines(result, log)
    for (names, lr), side in zip(lines, _label_sides([lr for _, lr in lines], log)):
        picked = chosen_rule in names
        color = CHOSEN if picked else RULE_COLORS.get(names[0], "0.4")
        for ax in axes:
            ax.axvline(lr, color=color, lw=1.6 if picked else 1.1, ls="-" if picked else _DASHES.get(names[0], "--"),
                       alpha=0.9, zorder=2, gid="chosen_rule" if picked else "rule")
        text = " = ".join(names) + (" (flat region)" if flat is not None and lr < flat else "")
        axes[0].annotate(text, xy=(lr, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2 if side == "left" else -2, -3), textcoords="offset points", rotation=90,
                         ha=side, va="top", fontsize=8.5, color=color,
                         fontweight="bold" if picked else "normal", gid="rule_label",
                         bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75})
    if flat is not None and any(v is not None and v < flat for v in (field(result, "suggestions", {}) or {}).values()):
        for ax in axes:
            ax.axvspan(ax.get_xlim()[0], flat, color="0.5", alpha=0.08, lw=0, zorder=0, gid="flat")
    if chosen is None:
        return
    for ax, drawn in zip(axes, curves):
        ax.axvspan(chosen / band, chosen * band, color=CHOSEN, alpha=0.1, lw=0, zorder=0, gid="band")
        ax.axvspan(chosen / div, chosen, ymin=0, ymax=0.04, color=CHOSEN, alpha=0.4, lw=0, gid="one_cycle")
        if drawn is not None:
            y = _on_curve(drawn[0], drawn[1], chosen, log)
            if is_finite(y):
                ax.plot([chosen], [y], "o", ms=8, mfc=CHOSEN, mec="white", mew=1.2, zorder=6, gid="suggestion")


def _finder_legend(fig: Any, axes: Sequence[Any], result: Any, smoothed: bool, band: float, div: float,
                   clipped: bool, flat: float | None, log: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    beta = smoothing_beta(field(result, "num_it", 0) or len(field(result, "lrs", [])))
    handles = [Line2D([], [], ls="none", marker=".", color="0.3", alpha=0.5, label="raw, one point per step")]
    if smoothed:
        handles.append(Line2D([], [], color="0.3", lw=1.8, label="smoothed, centred on each step (no lag)"))
    handles.append(Line2D([], [], ls="none", label=f"the rules read the EMA of the test's own steps (beta {beta:.2f})"))
    chosen_rule, chosen = _chosen(result)
    if chosen is not None:
        handles += [Line2D([], [], color=CHOSEN, marker="o", mfc=CHOSEN, mec="white", lw=1.6,
                           label=f"chosen: {chosen_rule} = {chosen:.3g}, {RULE_NAMES.get(chosen_rule, '')}"),
                    Patch(color=CHOSEN, alpha=0.15, label=f"good LRs: {chosen / band:.2g} to {chosen * band:.2g} "
                                                          f"(x{band:g} either side)"),
                    Patch(color=CHOSEN, alpha=0.45, label=f"1cycle range: {chosen / div:.2g} up to the peak "
                                                          f"{chosen:.3g} (div {div:g})")]
    for names, lr in _rule_lines(result, log):
        for rule in names:
            if rule == chosen_rule:
                continue
            flag = "; in the flat region" if flat is not None and lr < flat else ""
            handles.append(Line2D([], [], color=RULE_COLORS.get(names[0], "0.4"), lw=1.1,
                                  ls=_DASHES.get(names[0], "--"),
                                  label=f"{rule} = {(field(result, 'suggestions') or {})[rule]:.2g}, "
                                        f"{RULE_NAMES.get(rule, '')}{flag}"))
    if flat is not None and any(h.get_label().endswith("flat region") for h in handles):
        handles.append(Patch(color="0.5", alpha=0.2, label=f"flat region (below {flat:.2g}): the loss has not "
                                                           "started to fall, a rule there read noise"))
    if clipped:
        handles.append(Line2D([], [], ls="none", marker="^", color="0.3", label="points off the scale (clipped)"))
    if own_figure(fig):
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    else:  # a caller's figure: a legend of the first Axes, nothing placed outside them
        axes[0].legend(handles=handles, fontsize="small", loc="best")


def plot_finder(result: Any, smoothed: bool = True, n_skip: int = 0, n_skip_end: int = 0,
                save: str | os.PathLike | None = None, *, ylim_factor: float = 1.5, band: float = 2.0,
                div: float = 25.0, ax: Any = None, fig: Any = None) -> Any:
    """An LR range test (``LRFindResult`` or its ``to_dict()``): training loss, validation loss and each
    metric in stacked panels against the LR (log for an exponential sweep): every step, so the x-axis
    reaches the LR the title says the test stopped at and every rule's line is in view (fastai 0.7's
    ``sched.plot`` left out the first ``n_skip=10`` and last ``n_skip_end=5``; pass them for that).

    Drawn: raw points faint; each curve's centred smoothing (``smoothing.range_test_curve``, the whole
    curve smoothed before any cut), which has no lag. Loss panels' y-limits leave out the diverged tail
    (``finder_ylim``: ``ylim_factor`` times the start's height above the minimum); points beyond are
    carets on the edge. Every rule's LR is a line of its own colour, named at the top (rules that
    coincide share one); the chosen suggestion is crimson, with a marker on the curve in every panel, a
    band of good LRs (``band`` times either side: one run's suggestion moves by ~1.25x with the data order
    alone) and the 1cycle range it implies (peak/``div`` to the peak) as a bar along the bottom. A rule
    that answered in the flat start of the training loss (``suggest.flat_end``) is flagged and the flat
    region shaded. The title says why the test stopped.

    ``ax``: Axes to draw in, as many as panels wanted (one Axes: the training loss alone; the panels
    in order); ``fig``: a Figure to add the panels to. Returns the Figure."""
    check_int("n_skip", n_skip, 0)
    check_int("n_skip_end", n_skip_end, 0)
    for name, v, low in (("ylim_factor", ylim_factor, 0.0), ("band", band, 1.0), ("div", div, 1.0)):
        check_number(name, v, low=low, low_open=True)
    lrs = list(field(result, "lrs", []))
    window = slice(n_skip, max(len(lrs) - n_skip_end, n_skip))
    log = field(result, "step_mode", "exp") == "exp"
    panels = _finder_panels(result)
    if ax is not None:
        import numpy as np
        wanted = len(np.ravel(np.asarray(ax, dtype=object)))
        if wanted > len(panels):
            raise ValueError(f"ax: this range test has {len(panels)} panels, got {wanted} Axes")
        panels = panels[:wanted]
    fig, axes = figure(nrows=len(panels), height=2.4, ax=ax, fig=fig, sharex=True)
    axes = list(axes[:, 0])
    curves = []
    for a, (label, raw, smooth, color) in zip(axes, panels):
        curves.append(_finder_curve(a, lrs, raw, smooth, window, smoothed, color))
        a.set_ylabel(label)
    clipped = _finder_limits(axes, curves, ylim_factor)
    if log and lrs[window]:
        from matplotlib.ticker import LogLocator, NullFormatter
        for a in axes:
            a.set_xscale("log")
            a.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 8 a decade cost more to lay out than to read
            a.xaxis.set_minor_formatter(NullFormatter())
    if lrs[window]:
        low, high = lrs[window][0], lrs[window][-1]
        pad = (high / low) ** 0.02 if log and low > 0 else None
        for a in axes:
            a.set_xlim(*((low / pad, high * pad) if pad else (low - 0.02 * (high - low), high + 0.02 * (high - low))))
    flat = flat_end(lrs, [math.nan if v is None else v for v in field(result, "losses", [])]) if lrs else None
    _finder_marks(axes, result, curves, log, band, div, flat)
    axes[-1].set_xlabel("learning rate" + (" (log scale)" if log else ""))
    _finder_legend(fig, axes, result, smoothed, band, div, clipped, flat, log)
    stop = stop_words(field(result, "stop_reason", "") or "", lrs, field(result, "num_it", 0))
    title = "LR range test: " + stop
    if own_figure(fig):
        fig.suptitle(title, fontsize="medium")
    else:
        axes[0].set_title(title, fontsize="medium")
    return save_figure(fig, save)
