"""The fastai 0.7 spellings of the seed forum thread, as thin aliases over the modern API.

- ``learn.fit(lr, n_cycle, cycle_len=E, use_clr_beta=(div, pct, mom_max, mom_min))``: 1cycles in
  fastai 0.7's linear three-phase shape; ``learn.fit(lr, epochs)``: a constant LR; ``cycle_len``
  alone: cosine annealing restarting every cycle (SGDR).
- ``learn.lr_find2(start_lr, end_lr, num_it, linear=False, stop_dv=True)``: ``lr_find`` with the
  fastai 0.7 defaults and argument names; ``learn.sched`` is then its result.
- ``learn.sched``: the recorder after a fit (``sched.plot()``, ``sched.val_losses``,
  ``sched.rec_metrics``), the finder's result after ``lr_find2``.
- ``rec_metrics``: per epoch (or per finder iteration), the list of metric values.
- ``learn.opt_fn = oc.optim.LARS``: the optimizer factory (``learn.opt_func``).

Nothing else in the library uses these names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import checks as C
from . import schedules as S

__all__ = ["Fastai07Learner", "Fastai07History"]


class Fastai07History:
    """``rec_metrics`` for anything with a ``metrics`` dict of name -> per-step values."""

    metrics: dict[str, list[float]]

    @property
    def rec_metrics(self) -> list[list[float]]:
        """fastai 0.7's layout: per epoch (or finder iteration), the list of metric values."""
        return [list(v) for v in zip(*self.metrics.values())]


class Fastai07Learner:
    """The Learner's fastai 0.7 methods and attributes (mixed into ``Learner``)."""

    _sched: Any = None

    @property
    def sched(self) -> Any:
        """The recorder, or the finder's result right after ``lr_find2``."""
        return self._sched if self._sched is not None else self.recorder  # type: ignore[attr-defined]

    @property
    def opt_fn(self) -> str | Callable:
        return self.opt_func  # type: ignore[attr-defined]

    @opt_fn.setter
    def opt_fn(self, value: str | Callable) -> None:
        self.opt_func = value

    def fit(self, lr: float | Sequence[float] | slice, n_cycle: int = 1, cycle_len: int | None = None,
            use_clr_beta: Sequence[float] | None = None, **kw: Any) -> Any:
        """fastai 0.7's ``fit``: ``fit(lr, epochs)`` trains at a constant LR;
        ``fit(lr, n_cycle, cycle_len=E, use_clr_beta=(div, pct[, mom_max, mom_min]))`` runs
        ``n_cycle`` 1cycles of ``E`` epochs each; ``cycle_len`` alone runs cosine annealing
        restarting every cycle (SGDR). Other keywords go to ``fit_sched``."""
        n_cycle = C.check_int("n_cycle", n_cycle, 1)
        if use_clr_beta is not None and cycle_len is None:
            raise ValueError("use_clr_beta needs cycle_len (epochs per cycle), got cycle_len=None")
        sgdr = cycle_len is not None
        cycle_len = 1 if cycle_len is None else C.check_int("cycle_len", cycle_len, 1)
        if use_clr_beta is not None:
            if not isinstance(use_clr_beta, (tuple, list)) or len(use_clr_beta) not in (2, 4):
                raise ValueError(f"use_clr_beta must be (div, pct) or (div, pct, mom_max, mom_min), "
                                 f"got {use_clr_beta!r}")
            steps = -(-self._batches_per_epoch(kw.get("steps_per_epoch")) // self.accum)  # type: ignore[attr-defined]
            policy = S.clr_beta(cycle_len * steps, *use_clr_beta)
            lr_sched, mom_sched = S.repeat(policy.lr, n_cycle), policy.mom and S.repeat(policy.mom, n_cycle)
        elif sgdr:
            lr_sched, mom_sched = S.repeat(S.cos(1.0, 0.0), n_cycle), None
        else:
            lr_sched, mom_sched = S.const(1.0), None
        return self.fit_sched(n_cycle * cycle_len, lr, lr_sched, mom_sched, **kw)  # type: ignore[attr-defined]

    def lr_find2(self, start_lr: Any = 1e-5, end_lr: Any = 10.0, num_it: int = 100, wds: Any = None,
                 linear: bool = False, stop_dv: bool = True, **kw: Any) -> Any:
        """fastai 0.7's ``lr_find2``; afterwards ``learn.sched`` holds the finder's curves (per
        iteration ``val_losses`` and ``rec_metrics``; ``sched.plot()``)."""
        res = self.lr_find(start_lr, end_lr, num_it, step_mode="linear" if linear else "exp",  # type: ignore
                           stop_div=stop_dv, wd=wds, **kw)
        self._sched = res
        return res
