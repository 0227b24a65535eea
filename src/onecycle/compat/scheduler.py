"""``OneCycleLR``: a drop-in for ``torch.optim.lr_scheduler.OneCycleLR``, on onecycle's schedule code.

The same signature, the same ``LRScheduler`` base, the same param-group keys (``initial_lr``,
``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``; momentum in ``momentum``, or in
``betas[0]`` when the optimizer's defaults have ``betas``), the same values to the last bit (the
phases come from ``schedules.TorchOneCycle``, the anneal is ``schedules.Cos``/``Lin``, both torch's
float expressions, fed from the param groups as torch's are), the same ``state_dict``, and torch's
errors: swap the import and nothing else changes. State dicts load across the two either way, between
schedulers made with the same arguments (a resume): ours keeps its shape as ``total_steps``,
``pct_start``, ``anneal_strategy`` and ``three_phase``, and does not read torch's phase table.

What differs, each on purpose:

- ``hold=False`` (keyword-only) is torch's behaviour: a step past ``total_steps`` raises "Tried to
  step N times". ``hold=True`` holds the final LR (``min_lr``) and momentum (``max_momentum``)
  instead (with a warning at the first step past the end), from step ``total_steps - 1`` on, for
  as many steps as come: a loop whose step count changed (accumulation, ``drop_last``, a resized
  dataset) finishes instead of failing at its last batch. It also replaces torch's value at step
  ``total_steps`` itself (the last ``step()`` of a full run), which extrapolates one step past the
  schedule (with ``anneal_strategy="linear"`` that LR lies below ``min_lr``, often below zero), by
  ``min_lr``.
- Every argument is checked before anything changes: the groups get no keys when an argument is
  wrong, and the "Tried to step" error leaves the scheduler where it was (torch's has counted the
  step). A few values torch lets through are refused: NaN, infinite or negative ``max_lr`` and
  momenta, ``div_factor``/``final_div_factor`` <= 0, bools where torch wants an int,
  ``last_epoch`` < -1, a ``pct_start`` outside [0, 1] or NaN (any real number is accepted, where
  torch wants a Python float), a 1-d tensor for ``max_lr``; ``cycle_momentum``, ``three_phase`` and
  ``hold`` must be bools. A string where a number goes is a ``TypeError`` (torch's is sometimes a
  ``ValueError`` from its arithmetic on it).
  With ``last_epoch >= 0`` a group that lacks one of the keys the schedule reads is a ``KeyError``
  naming it at once (torch's names ``initial_lr`` only, and fails on the others at the first step).
- ``get_lr()`` has no side effect and no warning: torch's also writes the momentum, and warns when
  called outside ``step()``. ``step()`` writes both.
- A phase of no width is complete (its end value) where torch's divides by zero: with
  ``pct_start * total_steps == 1`` torch's fails at construction (``pct_start=0.1, total_steps=10``:
  ours starts at ``max_lr``), with ``pct_start=1.0`` at the last ``step()`` (ours gives ``min_lr``).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from .. import checks as C
from ..schedules import TorchOneCycle

__all__ = ["OneCycleLR"]

_KEYS = {"lr": "{}_lr", "mom": "{}_momentum"}  # OneCycleLR's param-group keys, by its phases' point names


def _positive_int(name: str, value: object) -> int:
    """torch's check (``ValueError`` for a number that is not a positive int), bools refused too."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    kind = ValueError if isinstance(value, numbers.Real) and not isinstance(value, bool) else TypeError
    raise kind(f"Expected positive integer {name}, but got {value!r}")


