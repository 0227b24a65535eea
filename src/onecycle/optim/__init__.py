"""Optimizers (SGD, LARS, LAMB), param-group helpers and the Scheduler for any torch optimizer."""

from .groups import DecoupledWeightDecay, get_hyper, layer_groups, normalized_wd, set_hyper, spread_lrs
from .lamb import LAMB
from .lars import LARS
from .scheduler import Scheduler
from .sgd import SGD

__all__ = ["SGD", "LARS", "LAMB", "Scheduler", "DecoupledWeightDecay", "get_hyper", "set_hyper", "layer_groups",
           "normalized_wd", "spread_lrs"]
