"""Suggestion rules of the LR range test: pure functions of the recorded curves.

Each rule takes the LRs and one curve (the smoothed training loss, or the validation loss), cut at
its first non-finite point, and returns an LR: fastai's ``valley``, ``slide``, ``minimum``, ``steep``
on the smoothed training loss; ``val_steep`` and ``val_min`` on the validation loss. ``suggest``
runs them all without the first ``num_it // 10`` and last 5 points (as fastai does);
``DEFAULT_RULE`` was chosen with ``benchmarks/suggestion_quality.py``. The divergence stop rule
(``divergence_bound``) lives here too: it is a function of the same smoothed curve. So do the
words for them (``RULE_NAMES``, ``rule_name``, ``stop_words``), which the finder's summary, its plot
and the reports share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .checks import check_int
from .smoothing import ema, running_median, smoothing_beta

__all__ = ["valley", "slide", "minimum", "steep", "val_steep", "val_min",
           "suggest", "median_suggestion", "divergence_bound", "SUGGESTERS", "DEFAULT_RULE", "RULE_NAMES", "rule_name",
           "stop_words", "floor_mask", "flat_end", "in_flat_region", "one_cycle_range", "FLOOR_WITHIN"]


def divergence_bound(best: float, start: float, div_th: float) -> float:
    """The smoothed loss above which the range test has diverged: the best seen plus ``div_th - 1``
    times a scale, the larger of how far the loss fell from its start to that best and the best's
    own size. For a positive loss that fell by less than half this is fastai's ``div_th * best``;
    after a larger fall the loss may climb back by ``div_th - 1`` falls; and unlike a ratio (which
    puts the bound below a negative best, so the test stops at once) it works for losses of any sign."""
    return best + (div_th - 1) * max(start - best, abs(best))


def _finite_prefix(lrs: Sequence[float], losses: Sequence[float], need: int, rule: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The curve up to its first non-finite point (fastai cuts there too); ValueError if too short."""
    x, y = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"{rule}: lrs and losses must be 1-d of one length, got {x.shape} and {y.shape}")
    bad = ~(np.isfinite(x) & np.isfinite(y) & (x > 0))
    n = int(np.argmax(bad)) if bad.any() else len(y)
    if n < need:
        raise ValueError(f"{rule} needs at least {need} finite points, got {n} (of {len(y)})")
    return x[:n], y[:n]


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley``: the longest strictly decreasing subsequence of the loss (O(n^2) DP)
    ending at ``end`` with length ``L``; ``start = end - L``; the LR at ``start + int(L/3) +
    int(L/6)``, about halfway down. The index is clamped to the curve (fastai would wrap to the
    last point for a 2-long valley starting at 0)."""
    x, y = (a.tolist() for a in _finite_prefix(lrs, losses, 2, "valley"))
    lds, end = [1] * len(y), 0
    for i in range(1, len(y)):
        for j in range(i):
            if y[i] < y[j] and lds[j] + 1 > lds[i]:
                lds[i] = lds[j] + 1
        if lds[i] > lds[end]:
            end = i
    start = end - lds[end]
    third = (end - start) / 3
    return x[min(max(start + int(third) + int(third / 2), 0), len(y) - 1)]


def slide(lrs: Sequence[float], losses: Sequence[float], lr_diff: int = 15, thresh: float = 0.005,
          adjust_value: float = 1.0) -> float:
    """fastai's ``slide``: walk a window of ``lr_diff`` points back from the end while the loss
    gradients at its two ends differ by more than ``thresh``; the LR at its left end."""
    check_int("lr_diff", lr_diff, 1)
    x, y = _finite_prefix(lrs, losses, lr_diff + 1, "slide")
    grad = np.gradient(y)
    right = len(y) - 1
    left = right - lr_diff
    lr = x[left]
    while left >= 0 and abs(grad[right] - grad[left]) > thresh:
        lr = x[left]
        right, left = right - 1, left - 1
    return float(lr) * adjust_value


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``minimum``: a tenth of the LR at the lowest loss."""
    x, y = _finite_prefix(lrs, losses, 1, "minimum")
    return float(x[int(np.argmin(y))]) / 10


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d loss / d log LR per segment; NaN where the LR repeats (an AMP-skipped step)."""
    dx = np.diff(np.log(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dx > 0, np.diff(y) / np.where(dx > 0, dx, 1.0), np.nan)


def steep(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``steep``: the LR at the start of the steepest fall of loss against log LR."""
    x, y = _finite_prefix(lrs, losses, 2, "steep")
    slopes = _slopes(x, y)
    if np.isnan(slopes).all():
        raise ValueError("steep: the LR never increases along the curve")
    return float(x[int(np.nanargmin(slopes))])


