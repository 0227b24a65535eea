"""``torch.backends.cudnn.benchmark`` during fits: set on CUDA for as long as a fit runs, the
setting found before restored when the last running fit ends (``cudnn_benchmark``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ["cudnn_benchmark"]


# torch.backends.cudnn.benchmark is process-wide: fits running at once (threads, or lr_find inside a
# fit) share it. The setting found by the first is restored when the last ends; in between, the
# latest still running has its way.
_CUDNN_LOCK = threading.Lock()
_cudnn_active: dict[object, bool] = {}  # the setting each running fit wants, oldest first
_cudnn_saved = [False]


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device, want: bool | None = None) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` set to ``want`` on CUDA (None: on unless
    ``torch.backends.cudnn.deterministic`` or ``torch.use_deterministic_algorithms`` asks for
    determinism), the previous setting restored afterwards; elsewhere nothing. Fits run inside it."""
    if torch.device(device).type != "cuda":
        yield
        return
    if want is None:
        want = not (torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled())
    token = object()
    with _CUDNN_LOCK:
        if not _cudnn_active:
            _cudnn_saved[0] = torch.backends.cudnn.benchmark
        _cudnn_active[token] = torch.backends.cudnn.benchmark = want
    try:
        yield
    finally:
        with _CUDNN_LOCK:
            del _cudnn_active[token]
            torch.backends.cudnn.benchmark = next(reversed(_cudnn_active.values()), _cudnn_saved[0])
