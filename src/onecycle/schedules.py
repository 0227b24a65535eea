"""Schedules: pure functions of training progress ``pct`` in [0, 1].

A schedule is a small frozen dataclass with ``__call__(pct) -> float``: it has no step counter,
so it survives changed step counts (accumulation, drop_last, data-parallel, resume mid-epoch); the
loop owns the clock and passes progress in. Being dataclasses, schedules compare equal, print
their parameters, pickle for worker processes, and can be checked on resume.

LR shapes return a *multiplier* of each param group's peak LR (so discriminative LRs come free);
momentum shapes return absolute values. Warmup-stable-decay (``wsd``) and linear warmup then cosine
(``warmup_cos``) live in ``warmup.py`` and are re-exported here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checks import check_int, check_number
from .warmup import WSD, WarmupCos, warmup_cos, wsd

__all__ = [
    "lin", "cos", "exp", "const", "combine", "repeat", "Lin", "Cos", "Exp", "Const", "Combined",
    "Repeat", "ClrBeta", "TorchOneCycle", "OneCycle", "cos_one_cycle", "clr_beta", "torch_one_cycle",
    "WSD", "WarmupCos", "wsd", "warmup_cos",
]

Schedule = Callable[[float], float]


@dataclass(frozen=True)
class Lin:
    """Linear from ``start`` to ``end``."""
    start: float
    end: float

    def __call__(self, pct: float) -> float:
        return self.start + pct * (self.end - self.start)


@dataclass(frozen=True)
class Cos:
    """Half a cosine from ``start`` to ``end`` (flat at both ends)."""
    start: float
    end: float

    def __call__(self, pct: float) -> float:
        return self.end + (self.start - self.end) / 2 * (math.cos(math.pi * pct) + 1)


@dataclass(frozen=True)
class Exp:
    """Geometric from ``start`` to ``end`` (both > 0)."""
    start: float
    end: float

    def __call__(self, pct: float) -> float:
        return self.start * (self.end / self.start) ** pct


@dataclass(frozen=True)
class Const:
    """A constant."""
    value: float

    def __call__(self, pct: float) -> float:
        return self.value


def lin(start: float, end: float) -> Lin:
    return Lin(float(start), float(end))


def cos(start: float, end: float) -> Cos:
    return Cos(float(start), float(end))


def exp(start: float, end: float) -> Exp:
    check_number("start", start, low=0, low_open=True)
    check_number("end", end, low=0, low_open=True)
    return Exp(float(start), float(end))


def const(value: float) -> Const:
    return Const(float(value))


@dataclass(frozen=True)
class Combined:
    """Phases run one after another; ``pcts[i]`` is the fraction of progress phase ``i`` takes."""
    pcts: tuple[float, ...]
    scheds: tuple[Schedule, ...]
    _edges: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        edges, acc = [], 0.0
        for p in self.pcts:
            acc += p
            edges.append(acc)
        object.__setattr__(self, "_edges", tuple(edges))

    def __call__(self, pct: float) -> float:
        start = 0.0
        for i, end in enumerate(self._edges):
            if pct <= end or i == len(self._edges) - 1:
                width = end - start
                return self.scheds[i]((pct - start) / width if width > 0 else 1.0)
            start = end
        raise AssertionError("unreachable")


def combine(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Combined:
    """Chain schedules: ``combine([0.25, 0.75], [cos(a, b), cos(b, c)])``."""
    if len(pcts) != len(scheds) or not pcts:
        raise ValueError(f"pcts and scheds must have the same non-zero length, got {len(pcts)} and {len(scheds)}")
    for i, p in enumerate(pcts):
        check_number(f"pcts[{i}]", p, low=0)
    total = float(sum(pcts))
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise ValueError(f"pcts must sum to 1, got {list(pcts)} (sum {total})")
    return Combined(tuple(float(p) for p in pcts), tuple(scheds))


@dataclass(frozen=True)
class Repeat:
    """``sched`` run ``n`` times over the progress range, restarting at each cycle's start
    (fastai 0.7's ``n_cycle``)."""
    sched: Schedule
    n: int

    def __call__(self, pct: float) -> float:
        if self.n == 1:
            return self.sched(pct)
        x = pct * self.n
        k = math.floor(x + 1e-9)
        inner = 1.0 if k >= self.n else max(x - k, 0.0)
        return self.sched(inner)


def repeat(sched: Schedule, n: int) -> Schedule:
    check_int("n_cycle", n, 1)
    return sched if n == 1 else Repeat(sched, n)


def _snap(x: float) -> float:
    """Floating progress times a step count lands a hair off the integer it stands for."""
    r = round(x)
    return float(r) if abs(x - r) < 1e-7 else x


@dataclass(frozen=True)
class ClrBeta:
    """fastai 0.7's ``use_clr_beta`` (its ``CircularLR_beta``) over a cycle of ``nb``
    iterations: linear up from ``1/div`` to 1 and back in ``2c`` iterations,
    ``c = int(nb * (1 - pct/100) / 2)``, then linear down to ``(1 - 0.99)/div``. ``t = pct * nb``."""
    nb: int
    div: float
    pct: float
    mom_max: float | None = None
    mom_min: float | None = None

    @property
    def c(self) -> int:
        return int(self.nb * (1 - self.pct / 100) / 2)

    def _ramp(self, t: float) -> float | None:
        """``t/c`` on the way up, ``1-(t-c)/c`` on the way down; None in the last phase."""
        c = self.c
        if t <= c:
            return t / c
        if t <= 2 * c:
            return 1 - (t - c) / c
        return None

    def __call__(self, pct: float) -> float:
        t = _snap(pct * self.nb)
        q = self._ramp(t)
        if q is not None:
            return (1 + q * (self.div - 1)) / self.div
        p = (t - 2 * self.c) / (self.nb - 2 * self.c)
        return (1 - 0.99 * p) / self.div

    def mom(self, pct: float) -> float:
        q = self._ramp(_snap(pct * self.nb))
        return self.mom_max if q is None else self.mom_max + q * (self.mom_min - self.mom_max)


@dataclass(frozen=True)
class _ClrBetaMom:
    shape: ClrBeta

    def __call__(self, pct: float) -> float:
        return self.shape.mom(pct)


@dataclass(frozen=True)
class TorchOneCycle:
    """``torch.optim.lr_scheduler.OneCycleLR``'s shape as a function of progress ``step/total_steps``:
    the same phase boundaries (in steps) and the same anneal arithmetic, so values match torch's to
    rounding. ``value`` selects the LR multiplier (of ``max_lr``) or the absolute momentum.

    ``phase_at``, ``points`` and ``anneal`` are the pieces, in torch's own terms (its step count and
    its param-group names), for a caller that works in steps: ``onecycle.compat.OneCycleLR``."""
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    value: str = "lr"

    @functools.cached_property
    def ends(self) -> tuple[float, ...]:
        """The step each phase ends at, as OneCycleLR lays them out (computed once)."""
        n, p = self.total_steps, self.pct_start
        ends = (p * n - 1, 2 * p * n - 2, n - 1) if self.three_phase else (p * n - 1, n - 1)
        return tuple(float(e) for e in ends)

    def points(self, value: str | None = None) -> tuple[tuple[str, str], ...]:
        """Each phase's (start, end) by OneCycleLR's names: ``initial``, ``max``, ``min`` for the LR
        (its param-group keys ``initial_lr``, ``max_lr``, ``min_lr``), ``max``, ``base`` for the
        momentum (``max_momentum``, ``base_momentum``). ``value``: "lr" or "mom" (default: this one's)."""
        if (value or self.value) == "lr":
            return (("initial", "max"), ("max", "initial"), ("initial", "min")) if self.three_phase else \
                (("initial", "max"), ("max", "min"))
        return (("max", "base"), ("base", "max"), ("max", "max")) if self.three_phase else \
            (("max", "base"), ("base", "max"))

    def phase_at(self, step: float) -> tuple[int, float]:
        """The phase torch's step ``step`` (0-based) falls in, and how far through it: ``(step -
        start) / (end - start)``, unclamped, so one step past the last gives what torch's formula
        gives there (a fraction above 1). A phase of no width is complete (1.0)."""
        start = 0.0
        ends = self.ends
        for i, end in enumerate(ends):
            if step <= end or i == len(ends) - 1:
                return i, (step - start) / (end - start) if end != start else 1.0
            start = end
        raise AssertionError("unreachable")

    def anneal(self, start: Any, end: Any) -> Schedule:
        """The shape between two levels: ``Cos`` or ``Lin``, torch's own float expressions."""
        return Cos(start, end) if self.anneal_strategy == "cos" else Lin(start, end)

    def _level(self, name: str) -> float:
        if self.value == "lr":
            init = 1 / self.div_factor
            return {"initial": init, "max": 1.0, "min": init / self.final_div_factor}[name]
        return {"max": self.max_momentum, "base": self.base_momentum}[name]

    @functools.cached_property
    def _pieces(self) -> tuple[tuple[float, float, float, Schedule], ...]:
        """Per phase: its end step, start step and width, and its anneal between its two levels
        (computed once: a fit calls the schedule at every optimizer step)."""
        starts = (0.0, *self.ends[:-1])
        return tuple((end, start, end - start, self.anneal(self._level(a), self._level(b)))
                     for start, end, (a, b) in zip(starts, self.ends, self.points()))

    def __call__(self, pct: float) -> float:
        # torch's last step is total_steps - 1; beyond it its formula extrapolates (a linear anneal
        # goes negative), so the end value is held from there. phase_at's rule, on the pieces.
        step, last = _snap(pct * self.total_steps), self.ends[-1]
        step = step if step < last else last  # (not min(): this runs at every step)
        for end, start, width, fn in self._pieces:
            if step <= end:  # (the last phase ends at ends[-1], where the step stops)
                return fn((step - start) / width if width else 1.0)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class OneCycle:
    """A 1cycle policy: an LR multiplier schedule and (optionally) a momentum schedule."""
    lr: Schedule
    mom: Schedule | None


def _check_moms(moms: Sequence[float]) -> tuple[float, ...]:
    if not isinstance(moms, (tuple, list)) or len(moms) not in (2, 3):
        raise ValueError(f"moms must be a tuple of 2 or 3 momentums, got {moms!r}")
    for i, m in enumerate(moms):
        check_number(f"moms[{i}]", m, low=0, high=1, high_open=True)
    return tuple(float(m) for m in moms)


def cos_one_cycle(div: float = 25.0, div_final: float = 1e5, pct_start: float = 0.25,
                  moms: Sequence[float] | None = (0.95, 0.85, 0.95)) -> OneCycle:
    """fastai v2's two-phase cosine 1cycle: LR from ``1/div`` up to 1 over ``pct_start`` of
    training, then down to ``1/div_final``; momentum mirrored (``moms`` = start, middle, end)."""
    div = check_number("div", div, low=0, low_open=True)
    div_final = check_number("div_final", div_final, low=0, low_open=True)
    pct_start = check_number("pct_start", pct_start, low=0, high=1)
    phases = [pct_start, 1 - pct_start]
    lr = combine(phases, [cos(1 / div, 1.0), cos(1.0, 1 / div_final)])
    mom = None
    if moms is not None:
        m = _check_moms(moms)
        m = m if len(m) == 3 else (m[0], m[1], m[0])
        mom = combine(phases, [cos(m[0], m[1]), cos(m[1], m[2])])
    return OneCycle(lr, mom)


def clr_beta(nb: int, div: float, pct: float, mom_max: float | None = None,
             mom_min: float | None = None) -> OneCycle:
    """fastai 0.7's ``use_clr_beta=(div, pct, mom_max, mom_min)`` over a cycle of ``nb`` iterations."""
    check_int("nb (iterations per cycle)", nb, 1)
    div = check_number("div", div, low=0, low_open=True)
    pct = check_number("pct", pct, low=0, high=100, high_open=True)
    if (mom_max is None) != (mom_min is None):
        raise ValueError(f"mom_max and mom_min go together, got {mom_max!r} and {mom_min!r}")
    shape = ClrBeta(nb, div, pct)
    if int(nb * (1 - pct / 100) / 2) < 1:
        raise ValueError(f"a cycle of nb={nb} iterations is too short for pct={pct!r}: "
                         "the rising phase would have no iteration")
    if mom_max is None:
        return OneCycle(shape, None)
    mom_max = check_number("mom_max", mom_max, low=0, high=1, high_open=True)
    mom_min = check_number("mom_min", mom_min, low=0, high=1, high_open=True)
    shape = ClrBeta(nb, div, pct, mom_max, mom_min)
    return OneCycle(shape, _ClrBetaMom(shape))


def torch_one_cycle(total_steps: int, pct_start: float = 0.3, anneal_strategy: str = "cos",
                    div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                    base_momentum: float | None = 0.85, max_momentum: float = 0.95) -> OneCycle:
    """Configured like ``torch.optim.lr_scheduler.OneCycleLR`` (``base_momentum=None``: no
    momentum cycling, like ``cycle_momentum=False``)."""
    check_int("total_steps", total_steps, 2)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    check_number("pct_start", pct_start, low=0, high=1, low_open=True, high_open=True)
    check_number("div_factor", div_factor, low=0, low_open=True)
    check_number("final_div_factor", final_div_factor, low=0, low_open=True)
    kw = dict(total_steps=total_steps, pct_start=float(pct_start), anneal_strategy=anneal_strategy,
              div_factor=float(div_factor), final_div_factor=float(final_div_factor),
              three_phase=bool(three_phase))
    if base_momentum is None:
        return OneCycle(TorchOneCycle(**kw), None)
    _check_moms((base_momentum, max_momentum))
    kw.update(base_momentum=float(base_momentum), max_momentum=float(max_momentum))
    return OneCycle(TorchOneCycle(**kw, value="lr"), TorchOneCycle(**kw, value="mom"))


# ---- baselines 1cycle is compared against (the command line's --schedule step|triangular) -------------
@dataclass(frozen=True)
class Step:
    """Step decay: ``gamma ** k`` once ``k`` of the ``milestones`` (fractions of training, increasing)
    have been reached. The schedule the super-convergence paper compares 1cycle with."""
    milestones: tuple[float, ...]
    gamma: float

    def __call__(self, pct: float) -> float:
        return self.gamma ** sum(pct >= m for m in self.milestones)


@dataclass(frozen=True)
class Triangular:
    """Smith's (2015) triangular cyclical LR: ``cycles`` linear cycles from ``1/div`` up to 1 and back,
    each taking an equal share of training, ending at ``1/div``. No momentum cycling."""
    div: float
    cycles: int

    def __call__(self, pct: float) -> float:
        frac = (pct * self.cycles) % 1.0
        up = 1.0 - abs(2.0 * frac - 1.0)  # 0 at a cycle's ends, 1 in its middle
        return (1.0 + up * (self.div - 1.0)) / self.div


def step(milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1) -> Step:
    """Multiply the peak LR by ``gamma`` at each milestone (fractions of training in (0, 1), increasing)."""
    if not isinstance(milestones, (tuple, list)):
        raise TypeError(f"milestones must be a sequence of fractions, got {milestones!r}")
    ms = tuple(check_number(f"milestones[{i}]", m, low=0, high=1, low_open=True, high_open=True)
               for i, m in enumerate(milestones))
    if any(b <= a for a, b in zip(ms, ms[1:])):
        raise ValueError(f"milestones must increase, got {list(milestones)!r}")
    return Step(ms, check_number("gamma", gamma, low=0, high=1, low_open=True))


def triangular(div: float = 4.0, cycles: int = 1) -> Triangular:
    """``cycles`` triangular cycles between ``1/div`` and 1 (the peak) over training."""
    check_int("cycles", cycles, 1)
    return Triangular(check_number("div", div, low=1), cycles)


__all__ += ["Step", "Triangular", "step", "triangular"]
