"""Drop-ins for code written against other tools' signatures: the call site stays the same.

- ``OneCycleLR``: ``torch.optim.lr_scheduler.OneCycleLR``'s signature and behaviour (``scheduler.py``).
- ``LRFinder`` (with ``TrainDataLoaderIter``, ``ValDataLoaderIter``): torch-lr-finder's
  (``torch_lr_finder.py``).
- ``lr_find``: the LR range test on a model and optimizer you already have, without a Learner
  (``finder.py``).

Re-exports only; no logic lives here.
"""

from .finder import lr_find
from .scheduler import OneCycleLR
from .torch_lr_finder import DataLoaderIter, LRFinder, TrainDataLoaderIter, ValDataLoaderIter

__all__ = ["OneCycleLR", "LRFinder", "DataLoaderIter", "TrainDataLoaderIter", "ValDataLoaderIter", "lr_find"]
