"""``Scheduler``: drive any torch optimizer's hyper-parameters from schedules of progress.

Progress is ``steps taken / total_steps``, where a step is counted by an optimizer post-step hook,
so it counts only steps that really happened: a step a GradScaler skipped on overflow, or a batch
inside an accumulation window, does not advance it. Past ``total_steps`` every value holds at the
schedule's end; nothing ever raises "tried to step N times".

``lr``, ``weight_decay`` and ``decoupled_wd`` schedules multiply each group's own base value, so
discriminative LRs come free; every other key, ``momentum`` included, is absolute. The base is kept
where torch's LR schedulers keep it, in the group itself: ``group.setdefault("initial_lr", group["lr"])``
(``initial_weight_decay``, ``initial_decoupled_wd`` likewise). A second scheduler made on the same
optimizer (a notebook cell run twice) therefore reads the same base instead of the first one's start
value, as two ``LambdaLR`` in a row do; whoever wants a new base (the Learner, each fit) sets
``group["initial_lr"]`` before making the scheduler, or passes ``rebase=True``.

A base kept that way is not silent: when a group's ``initial_<key>`` differs from its current value
(left by an earlier scheduler: torch's ``OneCycleLR`` leaves ``initial_lr = max_lr / div_factor``,
so a Scheduler made after one peaks at ``max_lr / 25``), a warning says which value is used and how
to take the other.
"""

from __future__ import annotations

import contextlib
import numbers
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from .. import checks as C
from .groups import get_hyper, momentum_key, set_hyper

__all__ = ["Scheduler", "RELATIVE_KEYS", "check_momentum_schedule", "check_fit_schedules", "check_schedule_keys",
           "initial_key", "fit_scheduler", "paused"]

RELATIVE_KEYS = frozenset({"lr", "weight_decay", "decoupled_wd"})


def initial_key(key: str) -> str:
    """The param-group key holding ``key``'s base value: ``initial_lr`` as in torch's schedulers."""
    return f"initial_{key}"


def check_momentum_schedule(fn: Callable[[float], float], points: int = 21) -> None:
    """``ValueError`` unless ``fn`` gives a momentum (or beta1) in [0, 1) at ``points`` evenly spaced
    progress values: a bad schedule is caught before training, not as a ZeroDivisionError inside
    Adam or a silent divergence with SGD."""
    for i in range(points):
        pct = i / (points - 1)
        value = fn(pct)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ValueError(f"momentum schedule gives {value!r} at progress {pct:g}: momentum (or beta1) "
                             "must be a number in [0, 1)")


def check_schedule_keys(optimizer: torch.optim.Optimizer, keys: Sequence[str]) -> None:
    """``ValueError`` naming the key and the optimizer when a param group lacks a key to schedule:
    written anyway, it would be a value the optimizer never reads. ``momentum`` is SGD's
    ``momentum`` or Adam's ``betas[0]``; an optimizer with neither is warned about by the Scheduler
    (1cycle cycles momentum by default), not refused."""
    for key in keys:
        if key == "momentum":
            continue
        lacking = [i for i, g in enumerate(optimizer.param_groups) if key not in g]
        if lacking:
            have = sorted(k for k in optimizer.param_groups[lacking[0]] if k != "params")
            raise ValueError(f"{type(optimizer).__name__}: param group has no {key!r} to schedule (group "
                             f"{lacking[0]} has {', '.join(have)})")


