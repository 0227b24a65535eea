"""The fastai 0.7 spellings of the seed forum thread, added to the Learner as thin aliases.

``onecycle.Learner`` is this module's ``Learner``: the core ``learner.Learner`` (which knows nothing
of fastai 0.7) plus:

- ``learn.fit(lr, n_cycle, cycle_len=E, use_clr_beta=(div, pct, mom_max, mom_min))``: 1cycles in
  fastai 0.7's linear three-phase shape; ``learn.fit(lr, epochs)``: a constant LR; ``cycle_len``
  alone: cosine annealing restarting every cycle (SGDR).
- ``learn.lr_find2(start_lr, end_lr, num_it, linear=False, stop_dv=True)``: ``lr_find`` with the
  fastai 0.7 defaults and argument names.
- ``learn.sched``: the history as fastai 0.7 showed it (``sched.plot()``, ``sched.plot_lr()``,
  ``sched.val_losses``, ``sched.rec_metrics``): the recorder after a fit, the finder's curves
  right after ``lr_find2`` (until the next fit).
- ``learn.opt_fn = oc.optim.LARS``: the optimizer factory (``learn.opt_func``).

Nothing else in the library uses these names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import checks as C
from . import learner
from . import schedules as S
from .loop import batches_per_epoch, steps_for
from .lr_find_result import LRFindResult

__all__ = ["Learner", "Sched"]


class Sched:
    """fastai 0.7's ``learn.sched``: a recorder (or an LR finder result) seen through the names
    fastai 0.7 gave it. Every attribute of the history reads through (``lrs``, ``losses``,
    ``val_losses``, ``plot_lr()``...); ``rec_metrics`` and ``plot`` are fastai 0.7's."""

    def __init__(self, history: Any) -> None:
        self.history = history

    def __getattr__(self, name: str) -> Any:  # only for names Sched itself lacks
        return getattr(self.history, name)

    def __repr__(self) -> str:
        return f"Sched({self.history!r})"

    @property
    def rec_metrics(self) -> list[list[float]]:
        """Per epoch (or finder iteration), the list of metric values."""
        return [list(v) for v in zip(*self.history.metrics.values())]

    def plot(self, n_skip: int = 0, n_skip_end: int = 0, **kw: Any) -> Any:
        """fastai 0.7's ``sched.plot()``: after ``lr_find2`` the loss against the LR (``n_skip`` and
        ``n_skip_end`` steps left out); after a fit the losses against iterations."""
        if isinstance(self.history, LRFindResult):
            return self.history.plot(n_skip=n_skip, n_skip_end=n_skip_end, **kw)
        return self.history.plot_losses(skip_start=n_skip, **kw)


class Learner(learner.Learner):
    """The Learner (``learner.Learner``) with the fastai 0.7 spellings of the seed thread."""

    _found: tuple[LRFindResult, Any] | None = None  # lr_find2's result, and the loop it came after

    @property
    def sched(self) -> Sched:
        """The recorder, or the finder's result right after ``lr_find2`` (until the next fit)."""
        if self._found is not None and self._found[1] is self.loop:
            return Sched(self._found[0])
        return Sched(self.recorder)

    @property
    def opt_fn(self) -> str | Callable:
        return self.opt_func

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
            steps = steps_for(batches_per_epoch(self.train_dl, self.accum, kw.get("steps_per_epoch")), self.accum)
            policy = S.clr_beta(cycle_len * steps, *use_clr_beta)
            lr_sched, mom_sched = S.repeat(policy.lr, n_cycle), policy.mom and S.repeat(policy.mom, n_cycle)
        elif sgdr:
            lr_sched, mom_sched = S.repeat(S.cos(1.0, 0.0), n_cycle), None
        else:
            lr_sched, mom_sched = S.const(1.0), None
        return self.fit_sched(n_cycle * cycle_len, lr, lr_sched, mom_sched, **kw)

    def lr_find2(self, start_lr: Any = 1e-5, end_lr: Any = 10.0, num_it: int = 100, wds: Any = None,
                 linear: bool = False, stop_dv: bool = True, **kw: Any) -> LRFindResult:
        """fastai 0.7's ``lr_find2``; afterwards ``learn.sched`` holds the finder's curves (per
        iteration ``val_losses`` and ``rec_metrics``; ``sched.plot()``)."""
        res = self.lr_find(start_lr, end_lr, num_it, step_mode="linear" if linear else "exp",
                           stop_div=stop_dv, wd=wds, **kw)
        self._found = (res, self.loop)
        return res
