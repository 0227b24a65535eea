"""onecycle: super-convergence made practical on plain PyTorch.

Re-exports the public API; no logic lives here. Heavy optional modules (plots, data, the CLI) are
imported only when used.
"""

from . import metrics, optim, schedules
from .callbacks import Callback, CancelFit, GradStats
from .compat import LRFinder, lr_find
from .learner import default_device
from .legacy import Learner
from .lr_find_result import LRFindResult
from .optim import OPTIMIZERS
from .optim.groups import get_hyper, set_hyper
from .optim.scheduler import Scheduler
from .recorder import Recorder

__version__ = "0.1.0"

__all__ = [
    "Learner", "LRFindResult", "LRFinder", "lr_find", "OPTIMIZERS", "default_device", "Callback", "CancelFit",
    "GradStats", "Recorder", "Scheduler", "get_hyper", "set_hyper", "metrics", "optim", "schedules", "__version__",
]
