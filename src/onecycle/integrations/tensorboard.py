"""TensorBoard: a callback logging every recorded scalar at each epoch end (the optional
``tensorboard`` extra; ``torch.utils.tensorboard`` is imported only when a writer is made)."""

from __future__ import annotations

import os
from typing import Any

from ..callbacks import Callback
from ..checks import import_extra, install_hint

__all__ = ["TensorBoardLogger", "tensorboard_writer", "check_tensorboard"]

INSTALL = install_hint("tensorboard")


def check_tensorboard() -> None:
    """``ImportError`` naming the extra to install when ``torch.utils.tensorboard`` cannot be imported."""
    import_extra("torch.utils.tensorboard", "tensorboard", "TensorBoard logging needs the tensorboard package")


def tensorboard_writer(log_dir: str | os.PathLike) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` logging into ``log_dir``."""
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(log_dir))


class TensorBoardLogger(Callback):
    """Logs every recorded scalar to TensorBoard at each epoch end: the epoch's iterations (LR per
    group, momentum, loss), per-step series (gradient statistics, trust ratios), and the epoch's
    losses, metrics and time. Only what is new since the last epoch, so a resumed run continues."""
    order = 200

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def before_fit(self, learn: Any) -> None:
        rec = learn.recorder  # already restored on a resume: start after what is there
        self._iters, self._epochs = len(rec.losses), rec.n_epochs
        self._series = {k: len(v) for k, v in rec.series.items()}

    def after_epoch(self, learn: Any) -> None:
        rec, add = learn.recorder, self.writer.add_scalar
        for i in range(self._iters, len(rec.losses)):
            for g, lrs in enumerate(rec.group_lrs):
                add(f"lr/group_{g}", lrs[i], i)
            if rec.moms[i] is not None:
                add("momentum", rec.moms[i], i)
            add("loss/train_iter", rec.losses[i], i)
        for name, values in rec.series.items():
            for i in range(self._series.get(name, 0), len(values)):
                add(name, values[i], i)
            self._series[name] = len(values)
        for e in range(self._epochs, rec.n_epochs):
            add("loss/train", rec.train_losses[e], e + 1)
            add("loss/valid", rec.val_losses[e], e + 1)
            for name in rec.metric_names:
                add(f"metrics/{name}", rec.metrics[name][e], e + 1)
            add("time/epoch_seconds", rec.times[e], e + 1)
        self._iters, self._epochs = len(rec.losses), rec.n_epochs
        self.writer.flush()

    def after_fit(self, learn: Any) -> None:
        self.writer.flush()