class Scheduler:
    """Set ``optimizer``'s hyper-parameters from ``scheds`` (key -> schedule of progress; a schedule
    may return a list, one value per param group).

    >>> sched = Scheduler(opt, total_steps=len(dl) * epochs, lr=oc.schedules.cos_one_cycle().lr,
    ...                   momentum=oc.schedules.cos_one_cycle().mom)
    >>> for xb, yb in dl: loss = ...; loss.backward(); opt.step(); opt.zero_grad()   # nothing else

    There is no ``step()`` to call: the optimizer's own step advances it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int,
                 scheds: Mapping[str, Callable[[float], float]] | None = None, *, rebase: bool = False,
                 **kw: Callable) -> None:
        """``rebase=True``: each relative key's base is the group's current value, replacing an
        ``initial_<key>`` already there (by default that one is kept, as torch's schedulers do)."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        C.check_int("total_steps", total_steps, 1)
        C.check_bool("rebase", rebase)
        scheds = {**(scheds or {}), **kw}
        for key, fn in scheds.items():
            if not callable(fn):
                raise TypeError(f"schedule for {key!r} must be callable, got {fn!r}")
        check_schedule_keys(optimizer, list(scheds))
        if "momentum" in scheds:
            check_momentum_schedule(scheds["momentum"])
        if "momentum" in scheds and any(momentum_key(g) is None for g in optimizer.param_groups):
            C.warn(f"{type(optimizer).__name__} has neither 'momentum' nor 'betas': momentum is not scheduled")
            scheds.pop("momentum")
        self.optimizer, self.total_steps, self.scheds = optimizer, total_steps, scheds
        self.base = _bases(optimizer.param_groups, [k for k in scheds if k in RELATIVE_KEYS], rebase)
        self.step_count = 0
        self.active = True  # False while paused(): an LR range test stepping this optimizer inside a fit
        self.apply()
        self._handle = optimizer.register_step_post_hook(self._after_step)
        _SCHEDULERS.setdefault(optimizer, weakref.WeakSet()).add(self)

    @property
    def pct(self) -> float:
        """Progress in [0, 1]."""
        return min(self.step_count / self.total_steps, 1.0)

    def apply(self) -> None:
        """Write the values for the current progress into the optimizer (every step)."""
        pct, groups = self.step_count / self.total_steps, self.optimizer.param_groups
        pct = pct if pct < 1.0 else 1.0  # (not min(): this runs at every step)
        for key, fn in self.scheds.items():
            v, bases = fn(pct), self.base.get(key)
            per_group = type(v) is list  # a schedule may give one value per group (the LR finder's own ends)
            for i, group in enumerate(groups):
                value = v[i] if per_group else v
                value = value if bases is None else bases[i] * value
                if type(group.get(key)) is float:  # this runs at every step: a plain float written directly
                    group[key] = value
                else:  # momentum as betas[0], a tensor filled in place
                    set_hyper(group, key, value)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.active:
            self.step_count += 1
            self.apply()

    def remove(self) -> None:
        """Detach from the optimizer (its hyper-parameters keep their last values)."""
        self._handle.remove()
        _SCHEDULERS.get(self.optimizer, weakref.WeakSet()).discard(self)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps, "base": self.base,
                "scheds": {k: repr(v) for k, v in self.scheds.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the position; the schedules themselves are the ones this object was made with."""
        if state["total_steps"] != self.total_steps:
            raise ValueError(f"total_steps differs: saved {state['total_steps']}, now {self.total_steps}")
        self.step_count = int(state["step_count"])
        self.base = {k: list(v) for k, v in state["base"].items()}
        for key, bases in self.base.items():  # the groups' copy agrees (an old optimizer state may lack it)
            for group, b in zip(self.optimizer.param_groups, bases):
                group[initial_key(key)] = b
        self.apply()


# The Schedulers attached to each optimizer (weakly: a dropped one does not linger).
_SCHEDULERS: weakref.WeakKeyDictionary[torch.optim.Optimizer, weakref.WeakSet[Scheduler]] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def paused(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Every Scheduler attached to ``optimizer`` holds still inside: its count does not move and it
    writes nothing (an LR range test steps an optimizer that a running fit schedules)."""
    scheds = [s for s in _SCHEDULERS.get(optimizer, ()) if s.active]
    for s in scheds:
        s.active = False
    try:
        yield
    finally:
        for s in scheds:
            s.active = True


def check_fit_schedules(lr_sched: Any, mom_sched: Any = None, wd_sched: Any = None,
                        extra_scheds: Mapping[str, Any] | None = None) -> None:
    """A fit's schedules, each named when it is not a function of progress (before anything changes)."""
    named = {"lr_sched": lr_sched, "mom_sched": mom_sched, "wd_sched": wd_sched,
             **{f"extra_scheds[{k!r}]": fn for k, fn in dict(extra_scheds or {}).items()}}
    for name, fn in named.items():
        C.check_callable(name, fn, "a schedule (a function of progress in [0, 1])",
                         none_ok=name in ("mom_sched", "wd_sched"))
    if mom_sched is not None:
        check_momentum_schedule(mom_sched)


def fit_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, peaks: Sequence[float],
                  bases: Mapping[str, Sequence[float]], scheds: Mapping[str, Callable | None]) -> Scheduler:
    """A fit's Scheduler: ``peaks`` become each group's LR base (``initial_lr``, where torch keeps
    it), ``bases`` each group's value (and base) of other keys (weight decay), then ``scheds``
    (None entries left out) drive them from step 0. A key a group lacks is refused before any is
    written (``check_schedule_keys``)."""
    check_schedule_keys(optimizer, [k for k, fn in scheds.items() if fn is not None]
                        + [k for k, values in bases.items() if any(values)])
    for group, peak in zip(optimizer.param_groups, peaks):
        group["lr"] = group[initial_key("lr")] = peak
    for key, values in bases.items():
        for group, value in zip(optimizer.param_groups, values):
            group[key] = value
            group.pop(initial_key(key), None)  # the value given is the base
    scheds = {k: fn for k, fn in scheds.items() if fn is not None}
    for key in RELATIVE_KEYS.intersection(scheds) - set(bases) - {"lr"}:
        for group in optimizer.param_groups:  # an earlier fit moved it: start again from its base, not compounding
            if initial_key(key) in group:
                set_hyper(group, key, group[initial_key(key)])
    return Scheduler(optimizer, total_steps, scheds)


def _bases(groups: list[dict], keys: list[str], rebase: bool) -> dict[str, list[float]]:
    """Each key's base per group: its ``initial_<key>``, set from the current value where there is
    none (torch's rule) or where ``rebase``; a kept one that differs from the current value is
    named in a warning. Every group is checked before any is written."""
    current = {}
    for key in keys:
        current[key] = [get_hyper(g, key) for g in groups]
        if any(v is None for v in current[key]):
            raise ValueError(f"param group has no {key!r} to schedule")
    kept = []  # (group index, key, kept base, current value)
    for key in keys:
        ikey = initial_key(key)
        for i, (group, value) in enumerate(zip(groups, current[key])):
            if rebase or ikey not in group:
                group[ikey] = float(value)
            elif float(group[ikey]) != float(value):
                kept.append((i, key, float(group[ikey]), float(value)))
    if kept:
        C.warn(_kept_message(groups, kept))
    return {key: [float(g[initial_key(key)]) for g in groups] for key in keys}


def _show(a: float, b: float) -> tuple[str, str]:
    """Two values that differ, printed so that they look different."""
    short = f"{a:.6g}", f"{b:.6g}"
    return short if short[0] != short[1] else (repr(a), repr(b))


def _kept_message(groups: list[dict], kept: list[tuple[int, str, float, float]]) -> str:
    pairs = []
    for i, key, base, value in kept[:4]:
        b, v = _show(base, value)
        pairs.append(f"group {i}: initial_{key}={b}, {key}={v}")
    key = kept[0][1]
    names = " and ".join(dict.fromkeys(f"initial_{k}" for _, k, _, _ in kept))
    text = (f"Scheduler: the param groups already hold a base that differs from their current value "
            f"({'; '.join(pairs)}{'; ...' if len(kept) > 4 else ''}), set by hand or left by an earlier scheduler "
            f"on this optimizer. As torch's schedulers do, the schedules multiply that base ({names}). To start "
            f"from the current values instead, pass rebase=True; to choose the base without this warning, set "
            f"group['{key}'] = group['initial_{key}'] = base first (as the Learner does).")
    peaks = [(i, base, groups[i]["max_lr"]) for i, k, base, _ in kept if k == "lr" and "max_lr" in groups[i]]
    if peaks:  # the likeliest case, and the fix a reader wants first
        i, base, peak = peaks[0]
        text = (f"Scheduler: group {i} holds max_lr={float(peak):.6g} from torch's OneCycleLR or CyclicLR, which set "
                f"initial_lr = max_lr / div_factor ({base:.6g}), so the LR schedule would peak at {base:.6g}: to peak "
                "at max_lr, set group['lr'] = group['initial_lr'] = group['max_lr']. The p"
                + text.removeprefix("Scheduler: the p"))
    return text