def val_steep(lrs: Sequence[float], val_losses: Sequence[float]) -> float:
    """Where the (smoothed) validation loss falls fastest against log LR, searched only before its
    minimum, so the answer always lies below the LR of the validation minimum."""
    x, y = _finite_prefix(lrs, val_losses, 2, "val_steep")
    low = int(np.argmin(y))
    slopes = _slopes(x[: low + 1], y[: low + 1])
    if low == 0 or np.isnan(slopes).all() or np.nanmin(slopes) >= 0:
        raise ValueError("val_steep: the validation loss never falls before its minimum")
    return float(x[int(np.nanargmin(slopes))])


def val_min(lrs: Sequence[float], val_losses: Sequence[float], div: float = 2.0) -> float:
    """``1/div`` of the LR at the lowest (smoothed) validation loss."""
    x, y = _finite_prefix(lrs, val_losses, 1, "val_min")
    return float(x[int(np.argmin(y))]) / div


SUGGESTERS: dict[str, Callable[[Sequence[float], Sequence[float]], float]] = {
    "valley": valley, "slide": slide, "minimum": minimum, "steep": steep, "val_steep": val_steep,
    "val_min": val_min,
}
# The rules that read the (smoothed) validation curve; the others read the smoothed training loss.
_CURVE = {"val_steep": "val", "val_min": "val"}
# Chosen by benchmarks/suggestion_quality.py (MNIST-1D CNN, 20-epoch 1cycle, SGD and AdamW, the
# torch default of 2 threads): the rule with the smallest worst-case accuracy gap to the best swept
# peak. Seeds 0-2: 0.47 / 0.47 points (SGD / AdamW), the target of 0.5 met; seeds 3-5:
# 1.10 / 0.30; seeds 6-8: 5.73 / 1.20 (one SGD seed collapsed at 0.307, a peak that trained others
# to 94%). For a 1cycle peak, valley lands ~10x low, minimum ~4x low, steep/slide swing between far
# too low and divergent. Most of val_min's misses are the finder's noise, not the rule's: one run's
# val_min moves by a factor of ~1.25 with the data order (SD of log LR 0.11 SGD, 0.28 AdamW; more
# validation batches per step do not reduce it: the training trajectory does), around a peak that
# must land within ~1.2x of the best (the SGD optimum sits just below divergence). ``runs=3`` (the
# median over 3 data orders) removes the SGD collapses (pooled over seeds 0-8: gap 0.27 against
# 2.43) but lands AdamW lower (0.79 against 0.24), so the default stays one run.
DEFAULT_RULE = "val_min"


def suggest(lrs: Sequence[float], smooth_losses: Sequence[float], val_losses: Sequence[float] = (),
            skip_start: int = 10, skip_end: int = 5, beta: float | None = None
            ) -> tuple[dict[str, float | None], list[str]]:
    """Every rule on the curves without their first ``skip_start`` and last ``skip_end`` points
    (fastai: ``num_it // 10`` and 5). ``smooth_losses``: the smoothed training loss (as recorded);
    ``val_losses``: the raw per-step validation losses, smoothed here with ``beta`` (default
    ``smoothing_beta(len(lrs))``, the training curve's). A rule that cannot answer gives None and a
    note instead of raising."""
    beta = smoothing_beta(len(lrs)) if beta is None else beta
    curves = {"train": list(smooth_losses), "val": ema(val_losses, beta)}
    out: dict[str, float | None] = {}
    notes: list[str] = []
    n = len(lrs)
    window = slice(skip_start, max(n - skip_end, skip_start))
    for name, fn in SUGGESTERS.items():
        curve = curves[_CURVE.get(name, "train")]
        if not curve and name in _CURVE:
            out[name] = None
            notes.append(f"{name}: no validation curve (with_valid=False, or no point recorded)")
            continue
        try:
            out[name] = fn(list(lrs)[window], curve[window])
        except ValueError as err:
            out[name] = None
            notes.append(f"{err} after skipping the first {skip_start} and last {skip_end} of {n} points")
    return out, notes


def median_suggestion(results: Iterable[Any], rule: str | None = None) -> float | None:
    """The median over several range tests (``LRFindResult``s, or their ``suggestions`` dicts) of one
    rule's suggestion (default ``DEFAULT_RULE``), skipping tests where it gave None; the geometric
    mean of the middle two for an even count; None when no test answered. One test's suggestion
    moves by a factor of about 1.25 with the data order alone (MNIST-1D: ``val_min`` spans 0.18 to
    0.45 for SGD), while the best 1cycle peak sits just below a cliff: the median of 3 tests with
    different data orders halves that spread (``benchmarks/suggestion_quality.py --finder-runs 3``)."""
    rule = DEFAULT_RULE if rule is None else rule
    if rule not in SUGGESTERS:
        raise ValueError(f"rule must be one of {sorted(SUGGESTERS)}, got {rule!r}")
    values = []
    for res in results:
        suggestions = res if isinstance(res, dict) else res.suggestions
        if suggestions.get(rule) is not None:
            values.append(float(suggestions[rule]))
    if not values:
        return None
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else math.sqrt(values[mid - 1] * values[mid])


