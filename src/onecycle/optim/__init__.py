"""Optimizers (LARS, LAMB), param-group helpers, the Scheduler for any torch optimizer, and the
optimizers the Learner builds by name (``OPTIMIZERS``)."""

from collections.abc import Callable

import torch

from .groups import DecoupledWeightDecay, get_hyper, layer_groups, normalized_wd, set_hyper, spread_lrs
from .lamb import LAMB
from .lars import LARS
from .scheduler import Scheduler

__all__ = ["LARS", "LAMB", "Scheduler", "DecoupledWeightDecay", "get_hyper", "set_hyper", "layer_groups",
           "normalized_wd", "spread_lrs", "OPTIMIZERS"]


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


# The Learner's optimizers by name: factories (param_groups, lr) -> Optimizer.
OPTIMIZERS: dict[str, Callable[[list[dict], float], torch.optim.Optimizer]] = {
    "sgd": _sgd, "adam": _adamw, "adamw": _adamw, "lars": _lars, "lamb": _lamb,
}
