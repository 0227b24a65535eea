"""The training loop and its state: one ``Loop`` object per fit.

``Learner.fit_sched`` and the LR finder each build a ``Loop`` and call ``run``: ``run`` (callbacks,
clean stops, checkpoints) -> ``one_epoch`` -> ``train_epoch`` -> ``one_batch``, the one method that
follows a batch: move, forward under autocast, loss, scaled backward, then at the end of an
accumulation window unscale, ``after_backward``, clip, ``opt.step()``, ``zero_grad``. The learning
rate changes inside ``opt.step()``: the fit's ``Scheduler`` is a post-step hook of the optimizer,
so a step that AMP skips, or a batch inside an accumulation window, never moves the schedule.

Everything a fit changes while it runs is an attribute of its ``Loop`` (position, the epoch's
per-batch LRs, momenta and losses, the last batch's loss and predictions, NaN skips, the fit's
scheduler, scaler, checkpointer, callbacks, progress display), so nothing else has to save it: the
Learner keeps the running (or last) loop as ``learn.loop``, and an LR range test started inside a
fit runs a loop of its own and puts the fit's back. ``state_dict()``/``load_state_dict()`` hold
what a checkpoint needs to continue a fit mid-epoch (``resume.py``). Callbacks read the state
through the Learner (``learn.epoch``, ``learn.loss``, ...).

The one host read per batch is the NaN guard's, and the epoch records the losses it read; with
``on_nan="off"`` (no read) they stay on the device until the epoch ends.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import operator
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import checks as C
from . import distributed as D
from .callbacks import Callback, CancelFit, TrustRatios, hooks_of
from .checkpointer import Checkpointer
from .cudnn import cudnn_benchmark
from .evaluate import set_optimizer_mode
from .optim.groups import momentum_key
from .optim.scheduler import Scheduler
from .progress import Progress
from .recorder import Recorder
from .resume import batches_to_replay, rng_loaders
from .rng import set_rng_state
from .smoothing import smoothing_beta

if TYPE_CHECKING:
    from .learner import Learner

__all__ = ["Loop", "NonFiniteLossError", "steps_for", "batches_per_epoch"]


_LR = operator.itemgetter("lr")


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite; no update was applied with it."""