# ---- the rules and the stop in words ------------------------------------------------------------
RULE_NAMES = {"val_min": "lowest validation loss / 2", "val_steep": "steepest validation-loss fall",
              "steep": "steepest training-loss fall", "minimum": "lowest training loss / 10",
              "valley": "halfway down the training-loss valley", "slide": "where the training-loss slope settles"}


def rule_name(rule: str) -> str:
    """A suggestion rule in plain words, its key in brackets."""
    return f"{RULE_NAMES[rule]} ({rule})" if rule in RULE_NAMES else rule


def stop_words(stop_reason: str, lrs: Sequence[float] = (), num_it: int = 0) -> str:
    """``LRFindResult.stop_reason`` in plain English, with the LR where the test ended. A test that
    diverged at its last step ran all its steps, and says so."""
    m = re.search(r"iteration (\d+) \(lr ([^)]+)\)", stop_reason)
    step = int(m.group(1)) + 1 if m else None
    where = f" at LR {m.group(2)} (step {step} of {num_it or '?'})" if m else ""
    last = f"{lrs[-1]:.3g}" if lrs else "?"
    if stop_reason.startswith("completed"):
        return f"ran all {num_it or len(lrs)} steps, up to LR {last}"
    if stop_reason.startswith("diverged"):
        size = re.search(r"smoothed loss (\S+) above (\S+)", stop_reason)
        why = f" to {size.group(1)}, past its limit {size.group(2)}" if size else ""
        watched = "validation" if "the validation loss" in stop_reason else "training"  # compat.LRFinder's may watch it
        if step is not None and step == num_it:
            return (f"ran all {num_it} steps, up to LR {m.group(2)}; at the last the smoothed {watched} loss "
                    f"blew up{why}")
        return f"stopped{where}: the smoothed {watched} loss blew up{why}"
    if stop_reason.startswith("non-finite loss"):
        value = stop_reason.split()[2] if len(stop_reason.split()) > 2 else "non-finite"
        return f"stopped{where}: the training loss became {value}"
    if stop_reason.startswith("cancelled"):
        return f"cancelled by a callback after {len(lrs)} steps, at LR {last}"
    return stop_reason or "LR range test"


# ---- where a curve is flat, and where its floor is ------------------------------------------------
FLOOR_WITHIN, FLAT_WITHIN = 0.15, 0.05


def _fall(values: Sequence[float], lower: bool) -> tuple[np.ndarray, float, float] | None:
    """The running median signed so that lower is better, its start and its best; None when the curve
    never improves on its start."""
    med = running_median(values) * (1.0 if lower else -1.0)
    good = np.isfinite(med)
    if not good.any():
        return None
    start, best = float(med[good][0]), float(np.nanmin(med))
    return (med, start, best) if start > best else None


def floor_mask(values: Sequence[float], lower: bool = True, within: float = FLOOR_WITHIN) -> np.ndarray:
    """The floor of a range test's curve: the points whose 5-point running median is within ``within``
    (15%) of the fall from the start (its first median) to its best (lowest for a loss; highest when
    not ``lower``). All False when the curve never improves on its start."""
    found = _fall(values, lower)
    if found is None:
        return np.zeros(len(values), dtype=bool)
    med, start, best = found
    return np.isfinite(med) & (med <= best + within * (start - best))


def flat_end(lrs: Sequence[float], values: Sequence[float], lower: bool = True,
             within: float = FLAT_WITHIN) -> float | None:
    """The LR where the flat start of a range test's curve ends: the first point whose running median
    has moved ``within`` (5%) of the whole fall towards the best. An LR below it trains too slowly to
    show on the loss, so a rule that answers there has read noise. None when the curve never falls."""
    found = _fall(values, lower)
    if found is None:
        return None
    med, start, best = found
    moved = np.isfinite(med) & (med < start - within * (start - best))
    return float(lrs[int(np.argmax(moved))]) if moved.any() else None


def in_flat_region(lr: float | None, lrs: Sequence[float], losses: Sequence[float]) -> bool:
    """Whether ``lr`` lies in the flat start of the training loss (``flat_end``)."""
    end = flat_end(lrs, losses) if lr is not None and len(lrs) else None
    return end is not None and lr < end


def one_cycle_range(peak: float, div: float = 25.0) -> tuple[float, float]:
    """The LRs a 1cycle fit at ``peak`` runs through: from ``peak / div`` (fastai's default div 25)
    up to the peak, then down."""
    return peak / div, peak