def _per_group(name: str, value: Any, n: int) -> list[Any]:
    """torch's rule: a list or tuple gives one value per param group, anything else is every group's.
    Each must be a finite number >= 0 (a 0-d tensor too). Values keep their type, as in torch, and
    tensors are cloned: a caller's later in-place change does not move the schedule."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} must have the same length as optimizer.param_groups. "
                         f"{name} has {len(values)} values, param_groups has {n}.")
    for i, v in enumerate(values):
        C.check_number(f"{name}[{i}]" if isinstance(value, (list, tuple)) else name, v, low=0)
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in values]


class OneCycleLR(LRScheduler):
    """``torch.optim.lr_scheduler.OneCycleLR``, exactly (see the module's docstring for the few
    deliberate differences), plus ``hold``.

    >>> sched = OneCycleLR(opt, max_lr=0.1, total_steps=epochs * len(dl))   # torch's arguments
    >>> for xb, yb in dl: loss_fn(model(xb), yb).backward(); opt.step(); opt.zero_grad(); sched.step()

    ``hold=True``: past the end, hold the final LR and momentum instead of raising "Tried to step".
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_lr: Any, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum: Any = 0.85,
                 max_momentum: Any = 0.95, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, last_epoch: int = -1, *, hold: bool = False) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer: {type(optimizer).__name__} is not an "
                            "Optimizer")
        if total_steps is not None:
            total = _positive_int("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            total = _positive_int("epochs", epochs) * _positive_int("steps_per_epoch", steps_per_epoch)
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        pct = C.check_number("pct_start", pct_start)
        if not 0 <= pct <= 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy!r}")
        for name, flag in (("cycle_momentum", cycle_momentum), ("three_phase", three_phase), ("hold", hold)):
            C.check_bool(name, flag)
        C.check_number("div_factor", div_factor, low=0, low_open=True)
        C.check_number("final_div_factor", final_div_factor, low=0, low_open=True)
        C.check_int("last_epoch", last_epoch, -1)
        groups = optimizer.param_groups
        max_lrs = _per_group("max_lr", max_lr, len(groups))
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"optimizer must support momentum or beta1 with `cycle_momentum` option enabled "
                                 f"({type(optimizer).__name__} has neither 'momentum' nor 'betas'; pass "
                                 "cycle_momentum=False)")
            max_moms = _per_group("max_momentum", max_momentum, len(groups))
            base_moms = _per_group("base_momentum", base_momentum, len(groups))
        self.total_steps, self.pct_start, self.anneal_strategy = total, pct, anneal_strategy
        self.three_phase, self.cycle_momentum, self.hold = three_phase, cycle_momentum, hold
        if cycle_momentum:  # as torch's: no use_beta1 in the state without momentum cycling
            self.use_beta1 = "betas" in optimizer.defaults
        if last_epoch != -1:  # resuming: the keys come from the optimizer's state dict, as in torch
            self._check_resumable(groups, last_epoch)
        else:  # all checked: now the groups change
            for group, peak in zip(groups, max_lrs):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
            if cycle_momentum:
                for group, hi, lo in zip(groups, max_moms, base_moms):
                    self._set_momentum(group, hi)
                    group["max_momentum"], group["base_momentum"] = hi, lo
        super().__init__(optimizer, last_epoch)

    def _check_resumable(self, groups: list[dict], last_epoch: int) -> None:
        keys = ["initial_lr", "max_lr", "min_lr"] + (["max_momentum", "base_momentum"] if self.cycle_momentum else [])
        for i, group in enumerate(groups):
            missing = [k for k in keys if k not in group]
            if missing:
                raise KeyError(f"param {missing[0]!r} is not specified in param_groups[{i}] when resuming scheduler "
                               f"with last_epoch >= 0 (last_epoch={last_epoch}): load the optimizer's state dict, "
                               "saved with this schedule, before making the scheduler")
        self._check_step(last_epoch + 1)

    # ---- where the schedule is ---------------------------------------------------------------------
    @property
    def shape(self) -> TorchOneCycle:
        """The phases, as ``schedules.TorchOneCycle`` lays them out (made from the state, which a
        ``load_state_dict`` may change)."""
        return TorchOneCycle(self.total_steps, self.pct_start, self.anneal_strategy, three_phase=self.three_phase)

    def _check_step(self, step: int) -> None:
        if step > self.total_steps and not self.hold:
            raise ValueError(f"Tried to step {step} times. The specified number of total steps is {self.total_steps} "
                             "(pass hold=True to hold the final values past the end)")

    def _values(self, value: str) -> list[Any]:
        """Each group's LR (``value="lr"``) or momentum (``"mom"``) at ``last_epoch``, from the group's
        own keys, as torch's reads them."""
        self._check_step(self.last_epoch)
        shape = self.shape
        step = min(self.last_epoch, self.total_steps - 1) if self.hold else self.last_epoch
        phase, frac = shape.phase_at(step)
        start, end = (_KEYS[value].format(name) for name in shape.points(value)[phase])
        return [shape.anneal(group[start], group[end])(frac) for group in self.optimizer.param_groups]

    def _set_momentum(self, group: dict, value: Any) -> None:
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    # ---- torch's LRScheduler interface -------------------------------------------------------------
    def get_lr(self) -> list[Any]:
        """Each group's LR at ``last_epoch`` (no side effect: ``step()`` writes the momentum)."""
        return self._values("lr")

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (``epoch``: torch's deprecated jump to a step) and write LR and momentum.
        Past ``total_steps``: torch's "Tried to step" error, raised before anything moves, unless
        ``hold``."""
        self._check_step(self.last_epoch + 1 if epoch is None else epoch)
        super().step(epoch)
        if self.hold and self.last_epoch == self.total_steps + 1:  # once, at the first step held
            C.warn(f"OneCycleLR: stepped past total_steps={self.total_steps}: holding the final LR and momentum "
                   "from here on (hold=True); the loop takes more steps than the schedule was laid out for")
        if self.cycle_momentum:
            for group, mom in zip(self.optimizer.param_groups, self._values("mom")):
                self._set_momentum(group, mom)