def steps_for(batches: int, accum: int) -> int:
    """Optimizer steps in an epoch of ``batches`` batches, one every ``accum`` (the last window may
    be shorter, and still steps): the one place this is computed."""
    return -(-batches // accum)


def batches_per_epoch(train_dl: Any, accum: int, steps_per_epoch: int | None = None) -> int:
    """Batches an epoch takes: ``len(train_dl)``, or ``steps_per_epoch`` optimizer steps (a loader
    without ``len()``, or fewer steps than it gives)."""
    n = C.loader_len(train_dl)
    if steps_per_epoch is not None:
        steps = C.check_int("steps_per_epoch", steps_per_epoch, 1)
        if n is None:
            return steps * accum
        if steps > steps_for(n, accum):  # the schedule would stop part way, at the loader's end
            raise ValueError(f"steps_per_epoch={steps} is more than train_dl's {n} batches give "
                             f"({steps_for(n, accum)} steps with accum={accum})")
        return min(steps * accum, n)  # the loader's last batch closes its (shorter) window
    if n is None:
        raise TypeError(f"train_dl ({type(train_dl).__name__}) has no len(): pass steps_per_epoch= "
                        "(the schedule is defined on progress)")
    if n < 1:  # emptied since it was given (the Learner refuses an empty one)
        raise ValueError(f"train_dl is empty (len {n})")
    return n


class Loop:
    """One fit: ``epochs`` epochs of ``batches`` batches, stepping ``learn.opt`` under ``scheduler``.

    ``callbacks``: every callback of this fit (the Learner's own included: the fit passes them).
    ``recorder``: where epochs and iterations go (the Learner's, or the LR finder's scratch one).
    ``validate``: validate at every epoch end. ``scaler``: the GradScaler to use (default: the
    Learner's ``scaler=``, else a new one under fp16). ``warn_short``: warn when ``train_dl`` ended
    before an epoch's ``batches`` (the LR finder runs streams to their end by design)."""

    def __init__(self, learn: Learner, epochs: int, batches: int, scheduler: Scheduler,
                 checkpointer: Checkpointer | None = None, callbacks: Sequence[Callback] = (), *,
                 recorder: Recorder | None = None, validate: bool = True, on_nan: str = "raise",
                 quiet: bool | None = None, scaler: torch.amp.GradScaler | None = None,
                 warn_short: bool = True) -> None:
        self.learn, self.opt = learn, learn.opt if learn.opt is not None else learn.create_opt()
        self.n_epochs, self.batches, self.accum = epochs, batches, learn.accum
        self.scheduler, self.checkpointer = scheduler, checkpointer or Checkpointer()
        self.recorder = learn.recorder if recorder is None else recorder
        self.validate, self.on_nan, self.warn_short = validate, on_nan, warn_short
        self.quiet = learn.quiet if quiet is None else quiet
        auto = [TrustRatios()] if hasattr(self.opt, "last_trust_stats") else []
        self.hooks = hooks_of([*callbacks, *auto])
        self.batch_hooks = tuple(self.hooks[h] for h in ("before_batch", "after_backward", "after_step", "after_batch"))
        self.trainable = [p for p in learn.model.parameters() if p.requires_grad]
        fp16 = learn.amp_dtype == torch.float16
        self.scaler = scaler if scaler is not None else (
            learn.user_scaler if learn.user_scaler is not None else
            torch.amp.GradScaler(learn.device.type) if fp16 else None)
        self.model, self.ddp = learn.training_model(), learn.ddp  # wrapped for data-parallel, compiled when asked
        self.mom_key = momentum_key(self.opt.param_groups[0])  # where one_batch reads the momentum (or betas)
        self.progress = Progress((), quiet=True)
        # The state: where the fit is, and what the current epoch has done so far.
        self.epoch = self.iter = self.nan_skipped = 0
        self.pred = self._loss = self.target = self.val_result = None
        self.stepped = False  # whether the last batch ended an accumulation window (an optimizer step)
        self.epoch_lrs: list[list[float]] = []  # this epoch's per-batch LRs, momenta and losses so far
        self.epoch_moms: list[float | None] = []
        # Losses as floats where the NaN guard reads each one anyway (one process), else kept on the device.
        self.read_losses = on_nan != "off" and learn.world_size == 1
        self.epoch_losses: list[float] | list[torch.Tensor] = []
        self.bad_window = False  # a non-finite loss inside the current accumulation window
        self.pending: dict[str, Any] | None = None  # a mid-epoch resume's epoch part, until its epoch starts
        self.short_epochs: list[tuple[int, int]] = []  # (epoch, batches) of those train_dl ended early

    @property
    def loss(self) -> torch.Tensor | None:
        """The last batch's loss, detached (``learn.loss``)."""
        return None if self._loss is None else self._loss.detach()

    @property
    def steps_per_epoch(self) -> int:
        return steps_for(self.batches, self.accum)

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the fit is and the part of the current epoch already trained (per batch: LRs,
        momenta and losses), as plain data: what a checkpoint needs besides model, optimizer,
        scheduler, scaler and recorder."""
        partial = None
        if self.epoch_moms:
            lrs, moms = _plain(self.epoch_lrs, self.epoch_moms)
            partial = {"losses": self.float32_losses(), "lrs": lrs, "moms": moms}
        return {"epoch": self.epoch, "iter": self.iter, "nan_skipped": self.nan_skipped, "partial": partial}

    def load_state_dict(self, state: dict[str, Any], pending: dict[str, Any] | None = None) -> None:
        """Continue from ``state``; ``pending`` (a mid-epoch checkpoint's epoch-start RNG, loader
        position and epoch part) is replayed when that epoch starts."""
        self.epoch, self.iter = int(state["epoch"]), int(state["iter"])
        self.nan_skipped = int(state["nan_skipped"])
        self.pending = pending

    # ---- the fit --------------------------------------------------------------------------------
    def call(self, hook: str) -> None:
        for fn in self.hooks[hook]:
            fn(self.learn)

    def run(self, start_epoch: int = 0) -> None:
        """Epochs ``start_epoch..n_epochs-1`` (or from a checkpoint); ``CancelFit`` from any hook ends
        the fit cleanly; ``after_fit`` always runs; the fit returns (or raises) with its last
        checkpoint on disk."""
        ckpt, learn = self.checkpointer, self.learn
        state = ckpt.load(self)  # a checkpoint to resume from, checked before anything changes
        self.recorder.reset(smoothing_beta(self.n_epochs * self.batches))  # a lag of ~10% of the fit
        self.progress = Progress(self.recorder.metric_names, quiet=self.quiet, total=self.n_epochs * self.batches)
        start_epoch = ckpt.restore(self, state) if state is not None else start_epoch
        failure = None
        try:
            with ckpt.signals(), cudnn_benchmark(learn.device, learn.cudnn_benchmark):
                self.call("before_fit")
                for epoch in range(start_epoch, self.n_epochs):
                    self.epoch = epoch
                    self.one_epoch()
        except CancelFit:
            pass
        except BaseException as e:
            failure = e
            if learn.world_size > 1:
                D.mark_fault()
                e.add_note(f"onecycle: raised on rank {learn.rank} of {learn.world_size}")
            raise
        finally:
            try:
                ckpt.wait(learn, failure)
            finally:
                set_optimizer_mode(self.opt, train=False)  # schedule-free: the weights to evaluate, save, use
                self.progress.close()  # the fit's one bar goes; its table stays
                self.call("after_fit")
        if self.short_epochs and self.warn_short and learn.rank == 0:
            self.warn_short_epochs()

    def one_epoch(self) -> None:
        start = time.perf_counter()
        self.call("before_epoch")
        train_loss = self.train_epoch()
        val = None
        if self.validate and self.learn.valid_dl is not None:
            self.call("before_validate")
            val = self.val_result = self.learn.validate()
            self.call("after_validate")
        seconds = time.perf_counter() - start
        self.recorder.add_epoch(train_loss, val, seconds)
        self.progress.epoch_row(self.epoch, train_loss, val, seconds)
        self.call("after_epoch")
        self.checkpointer.epoch_end(self)  # writes when due (always after the first and last epoch)

    def train_epoch(self) -> float:
        """One pass over ``train_dl`` (``self.batches`` batches at most); the mean training loss."""
        it, start = self.start_epoch()
        n, k = self.batches, self.accum
        bar = self.progress.bar(n, self.epoch, self.n_epochs)
        i, full = start - 1, n - n % k  # the batches before the last window, which may be shorter
        try:
            for i, batch in zip(range(start, n), it):
                self.iter = i
                self.one_batch(batch, k if i < full else n - full, k == 1 or (i + 1) % k == 0 or i == n - 1)
                if bar.shown:
                    bar.update(i, self.epoch_losses)
        except BaseException as e:
            # A cancelled, interrupted or failed epoch's iterations are history too (a plot of the loss
            # up to a Ctrl-C or a NaN). Under data-parallel recording is a collective: only on a
            # CancelFit, which every rank raises together. It never hides the error being raised.
            if self.learn.world_size == 1 or isinstance(e, CancelFit):
                with contextlib.suppress(Exception):
                    self.end_epoch()
            if isinstance(e, (CancelFit, KeyboardInterrupt)):
                # Stopped in after_step (before zero_grad) or inside a window: no gradient for the next fit.
                self.opt.zero_grad(set_to_none=True)
            raise
        finally:
            it = None  # the last reference: a DataLoader's workers shut down now, also on an error
            bar.close()
        if i < 0:
            raise ValueError("train_dl yielded no batch")
        if i < n - 1:  # the loader ended first (a stream shorter than steps_per_epoch said)
            self.short_epochs.append((self.epoch, i + 1))
            if i >= start and not self.stepped:  # inside an accumulation window: those batches are dropped,
                self.opt.zero_grad(set_to_none=True)  # never carried into the next epoch's first step
                self.bad_window = False
        done = self.end_epoch()
        return sum(done) / len(done) if done else math.nan

    def one_batch(self, batch: Any, window: int = 1, step: bool = True) -> None:
        """One batch: the optimizer steps when ``step`` (the accumulation window's last batch), with
        the loss scaled by ``1/window``."""
        opt, scaler, ddp, learn = self.opt, self.scaler, self.ddp, self.learn
        before, after_backward, after_step, after_batch = self.batch_hooks
        for hook in before:  # the callbacks' hooks, called in place: this runs every batch
            hook(learn)
        self.epoch_lrs.append(list(map(_LR, opt.param_groups)))  # as the step will use them (floats at epoch end)
        g0 = opt.param_groups[0]
        self.epoch_moms.append(g0["betas"][0] if self.mom_key == "betas" else g0.get("momentum"))
        if ddp is not None and not step:  # data-parallel: gradients all-reduced at steps only
            with ddp.no_sync():
                self.pred, loss, self.target = learn.forward(batch, self.model)  # move; forward, loss
                (scaler.scale(loss / window) if scaler is not None else loss / window).backward()
        else:
            self.pred, loss, self.target = learn.forward(batch, self.model)
            scaled = loss / window if window > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        self._loss = loss  # learn.loss: detached when read
        if self.read_losses:  # the NaN guard's one read of the loss is what the epoch records
            value = loss.item()  # ~1 us on the CPU, against a kernel or two; a sync on CUDA
            self.epoch_losses.append(value)
            if not math.isfinite(value):
                self.bad_window = True
        else:  # on the device until the epoch ends
            self.epoch_losses.append(loss.detach())
            if self.on_nan != "off" and not self._finite_on_every_rank(loss):
                self.bad_window = True
        self.stepped = step
        if step:
            if self.bad_window:  # no update with a non-finite loss: drop the window, raise or skip
                opt.zero_grad(set_to_none=True)
                self.bad_window = False
                self._non_finite()
            else:
                if scaler is not None:
                    scaler.unscale_(opt)
                for hook in after_backward:
                    hook(learn)
                if learn.clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.trainable, learn.clip, foreach=True)
                # Hooks on opt.step(): decoupled weight decay before it, then the Scheduler sets the
                # next step's LR and momentum. A scaler skips the step (and so the schedule) on overflow.
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                for hook in after_step:
                    hook(learn)
                opt.zero_grad(set_to_none=True)
            self.checkpointer.step_end(self)  # an `every`-step checkpoint when due; a clean stop on a signal
        for hook in after_batch:
            hook(learn)

    # ---- epoch edges ----------------------------------------------------------------------------
    def start_epoch(self) -> tuple[Iterator, int]:
        """Modes, the loader's epoch, its iterator; on a mid-epoch resume, the epoch's RNG replayed
        (the loader's generators too), the batches already trained on skipped, then the checkpoint's
        RNG (``resume.py``). Returns the iterator and the first batch's index."""
        learn = self.learn
        learn.train_mode()
        if callable(getattr(learn.model, "reset", None)):
            learn.model.reset()
        pending, self.pending = self.pending, None
        if pending is not None:  # a mid-epoch resume: the RNG as this epoch began
            loaders = rng_loaders(learn)
            set_rng_state(pending["epoch_rng"], loaders)
        self.checkpointer.epoch_start(self)  # the RNG as the epoch begins, for a later resume
        if callable(getattr(learn.train_dl, "set_epoch", None)):
            learn.train_dl.set_epoch(self.epoch)
        replay = batches_to_replay(learn.train_dl, pending) if pending is not None else 0
        it = iter(learn.train_dl)
        self.epoch_lrs, self.epoch_moms, self.epoch_losses = [], [], []
        if pending is None:
            return it, 0
        part = pending["partial"]
        for _ in range(replay):  # a loader that keeps its own position resumes there instead
            next(it)
        set_rng_state(pending["rng"], loaders)
        self.epoch_lrs, self.epoch_moms = [list(r) for r in part["lrs"]], list(part["moms"])
        self.epoch_losses = list(part["losses"]) if self.read_losses else list(
            torch.tensor(part["losses"], dtype=torch.float32, device=learn.device).unbind())
        return it, len(part["moms"])

    def end_epoch(self) -> list[float]:
        """The epoch's iterations into the recorder: one host sync (and one collective) per epoch."""
        n = len(self.epoch_losses)
        done = self.float32_losses(over_ranks=True)
        self.recorder.add_iterations(*_plain(self.epoch_lrs[:n], self.epoch_moms[:n]), done)
        return done

    def float32_losses(self, over_ranks: bool = False) -> list[float]:
        """The epoch's losses so far as float32 values (whatever the loss's dtype); ``over_ranks``:
        their mean over data-parallel ranks (a collective)."""
        if self.read_losses:
            return np.asarray(self.epoch_losses, dtype=np.float32).tolist()
        losses = torch.stack(self.epoch_losses).float() if self.epoch_losses else torch.empty(0)
        if over_ranks and self.learn.world_size > 1:  # every rank records the mean over ranks
            losses = D.all_reduce_sum(losses) / self.learn.world_size
        return losses.tolist()

    def flush_series(self) -> None:
        """Per-step series kept by callbacks (``StepSeries``: GradStats, trust ratios) into the
        recorder now (a checkpoint is about to capture it)."""
        for fn in self.hooks["after_epoch"]:
            owner = getattr(fn, "__self__", None)
            if callable(getattr(owner, "flush", None)):
                owner.flush(self.learn)

    # ---- non-finite losses -------------------------------------------------------------------------
    def _finite_on_every_rank(self, loss: torch.Tensor) -> bool:
        # Data-parallel ranks must agree, or their replicas would diverge (one process reads the loss
        # in one_batch: free on the CPU, a sync on CUDA, the price of never applying a NaN update).
        return not bool(D.all_reduce_sum((~torch.isfinite(loss)).any().float()))

    def _non_finite(self) -> None:
        if self.on_nan == "skip":
            self.nan_skipped += 1
            return
        raise NonFiniteLossError(f"non-finite loss ({float(self.loss.float().mean())}) at epoch {self.epoch + 1}, "
                                 f"iteration {self.iter}: no update was applied with it (on_nan='skip' skips such "
                                 "batches)")

    def warn_short_epochs(self) -> None:
        """The schedule was laid out for ``batches`` an epoch and train_dl gave fewer: say so."""
        epoch, got = self.short_epochs[0]
        dropped = sum(b % self.accum for _, b in self.short_epochs)  # batches of windows left unfinished
        n = len(self.short_epochs)
        C.warn(f"train_dl ended before the {self.batches} batches an epoch was given, in {n} epoch{'s' * (n > 1)} "
               f"(epoch {epoch + 1}: {got}), so the schedule did not reach its end (step "
               f"{self.scheduler.step_count} of {self.scheduler.total_steps}); pass the steps_per_epoch the loader "
               "gives" + (f". {dropped} batches that ended inside an accumulation window were dropped (no "
                          "optimizer step)" if dropped else ""))


def _plain(lrs: list[list[Any]], moms: list[Any]) -> tuple[list[list[float]], list[float | None]]:
    """Per-batch LRs and momenta as plain floats (a capturable optimizer keeps them as tensors)."""
    if set(map(type, itertools.chain.from_iterable(lrs))).union(map(type, moms)) <= {float}:
        return list(lrs), list(moms)  # (most often: copies, the rows are never changed)
    return ([[v if type(v) is float else float(v) for v in row] for row in lrs],
            [m if m is None or type(m) is float else float(m) for m in moms])
