"""Optimizers (LARS, LAMB), param-group helpers, the Scheduler for any torch optimizer, and the
optimizers the Learner builds by name (``OPTIMIZERS``), those of other packages included as optional
extras imported only when built (``extras.py``: schedule-free SGD and AdamW, Prodigy)."""

from collections.abc import Callable

import torch

from . import extras
from .groups import DecoupledWeightDecay, freeze_groups, get_hyper, layer_groups, normalized_wd, set_hyper, spread_lrs
from .lamb import LAMB
from .lars import LARS
from .scheduler import Scheduler

__all__ = ["LARS", "LAMB", "Scheduler", "DecoupledWeightDecay", "get_hyper", "set_hyper", "layer_groups",
           "normalized_wd", "spread_lrs", "freeze_groups", "OPTIMIZERS", "optimizer_factory", "build_optimizer"]


def _sgd(params: list[dict], lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=True)


def _adamw(params: list[dict], lr: float) -> torch.optim.Optimizer:
    # beta2 0.99 and eps 1e-5 (fastai's choice): with 0.999/1e-8 the second moment lags the large
    # early-cycle gradients and tiny denominators late in the cycle blow steps up (the seed's
    # "diverges once out of two"). Weight decay is applied decoupled by the Learner's hook.
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.0, foreach=True)


def _lars(params: list[dict], lr: float) -> torch.optim.Optimizer:
    return LARS(params, lr=lr, momentum=0.9)


def _lamb(params: list[dict], lr: float) -> torch.optim.Optimizer:
    return LAMB(params, lr=lr, betas=(0.9, 0.99), eps=1e-6)


# The Learner's optimizers by name: factories (param_groups, lr) -> Optimizer. Those of optional
# extras (extras.EXTRAS) import their package when called.
OPTIMIZERS: dict[str, Callable[[list[dict], float], torch.optim.Optimizer]] = {
    "sgd": _sgd, "adam": _adamw, "adamw": _adamw, "lars": _lars, "lamb": _lamb,
    "sfree_sgd": extras.sfree_sgd, "sfree_adamw": extras.sfree_adamw, "prodigy": extras.prodigy,
}


def optimizer_factory(opt: str | Callable) -> str | Callable:
    """A name in ``OPTIMIZERS`` (lower-cased) or a factory ``(param_groups, lr) -> Optimizer``. A name
    whose package is not installed is an ``ImportError`` naming the extra to install."""
    if isinstance(opt, str):
        if opt.lower() not in OPTIMIZERS:
            raise ValueError(f"opt must be one of {sorted(OPTIMIZERS)} or a factory, got {opt!r}")
        hint = extras.missing(opt.lower())
        if hint is not None:
            raise ImportError(hint)
        return opt.lower()
    if not callable(opt):
        raise TypeError(f"opt must be a name or a factory (params, lr) -> Optimizer, got {opt!r}")
    return opt


def build_optimizer(opt: str | Callable, groups: list[list[torch.nn.Parameter]]) -> torch.optim.Optimizer:
    """The optimizer ``opt`` names (or makes) over ``groups``, one param group each."""
    factory = OPTIMIZERS[opt] if isinstance(opt, str) else opt
    made = factory([{"params": g} for g in groups], 1e-3)
    if not isinstance(made, torch.optim.Optimizer):
        raise TypeError(f"the optimizer factory returned {type(made).__name__}, not an Optimizer")
    if len(made.param_groups) != len(groups):
        raise ValueError(f"the optimizer factory made {len(made.param_groups)} param groups "
                         f"from {len(groups)} layer groups")
    return made
