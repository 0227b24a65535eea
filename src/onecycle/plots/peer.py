"""torch-lr-finder's plot, for ``compat.LRFinder.plot``: the loss against the LR on one Axes, the
suggested point as a red dot with a legend, ``show_lr`` as a red vertical line, a log LR axis.

Unlike the rest of ``plots``, a figure made here (no ``ax`` given) comes from pyplot and is shown,
because that is the peer's contract: ``finder.plot()`` displays the plot (in a notebook or a window)
and returns the Axes, which does not display itself. Given an ``ax``, it only draws into it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["plot_range_test"]


def plot_range_test(lrs: Sequence[float], losses: Sequence[float], point: tuple[float, float] | None = None, *,
                    log_lr: bool = True, show_lr: float | None = None, ax: Any = None) -> Any:
    """Draw ``losses`` against ``lrs`` into ``ax`` (made and shown with pyplot when None) and return
    ``ax``. ``point``: the suggested ``(lr, loss)``, marked and named in a legend."""
    made = ax is None
    if made:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots()
    ax.plot(lrs, losses)
    if point is not None:
        ax.scatter(point[0], point[1], s=75, marker="o", color="red", zorder=3, label="steepest gradient")
        ax.legend()
    if log_lr:
        ax.set_xscale("log")
    ax.set_xlabel("Learning rate")
    ax.set_ylabel("Loss")
    if show_lr is not None:
        ax.axvline(x=show_lr, color="red")
    if made:
        plt.show()
    return ax
