"""``Figure``: matplotlib's Figure that shows itself once in a notebook.

Plots here are made without pyplot (no global state, no GUI backend), so nothing registers the
inline backend's image formatter for them: returned as a cell's last value, a plain Figure shows
only its text, ``<Figure size 1100x720 with 3 Axes>``, unless the user imported pyplot first. This
subclass answers IPython's ``_repr_png_`` itself. Where the inline backend is active it also has a
PNG formatter for every Figure, and IPython asks one of the two for the one ``image/png`` output,
so the picture appears once either way; pyplot never holds these figures, so its end-of-cell flush
does not draw them a second time.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure as _Figure

__all__ = ["Figure", "NOTEBOOK_DPI"]

NOTEBOOK_DPI = 150  # sharp on a 2x screen at two thirds of the report's PNG size


class Figure(_Figure):
    """A ``matplotlib.figure.Figure`` with an IPython PNG representation."""

    def _repr_png_(self) -> tuple[bytes, dict[str, int]]:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=NOTEBOOK_DPI)
        # shown at 100 px an inch (the report's size); the notebook scales it to its column
        width, height = self.get_size_inches()
        return buf.getvalue(), {"width": round(width * 100), "height": round(height * 100)}
