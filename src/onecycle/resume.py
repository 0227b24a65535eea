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
trained on, then restores the RNG of the checkpoint moment (:func:`batches_to_replay`). Workers that
persist across epochs (``persistent_workers=True``) are the exception: they are seeded once, as the
first epoch begins, so a resume at a later epoch starts them afresh and warns that random numbers
drawn in them differ from there on. A loader
that keeps its own position (``state_dict``/``load_state_dict``, e.g. torchdata's
``StatefulDataLoader``) and loads in the main process is not replayed: its mid-epoch
``state_dict()`` is saved with the checkpoint and loaded before the iterator is made, so it resumes
where it stopped without reading the skipped batches again (and a stateful dataset resumes too).
Its generators are still replayed and restored around it: samplers that torchdata cannot restore
are fast-forwarded from them. With ``num_workers > 0`` it is replayed like any loader: torchdata's
snapshot does not hold what the workers' RNGs had drawn, which a replay repeats exactly.

``checkpointer.Checkpointer`` is the part of a fit that writes these, resumes from them, and stops
cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import inspect
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import distributed as D
from .checkpoint import safe_load
from .optim.groups import named_layout
from .rng import get_rng_state

if TYPE_CHECKING:
    from .learner import Learner
    from .loop import Loop

__all__ = ["FORMAT", "CKPT_NAME", "signature", "describe_schedule", "check_consistent", "capture", "load_for_resume",
           "pack_floats", "unpack_floats", "rng_loaders", "loader_position", "batches_to_replay"]

FORMAT = "onecycle-train-state"
CKPT_NAME = "last.ckpt"
# What reschedule=True lets change: the shape of the run, not the model.
RESCHEDULABLE = frozenset({"epochs", "batches_per_epoch", "steps_per_epoch", "batch_size", "schedules", "peaks",
                           "accum"})


def signature(loop: Loop) -> dict[str, Any]:
    """What must match between a checkpoint and the fit resuming from it."""
    learn, sched = loop.learn, loop.scheduler
    return {
        "epochs": loop.n_epochs,
        "batches_per_epoch": loop.batches,
        "steps_per_epoch": loop.steps_per_epoch,
        "batch_size": getattr(learn.train_dl, "batch_size", None),
        "accum": loop.accum,
        "schedules": {k: describe_schedule(v) for k, v in sched.scheds.items()},
        "peaks": {k: list(v) for k, v in sched.base.items()},
        "layout": [[[name, list(shape)] for name, shape in g]
                   for g in named_layout(learn.model, learn.layer_groups())],
        "world_size": learn.world_size,
    }


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_schedule(fn: Any) -> str:
    """What identifies a schedule across processes. Its repr, when that names its values (onecycle's
    schedules do: ``Cos(start=1.0, end=0.0)``); for a function (a lambda too), its name and a digest
    of its code (the bytecode's instructions and constants, through ``dis``) and of the values it
    reads (closure cells, globals, defaults; a bound method's object and a callable object by their
    attributes), so a changed constant is a changed schedule. The digest depends on the Python
    version: a resume under another Python needs ``reschedule=True``."""
    text = repr(fn)
    if not _ADDRESS.search(text):
        return text
    digest = hashlib.sha256(_code_text(fn).encode()).hexdigest()[:16]
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{name} (code {digest})"


def _code_text(obj: Any, depth: int = 0) -> str:
    """A description of ``obj``'s behaviour without memory addresses or line numbers."""
    if depth > 4:
        return "..."
    if isinstance(obj, functools.partial):
        return f"partial({_code_text(obj.func, depth + 1)}, {_value_text(obj.args, depth)}, " \
               f"{_value_text(obj.keywords, depth)})"
    if inspect.ismethod(obj):
        return f"{_code_text(obj.__func__, depth + 1)} of {_value_text(obj.__self__, depth)}"
    if inspect.isfunction(obj):
        code = " ".join(f"{i.opname} {_ADDRESS.sub('', i.argrepr)}" for i in dis.get_instructions(obj))
        seen = inspect.getclosurevars(obj)
        values = {**seen.nonlocals, **seen.globals}
        defaults = {k: p.default for k, p in inspect.signature(obj).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        return (f"{obj.__qualname__}: {code}; values " + _value_text(dict(sorted(values.items())), depth)
                + "; defaults " + _value_text(defaults, depth))
    if callable(obj):  # an object with __call__: its class's code and its own attributes
        call = type(obj).__call__
        return f"{type(obj).__qualname__}({_value_text(_attributes(obj), depth)}): " + (
            _code_text(call, depth + 1) if inspect.isfunction(call) else "")
    return _value_text(obj, depth)


def _attributes(obj: Any) -> dict[str, Any]:
    """An object's own attributes: its ``__dict__`` and its slots."""
    slots = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ()) if hasattr(obj, n)]
    return {**{n: getattr(obj, n) for n in slots}, **getattr(obj, "__dict__", {})}


def _value_text(value: Any, depth: int) -> str:
    if depth > 4:  # (values can hold themselves: an object's method among its attributes)
        return "..."
    if inspect.ismodule(value):
        return f"module {value.__name__}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_value_text(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(v, depth + 1) for v in value) + "]"
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    if callable(value):
        return _code_text(value, depth + 1)
    text = repr(value)
    if _ADDRESS.search(text):  # object's own repr, which names no state: its class and attributes instead
        return f"{type(value).__qualname__}({_value_text(_attributes(value), depth + 1)})"
    return text


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


def capture(loop: Loop, epoch: int, batch: int) -> dict[str, Any] | None:
    """The full training state at (``epoch``, next ``batch``). Model, optimizer and schedule are
    the same on every data-parallel rank; RNG and the epoch's recorded part are per rank, gathered
    to rank 0 (the other ranks get None)."""
    learn = loop.learn
    loop.flush_series()  # per-step series (GradStats...) into the recorder first
    state = loop.state_dict()
    local = {"rng": get_rng_state(rng_loaders(learn)), "partial": state["partial"] if batch > 0 else None,
             "loader": loader_position(learn.train_dl, batch),
             "epoch_rng": loop.checkpointer.epoch_rng if batch > 0 else None}
    ranks = D.gather_to_rank0(local)
    if ranks is None:
        return None
    return {
        "format": FORMAT, "version": 1,
        "signature": loop.checkpointer.signature,
        "position": {"epoch": epoch, "batch": batch, "step": loop.scheduler.step_count},
        "model": learn.model.state_dict(),
        "opt": loop.opt.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else None,
        "recorder": pack_floats(loop.recorder.state_dict()),
        "ranks": ranks,
        "nan_skipped": state["nan_skipped"],
    }


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
