"""``Checkpointer``: the part of a fit that writes training checkpoints, resumes from them, and
stops cleanly on SIGINT/SIGTERM. The loop calls it at epoch starts, optimizer-step ends and epoch
ends; what a checkpoint holds, and what must match to resume from one, is ``resume.py``'s.

Checkpoints reach the disk through a ``checkpoint.CheckpointWriter`` (a background thread), within a
budget of the training time (``due``); the first and last epoch ends and a signal always write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import distributed as D
from .checkpoint import CheckpointWriter
from .checks import check_int, check_number, warn
from .resume import CKPT_NAME, capture, check_consistent, load_for_resume, rng_loaders, signature, unpack_floats
from .rng import get_rng_state, set_rng_state

if TYPE_CHECKING:
    from .learner import Learner
    from .loop import Loop

__all__ = ["Checkpointer", "TrainingInterrupted"]


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
        if self.folder is None:
            return
        self.epoch_rng = get_rng_state(rng_loaders(loop.learn))
        if not hasattr(self, "_done"):  # the budget counts from the fit's start, with a first guess of a
            # write's cost (corrected by the first write): ~3 ms plus the weights and two optimizer
            # states at 300 MB/s, the speed measured here for a 25M-parameter state.
            size = 3 * sum(p.numel() * p.element_size() for p in loop.learn.model.parameters())
            self._done, self._cost = time.perf_counter(), 0.003 + size / 300e6

    def step_end(self, loop: Loop) -> None:
        """After an optimizer step: the ``every``-step checkpoint when due, and a pending signal."""
        if (self.every is None and self.signum is None and loop.learn.world_size == 1) or loop.iter >= loop.batches - 1:
            return  # nothing to do (most steps); epoch ends are epoch_end's
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
