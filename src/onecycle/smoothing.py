"""Smoothing a noisy curve, the one home for it: the causal EMA that the LR finder's stop rule watches
as the test runs (``SmoothLoss``, ``ema``, ``smoothing_beta``), and the zero-phase smoother
(``centred``) for curves drawn after the fact, which sits on the data instead of behind it.

An EMA only looks back, so on a curve that falls and turns it lags: with the finder's beta of 0.9 its
minimum sits about 9 steps (0.7 of a decade of LR on a 100-step test) right of the data's, and on a
fit's loss it reads what the loss was a tenth of the fit ago. ``centred`` weighs the points on both
sides alike (a 5-point running median against single spikes, then a local linear fit under a
Gaussian window), so a dip, a rise or an epoch's end reads where the data has it. It needs the
points after each one, so the stop rule, which decides as the points arrive, keeps the EMA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["SmoothLoss", "ema", "smoothing_beta", "centred", "centred_width", "running_median",
           "range_test_curve"]

MEDIAN_POINTS = 5  # the running median's window (points)
_MAX_POINTS = 4000  # longer curves are smoothed on block means (a 100k-step fit's loss in a few ms)


def smoothing_beta(n: int) -> float:
    """The EMA factor for a curve of ``n`` points: ``1 - 10/n`` (0.9 for the finder's default 100
    iterations; at least 0.5). Its lag, ``beta / (1 - beta)`` points, is about a tenth of the curve
    whatever its length (fastai's fixed 0.98 lags 49 points: half of a 100-point curve)."""
    return max(0.5, 1.0 - 10.0 / max(int(n), 1))


class SmoothLoss:
    """Bias-corrected exponential moving average, one value at a time (the finder's stop rule and the
    recorded ``smooth_losses``; ``smoothing_beta`` picks the factor for a curve's length)."""

    def __init__(self, beta: float = 0.9) -> None:
        self.beta, self.avg, self.count = beta, 0.0, 0

    def add(self, value: float) -> float:
        return self.extend((value,))[0]

    def extend(self, values: Iterable[float]) -> list[float]:
        """``add`` each value in turn: the smoothed values (one loop for a whole epoch's losses)."""
        beta, avg, count, out = self.beta, self.avg, self.count, []
        for value in values:
            count += 1
            avg = beta * avg + (1 - beta) * value
            out.append(avg / (1 - beta ** count))
        self.avg, self.count = avg, count
        return out

    def state_dict(self) -> dict:
        return {"beta": self.beta, "avg": self.avg, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.beta, self.avg, self.count = state["beta"], state["avg"], state["count"]


def ema(values: Iterable[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average of ``values`` (``SmoothLoss`` over a list)."""
    return SmoothLoss(beta).extend(map(float, values))


# ---- zero-phase ----------------------------------------------------------------------------------
def running_median(values: Sequence[float], points: int = MEDIAN_POINTS) -> np.ndarray:
    """The centred running median over ``points`` (odd) points, fewer at the ends (as pandas'
    ``rolling(points, center=True, min_periods=1)``); non-finite points are left out (NaN where a
    window holds none)."""
    y = np.asarray(values, dtype=float)
    if not len(y):
        return np.zeros(0)
    half = points // 2
    padded = np.concatenate([np.full(half, np.nan), np.where(np.isfinite(y), y, np.nan), np.full(half, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, points)
    empty = np.isnan(windows).all(axis=1)
    with np.errstate(all="ignore"):
        out = np.nanmedian(np.where(empty[:, None], 0.0, windows), axis=1)
    return np.where(empty, np.nan, out)


def centred_width(n: int) -> float:
    """The Gaussian window's standard deviation in points for a curve of ``n`` points: a fiftieth of
    it (2 points on a 100-step range test, 0.16 of a decade), at least 1."""
    return max(1.0, n / 50.0)


def _local_linear(y: np.ndarray, sd: float) -> np.ndarray:
    """At each point, the value at that point of the line fitted by least squares to the finite points
    around it, weighted by a Gaussian of ``sd`` points (cut at 4 sd): no lag, and at the ends the
    line carries the slope instead of flattening it as a plain average would."""
    ok = np.isfinite(y)
    half = max(1, int(math.ceil(4 * sd)))
    k = np.arange(-half, half + 1, dtype=float)
    w = np.exp(-0.5 * (k / sd) ** 2)
    m, my = ok.astype(float), np.where(ok, y, 0.0)

    def corr(a: np.ndarray, kern: np.ndarray) -> np.ndarray:  # at i: sum over k of kern(k) * a[i + k]
        return np.convolve(a, kern[::-1])[half:half + len(a)]

    s0, s1, s2 = corr(m, w), corr(m, k * w), corr(m, k * k * w)
    t0, t1 = corr(my, w), corr(my, k * w)
    det = s0 * s2 - s1 * s1
    with np.errstate(divide="ignore", invalid="ignore"):
        line = (s2 * t0 - s1 * t1) / det
        flat = t0 / s0  # one point in reach: its value
    out = np.where(det > 1e-9 * np.maximum(s0 * s2, 1e-300), line, flat)
    return np.where(s0 > 1e-12, out, np.nan)


def centred(values: Sequence[float], width: float | None = None,
            clip: tuple[float, float] | None = None) -> list[float]:
    """The zero-phase smoothing of ``values`` (plots draw it over the raw points): the running median
    (``running_median``), cut to ``clip`` (low, high) if given (a diverged tail's huge values would
    otherwise pull up the points before it), then a local linear fit under a Gaussian window of
    ``width`` points (default ``centred_width(len(values))``). NaN where the raw point is not finite.
    Curves longer than 4000 points are smoothed on block means, then interpolated back."""
    y = np.asarray(values, dtype=float)
    n = len(y)
    if n == 0:
        return []
    sd = centred_width(n) if width is None else float(width)
    if not sd > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    block = max(1, math.ceil(n / _MAX_POINTS))
    if block > 1:  # block means at the blocks' centres, smoothed, then read back at every point
        ok = np.isfinite(y)
        pad = (-n) % block
        yy = np.concatenate([np.where(ok, y, 0.0), np.zeros(pad)]).reshape(-1, block)
        cnt = np.concatenate([ok.astype(float), np.zeros(pad)]).reshape(-1, block).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(cnt > 0, yy.sum(1) / np.maximum(cnt, 1), np.nan)
        xs = np.arange(len(means)) * block + (np.minimum(block, n - np.arange(len(means)) * block) - 1) / 2
        coarse = np.asarray(centred(means, sd / block, clip), dtype=float)
        good = np.isfinite(coarse)
        out = np.interp(np.arange(n), xs[good], coarse[good]) if good.any() else np.full(n, np.nan)
        return np.where(ok, out, np.nan).tolist()
    med = running_median(y)
    if clip is not None:
        med = np.clip(med, *clip)
    out = _local_linear(med, sd)
    return np.where(np.isfinite(y), out, np.nan).tolist()



def range_test_curve(values: Sequence[float], lower: bool = True) -> list[float]:
    """``centred`` for an LR range test's curve: cut to two falls (start to best) beyond the start and
    the best, so the diverged tail's huge values pull up no point before it. ``lower``: the curve's
    best is its lowest (a loss; False for accuracy)."""
    med = running_median(values)
    good = med[np.isfinite(med)]
    if not len(good):
        return centred(values)
    start, best = good[0], (good.min() if lower else good.max())
    fall = abs(start - best) or max(abs(start), 1.0)
    low, high = (best, start) if lower else (start, best)
    return centred(values, clip=(low - 2 * fall, high + 2 * fall))
