"""Every matplotlib import lives in this package; each function draws recorded data and returns a
``matplotlib.figure.Figure`` (no pyplot: no global state, no GUI backend, fine in worker processes),
saved at 2x when given a path (``save_figure``: a 2200-px PNG, or SVG by the file's suffix).

Inputs are plain data read by field name: a Recorder or its ``state_dict()``, an ``LRFindResult`` or its
``to_dict()``; nothing here imports the recorder, the finder or the learner. ``common`` holds what every
plot shares (the figure, the epoch axis), ``history`` one run's plots, ``finder`` the LR range test's,
``compare`` several runs'. This module only re-exports them: ``from onecycle import plots;
plots.plot_finder(result)``.
"""

from .common import DPI, WIDTH, iteration_epochs, momentum_label, save_figure
from .compare import plot_finder_overlay, plot_overlay, plot_seed_dots
from .finder import finder_ylim, plot_finder
from .history import plot_dashboard, plot_losses, plot_lr, plot_metrics, plot_series

__all__ = ["plot_lr", "plot_losses", "plot_metrics", "plot_dashboard", "plot_series", "plot_finder", "plot_overlay",
           "plot_seed_dots", "plot_finder_overlay", "save_figure", "iteration_epochs", "finder_ylim", "momentum_label",
           "WIDTH", "DPI"]
