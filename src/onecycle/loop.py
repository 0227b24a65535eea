"""The training loop under the Learner: one epoch, one batch, one optimizer step, and what keeps
a run safe (training checkpoints, clean stops on SIGINT/SIGTERM, the non-finite loss guard).

Kept apart from ``learner.py`` (the public API) so each module stays readable. The hot path does
the minimum per batch: move the batch (a no-op for device-resident data), forward, backward, keep
the detached loss tensor in a list (stacked once at the epoch's end), and every ``accum`` batches
clip and step. Losses reach the host once per epoch; the one read per batch is the NaN guard's
(``on_nan="off"`` drops it). ``TrainingLoop`` has no constructor; the Learner sets the attributes
it reads.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.optim import optimizer as _torch_optim

from . import distributed as D
from . import resume as R
from .callbacks import Callback, CancelFit, StepSeries, TrustRatios, hooks_of
from .checkpoint import get_rng_state, set_rng_state
from .optim.groups import drop_grads, get_hyper
from .optim.scheduler import Scheduler
from .progress import Progress

__all__ = ["TrainingLoop"]


def _split_batch(batch: Any) -> tuple[tuple, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return tuple(batch[:-1]), batch[-1]
    raise TypeError(f"a batch must be a tuple (inputs..., target), got {type(batch).__name__}")


# Private torch names the bypasses below rely on; where a torch lacks any of them, the loop calls
# ``opt.step()`` and ``opt.zero_grad()`` as they are.
_PROFILING = getattr(torch.autograd, "_profiler_enabled", None)
_GLOBAL_PRE = getattr(_torch_optim, "_global_optimizer_pre_hooks", None)
_GLOBAL_POST = getattr(_torch_optim, "_global_optimizer_post_hooks", None)


def _torch_step_wrapper_code() -> Any:
    """The code of the wrapper torch's ``Optimizer`` puts around each class's ``step``
    (``profile_hook_step``); None where this torch has no such wrapper (or lacks a name above)."""
    make = getattr(torch.optim.Optimizer, "profile_hook_step", None)
    if make is None or None in (_PROFILING, _GLOBAL_PRE, _GLOBAL_POST):
        return None
    try:
        return make(lambda *args, **kwargs: None).__code__
    except Exception:
        return None


# Checked instead of the wrapper's ``hooked`` mark alone: functools.wraps copies that mark onto a
# decorator put on the class's ``step`` afterwards, which must then run.
_STEP_WRAPPER_CODE = _torch_step_wrapper_code()


def _optimizer_step(opt: torch.optim.Optimizer) -> None:
    """``opt.step()`` as the wrapper torch puts around every optimizer's ``step`` runs it (pre-step
    hooks, the step, post-step hooks), without the profiler range the wrapper opens each time: 20 us
    a step on a tiny model (15%), 3-4% of the MNIST-1D CNN's. With a profiler running, with
    ``step`` replaced on the instance (torch's LR schedulers do that), or with the class's ``step``
    anything but torch's wrapper itself (a decorator put on it later), it is ``opt.step()`` itself."""
    step = type(opt).step
    pre, post = getattr(opt, "_optimizer_step_pre_hooks", None), getattr(opt, "_optimizer_step_post_hooks", None)
    if (_STEP_WRAPPER_CODE is None or getattr(step, "__code__", None) is not _STEP_WRAPPER_CODE
            or pre is None or post is None or "step" in vars(opt) or _PROFILING()):
        opt.step()
        return
    args, kwargs = (opt,), {}
    for hook in (*_GLOBAL_PRE.values(), *pre.values()):
        result = hook(opt, args, kwargs)
        if result is not None:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(f"{step.__wrapped__} must return None or a tuple of (new_args, new_kwargs), "
                                   f"but got {result}.")
            args, kwargs = result
    step.__wrapped__(*args, **kwargs)
    for hook in (*post.values(), *_GLOBAL_POST.values()):
        hook(opt, args, kwargs)


def _zero_grad(opt: torch.optim.Optimizer) -> None:
    """``opt.zero_grad(set_to_none=True)``; torch's own sets each gradient to None inside a profiler
    range, which this skips while no profiler runs (optimizers that define their own, on the class or
    the instance, are called)."""
    if (type(opt).zero_grad is torch.optim.Optimizer.zero_grad and "zero_grad" not in vars(opt)
            and _PROFILING is not None and not _PROFILING()):
        drop_grads(opt)
    else:
        opt.zero_grad(set_to_none=True)


def _cudnn_benchmark(want: bool | None) -> bool:
    """``want``, or for None: on unless ``torch.backends.cudnn.deterministic`` or
    ``torch.use_deterministic_algorithms`` asks for determinism (autotuning picks kernels by timing)."""
    if want is not None:
        return want
    return not (torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled())


# torch.backends.cudnn.benchmark is process-wide: fits running at once (threads, or lr_find inside a
# fit) share it. The setting found by the first is restored when the last ends; in between, the
# latest still running has its way (each restoring its own snapshot could restore out of order).
_CUDNN_LOCK = threading.Lock()
_cudnn_active: dict[object, bool] = {}  # the setting each running fit wants, oldest first
_cudnn_saved = False


class TrainingLoop:
    """The loop's methods; ``Learner`` inherits them."""

    def _steps_per_epoch(self) -> int:
        try:
            n = len(self.train_dl)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError("train_dl must have a length (the schedule is defined on progress)") from None
        if n < 1:
            raise ValueError(f"train_dl is empty (len {n})")
        return math.ceil(n / self.accum)

    def _call(self, hook: str) -> None:
        for fn in self._hooks[hook]:
            fn(self)

    def setup_loop(self, callbacks: Sequence[Callback] = ()) -> None:
        """Prepare what one training step needs (hooks, trainable params, autocast, scaler); the
        LR finder calls this too, then drives ``train_step``."""
        if self.opt is None:
            self.create_opt()
        auto = [TrustRatios()] if hasattr(self.opt, "last_trust_stats") else []
        self._hooks = hooks_of(self.callbacks + list(callbacks) + auto)
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp
                          else contextlib.nullcontext())
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self._place_data()
        base = self._ddp or self.model
        if self.compile and self._compiled is None:
            self._compiled = torch.compile(base)
        self._fwd = self._compiled if self.compile else base

    def _place_data(self) -> None:
        """In-memory data (``TensorLoader``, ``LMLoader``) onto a GPU once, when it fits: training
        and validation loaders within one budget (``data.place_on_device``)."""
        if self.device.type != "cpu":
            from .data import _place_loaders
            _place_loaders((self.train_dl, self.valid_dl), self.device)

    @contextlib.contextmanager
    def _cuda_backends(self) -> Iterator[None]:
        """cuDNN autotuning for a fit's fixed shapes (``cudnn_benchmark``; None: on unless
        determinism is asked for), the previous setting restored afterwards."""
        if self.device.type != "cuda":
            yield
            return
        global _cudnn_saved
        token = object()
        with _CUDNN_LOCK:
            if not _cudnn_active:
                _cudnn_saved = torch.backends.cudnn.benchmark
            _cudnn_active[token] = torch.backends.cudnn.benchmark = _cudnn_benchmark(self.cudnn_benchmark)
        try:
            yield
        finally:
            with _CUDNN_LOCK:
                del _cudnn_active[token]
                torch.backends.cudnn.benchmark = next(reversed(_cudnn_active.values()), _cudnn_saved)

    def train_step(self, batch: Any, window: int = 1, step: bool = True, sync: bool = True) -> torch.Tensor:
        """One batch: forward, backward (loss scaled by ``1/window``), and the optimizer step
        when ``step``. ``sync=False`` inside an accumulation window skips the data-parallel gradient
        all-reduce until the window's last batch. Returns the unscaled loss (on the device)."""
        xs, y = self._to_device(batch)
        if self._ddp is not None and not sync:
            with self._ddp.no_sync():
                loss = self._forward_backward(xs, y, window)
        else:
            loss = self._forward_backward(xs, y, window)
        if step:
            self._step()
        return loss

    def _fit(self, epochs: int, scheduler: Scheduler, callbacks: list[Callback], resume: bool | str = False,
             reschedule: bool = False) -> None:
        self.n_epochs, self.scheduler = epochs, scheduler
        self.setup_loop(callbacks)
        # What a checkpoint must match; only worth computing when checkpoints are in play.
        self._signature = R.signature(self, epochs) if self.checkpoint_dir is not None else None
        state = R.load_for_resume(self.checkpoint_dir, resume) if resume else None
        if state is not None:  # checked before anything changes
            R.check_consistent(state["signature"], self._signature, reschedule)
        self.recorder.reset()
        self.sched = self.recorder
        # The budget counts from the fit's start, with a first guess of a write's cost (corrected
        # by the first real write): a fixed ~3 ms plus the weights and two optimizer states at
        # 300 MB/s, the speed measured here for a 25M-parameter state.
        state_bytes = 3 * sum(p.numel() * p.element_size() for p in self.model.parameters())
        self._ckpt_done, self._ckpt_cost = time.perf_counter(), 0.003 + state_bytes / 300e6
        self.nan_skipped = 0
        self.progress = Progress(self.recorder.metric_names, quiet=self.quiet)
        start_epoch, pending = self._restore(state) if state is not None else (0, None)
        failure = None
        try:
            with self._signals(), self._cuda_backends():
                self._call("before_fit")
                for epoch in range(start_epoch, epochs):
                    self.epoch = epoch
                    self._one_epoch(pending)
                    pending = None
        except CancelFit:
            pass
        except BaseException as e:
            failure = e
            if self.world_size > 1:
                D.mark_fault()
                e.add_note(f"onecycle: raised on rank {self.rank} of {self.world_size}")
            raise
        finally:
            self.progress.close()
            try:
                R.wait_for_writes(self, failure)  # the fit returns (or raises) with its checkpoint on disk
            except BaseException:
                if self.world_size > 1:
                    D.mark_fault()
                raise
            finally:
                self._call("after_fit")

    def _restore(self, state: dict) -> tuple[int, dict | None]:
        """Load a training checkpoint; returns the epoch to start and the mid-epoch state."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        saved = state["scheduler"]
        self.scheduler.step_count = int(saved["step_count"])  # total may differ under reschedule
        self.scheduler.apply()
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.recorder.load_state_dict(R.unpack_floats(state["recorder"]))
        self.nan_skipped = int(state["nan_skipped"])
        pos = state["position"]
        mine = state["ranks"][self.rank]  # each data-parallel rank has its own RNG and epoch part
        set_rng_state(mine["rng"], R.rng_loaders(self))
        return pos["epoch"], (mine if pos["batch"] > 0 else None)

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT/SIGTERM set a flag the loop reads at clean points; a second one stops at once."""
        self._signal: int | None = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None:
                raise R.TrainingInterrupted(signum)
            self._signal = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _checkpoint(self, epoch: int, batch: int, partial: dict | None = None) -> None:
        if self.checkpoint_dir is None:
            return
        start = time.perf_counter()
        state = R.capture(self, epoch, batch, partial)  # a collective under data-parallel: every rank
        if self.rank == 0:
            R.save(self, state)
        self._ckpt_done = time.perf_counter()
        self._ckpt_cost = self._ckpt_done - start  # this thread's part; the writer adds its own

    def _ckpt_due(self) -> bool:
        """Whether a scheduled checkpoint fits in ``ckpt_budget``: the last write must have finished
        at least its cost divided by the budget ago. The cost is this thread's part plus twice the
        writer's: on cores training keeps busy, the writer's work slows training about as much
        again as it takes itself (benchmarks/checkpoint.py, RESULTS.md 4b). Under
        data-parallel, rank 0 (the writer) decides for every rank: a collective."""
        budget, done = self.ckpt_budget, self._ckpt_done
        if budget is None:
            return True
        writer = self._ckpt_writer
        due = not writer.busy and time.perf_counter() - done >= (self._ckpt_cost + 2 * writer.seconds) / budget
        if self.world_size > 1:
            due = bool(D.all_reduce_sum(torch.tensor(float(due and self.rank == 0), device=self.device)))
        return due

    def _check_signal(self, epoch: int, batch: int, partial_fn: Callable[[], dict] | None = None,
                      agreed_point: bool = True) -> None:
        """Stop after a SIGINT/SIGTERM. Data-parallel ranks agree first (a collective), so only at
        the points every rank reaches together: checkpoints and epoch ends."""
        if self.world_size > 1:
            if not agreed_point:
                return
            flag = torch.tensor(float(self._signal is not None), device=self.device)
            if not D.all_reduce_sum(flag):
                return
            self._signal = self._signal or signal.SIGTERM
        if self._signal is not None:
            self._checkpoint(epoch, batch, partial_fn() if partial_fn and batch > 0 else None)
            raise R.TrainingInterrupted(self._signal)

    def _flush_series(self) -> None:
        for fn in self._hooks["after_epoch"]:
            cb = getattr(fn, "__self__", None)
            if isinstance(cb, StepSeries):
                cb._flush(self)

    def _one_epoch(self, pending: dict | None = None) -> None:
        start = time.perf_counter()
        self._call("before_epoch")
        train_loss = self._train_epoch(pending)
        val = None
        if self.valid_dl is not None:
            self._call("before_validate")
            val = self.validate()
            self.val_result = val
            self._call("after_validate")
        seconds = time.perf_counter() - start
        self.recorder.add_epoch(train_loss, val, seconds)
        self.progress.epoch_row(self.epoch, train_loss, val, seconds)
        self._call("after_epoch")
        if self.checkpoint_dir is not None and (self.epoch + 1 == self.n_epochs or self._ckpt_due()):
            self._checkpoint(self.epoch + 1, 0)
        self._check_signal(self.epoch + 1, 0)

    def _train_mode(self) -> None:
        """The model in train mode, except BatchNorm layers frozen with ``bn_freeze=True`` (eval)."""
        self.model.train()
        for m in self._frozen_bn:
            m.eval()

    def _start_epoch(self, pending: dict | None) -> tuple[Iterator, int]:
        """Modes, epoch of the loader, its iterator; on a mid-epoch resume, replay the epoch's
        RNG (the loader's generators too), skip the batches already trained on (or let a loader
        that keeps its position resume there), then restore the checkpoint's RNG."""
        model, dl, loaders = self.model, self.train_dl, R.rng_loaders(self)
        self._train_mode()
        if callable(getattr(model, "reset", None)):
            model.reset()
        if pending is not None:
            set_rng_state(pending["epoch_rng"], loaders)
        self._epoch_rng = get_rng_state(loaders) if self.checkpoint_dir is not None else None
        if callable(getattr(dl, "set_epoch", None)):
            dl.set_epoch(self.epoch)
        replay = R.batches_to_replay(dl, pending) if pending is not None else 0
        it = iter(dl)
        if pending is None:
            return it, 0
        for _ in range(replay):
            next(it)
        set_rng_state(pending["rng"], loaders)
        return it, len(pending["partial"]["moms"])

    def _train_epoch(self, pending: dict | None = None) -> float:
        dl, opt = self.train_dl, self.opt
        it, start = self._start_epoch(pending)
        n, k = len(dl), self.accum
        # Detached loss tensors, stacked once at the epoch's end: no kernel and no sync per batch.
        losses: list[torch.Tensor] = []
        lrs, moms = [], []
        if pending is not None:
            part = pending["partial"]
            losses = list(torch.tensor(part["losses"], dtype=torch.float32, device=self.device).unbind())
            lrs, moms = [list(r) for r in part["lrs"]], list(part["moms"])

        def partial() -> dict:
            return {"losses": torch.stack(losses).float().tolist(), "lrs": lrs, "moms": moms}

        bar = self.progress.bar(n, self.epoch, self.n_epochs)
        show = bar.shown
        # Hoisted out of the per-batch path: it runs thousands of times a second on small models.
        groups, before, after = opt.param_groups, self._hooks["before_batch"], self._hooks["after_batch"]
        check, every, scheduler, dist = self.on_nan != "off", self.every, self.scheduler, self.world_size > 1
        i, bad_window = start - 1, False
        for i, batch in enumerate(it, start):
            self.iter = i
            for fn in before:
                fn(self)
            lrs.append([g["lr"] for g in groups])
            moms.append(get_hyper(groups[0], "momentum"))
            if k == 1:
                window, ends_window = 1, True
            else:
                window = k if i < n - n % k else n % k  # the last window may be shorter
                ends_window = (i + 1) % k == 0 or i == n - 1
            loss = self.train_step(batch, window, step=False, sync=ends_window)
            losses.append(loss.detach())
            bad_window |= check and not self._finite(loss)
            if ends_window:
                if bad_window:
                    self._non_finite(loss, i)
                else:
                    self._step()
                bad_window = False
                due = every is not None and scheduler.step_count % every == 0 and i < n - 1 and self._ckpt_due()
                if due:
                    self._checkpoint(self.epoch, i + 1, partial())
                if dist or self._signal is not None:
                    self._check_signal(self.epoch, i + 1, partial, agreed_point=due)
            for fn in after:
                fn(self)
            if show:
                bar.update(i, losses)
        stacked = torch.stack(losses).float() if losses else torch.empty(0)
        if self.world_size > 1:  # every rank records the mean over ranks (one collective per epoch)
            stacked = D.all_reduce_sum(stacked) / self.world_size
        done = stacked.tolist()  # the one host sync of the epoch
        self.recorder.add_iterations(lrs, moms, done)
        bar.close()
        return sum(done) / len(done) if done else math.nan

    def _finite(self, loss: torch.Tensor) -> bool:
        # One read of the loss before the step: free on the CPU, a sync on CUDA (the price of never
        # applying a NaN update). Data-parallel ranks must agree, or their replicas would diverge.
        if self.world_size > 1:
            bad = (~torch.isfinite(loss.detach())).any().float()
            return not bool(D.all_reduce_sum(bad))
        if loss.numel() == 1:
            return math.isfinite(loss.detach().item())  # ~1 us on the CPU, against 4 kernel launches
        return bool(torch.isfinite(loss.detach()).all())

    def reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over data-parallel ranks (``t`` itself in one process)."""
        return D.all_reduce_sum(t.detach().clone()) / self.world_size if self.world_size > 1 else t

    def _non_finite(self, loss: torch.Tensor, i: int) -> None:
        """No update with a non-finite loss: drop the window's gradients, then raise or skip."""
        self.opt.zero_grad(set_to_none=True)
        if self.on_nan == "skip":
            self.nan_skipped += 1
            return
        raise R.NonFiniteLossError(f"non-finite loss ({float(loss.detach())}) at epoch {self.epoch}, iteration {i}: "
                                   "no update was applied with it (on_nan='skip' skips such batches)")

    def _to_device(self, batch: Any) -> tuple[tuple, Any]:
        dev = self.device
        if type(batch) in (tuple, list) and len(batch) == 2 and not self.channels_last:  # the common case
            x, y = batch
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
                return (x.to(dev, non_blocking=True),), y.to(dev, non_blocking=True)
        xs, y = _split_batch(batch)
        xs = tuple(x.to(dev, non_blocking=True) if torch.is_tensor(x) else x for x in xs)
        if self.channels_last:
            xs = tuple(x.contiguous(memory_format=torch.channels_last) if torch.is_tensor(x) and x.ndim == 4
                       else x for x in xs)
        return xs, y.to(dev, non_blocking=True) if torch.is_tensor(y) else y

    def _forward_backward(self, xs: tuple, y: Any, window: int) -> torch.Tensor:
        with self._autocast:
            self.pred = self._fwd(*xs)
            loss = self.loss_fn(self.pred, y)
        scaled = loss / window if window > 1 else loss
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self.loss = loss
        return loss

    def _step(self) -> None:
        opt, scaler, hooks = self.opt, self.scaler, self._hooks
        if scaler is not None:
            scaler.unscale_(opt)
        for fn in hooks["after_backward"]:
            fn(self)
        if self._clip is not None:
            torch.nn.utils.clip_grad_norm_(self._trainable, self._clip, foreach=True)
        if scaler is not None:
            scaler.step(opt)  # skips opt.step() on overflow: the Scheduler does not advance
            scaler.update()
        else:
            _optimizer_step(opt)
        for fn in hooks["after_step"]:
            fn(self)
        _zero_grad(opt)
