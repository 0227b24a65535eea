"""Warmup schedules from today's practice, as pure functions of progress like ``schedules``' (which
re-exports them): warmup-stable-decay (WSD) and linear warmup then cosine.

WSD (MiniCPM, Hu et al. 2024; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond
Fixed Training Durations"): linear from 0 to the peak over ``warmup_pct`` of training, the peak until
the last ``decay_pct``, then a cool-down to 0 whose shape, at progress ``x`` in [0, 1] through it, is

- ``"linear"``: ``1 - x``
- ``"cos"``:    ``(1 + cos(pi x)) / 2``
- ``"1-sqrt"``: ``1 - sqrt(x)`` (Hägele et al.'s best: it drops fast, then lingers near 0)

``decay_pct=0`` leaves warmup then constant: the schedule a schedule-free optimizer takes. Both
return multipliers of each param group's peak LR, as every LR shape in ``schedules`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .checks import check_number

__all__ = ["WSD", "WarmupCos", "wsd", "warmup_cos", "DECAYS"]

DECAYS = ("linear", "cos", "1-sqrt")


def _cooldown(shape: str, x: float) -> float:
    """The cool-down's multiplier at ``x`` in [0, 1] of the way through it: 1 at 0, 0 at 1."""
    if shape == "linear":
        return 1.0 - x
    if shape == "cos":
        return (1.0 + math.cos(math.pi * x)) / 2
    return 1.0 - math.sqrt(x)


@dataclass(frozen=True)
class WSD:
    """Warmup-stable-decay: 0 -> 1 linearly over ``warmup_pct``, 1, then ``decay`` down to 0 over the
    last ``decay_pct`` (see the module doc for the closed forms)."""
    warmup_pct: float
    decay_pct: float
    decay: str = "1-sqrt"

    def __call__(self, pct: float) -> float:
        if pct < self.warmup_pct:
            return pct / self.warmup_pct
        start = 1.0 - self.decay_pct
        if self.decay_pct == 0 or pct <= start:
            return 1.0
        x = (pct - start) / self.decay_pct
        # step / total lands a hair past the plateau's end, and 1 - sqrt(x) magnifies it (1e-16 -> 1e-8)
        return _cooldown(self.decay, 0.0 if x < 1e-9 else min(x, 1.0))


@dataclass(frozen=True)
class WarmupCos:
    """0 -> 1 linearly over ``warmup_pct``, then half a cosine from 1 down to ``end``."""
    warmup_pct: float
    end: float = 0.0

    def __call__(self, pct: float) -> float:
        if pct < self.warmup_pct:
            return pct / self.warmup_pct
        x = (pct - self.warmup_pct) / (1.0 - self.warmup_pct) if self.warmup_pct < 1 else 1.0
        return self.end + (1.0 - self.end) * (1.0 + math.cos(math.pi * min(x, 1.0))) / 2


def wsd(warmup_pct: float = 0.05, decay_pct: float = 0.2, decay: str = "1-sqrt") -> WSD:
    """Warmup-stable-decay: ``warmup_pct`` and ``decay_pct`` are fractions of training (together at
    most 1); ``decay`` is the cool-down's shape: ``"linear"``, ``"cos"`` or ``"1-sqrt"``."""
    w = check_number("warmup_pct", warmup_pct, low=0, high=1)
    d = check_number("decay_pct", decay_pct, low=0, high=1)
    if w + d > 1 + 1e-12:
        raise ValueError(f"warmup_pct + decay_pct must be at most 1, got {warmup_pct!r} + {decay_pct!r}")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {list(DECAYS)}, got {decay!r}")
    return WSD(w, d, decay)


def warmup_cos(warmup_pct: float = 0.05, end: float = 0.0) -> WarmupCos:
    """Linear warmup over ``warmup_pct`` of training, then a cosine from the peak down to ``end``
    times it (``transformers.get_cosine_schedule_with_warmup``'s shape, as a function of progress)."""
    w = check_number("warmup_pct", warmup_pct, low=0, high=1, high_open=True)
    return WarmupCos(w, check_number("end", end, low=0, high=1))
