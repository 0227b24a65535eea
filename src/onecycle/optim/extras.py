"""Optimizers from other packages, imported lazily (optional extras), and what a fit must know about an
optimizer beyond torch's interface.

- ``sfree_sgd``, ``sfree_adamw``: schedule-free SGD and AdamW (Defazio et al. 2024, "The Road Less
  Scheduled"; ``pip install 'onecycle[schedulefree]'``). They keep two points: gradients are taken
  at ``y`` (train mode), the average ``x`` is what evaluates best (eval mode); ``opt.train()``/
  ``opt.eval()`` swap which one sits in the model (``has_modes``; the Learner calls them).
- ``prodigy``: Prodigy (Mishchenko & Defazio 2023; ``pip install 'onecycle[prodigyopt]'``), an Adam
  that estimates its own step size ``d``; its ``lr`` multiplies ``d`` (1 is the authors' default).

What differs from torch's optimizers, and what a fit does about it:

- weight decay: each applies its own (``owns_weight_decay``), so the Learner's ``wd`` goes to the
  optimizer's ``weight_decay`` and not through its decoupled hook, which would decay only the train
  point of a schedule-free optimizer and ignore Prodigy's ``d``. Both decay as ``lr * wd * w`` (``d *
  lr * wd * w`` for Prodigy), biases included.
- momentum: an optimizer with train/eval modes manages its own. Its momentum (beta1) is the weight
  that interpolates between its two points, and ``train()``/``eval()`` convert with the value they find,
  so a momentum changed in between would move the weights: a momentum schedule is skipped, with a
  warning (``fit_momentum``). Prodigy's beta1 is an ordinary Adam momentum and is scheduled.
- LR: a schedule-free optimizer is meant to run at a constant LR after a warmup (``schedules.wsd(
  warmup_pct, 0)``, or its own ``warmup_steps``); a decaying LR schedule is applied, with a warning.
  Prodigy takes one LR for every param group (its ``d`` is shared): per-group LRs are refused.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import checks as C

__all__ = ["EXTRAS", "SCHEDULE_FREE", "install_hint", "missing", "has_modes", "owns_weight_decay", "single_lr",
           "check_lrs", "fit_momentum", "check_schedule_free_lr", "prepare_fit", "sfree_sgd", "sfree_adamw", "prodigy"]

# Optimizer name -> (the module it comes from, the extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "sfree_sgd": ("schedulefree", "schedulefree"),
    "sfree_adamw": ("schedulefree", "schedulefree"),
    "prodigy": ("prodigyopt", "prodigyopt"),
}
SCHEDULE_FREE = frozenset({"sfree_sgd", "sfree_adamw"})  # names of optimizers with train/eval modes


def install_hint(name: str) -> str:
    module, extra = EXTRAS[name]
    return f"optimizer {name!r} needs the {module} package: {C.install_hint(extra)}"


def missing(name: str) -> str | None:
    """What to install for optimizer ``name``, or None when it needs nothing missing."""
    if name not in EXTRAS:
        return None
    try:
        found = importlib.util.find_spec(EXTRAS[name][0]) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else install_hint(name)


def _module(name: str) -> Any:
    module, extra = EXTRAS[name]
    return C.import_extra(module, extra, f"optimizer {name!r} needs the {module} package")


# ---- the factories (param_groups, lr) -> Optimizer; the fit sets the LR, the Learner the weight decay --
def sfree_sgd(params: list[dict], lr: float) -> torch.optim.Optimizer:
    return _module("sfree_sgd").SGDScheduleFree(params, lr=lr, momentum=0.9)


def sfree_adamw(params: list[dict], lr: float) -> torch.optim.Optimizer:
    return _module("sfree_adamw").AdamWScheduleFree(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def prodigy(params: list[dict], lr: float) -> torch.optim.Optimizer:
    # safeguard_warmup: the authors' advice with a warm-up schedule, and every schedule here but
    # const (and the LR finder's sweep) starts low.
    return _module("prodigy").Prodigy(params, lr=lr, safeguard_warmup=True)


# ---- what a fit must know ----------------------------------------------------------------------------
def has_modes(opt: object) -> bool:
    """Whether ``opt`` has train/eval modes (schedule-free optimizers)."""
    return opt is not None and callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None))


def single_lr(opt: object) -> bool:
    """Whether ``opt`` takes one LR for all its param groups (Prodigy: its ``d`` is shared)."""
    module = sys.modules.get("prodigyopt")  # not imported: opt cannot be one of its optimizers
    return module is not None and isinstance(opt, module.Prodigy)


def owns_weight_decay(opt: object) -> bool:
    """Whether ``opt`` applies weight decay itself (its ``weight_decay`` key): LARS, LAMB (their
    ``applies_weight_decay``), schedule-free optimizers, Prodigy."""
    return bool(getattr(opt, "applies_weight_decay", False)) or has_modes(opt) or single_lr(opt)


def check_lrs(opt: torch.optim.Optimizer, lrs: Sequence[float], name: str = "lr") -> None:
    """``ValueError`` when ``opt`` takes one LR and the groups' ``lrs`` differ."""
    if single_lr(opt) and len(set(lrs)) > 1:
        raise ValueError(f"{name}: {type(opt).__name__} takes one LR for every param group (its step size d is "
                         f"shared), got {[float(v) for v in lrs]}: pass a single number")


def fit_momentum(opt: torch.optim.Optimizer, mom_sched: Callable | None) -> Callable | None:
    """The momentum schedule a fit applies: none for an optimizer that manages its own (warned)."""
    if mom_sched is None or not has_modes(opt):
        return mom_sched
    C.warn(f"{type(opt).__name__} manages its own momentum (with train/eval modes, its momentum interpolates "
           "between the point gradients are taken at and the average it evaluates; changing it between the two "
           "would move the weights): the momentum schedule is skipped")
    return None


def check_schedule_free_lr(opt: torch.optim.Optimizer, lr_sched: Callable[[float], float], points: int = 21) -> None:
    """A warning when an optimizer with modes gets an LR schedule that decays: it is meant to run at
    a constant LR after a warmup. The schedule is applied as given."""
    if not has_modes(opt):
        return
    values = [float(lr_sched(i / (points - 1))) for i in range(points)]
    peak = max(range(points), key=values.__getitem__)
    low = min(range(peak, points), key=values.__getitem__)
    if values[low] < values[peak] * (1 - 1e-9):
        C.warn(f"{type(opt).__name__} is schedule-free: it averages its iterates and is meant to run at a constant "
               f"LR after a warmup, and this LR schedule decays (x{values[peak]:.3g} at {peak / (points - 1):.0%} "
               f"of training, x{values[low]:.3g} at {low / (points - 1):.0%}); applied as given. "
               "schedules.wsd(warmup_pct, 0) is a warmup then constant")


def prepare_fit(opt: torch.optim.Optimizer, peaks: Sequence[float], lr_sched: Callable[[float], float],
                mom_sched: Callable | None) -> Callable | None:
    """A fit's checks for ``opt``, before anything changes: one LR for Prodigy (``check_lrs``), a
    warning for a decaying LR on a schedule-free optimizer; returns the momentum schedule to apply
    (``fit_momentum``)."""
    check_lrs(opt, peaks)
    check_schedule_free_lr(opt, lr_sched)
    return fit_momentum(opt, mom_sched)
