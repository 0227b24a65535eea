"""Exact resume: what a training checkpoint holds, and the checks made before continuing.

A training checkpoint is taken only at an optimizer-step boundary (never inside an accumulation
window) and holds everything the rest of the run depends on: model, optimizer, scheduler position,
GradScaler, recorder history, the part of the current epoch already recorded, every RNG now *and*
as it was when the epoch began, and the fit's signature. A resume into a different fit (epochs,
batches, schedules, param layout...) is refused before step one.

"Every RNG" is the global ones (torch, CUDA, numpy, random) and the generators the training loader
draws from (``checkpoint.loader_generators``: its own, its sampler's, its batch sampler's sampler's).
A DataLoader draws its shuffle and its workers' base seed from those when its iterator is made, so
resuming mid-epoch replays the epoch-start RNG, makes the iterator, skips the batches already
trained on, then restores the RNG of the checkpoint moment (:func:`batches_to_replay`). A loader
that keeps its own position (``state_dict``/``load_state_dict``, e.g. torchdata's
``StatefulDataLoader``) and loads in the main process is not replayed: its mid-epoch
``state_dict()`` is saved with the checkpoint and loaded before the iterator is made, so it resumes
where it stopped without reading the skipped batches again (and a stateful dataset resumes too).
Its generators are still replayed and restored around it: samplers that torchdata cannot restore
are fast-forwarded from them. With ``num_workers > 0`` it is replayed like any loader: torchdata's
snapshot does not hold what the workers' RNGs had drawn, which a replay repeats exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .checkpoint import get_rng_state, safe_load
from .distributed import gather_to_rank0
from .optim.groups import named_layout

if TYPE_CHECKING:
    from .learner import Learner

__all__ = ["FORMAT", "CKPT_NAME", "signature", "check_consistent", "capture", "load_for_resume", "pack_floats",
           "unpack_floats", "rng_loaders", "loader_position", "batches_to_replay",
           "NonFiniteLossError", "TrainingInterrupted"]

FORMAT = "onecycle-train-state"
CKPT_NAME = "last.ckpt"
# What reschedule=True lets change: the shape of the run, not the model.
RESCHEDULABLE = frozenset({"epochs", "batches_per_epoch", "steps_per_epoch", "batch_size", "schedules", "peaks",
                           "accum"})


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite; no update was applied with it."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at a clean point (after a step or an epoch)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"training interrupted by signal {signum}")
        self.signum = signum


def signature(learn: Learner, epochs: int) -> dict[str, Any]:
    """What must match between a checkpoint and the fit resuming from it."""
    sched = learn.scheduler
    return {
        "epochs": epochs,
        "batches_per_epoch": len(learn.train_dl),
        "steps_per_epoch": learn._steps_per_epoch(),
        "batch_size": getattr(learn.train_dl, "batch_size", None),
        "accum": learn.accum,
        "schedules": {k: repr(v) for k, v in sched.scheds.items()},
        "peaks": {k: list(v) for k, v in sched.base.items()},
        "layout": [[[name, list(shape)] for name, shape in g]
                   for g in named_layout(learn.model, learn.layer_groups())],
        "world_size": learn.world_size,
    }


def check_consistent(saved: dict[str, Any], now: dict[str, Any], reschedule: bool) -> None:
    """Raise ``ValueError`` naming the first setting that differs, old and new values (the
    model's layout first: no reschedule can bridge it)."""
    for key in sorted(now, key=lambda k: k in RESCHEDULABLE):
        value = now[key]
        old = saved.get(key)
        if old == value or (reschedule and key in RESCHEDULABLE):
            continue
        hint = " (pass reschedule=True to continue with the new setting)" if key in RESCHEDULABLE else ""
        raise ValueError(f"cannot resume: {key} differs: checkpoint has {old!r}, this fit has {value!r}{hint}")


def pack_floats(obj: Any) -> Any:
    """``obj`` with every non-empty list of Python floats turned into a float64 tensor: one buffer
    to pickle (and none to walk) instead of an object per float, so a long run's history does not
    dominate every write. Exact: a Python float is a float64. ``unpack_floats`` reverses it."""
    if isinstance(obj, dict):
        return {k: pack_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and all(type(x) is float for x in obj):
            return torch.from_numpy(np.array(obj, dtype=np.float64))  # 4x faster than torch.tensor
        return [pack_floats(v) for v in obj]
    return obj


def unpack_floats(obj: Any) -> Any:
    """The plain data ``pack_floats`` was given (its only tensors are the packed lists)."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: unpack_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack_floats(v) for v in obj]
    return obj


def rng_loaders(learn: Learner) -> dict[str, Any]:
    """The loaders whose generators a training checkpoint captures and restores (named for errors)."""
    return {"train_dl": learn.train_dl}


def _keeps_position(dl: Any) -> bool:
    """Whether ``dl`` resumes from its own position: it has ``state_dict``/``load_state_dict`` and
    loads in this process. With worker processes torchdata's snapshot restores the order but not
    what the workers' RNGs had drawn (random augmentations would differ), so those are replayed."""
    return (callable(getattr(dl, "state_dict", None)) and callable(getattr(dl, "load_state_dict", None))
            and not getattr(dl, "num_workers", 0))


def loader_position(dl: Any, batch: int) -> Any:
    """``dl.state_dict()`` mid-epoch (``batch > 0``) for a loader that keeps its own position; else
    None. Never asked at an epoch's end: there is no position to keep, and loading a finished one
    would make (and drop) an extra iterator, drawing from the RNGs the next epoch needs."""
    return dl.state_dict() if batch > 0 and _keeps_position(dl) else None


def batches_to_replay(dl: Any, pending: dict[str, Any]) -> int:
    """Called on a mid-epoch resume after the epoch-start RNG is back and before ``iter(dl)``: loads
    the loader's saved position when there is one (and it can take it) and returns 0, else returns
    the number of batches to draw and drop (those already trained on)."""
    position = pending.get("loader")
    if position is not None and _keeps_position(dl):
        dl.load_state_dict(position)
        return 0
    return len(pending["partial"]["moms"])


def capture(learn: Learner, epoch: int, batch: int, partial: dict[str, Any] | None) -> dict[str, Any] | None:
    """The full training state at (``epoch``, next ``batch``). Model, optimizer and schedule are
    the same on every data-parallel rank; RNG and the epoch's recorded part are per rank, gathered
    to rank 0 (the other ranks get None)."""
    learn._flush_series()
    local = {"rng": get_rng_state(rng_loaders(learn)), "epoch_rng": learn._epoch_rng if batch > 0 else None,
             "partial": partial, "loader": loader_position(learn.train_dl, batch)}
    ranks = gather_to_rank0(local)
    if ranks is None:
        return None
    return {
        "format": FORMAT, "version": 1,
        "signature": learn._signature,
        "position": {"epoch": epoch, "batch": batch, "step": learn.scheduler.step_count},
        "model": learn.model.state_dict(),
        "opt": learn.opt.state_dict(),
        "scheduler": learn.scheduler.state_dict(),
        "scaler": learn.scaler.state_dict() if learn.scaler is not None else None,
        "recorder": pack_floats(learn.recorder.state_dict()),
        "ranks": ranks,
        "nan_skipped": learn.nan_skipped,
    }


def save(learn: Learner, state: dict[str, Any]) -> Path:
    """Hand ``state`` to the Learner's background writer (``wait_for_writes`` makes it durable)."""
    path = Path(learn.checkpoint_dir) / CKPT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    learn._ckpt_writer.save(state, path)
    return path


def wait_for_writes(learn: Learner, failure: BaseException | None = None) -> None:
    """Block until the last checkpoint is on disk. Its write error is raised, or, when ``failure``
    is already propagating, attached to it as a note."""
    try:
        learn._ckpt_writer.wait()
    except Exception as err:
        if failure is None:
            raise
        failure.add_note(f"onecycle: writing the last checkpoint also failed: {type(err).__name__}: {err}")


def load_for_resume(folder: str | os.PathLike, resume: bool | str) -> dict[str, Any] | None:
    """The checkpoint in ``folder``; ``resume="auto"`` returns None when there is none."""
    path = Path(folder) / CKPT_NAME
    if not path.exists():
        if resume == "auto":
            return None
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {path}; "
                                "pass resume='auto' to start fresh when none exists")
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a onecycle training checkpoint")
    return state
