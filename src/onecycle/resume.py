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

``Checkpointer`` is the part of a fit that writes these, resumes from them, and stops cleanly on
SIGINT/SIGTERM; the loop calls it at epoch starts, batch ends and epoch ends.
"""

from __future__ import annotations

import contextlib
import dis
import functools
import hashlib
import inspect
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import distributed as D
from .checkpoint import CheckpointWriter, safe_load
from .checks import check_int, check_number, warn
from .optim.groups import named_layout
from .rng import get_rng_state, set_rng_state

if TYPE_CHECKING:
    from .learner import Learner
    from .loop import Loop

__all__ = ["FORMAT", "CKPT_NAME", "Checkpointer", "signature", "check_consistent", "capture", "load_for_resume",
           "pack_floats", "unpack_floats", "rng_loaders", "loader_position", "batches_to_replay",
           "NonFiniteLossError", "TrainingInterrupted"]

FORMAT = "onecycle-train-state"
CKPT_NAME = "last.ckpt"
# What reschedule=True lets change: the shape of the run, not the model.
RESCHEDULABLE = frozenset({"epochs", "batches_per_epoch", "steps_per_epoch", "batch_size", "schedules", "peaks",
                           "accum"})


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite; no update was applied with it."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at a clean point (after a step or an epoch); ``detail``
    says where, and how to continue."""

    def __init__(self, signum: int, detail: str = "") -> None:
        try:
            name = f" ({signal.Signals(signum).name})"
        except ValueError:
            name = ""
        super().__init__(f"training interrupted by signal {signum}{name}" + (f": {detail}" if detail else ""))
        self.signum = signum


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
    reads (closure cells, globals, defaults), so a changed constant is a changed schedule. The
    digest depends on the Python version: a resume under another Python needs ``reschedule=True``."""
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
        state = vars(obj) if hasattr(obj, "__dict__") else {}
        return f"{type(obj).__qualname__}({_value_text(state, depth)}): " + (
            _code_text(call, depth + 1) if inspect.isfunction(call) else "")
    return _value_text(obj, depth)


def _value_text(value: Any, depth: int) -> str:
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
    return _ADDRESS.sub("", repr(value))


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


class Checkpointer:
    """Checkpoints, resume and clean stops for one fit (with no ``folder``: clean stops only).

    A scheduled write (every ``every`` optimizer steps, each epoch end) is skipped while the last
    one finished less than its cost divided by ``budget`` ago; the first and the last epoch ends
    and a signal always write, so even a short fit leaves a checkpoint. Under data-parallel, rank 0
    writes and decides for every rank (a collective), and signals are acted on where all ranks
    meet: checkpoints and epoch ends."""

    def __init__(self, folder: str | os.PathLike | None = None, every: int | None = None,
                 budget: float | None = 0.005, resume: bool | str = False, reschedule: bool = False) -> None:
        if every is not None:
            check_int("every", every, 1)
        if budget is not None:
            check_number("ckpt_budget", budget, low=0, low_open=True, high=1)
        if resume not in (False, True, "auto"):
            raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
        if (resume or every) and folder is None:
            raise ValueError(f"resume={resume!r} / every={every!r} need checkpoint_dir, got None")
        if folder is not None and not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path, got {folder!r}")
        self.folder, self.every, self.budget, self.resume, self.reschedule = folder, every, budget, resume, reschedule
        self.writer = CheckpointWriter()  # checkpoints reach the disk in the background
        self.signum: int | None = None
        self.signature: dict | None = None
        self.epoch_rng: dict | None = None
        self.writes = 0  # checkpoints this fit has handed to the writer

    # ---- resuming -------------------------------------------------------------------------------
    def load(self, loop: Loop) -> dict[str, Any] | None:
        """The checkpoint to resume from (None: start fresh), checked against this fit."""
        self.signature = signature(loop) if self.folder is not None else None
        state = load_for_resume(self.folder, self.resume) if self.resume else None
        if state is not None:
            check_consistent(state["signature"], self.signature, self.reschedule)
        return state

    def restore(self, loop: Loop, state: dict[str, Any]) -> int:
        """Load a checkpoint into the fit; the epoch to start at (mid-epoch, the rest of the epoch
        waits in ``loop.pending`` until it starts)."""
        learn = loop.learn
        learn.model.load_state_dict(state["model"])
        loop.opt.load_state_dict(state["opt"])
        loop.scheduler.step_count = int(state["scheduler"]["step_count"])  # total may differ under reschedule
        loop.scheduler.apply()
        if loop.scaler is not None and state["scaler"] is not None:
            loop.scaler.load_state_dict(state["scaler"])
        loop.recorder.load_state_dict(unpack_floats(state["recorder"]))
        mine = state["ranks"][learn.rank]  # each data-parallel rank has its own RNG and epoch part
        set_rng_state(mine["rng"], rng_loaders(learn))
        epoch, batch, step = (state["position"][k] for k in ("epoch", "batch", "step"))
        loop.load_state_dict({"epoch": epoch, "iter": batch, "nan_skipped": state["nan_skipped"]},
                             pending=mine if batch > 0 else None)
        where = f"epoch {epoch + 1}, after batch {batch}" if batch else f"the end of epoch {epoch}"
        loop.progress.note(f"resuming from {self.path} at optimizer step {step} of {loop.scheduler.total_steps} "
                           f"({where})" + ("; the fit is already complete" if epoch >= loop.n_epochs else ""))
        dl = learn.train_dl
        if (1 <= epoch < loop.n_epochs and learn.rank == 0 and getattr(dl, "persistent_workers", False)
                and getattr(dl, "num_workers", 0)):
            warn(f"resuming at epoch {epoch + 1} with persistent_workers=True: train_dl's workers start afresh, "
                 "where an uninterrupted run's went on from epoch 1, so the random numbers they draw (random "
                 "augmentations) differ from here on; resume is exact without persistent_workers, or with a "
                 "dataset that draws none")
        return epoch

    # ---- the loop's calls -----------------------------------------------------------------------
    def epoch_start(self, loop: Loop) -> None:
        """Remember the RNG as the epoch begins (a loader draws its order from it)."""
        self.epoch_rng = get_rng_state(rng_loaders(loop.learn)) if self.folder is not None else None
        if not hasattr(self, "_done"):  # the budget counts from the fit's start, with a first guess of a
            # write's cost (corrected by the first write): ~3 ms plus the weights and two optimizer
            # states at 300 MB/s, the speed measured here for a 25M-parameter state.
            size = 3 * sum(p.numel() * p.element_size() for p in loop.learn.model.parameters())
            self._done, self._cost = time.perf_counter(), 0.003 + size / 300e6

    def step_end(self, loop: Loop) -> None:
        """After an optimizer step: the ``every``-step checkpoint when due, and a pending signal."""
        if loop.iter >= loop.batches - 1:
            return  # epoch ends are epoch_end's
        due = self.every is not None and loop.scheduler.step_count % self.every == 0 and self.due(loop)
        if due:
            self._write(loop, loop.epoch, loop.iter + 1)
        if loop.learn.world_size > 1 or self.signum is not None:
            self._check_signal(loop, loop.epoch, loop.iter + 1, agreed=due)

    def epoch_end(self, loop: Loop) -> None:
        if self.folder is not None:
            # the first epoch end of a fit (a resumed one too) and its last always write: a short fit
            # is resumable whatever the budget (not a look at the disk: the writer may still be at it)
            first_or_last = self.writes == 0 or loop.epoch + 1 == loop.n_epochs
            if first_or_last or self.due(loop):
                self._write(loop, loop.epoch + 1, 0)
        self._check_signal(loop, loop.epoch + 1, 0)

    def wait(self, learn: Learner, failure: BaseException | None = None) -> None:
        """Block until the last checkpoint is on disk. Its write error is raised, or, when
        ``failure`` is already propagating, attached to it as a note."""
        try:
            self.writer.wait()
        except Exception as err:
            if learn.world_size > 1:
                D.mark_fault()
            if failure is None:
                raise
            failure.add_note(f"onecycle: writing the last checkpoint also failed: {type(err).__name__}: {err}")

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set a flag the loop reads at clean points; a second one stops at once."""
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.signum is not None:
                raise TrainingInterrupted(signum, "a second signal stops at once, without a checkpoint")
            self.signum = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ---- writing --------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return Path(self.folder) / CKPT_NAME

    def _write(self, loop: Loop, epoch: int, batch: int) -> None:
        if self.folder is None:
            return
        start = time.perf_counter()
        state = capture(loop, epoch, batch)  # a collective under data-parallel: every rank
        if loop.learn.rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer.save(state, self.path)
        self._done = time.perf_counter()
        self._cost = self._done - start  # this thread's part; the writer adds its own
        self.writes += 1

    def due(self, loop: Loop) -> bool:
        """Whether a scheduled write fits in the budget now: the last write (or the fit's start,
        with a first guess of the cost) must have finished at least its cost divided by the budget
        ago. The cost is this thread's part plus twice the writer's: on busy cores the writer slows
        training about as much again (RESULTS.md 4b)."""
        if self.budget is None:
            return True
        w, learn = self.writer, loop.learn
        due = not w.busy and time.perf_counter() - self._done >= (self._cost + 2 * w.seconds) / self.budget
        if learn.world_size > 1:
            due = bool(D.all_reduce_sum(torch.tensor(float(due and learn.rank == 0), device=learn.device)))
        return due

    def _check_signal(self, loop: Loop, epoch: int, batch: int, agreed: bool = True) -> None:
        """Stop after a SIGINT/SIGTERM, with a checkpoint. Data-parallel ranks agree first (a
        collective), so only at the points every rank reaches together."""
        learn = loop.learn
        if learn.world_size > 1:
            if not agreed:
                return
            flag = torch.tensor(float(self.signum is not None), device=learn.device)
            if not D.all_reduce_sum(flag):
                return
            self.signum = self.signum or signal.SIGTERM
        if self.signum is not None:
            self._write(loop, epoch, batch)
            sched = loop.scheduler
            where = f"stopped after optimizer step {sched.step_count} of {sched.total_steps}"
            raise TrainingInterrupted(self.signum, where + (
                f"; the checkpoint {self.path} continues it exactly: the same fit with resume=True"
                if self.folder is not None else " (no checkpoint_dir, so there is no checkpoint to resume from)"))
