"""Drop-ins for code written against other tools' signatures: the call site stays the same.

- ``OneCycleLR``: ``torch.optim.lr_scheduler.OneCycleLR``'s signature and behaviour (``scheduler.py``).
- ``lr_find``: the LR range test on a model and optimizer you already have, without a Learner
  (``finder.py``).

Re-exports only; no logic lives here.
"""

from .finder import lr_find
from .scheduler import OneCycleLR

__all__ = ["OneCycleLR", "lr_find"]
