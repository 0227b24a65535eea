"""Every matplotlib import lives here; each function draws recorded data and returns a Figure.

Inputs are plain data read by field name: a Recorder or its ``state_dict()``, an ``LRFindResult`` or
its ``to_dict()``; nothing here imports the recorder, the finder or the learner. Figures are
``matplotlib.figure.Figure`` objects (no pyplot: no global state, no GUI backend, fine in worker
processes) with constrained layout, ``WIDTH`` inches wide: an 1100-px column at 100 dpi, saved at 2x
(``save_figure``: a 2200-px PNG, or SVG by the file's suffix).

Epochs are numbered from 1. Epoch ``k``'s values sit at x = k; iteration ``i`` of an epoch of ``n``
iterations at ``k - 1 + (i + 1) / n`` (``iteration_epochs``), so per-iteration and per-epoch series
share one axis and an epoch's last iteration sits with its validation point.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .suggest import ema, smoothing_beta

__all__ = ["plot_lr", "plot_losses", "plot_metrics", "plot_dashboard", "plot_series", "plot_finder", "plot_overlay",
           "save_figure", "iteration_epochs", "finder_ylim", "rule_name", "stop_words", "momentum_label",
           "plot_seed_dots", "plot_finder_overlay", "WIDTH", "DPI", "RULE_NAMES"]

WIDTH, DPI = 11.0, 200
CHOSEN = "crimson"
RULE_NAMES = {"val_min": "lowest validation loss / 2", "val_steep": "steepest validation-loss fall",
              "steep": "steepest training-loss fall", "minimum": "lowest training loss / 10",
              "valley": "halfway down the training-loss valley", "slide": "where the training-loss slope settles"}
_DASHES = [(0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (2, 3)), (0, (8, 2, 1, 2, 1, 2)), (0, (3, 1))]


def _get(data: Any, name: str, default: Any = None) -> Any:
    """A field of plain data: a mapping's key or an object's attribute."""
    return data.get(name, default) if isinstance(data, Mapping) else getattr(data, name, default)


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def _figure(nrows: int = 1, ncols: int = 1, height: float = 3.0, **kw: Any):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(WIDTH, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike | None, dpi: int = DPI) -> Any:
    """Write ``fig`` atomically (temporary file then rename) when ``path`` is given: SVG for a
    ``.svg`` name, else PNG at ``dpi`` (200: sharp on a 2x display)."""
    if path is not None:
        from .atomic import atomic_write_bytes
        buf = io.BytesIO()
        fig.savefig(buf, format="svg" if str(path).lower().endswith(".svg") else "png", dpi=dpi)
        atomic_write_bytes(path, buf.getvalue())
    return fig


def momentum_label(opt: str | None) -> str:
    """What the momentum schedule drives for an optimizer name: ``beta1`` for Adam-likes."""
    return "beta1" if opt and any(k in str(opt).lower() for k in ("adam", "lamb", "lion")) else "momentum"


def _lower_is_better(metric: str) -> bool:  # the rule report.py uses for its "best" column
    return "loss" in metric or metric in ("perplexity", "bits_per_char", "error")


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


def _epoch_axis(ax: Any, last: float) -> None:
    """Whole-number ticks from 1, thinned to about a dozen; the axis runs from 0 (training's start)."""
    n = max(1, math.ceil(last - 1e-9))
    step = next((s for s in (1, 2, 5, 10, 20, 25, 50, 100, 250, 500, 1000) if n / s <= 12), math.ceil(n / 12))
    ticks = list(range(1, n + 1, step)) if step <= 2 else sorted({1, *range(step, n + 1, step)})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(0, n * 1.03 + 0.05)
    ax.set_xlabel("epoch")


def _iter_x(rec: Any) -> tuple[list[float], str]:
    """Per-iteration x: epochs when the history has whole epochs, else iterations."""
    n, ends = len(_get(rec, "losses", []) or _get(rec, "moms", [])), _get(rec, "epoch_iters", [])
    return (iteration_epochs(n, ends), "epoch") if ends else ([float(i) for i in range(n)], "iteration")


def _x_axis(ax: Any, xs: Sequence[float], unit: str, n_epochs: int = 0) -> None:
    if unit == "epoch" or n_epochs:
        _epoch_axis(ax, max([*xs, n_epochs, 1]))
    else:
        ax.set_xlabel(unit)


# ---- panels of a training history --------------------------------------------------------------------
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
    group_lrs = _get(rec, "group_lrs", []) or []
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
    moms = [math.nan if m is None else m for m in _get(rec, "moms", [])]
    if any(_finite(m) for m in moms):
        ax.plot(xs[:len(moms)], moms, color="tab:orange", lw=1.5)
    else:
        ax.text(0.5, 0.5, "no momentum: the optimizer has none", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel(label)
    ax.set_title(label, fontsize="medium")


def _loss_panel(ax: Any, rec: Any, xs: Sequence[float], skip_start: int = 0, log: bool = False) -> None:
    """Raw training loss faint, its recorded smoothing solid, the validation loss per epoch."""
    losses, smooth = _get(rec, "losses", []), _get(rec, "smooth_losses", [])
    ax.plot(xs[skip_start:len(losses)], losses[skip_start:], color="tab:blue", alpha=0.25, lw=0.8,
            label="training (per step)")
    ax.plot(xs[skip_start:len(smooth)], smooth[skip_start:], color="tab:blue", lw=1.8, label="training (smoothed)")
    val = _get(rec, "val_losses", []) or []
    if any(_finite(v) for v in val):
        ax.plot(range(1, len(val) + 1), val, "o-", color="tab:orange", ms=4, label="validation")
    if log and any(_finite(v) and v > 0 for v in losses):
        ax.set_yscale("log")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    ax.set_title("losses", fontsize="medium")
    ax.legend(fontsize="small")


def _metric_panel(ax: Any, name: str, values: Sequence[float], color: str = "tab:green") -> None:
    """One metric per epoch, its best epoch starred and named in the title."""
    ax.plot(range(1, len(values) + 1), values, "o-", color=color, ms=4)
    finite = [(v, e + 1) for e, v in enumerate(values) if _finite(v)]
    title = name
    if finite:
        v, e = (min if _lower_is_better(name) else max)(finite, key=lambda t: t[0])  # ties: the earliest
        ax.plot([e], [v], "*", ms=14, color="gold", mec="black", mew=0.7, zorder=5, gid="best")
        title = f"{name}: best {v:.4g} at epoch {e} (\u2605)"
    ax.set_ylabel(name)
    ax.set_title(title, fontsize="medium")


def _metric_names(rec: Any) -> list[str]:
    return list(_get(rec, "metric_names", None) or (_get(rec, "metrics", {}) or {}))


# ---- history plots ------------------------------------------------------------------------------------
def plot_lr(rec: Any, save: str | os.PathLike | None = None, momentum_label: str = "momentum") -> Any:
    """LR (one line per distinct param group) and momentum (``momentum_label``: "beta1" for Adam-likes)
    side by side, against epochs (iterations for an LR finder's history)."""
    fig, axes = _figure(ncols=2, height=3.4)
    xs, unit = _iter_x(rec)
    _lr_panel(axes[0][0], rec, xs)
    _mom_panel(axes[0][1], rec, xs, momentum_label)
    for ax in axes[0]:
        _x_axis(ax, xs, unit)
    return save_figure(fig, save)


def plot_losses(rec: Any, skip_start: int = 0, save: str | os.PathLike | None = None, log: bool = False) -> Any:
    """Raw (faint) and smoothed training loss per iteration, validation loss per epoch, against epochs."""
    fig, axes = _figure(height=3.8)
    xs, unit = _iter_x(rec)
    _loss_panel(axes[0][0], rec, xs, skip_start, log)
    _x_axis(axes[0][0], xs, unit, len(_get(rec, "val_losses", []) or []))
    return save_figure(fig, save)


def plot_metrics(rec: Any, save: str | os.PathLike | None = None) -> Any:
    """Each metric per epoch, one panel each (up to three a row), the best epoch starred."""
    names = _metric_names(rec)
    ncols = max(1, min(len(names), 3))
    fig, axes = _figure(nrows=max(1, math.ceil(len(names) / ncols)), ncols=ncols, height=3.4)
    metrics = _get(rec, "metrics", {}) or {}
    xs, unit = _iter_x(rec)  # the losses' extent too: metrics.png and losses.png share their epoch axis
    last = max([len(_get(rec, "val_losses", []) or []), *(len(v) for v in metrics.values()),
                *(xs[-1:] if unit == "epoch" else ())])
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            if names:
                fig.delaxes(ax)
            else:
                ax.text(0.5, 0.5, "(no metrics)", ha="center", va="center", transform=ax.transAxes)
            continue
        _metric_panel(ax, names[k], metrics.get(names[k], []))
        _epoch_axis(ax, max(last, 1))
    return save_figure(fig, save)


def plot_dashboard(history: Any, momentum_label: str = "momentum", log_loss: bool = False,
                   save: str | os.PathLike | None = None) -> Any:
    """One run at a glance, every panel on one epoch axis (shared): LR (one line per distinct param
    group), momentum (``momentum_label``), training loss raw and smoothed with the validation loss
    (``log_loss``: log y), then each metric with its best epoch starred. ``history``: a Recorder or its
    ``state_dict()``."""
    names = _metric_names(history)
    n_panels = 3 + len(names)
    fig, axes = _figure(nrows=math.ceil(n_panels / 2), ncols=2, height=3.0, sharex=True)
    xs, unit = _iter_x(history)
    flat = list(axes.flat)
    _lr_panel(flat[0], history, xs)
    _mom_panel(flat[1], history, xs, momentum_label)
    _loss_panel(flat[2], history, xs, log=log_loss)
    metrics = _get(history, "metrics", {}) or {}
    for ax, name in zip(flat[3:], names):
        _metric_panel(ax, name, metrics.get(name, []))
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    n_epochs = len(_get(history, "val_losses", []) or [])
    for ax in flat[:n_panels]:
        ax.tick_params(labelbottom=True)  # every panel keeps its epoch labels
        _x_axis(ax, xs, unit, n_epochs)
    return save_figure(fig, save)


def plot_series(rec: Any, prefixes: Sequence[str], log: bool = True,
                save: str | os.PathLike | None = None) -> Any:
    """Extra per-step series (``rec.series``) whose names start with each prefix, one panel each."""
    fig, axes = _figure(ncols=len(prefixes), height=3.4)
    series = _get(rec, "series", {}) or {}
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


# ---- the LR finder -------------------------------------------------------------------------------------
def rule_name(rule: str) -> str:
    """A suggestion rule in plain words, its key in brackets."""
    return f"{RULE_NAMES[rule]} ({rule})" if rule in RULE_NAMES else rule


def stop_words(stop_reason: str, lrs: Sequence[float] = (), num_it: int = 0) -> str:
    """``LRFindResult.stop_reason`` in plain English, with the LR where the test ended."""
    m = re.search(r"iteration (\d+) \(lr ([^)]+)\)", stop_reason)
    where = f"at LR {m.group(2)} (step {int(m.group(1)) + 1} of {num_it or '?'})" if m else ""
    last = f"{lrs[-1]:.3g}" if lrs else "?"
    if stop_reason.startswith("completed"):
        return f"ran all {num_it or len(lrs)} steps, up to LR {last}"
    if stop_reason.startswith("diverged"):
        size = re.search(r"smoothed loss (\S+) above (\S+)", stop_reason)
        why = f" to {size.group(1)}, past its limit {size.group(2)}" if size else ""
        return f"stopped {where}: the smoothed training loss blew up{why}"
    if stop_reason.startswith("non-finite loss"):
        value = stop_reason.split()[2] if len(stop_reason.split()) > 2 else "non-finite"
        return f"stopped {where}: the training loss became {value}"
    if stop_reason.startswith("cancelled"):
        return f"cancelled by a callback after {len(lrs)} steps, at LR {last}"
    return stop_reason or "LR range test"


def finder_ylim(curve: Sequence[float], raw: Sequence[float] = (), factor: float = 1.5) -> tuple[float, float]:
    """Y-limits of a finder loss panel that leave out the diverged tail: from a little below the
    curve's minimum (the lowest raw point, down to two start heights below it) to ``factor`` times the
    start's height above that minimum (or the data's top, if lower), padded 10% below, 5% above. ``curve``:
    the drawn (smoothed) curve, its first finite point the start; ``raw``: the points around it."""
    c = [v for v in curve if _finite(v)]
    if not c:
        return 0.0, 1.0
    lo, start = min(c), c[0]
    span = start - lo if start - lo > 1e-12 * max(1.0, abs(lo)) else max(max(c) - lo, 0.1 * abs(lo), 1e-3)
    pts = c + [v for v in raw if _finite(v)]
    top = min(lo + factor * span, max(pts))
    bottom = max(min(pts), lo - 2 * span)  # raw points below the smoothed minimum stay in view
    pad = 0.05 * (top - bottom or span)
    return bottom - 2 * pad, top + pad  # more room below: the 1cycle bar runs along the bottom


def _range_ylim(values: Sequence[float]) -> tuple[float, float] | None:
    v = [x for x in values if _finite(x)]
    if not v:
        return None
    lo, hi = min(v), max(v)
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad


def _finder_panels(result: Any) -> list[tuple[str, list[float], list[float], str]]:
    """(label, raw, smoothed, colour) per panel: the smoothed curves are those the rules read."""
    beta = smoothing_beta(_get(result, "num_it", 0) or len(_get(result, "lrs", [])))
    val = list(_get(result, "val_losses", []) or [])
    smooth_val = _get(result, "smooth_val_losses", None)
    panels = [("training loss", list(_get(result, "losses", [])), list(_get(result, "smooth_losses", [])), "tab:blue"),
              ("validation loss", val, list(ema(val, beta) if smooth_val is None else smooth_val), "tab:orange")]
    colors = ["tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"]
    for k, (name, values) in enumerate((_get(result, "metrics", {}) or {}).items()):
        panels.append((name, list(values), ema(values, beta), colors[k % len(colors)]))
    return panels


def _chosen(result: Any) -> tuple[str | None, float | None]:
    """The rule whose LR ``result.suggestion`` is (``rule``, or the fallback that answered)."""
    lr, rule = _get(result, "suggestion"), _get(result, "rule")
    suggestions = _get(result, "suggestions", {}) or {}
    if lr is None:
        return None, None
    return (rule if suggestions.get(rule) == lr else next((k for k, v in suggestions.items() if v == lr), rule)), lr


def _on_curve(x: Sequence[float], y: Sequence[float], at: float, log: bool) -> float:
    """The drawn curve's value at LR ``at``, interpolated in log LR (linear LR for a linear sweep)."""
    import numpy as np
    pts = [(a, b) for a, b in zip(x, y) if _finite(b) and (a > 0 or not log)]
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
    finite = [(v, i) for i, v in enumerate(curve) if _finite(v)]
    low = min(finite)[1] if finite else 0
    return next((i for i in range(low, len(curve)) if not (_finite(curve[i]) and curve[i] <= top)), len(curve))


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
    others = [(k, v) for k, v in (_get(result, "suggestions", {}) or {}).items() if v is not None and k != chosen_rule]
    for (_, lr), dash in zip(others, _DASHES * 2):
        ax.axvline(lr, color="0.5", lw=0.9, ls=dash, zorder=1)
    if chosen is None:
        return
    ax.axvspan(chosen / band, chosen * band, color=CHOSEN, alpha=0.1, lw=0, zorder=0, gid="band")
    ax.axvspan(chosen / div, chosen, ymin=0, ymax=0.04, color=CHOSEN, alpha=0.4, lw=0, gid="one_cycle")
    ax.axvline(chosen, color=CHOSEN, lw=1.0, alpha=0.8, zorder=2)
    if drawn is not None:
        y = _on_curve(drawn[0], drawn[1], chosen, log)
        if _finite(y):
            ax.plot([chosen], [y], "o", ms=8, mfc=CHOSEN, mec="white", mew=1.2, zorder=6, gid="suggestion")


def _finder_legend(fig: Any, result: Any, smoothed: bool, band: float, div: float, clipped: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    beta = smoothing_beta(_get(result, "num_it", 0) or len(_get(result, "lrs", [])))
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
    others = [(k, v) for k, v in (_get(result, "suggestions", {}) or {}).items() if v is not None and k != chosen_rule]
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
    for name, v in (("n_skip", n_skip), ("n_skip_end", n_skip_end)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"n_skip and n_skip_end must be ints >= 0, got {name}={v!r}")
    for name, v, low in (("ylim_factor", ylim_factor, 0.0), ("band", band, 1.0), ("div", div, 1.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > low:
            raise ValueError(f"{name} must be a number > {low:g}, got {v!r}")
    lrs = list(_get(result, "lrs", []))
    window = slice(n_skip, max(len(lrs) - n_skip_end, n_skip))
    log = _get(result, "step_mode", "exp") == "exp"
    panels = _finder_panels(result)
    fig, axes = _figure(nrows=len(panels), height=2.4, sharex=True)
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
    fig.suptitle("LR range test: " + stop_words(_get(result, "stop_reason", "") or "", lrs, _get(result, "num_it", 0)),
                 fontsize="medium")
    return save_figure(fig, save)


# ---- several runs ------------------------------------------------------------------------------------------
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
    names = list(dict.fromkeys(n for _, runs in items for rec in runs for n in _metric_names(rec)))
    panels = [("validation loss", lambda rec: _get(rec, "val_losses", []))]
    panels += [(n, lambda rec, n=n: (_get(rec, "metrics", {}) or {}).get(n, [])) for n in names]
    fig, axes = _figure(ncols=len(panels), height=3.8)
    cmap = colormaps["tab10" if len(items) <= 10 else "tab20"]
    for k, (label, runs) in enumerate(items):
        for ax, (_, values_of) in zip(axes[0], panels):
            _overlay_panel(ax, runs, values_of, label, cmap(k % cmap.N))
    for ax, (title, _) in zip(axes[0], panels):
        ax.set(ylabel=title, title=title)
        _epoch_axis(ax, max(ax.dataLim.intervalx[1], 1) if ax.lines else 1)
        low, high = ax.dataLim.intervaly
        if 0 < low and high > 100 * low:  # a diverged run would flatten every other curve
            ax.set_yscale("log")
    axes[0][-1].legend(fontsize="small")
    return save_figure(fig, save)


def plot_seed_dots(rows: Sequence[tuple[str, Sequence[float]]], xlabel: str,
                   save: str | os.PathLike | None = None) -> Any:
    """One row per configuration (``(title, values)``): a dot per seed's value, a bar at their mean,
    in the colours of the other compare plots (row k in ``C{k}``)."""
    fig, axes = _figure(height=0.9 + 0.45 * len(rows))
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
    fig, axes = _figure(height=4.2)
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
