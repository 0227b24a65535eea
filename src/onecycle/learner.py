"""The Learner and its training loop, read top to bottom.

``fit_sched`` -> ``_fit`` (callbacks, clean stops, checkpoints) -> ``_train_epoch`` -> ``one_batch``,
the one method that follows a batch: move, forward under autocast, loss, scaled backward, then at
the end of an accumulation window unscale, ``after_backward``, clip, ``opt.step()``, ``zero_grad``.
The learning rate changes inside ``opt.step()``: the fit's ``Scheduler`` is a post-step hook of the
optimizer (so a step that AMP skips, or a batch inside an accumulation window, never moves the
schedule). ``validate``, ``predict`` and the LR finder (a callback on this same loop) share
``forward``. Losses stay on the device until the epoch ends; the one read per batch is the NaN
guard's (``on_nan="off"`` drops it).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import checks as C
from . import distributed as D
from . import schedules as S
from .batches import split_batch, split_output, to_device
from .callbacks import Callback, CancelFit, TrustRatios, check_callbacks, hooks_of
from .checkpoint import restore_modes
from .legacy import Fastai07Learner
from .lr_finder import find
from .metrics import MetricAccumulator, metric_columns, named_metrics
from .optim import OPTIMIZERS
from .optim.groups import DECOUPLED_WD, DecoupledWeightDecay, get_hyper, layer_groups, normalized_wd, spread_lrs
from .optim.scheduler import Scheduler, check_momentum_schedule
from .progress import Progress
from .recorder import Recorder
from .resume import Checkpointer, NonFiniteLossError, batches_to_replay, rng_loaders
from .rng import set_rng_state
from .suggest import smoothing_beta
from .weights import load_weights, save_weights

__all__ = ["Learner", "CKPT_BUDGET", "default_device", "cudnn_benchmark"]

CKPT_BUDGET = 0.005  # fit's default share of training time for checkpoints (RESULTS.md 4b)


# torch's public BatchNorm classes (their common base class is private); a lazy
# one becomes a BatchNormNd at its first forward.
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)


# What fit_one_cycle sets itself, each with where to go instead (checks.check_keywords).
_ONE_CYCLE_SETS = {"lr": "", "lr_sched": "use fit_sched(epochs, lr, lr_sched, mom_sched) for schedules of your own",
                   "mom_sched": "use fit_sched(epochs, lr, lr_sched, mom_sched) for schedules of your own"}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Learner(Fastai07Learner):
    """Train ``model`` on ``train_dl`` with ``loss_fn``, validating on ``valid_dl``.

    Batches: ``(inputs..., target)`` tuples, or Mappings passed to the model as keyword arguments
    with the target under ``labels``/``label``/``target``/``y``; ``batch_fn(batch) -> (args,
    kwargs, target)`` for anything else (``onecycle.batches``). ``loss_fn=None``: the model's own
    ``output.loss`` (Hugging Face models). ``opt``: a name in ``OPTIMIZERS`` or a factory
    ``(param_groups, lr) -> Optimizer``. ``metrics``: a list, or ``{name: metric}``.
    ``groups``: layer groups (default: ``model.param_groups()`` when present, else one group).
    ``wd``: decoupled weight decay (tensors of 2+ dims). ``clip``: global grad-norm clipping.
    ``amp``: mixed precision (bf16 on CPU, fp16 with a GradScaler on CUDA; or "bf16"/"fp16");
    ``scaler``: your own ``torch.amp.GradScaler``. ``accum``: an optimizer step every ``accum``
    batches. ``compile``: ``torch.compile`` the model for training. ``channels_last``: NHWC for
    4-D inputs (default: on CUDA with 2-D convolutions). ``cudnn_benchmark``: during fits on CUDA
    (default: on unless determinism is asked for), restored afterwards. On a GPU the data of a
    ``TensorLoader``/``LMLoader`` moves there once, when it fits (``data.place_on_device``).
    """

    def __init__(self, model: nn.Module, train_dl: Iterable, valid_dl: Iterable | None = None,
                 loss_fn: Callable | None = F.cross_entropy, opt: str | Callable = "sgd",
                 metrics: Sequence[Any] | Mapping[str, Any] = (), *, wd: float = 0.0, clip: float | None = None,
                 groups: Any = None, device: str | torch.device | None = None,
                 callbacks: Sequence[Callback] = (), amp: bool | str = False, accum: int = 1,
                 batch_fn: Callable | None = None, scaler: torch.amp.GradScaler | None = None,
                 quiet: bool = False, compile: bool = False, channels_last: bool | None = None,
                 distributed: bool | None = None, dist_timeout: float = D.DEFAULT_TIMEOUT,
                 scale_lr: bool = False, cudnn_benchmark: bool | None = None) -> None:
        C.check_type("model", model, nn.Module)
        C.check_loader("train_dl", train_dl)
        if valid_dl is not None:
            C.check_loader("valid_dl", valid_dl)
        if isinstance(loss_fn, type):
            raise TypeError(f"loss_fn is the class {loss_fn.__name__}: pass an instance, {loss_fn.__name__}(), or a "
                            "function such as F.cross_entropy")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable or None (the model's own .loss), got {loss_fn!r}")
        if batch_fn is not None and not callable(batch_fn):
            raise TypeError(f"batch_fn must be callable, got {batch_fn!r}")
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise TypeError(f"scaler must be a torch.amp.GradScaler, got {scaler!r}")
        if cudnn_benchmark is not None and not isinstance(cudnn_benchmark, bool):
            raise TypeError(f"cudnn_benchmark must be True, False or None, got {cudnn_benchmark!r}")
        if amp not in (False, True, "bf16", "fp16"):
            raise ValueError(f"amp must be False, True, 'bf16' or 'fp16', got {amp!r}")
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device must be a torch.device or a name such as 'cpu' or 'cuda:0', "
                                 f"got {device!r}") from None
        self.metrics = named_metrics(metrics)
        self.opt_func = opt
        self.wd = C.check_number("wd", wd, low=0)
        self.clip, self.amp, self.accum = clip, amp, C.check_int("accum", accum, 1)
        self.rank, self.world_size, dist_device = 0, 1, None
        if distributed or (distributed is None and D.env_world()[2] > 1):
            self.rank, self.world_size, dist_device = D.setup(C.check_number("dist_timeout", dist_timeout, low=1))
        self.scale_lr = bool(scale_lr)
        self.device = device if device is not None else dist_device or default_device()
        self.model = model.to(self.device)
        self.train_dl = D.shard_loader(train_dl, self.rank, self.world_size, train=True)
        self.valid_dl = D.shard_loader(valid_dl, self.rank, self.world_size, train=False)
        self.loss_fn, self.batch_fn, self.user_scaler = loss_fn, batch_fn, scaler
        self.groups, self.callbacks = groups, check_callbacks(callbacks)
        self.quiet = quiet or self.rank != 0  # one progress display: rank 0's
        self.compile, self.cudnn_benchmark = bool(compile), cudnn_benchmark
        self.channels_last = (channels_last if channels_last is not None else
                              self.device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._compiled: nn.Module | None = None
        self._ddp = D.wrap(self.model, self.device) if self.world_size > 1 else None
        self.recorder = Recorder(metric_columns(self.metrics))
        self.opt: torch.optim.Optimizer | None = None
        self.scheduler: Scheduler | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._owns_wd, self._wd_hook = False, None
        # The loop's state, all of it here (the LR finder saves and restores it).
        self.epoch = self.iter = self.n_epochs = self.batches = self.nan_skipped = 0
        self.pred = self.loss = self.target = self.val_result = None
        self.epoch_lrs: list[list[float]] = []  # this epoch's per-batch LRs, momenta and losses so far
        self.epoch_moms: list[float | None] = []
        self.epoch_losses: list[torch.Tensor] = []
        self.stepped = False  # whether the last batch ended an accumulation window (an optimizer step)
        self.on_nan, self.suggested_lr, self.no_suggestion_reason = "raise", None, None
        self.checkpointer = Checkpointer()  # clean stops, and checkpoints when a fit asks for them
        self.progress = Progress((), quiet=True)
        self._hooks, self._trainable, self._train_model = hooks_of([]), [], self.model
        self._bad_window, self._pending, self._sched = False, None, None
        self._short_epochs: list[tuple[int, int]] = []  # (epoch, batches) of those train_dl ended early
        self._frozen_bn: list[nn.Module] = []

    # ---- settings ---------------------------------------------------------------------------
    @property
    def clip(self) -> float | None:
        return self._clip

    @clip.setter
    def clip(self, value: float | None) -> None:
        self._clip = None if value is None else C.check_number("clip", value, low=0, low_open=True)

    @property
    def opt_func(self) -> str | Callable:
        return self._opt_func

    @opt_func.setter
    def opt_func(self, value: str | Callable) -> None:
        if isinstance(value, str):
            if value.lower() not in OPTIMIZERS:
                raise ValueError(f"opt must be one of {sorted(OPTIMIZERS)} or a factory, got {value!r}")
            value = value.lower()
        elif not callable(value):
            raise TypeError(f"opt must be a name or a factory (params, lr) -> Optimizer, got {value!r}")
        self._opt_func = value
        self.opt = None  # the next fit or lr_find builds it

    @property
    def amp_dtype(self) -> torch.dtype | None:
        if not self.amp:
            return None
        if self.amp == "fp16" or (self.amp is True and self.device.type == "cuda"):
            return torch.float16
        return torch.bfloat16

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else contextlib.nullcontext()

    # ---- optimizer --------------------------------------------------------------------------
    def layer_groups(self) -> list[list[nn.Parameter]]:
        return layer_groups(self.model, self.groups)

    def create_opt(self, groups: list[list[nn.Parameter]] | None = None) -> torch.optim.Optimizer:
        """The optimizer over the layer groups (frozen parameters included, so unfreezing needs no
        new optimizer), with the decoupled weight decay hook unless it decays weights itself."""
        factory = OPTIMIZERS[self.opt_func] if isinstance(self.opt_func, str) else self.opt_func
        groups = self.layer_groups() if groups is None else groups
        opt = factory([{"params": g} for g in groups], 1e-3)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"the optimizer factory returned {type(opt).__name__}, not an Optimizer")
        if len(opt.param_groups) != len(groups):
            raise ValueError(f"the optimizer factory made {len(opt.param_groups)} param groups "
                             f"from {len(groups)} layer groups")
        self._owns_wd = bool(getattr(opt, "applies_weight_decay", False))
        self._wd_hook = None if self._owns_wd else DecoupledWeightDecay(opt, 0.0)
        self.opt = opt
        return opt

    def use_opt(self, opt: torch.optim.Optimizer) -> None:
        """Train with ``opt`` as it is: its groups, state and own weight decay (no decoupled hook)."""
        C.check_type("optimizer", opt, torch.optim.Optimizer)
        self.opt, self._owns_wd, self._wd_hook = opt, True, None

    def drop_opt(self) -> None:
        """Forget the optimizer (and detach the weight-decay hook this Learner gave it)."""
        if self.opt is not None and self._wd_hook is not None:
            self._wd_hook.remove()
        self.opt = None

    @property
    def wd_key(self) -> str:
        """The param-group key the weight decay goes to for this optimizer."""
        return "weight_decay" if self._owns_wd else DECOUPLED_WD

    def _prepare_opt(self, lrs: object, wd: object) -> tuple[torch.optim.Optimizer, list[float], list[float]]:
        """Check ``lrs``/``wd`` against the groups, then build the optimizer if needed: nothing
        changes when the input is bad."""
        groups = self.layer_groups() if self.opt is None else None
        n = len(groups) if groups is not None else len(self.opt.param_groups)
        peaks = spread_lrs(lrs, n)
        wds = C.per_group("wd", self.wd if wd is None else wd, n, low=0)
        return self.opt or self.create_opt(groups), peaks, wds

    # ---- public training API ----------------------------------------------------------------
    def fit_one_cycle(self, epochs: int, lr_max: float | Sequence[float] | slice | None = None, *,
                      div: float = 25.0, div_final: float = 1e5, pct_start: float = 0.25,
                      moms: Sequence[float] | None = (0.95, 0.85, 0.95), wd: float | None = None,
                      wd_norm: float | None = None, wd_sched: Callable[[float], float] | None = None,
                      callbacks: Sequence[Callback] = (), **kw: Any) -> Recorder:
        """fastai v2's 1cycle: cosine warm-up from ``lr_max/div`` over ``pct_start`` of training,
        cosine annealing to ``lr_max/div_final``, momentum mirrored. ``lr_max=None`` takes the
        suggestion of the last ``lr_find``. ``wd_norm`` (instead of ``wd``): Loshchilov & Hutter's
        normalized decay, ``wd = wd_norm * sqrt(batch_size / (n_train * epochs))``. ``wd_sched``
        multiplies ``wd`` by a schedule of progress."""
        C.check_keywords("fit_one_cycle", kw, self.fit_one_cycle, [self.fit_sched], sets=_ONE_CYCLE_SETS)
        C.check_int("epochs", epochs, 1)
        if wd_norm is not None:
            if wd is not None:
                raise ValueError(f"pass wd or wd_norm, not both (got wd={wd!r}, wd_norm={wd_norm!r})")
            wd = normalized_wd(wd_norm, *self._batch_and_size(), epochs)
        if lr_max is None:
            lr_max = self.suggested_lr
            if lr_max is None:
                why = getattr(self, "no_suggestion_reason", None)
                raise ValueError("lr_max is None and no lr_find suggestion is available: pass lr_max"
                                 + (f" (the last lr_find gave none: {why})" if why else ""))
        policy = S.cos_one_cycle(div=div, div_final=div_final, pct_start=pct_start, moms=moms)
        return self.fit_sched(epochs, lr_max, policy.lr, policy.mom, wd=wd, wd_sched=wd_sched,
                              callbacks=callbacks, **kw)

    def fit_sched(self, epochs: int, lr: float | Sequence[float] | slice, lr_sched: Callable[[float], float],
                  mom_sched: Callable[[float], float] | None = None, *, wd: float | None = None,
                  wd_sched: Callable[[float], float] | None = None, callbacks: Sequence[Callback] = (),
                  extra_scheds: dict[str, Callable] | None = None, checkpoint_dir: str | os.PathLike | None = None,
                  every: int | None = None, ckpt_budget: float | None = CKPT_BUDGET, resume: bool | str = False,
                  reschedule: bool = False, on_nan: str = "raise", steps_per_epoch: int | None = None) -> Recorder:
        """Train ``epochs`` epochs with any schedules of progress: ``lr_sched`` multiplies each
        group's peak LR, ``mom_sched`` sets momentum (or beta1), ``wd_sched`` multiplies ``wd``.

        ``checkpoint_dir``: keep the latest full training state there (every ``every`` optimizer
        steps and at epoch ends); ``resume=True`` continues exactly from it (``"auto"``: also start
        fresh when there is none); ``reschedule=True`` allows a resume into a fit of another length
        or schedule. ``ckpt_budget``: the share of training time checkpoints may take: a scheduled
        write is skipped while the last one finished less than its cost divided by the budget ago.
        The first and last epoch ends and SIGINT/SIGTERM always write; ``None`` writes at every
        scheduled point. ``on_nan``: ``"raise"`` (``NonFiniteLossError``) or ``"skip"`` a batch
        whose loss is not finite, before it updates anything; ``"off"`` removes the check (and its
        per-batch read on CUDA). ``steps_per_epoch``: optimizer steps per epoch, for a loader
        without ``len()``, or fewer than a loader gives. An epoch also ends when the loader does;
        then a warning says the schedule did not reach its end, and the batches of an accumulation
        window the loader ended inside are dropped.
        """
        epochs = C.check_int("epochs", epochs, 1)
        ckpt = Checkpointer(checkpoint_dir, every, ckpt_budget, resume, reschedule)  # checks its arguments
        if on_nan not in ("raise", "skip", "off"):
            raise ValueError(f"on_nan must be 'raise', 'skip' or 'off', got {on_nan!r}")
        scheds_in = {"lr_sched": lr_sched, "mom_sched": mom_sched, "wd_sched": wd_sched,
                     **{f"extra_scheds[{k!r}]": fn for k, fn in dict(extra_scheds or {}).items()}}
        for name, fn in scheds_in.items():  # checked here: the optimizer is made and set below
            if not callable(fn) and not (fn is None and name in ("mom_sched", "wd_sched")):
                raise TypeError(f"{name} must be a schedule (a function of progress in [0, 1]), got {fn!r}")
        if mom_sched is not None:
            check_momentum_schedule(mom_sched)
        callbacks = check_callbacks(callbacks)
        batches = self._batches_per_epoch(steps_per_epoch)
        self._check_valid_dl()
        opt, peaks, wds = self._prepare_opt(lr, wd)
        if self.scale_lr:  # the linear scaling rule: world_size times the global batch, times the LR
            peaks = [p * self.world_size for p in peaks]
        for group, peak, w in zip(opt.param_groups, peaks, wds):
            group["lr"] = group["initial_lr"] = peak  # initial_lr: the schedule's base, where torch keeps it
            group[self.wd_key] = w
            group.pop(f"initial_{self.wd_key}", None)
        scheds = {"lr": lr_sched, **(extra_scheds or {})}
        if mom_sched is not None:
            scheds["momentum"] = mom_sched
        if wd_sched is not None:
            scheds[self.wd_key] = wd_sched
        scheduler = Scheduler(opt, epochs * math.ceil(batches / self.accum), scheds)
        self.on_nan, self._sched = on_nan, None  # _sched: fastai 0.7's learn.sched is the recorder again
        if self._wd_hook is not None:  # no decay all fit long: no hook to call every step
            self._wd_hook.set_active(any(wds) or DECOUPLED_WD in scheds)
        try:
            self._fit(epochs, batches, scheduler, ckpt, callbacks)
        finally:
            scheduler.remove()
            if self._wd_hook is not None:
                self._wd_hook.set_active(True)
        if self._short_epochs and self.rank == 0:
            self._warn_short_epochs(batches)
        return self.recorder

    def _warn_short_epochs(self, batches: int) -> None:
        """The schedule was laid out for ``batches`` an epoch and train_dl gave fewer: say so."""
        epoch, got = self._short_epochs[0]
        dropped = sum(b % self.accum for _, b in self._short_epochs)  # batches of windows left unfinished
        n = len(self._short_epochs)
        C.warn(f"train_dl ended before the {batches} batches an epoch was given, in {n} epoch{'s' * (n > 1)} "
               f"(epoch {epoch + 1}: {got}), so the schedule did not reach its end (step "
               f"{self.scheduler.step_count} of {self.scheduler.total_steps}); pass the steps_per_epoch the loader "
               "gives" + (f". {dropped} batches that ended inside an accumulation window were dropped (no "
                          "optimizer step)" if dropped else ""))

    # ---- the loop -----------------------------------------------------------------------------
    def _fit(self, epochs: int, batches: int, scheduler: Scheduler, ckpt: Checkpointer, callbacks: list[Callback],
             start_epoch: int = 0, validate: bool = True) -> None:
        """Epochs ``start_epoch..epochs-1`` of ``batches`` batches; ``CancelFit`` from any hook ends
        the fit cleanly; ``after_fit`` always runs. The LR finder runs this too (``validate=False``:
        it validates at every step itself)."""
        self.n_epochs, self.batches, self.scheduler, self.checkpointer = epochs, batches, scheduler, ckpt
        self._setup(callbacks)
        state = ckpt.load(self)  # a checkpoint to resume from, checked before anything changes
        self.recorder.reset(smoothing_beta(epochs * batches))  # a lag of ~10% of the fit's iterations
        self.nan_skipped, self._pending, self._short_epochs = 0, None, []
        self.progress = Progress(self.recorder.metric_names, quiet=self.quiet)
        start_epoch = ckpt.restore(self, state) if state is not None else start_epoch
        failure = None
        try:
            with ckpt.signals(), cudnn_benchmark(self.device, self.cudnn_benchmark):
                self.call("before_fit")
                for self.epoch in range(start_epoch, epochs):
                    self._one_epoch(validate)
        except CancelFit:
            pass
        except BaseException as e:
            failure = e
            if self.world_size > 1:
                D.mark_fault()
                e.add_note(f"onecycle: raised on rank {self.rank} of {self.world_size}")
            raise
        finally:
            try:
                ckpt.wait(self, failure)  # the fit returns (or raises) with its checkpoint on disk
            finally:
                self.call("after_fit")

    def _setup(self, callbacks: Sequence[Callback]) -> None:
        """Optimizer, hooks, trainable parameters, scaler, data placement, compiled model."""
        if self.opt is None:
            self.create_opt()
        auto = [TrustRatios()] if hasattr(self.opt, "last_trust_stats") else []
        self._hooks = hooks_of([*self.callbacks, *callbacks, *auto])
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        fp16 = self.amp_dtype == torch.float16
        self.scaler = self.user_scaler if self.user_scaler is not None else (
            torch.amp.GradScaler(self.device.type) if fp16 else None)
        self.place_data()
        base = self.model if self._ddp is None else self._ddp
        if self.compile and self._compiled is None:
            self._compiled = torch.compile(base)
        self._train_model = self._compiled if self.compile else base
        self._bad_window = False

    def call(self, hook: str) -> None:
        for fn in self._hooks[hook]:
            fn(self)

    def place_data(self) -> None:
        """In-memory data (``TensorLoader``, ``LMLoader``) onto a GPU once, when it fits."""
        if self.device.type != "cpu":
            from .data import place_loaders
            place_loaders((self.train_dl, self.valid_dl), self.device)

    def _one_epoch(self, validate: bool = True) -> None:
        start = time.perf_counter()
        self.call("before_epoch")
        train_loss = self._train_epoch()
        val = None
        if validate and self.valid_dl is not None:
            self.call("before_validate")
            val = self.val_result = self.validate()
            self.call("after_validate")
        seconds = time.perf_counter() - start
        self.recorder.add_epoch(train_loss, val, seconds)
        self.progress.epoch_row(self.epoch, train_loss, val, seconds)
        self.call("after_epoch")
        self.checkpointer.epoch_end(self)  # writes when due (always after the first and last epoch)

    def _train_epoch(self) -> float:
        """One pass over ``train_dl`` (``self.batches`` batches at most); the mean training loss."""
        it, start = self._start_epoch()
        n, k = self.batches, self.accum
        bar = self.progress.bar(n, self.epoch, self.n_epochs)
        i = start - 1
        try:
            for i, batch in zip(range(start, n), it):
                self.iter = i
                window = k if i < n - n % k else n % k  # the last window may be shorter
                self.one_batch(batch, window, step=(i + 1) % k == 0 or i == n - 1)
                bar.update(i, self.epoch_losses)
        except BaseException as e:
            # A cancelled, interrupted or failed epoch's iterations are history too (a plot of the loss
            # up to a Ctrl-C or a NaN). Under data-parallel recording is a collective: only on a
            # CancelFit, which every rank raises together. It never hides the error being raised.
            if self.world_size == 1 or isinstance(e, CancelFit):
                with contextlib.suppress(Exception):
                    self._end_epoch()
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
            self._short_epochs.append((self.epoch, i + 1))
            if i >= start and not self.stepped:  # inside an accumulation window: those batches are dropped,
                self.opt.zero_grad(set_to_none=True)  # never carried into the next epoch's first step
                self._bad_window = False
        done = self._end_epoch()
        return sum(done) / len(done) if done else math.nan

    def one_batch(self, batch: Any, window: int = 1, step: bool = True) -> torch.Tensor:
        """One batch: the optimizer steps when ``step`` (the accumulation window's last batch), with
        the loss scaled by ``1/window``. Returns the detached loss."""
        self.call("before_batch")
        self.epoch_lrs.append([g["lr"] for g in self.opt.param_groups])
        self.epoch_moms.append(get_hyper(self.opt.param_groups[0], "momentum"))
        sync = contextlib.nullcontext() if step or self._ddp is None else self._ddp.no_sync()
        with sync:  # data-parallel: gradients are all-reduced on the window's last batch only
            self.pred, loss, self.target = self.forward(batch, self._train_model)  # move; forward, loss
            scaled = loss / window if window > 1 else loss
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self.loss = loss.detach()
        self.epoch_losses.append(self.loss)
        self._bad_window |= self.on_nan != "off" and not self._finite(self.loss)
        self.stepped = step
        if step:
            if self._bad_window:  # no update with a non-finite loss: drop the window, raise or skip
                self.opt.zero_grad(set_to_none=True)
                self._bad_window = False
                self._non_finite()
            else:
                if self.scaler is not None:
                    self.scaler.unscale_(self.opt)
                self.call("after_backward")
                if self.clip is not None:
                    torch.nn.utils.clip_grad_norm_(self._trainable, self.clip, foreach=True)
                # Hooks on opt.step(): decoupled weight decay before it, then the Scheduler sets the
                # next step's LR and momentum. A scaler skips the step (and so the schedule) on overflow.
                if self.scaler is not None:
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    self.opt.step()
                self.call("after_step")
                self.opt.zero_grad(set_to_none=True)
            self.checkpointer.step_end(self)  # an `every`-step checkpoint when due; a clean stop on a signal
        self.call("after_batch")
        return self.loss

    def forward(self, batch: Any, model: nn.Module | None = None,
                with_loss: bool = True) -> tuple[Any, torch.Tensor | None, Any]:
        """Move one batch to the device and run ``model`` (default the training model) under
        autocast: ``(predictions, loss, target)``; the loss is None when there is none to compute
        (no target and no ``.loss`` from the model), or, for ``loss_fn``, when not ``with_loss``."""
        args, kwargs, target = split_batch(batch, self.batch_fn, keep_target=self.loss_fn is None)
        args, kwargs = to_device((args, kwargs), self.device, self.channels_last)
        target = to_device(target, self.device)
        with self.autocast():
            own_loss, preds = split_output((self._train_model if model is None else model)(*args, **kwargs))
            if self.loss_fn is None:
                loss = own_loss
            else:
                loss = None if target is None or not with_loss else self.loss_fn(preds, target)
        if loss is None and torch.is_grad_enabled():
            raise ValueError("no loss for this batch: it has no target and the model returned no .loss "
                             "(give batches a target, or use a model that computes its loss with loss_fn=None)")
        return preds, loss, target

    def _start_epoch(self) -> tuple[Iterator, int]:
        """Modes, the loader's epoch, its iterator; on a mid-epoch resume, the epoch's RNG replayed
        (the loader's generators too), the batches already trained on skipped, then the checkpoint's
        RNG (``resume.py``)."""
        self._train_mode()
        if callable(getattr(self.model, "reset", None)):
            self.model.reset()
        pending, self._pending, loaders = self._pending, None, rng_loaders(self)
        if pending is not None:
            set_rng_state(pending["epoch_rng"], loaders)
        self.checkpointer.epoch_start(self)  # the RNG as the epoch begins, for a later resume
        if callable(getattr(self.train_dl, "set_epoch", None)):
            self.train_dl.set_epoch(self.epoch)
        replay = batches_to_replay(self.train_dl, pending) if pending is not None else 0
        it = iter(self.train_dl)
        self.epoch_lrs, self.epoch_moms, self.epoch_losses = [], [], []
        if pending is None:
            return it, 0
        part = pending["partial"]
        for _ in range(replay):  # a loader that keeps its own position resumes there instead
            next(it)
        set_rng_state(pending["rng"], loaders)
        self.epoch_lrs, self.epoch_moms = [list(r) for r in part["lrs"]], list(part["moms"])
        self.epoch_losses = list(torch.tensor(part["losses"], dtype=torch.float32, device=self.device).unbind())
        return it, len(part["moms"])

    def _end_epoch(self) -> list[float]:
        """The epoch's iterations into the recorder: one host sync (and one collective) per epoch."""
        n = len(self.epoch_losses)
        losses = torch.stack(self.epoch_losses).float() if n else torch.empty(0)
        if self.world_size > 1:  # every rank records the mean over ranks
            losses = D.all_reduce_sum(losses) / self.world_size
        done = losses.tolist()
        self.recorder.add_iterations(self.epoch_lrs[:n], self.epoch_moms[:n], done)
        return done

    def _train_mode(self) -> None:
        """The model in train mode, except BatchNorm layers frozen with ``bn_freeze=True`` (eval)."""
        self.model.train()
        for m in self._frozen_bn:
            m.eval()

    def _finite(self, loss: torch.Tensor) -> bool:
        # One read of the loss before the step: free on the CPU, a sync on CUDA (the price of never
        # applying a NaN update). Data-parallel ranks must agree, or their replicas would diverge.
        if self.world_size > 1:
            return not bool(D.all_reduce_sum((~torch.isfinite(loss)).any().float()))
        if loss.numel() == 1:
            return math.isfinite(loss.item())  # ~1 us on the CPU, against a kernel or two
        return bool(torch.isfinite(loss).all())

    def _non_finite(self) -> None:
        if self.on_nan == "skip":
            self.nan_skipped += 1
            return
        raise NonFiniteLossError(f"non-finite loss ({float(self.loss.float().mean())}) at epoch {self.epoch + 1}, "
                                 f"iteration {self.iter}: no update was applied with it (on_nan='skip' skips such "
                                 "batches)")

    def reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over data-parallel ranks (``t`` itself in one process)."""
        return D.all_reduce_sum(t.detach().clone()) / self.world_size if self.world_size > 1 else t

    def _batches_per_epoch(self, steps_per_epoch: int | None = None) -> int:
        if steps_per_epoch is not None:
            steps, n = C.check_int("steps_per_epoch", steps_per_epoch, 1), C.loader_len(self.train_dl)
            if n is None:
                return steps * self.accum
            if steps > -(-n // self.accum):  # the schedule would stop part way, at the loader's end
                raise ValueError(f"steps_per_epoch={steps} is more than train_dl's {n} batches give "
                                 f"({-(-n // self.accum)} steps with accum={self.accum})")
            return min(steps * self.accum, n)  # the loader's last batch closes its (shorter) window
        try:
            n = len(self.train_dl)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"train_dl ({type(self.train_dl).__name__}) has no len(): pass steps_per_epoch= "
                            "(the schedule is defined on progress)") from None
        if n < 1:
            raise ValueError(f"train_dl is empty (len {n})")
        return n

    def _check_valid_dl(self) -> None:
        if self.valid_dl is not None and C.loader_len(self.valid_dl) == 0:
            raise ValueError("valid_dl is empty (len 0): give it batches, or pass valid_dl=None")

    def _batch_and_size(self) -> tuple[int, int]:
        dl = self.train_dl
        bs = getattr(dl, "batch_size", None)
        n = getattr(dl, "n", None) or (len(dl.dataset) if hasattr(dl, "dataset") else None)
        if not bs or not n:
            raise ValueError("wd_norm needs train_dl.batch_size and the number of training samples")
        return int(bs), int(n)

    # ---- weights ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, with_opt: bool = False) -> Path:
        """Model weights (and optimizer state with ``with_opt``), written atomically with a hash;
        a path ending in ``.safetensors`` exports the weights in that format (optional extra)."""
        if with_opt and self.opt is None:
            raise ValueError("with_opt=True but there is no optimizer yet (fit or create_opt first)")
        return save_weights(path, self.model, self.opt if with_opt else None)

    def load(self, path: str | os.PathLike, with_opt: bool = False, strict: bool = True) -> None:
        """Load what ``save`` wrote (verified, ``weights_only``); a plain state_dict file or a
        ``.safetensors`` file works too."""
        load_weights(path, self.model, (self.opt or self.create_opt()) if with_opt else None, self.device, strict)

    # ---- fine-tuning --------------------------------------------------------------------------
    def freeze_to(self, n: int, bn_freeze: bool = False) -> None:
        """Freeze layer groups ``[:n]`` (no gradients) and unfreeze the rest; ``n`` may be
        negative (``-1``: all but the head). ``bn_freeze=True`` also keeps the BatchNorm layers of
        frozen groups in eval mode, their running statistics fixed."""
        groups = self.layer_groups()
        if len(groups) < 2 and n not in (0, False):
            raise ValueError(f"freeze_to({n!r}) needs several layer groups, but the model has 1: define them with "
                             "Learner(groups=[params_of_body, params_of_head]) or a model.param_groups() method")
        if isinstance(n, bool) or not isinstance(n, int) or not -len(groups) <= n <= len(groups):
            raise ValueError(f"freeze_to n must be an int in [-{len(groups)}, {len(groups)}] "
                             f"for {len(groups)} param groups, got {n!r}")
        frozen = {id(p) for g in groups[:n] for p in g}
        for g in groups:
            for p in g:
                p.requires_grad_(id(p) not in frozen)
        self._frozen_bn = [m for m in self.model.modules() if isinstance(m, _BATCH_NORMS)
                           and any(id(p) in frozen for p in m.parameters())] if bn_freeze else []

    def freeze(self, bn_freeze: bool = False) -> None:
        """Train only the last layer group (the head)."""
        self.freeze_to(-1, bn_freeze)

    def unfreeze(self) -> None:
        self.freeze_to(0)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100.0,
                  pct_start: float = 0.3, div: float = 5.0, bn_freeze: bool = False, **kw: Any) -> Recorder:
        """Transfer learning: a short 1cycle on the head with the body frozen, then one long 1cycle
        on the unfrozen network with discriminative LRs from ``base_lr/2/lr_mult`` to
        ``base_lr/2``. The returned recorder holds the second phase; ``learn.head_history`` the first."""
        C.check_keywords("fine_tune", kw, self.fine_tune, [self.fit_one_cycle, self.fit_sched],
                         sets={"lr_max": "", **_ONE_CYCLE_SETS})
        C.check_int("epochs", epochs, 1)
        C.check_int("freeze_epochs", freeze_epochs, 1)
        C.check_number("base_lr", base_lr, low=0, low_open=True)
        C.check_number("lr_mult", lr_mult, low=1)
        self.freeze(bn_freeze)
        self.fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99, **kw)
        self.head_history = Recorder.from_state(self.recorder.state_dict())
        self.unfreeze()
        lr = base_lr / 2
        return self.fit_one_cycle(epochs, slice(lr / lr_mult, lr), pct_start=pct_start, div=div, **kw)

    # ---- LR range test ------------------------------------------------------------------------
    def lr_find(self, start_lr: Any = 1e-7, end_lr: Any = 10.0, num_it: int = 100, **kw: Any) -> Any:
        """LR range test with validation loss and metrics at every step (``lr_finder.lr_find``);
        returns an ``LRFindResult``. Model, optimizer, RNG and history are restored afterwards."""
        C.check_keywords("lr_find", kw, self.lr_find, [find], sets={"learn": ""})
        return find(self, start_lr=start_lr, end_lr=end_lr, num_it=num_it, **kw)

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, dl: Iterable | None = None) -> dict[str, float]:
        """Loss and every metric over the whole loader, each batch weighted by its number of
        targets: ``{"val_loss": ..., <metric>: ...}``; the model's modes are restored. A loader
        with ``eval_batches()`` (``TensorLoader``) is read through it: in bigger chunks."""
        dl = self.valid_dl if dl is None else dl
        if dl is None:
            raise ValueError("validate needs a loader: valid_dl is None")
        with _evaluating(self.model):
            if callable(getattr(self.model, "reset", None)):
                self.model.reset()
            acc = MetricAccumulator(None, self.metrics, self.device)
            for batch in _eval_batches(dl):
                preds, loss, target = self.forward(batch, self.model)
                if loss is None:  # a loss of nothing would read NaN
                    raise ValueError("validation needs a target in every batch (or a model that returns its .loss), "
                                     "and a batch of the validation loader has none; predict() takes batches "
                                     "without targets")
                acc.add(preds, target, loss=loss)
        return acc.result(reduce=D.all_reduce_sum if self.world_size > 1 else None)

    @torch.no_grad()
    def predict(self, dl: Iterable | None = None, with_targets: bool = False) -> Any:
        """The model's predictions over ``dl`` (default the validation loader), concatenated on
        the CPU (a dict of them for dict outputs); batches need no target. ``with_targets``: also
        the concatenated targets (None when the batches have none)."""
        dl = self.valid_dl if dl is None else dl
        if dl is None:
            raise ValueError("predict needs a loader: valid_dl is None")
        preds, targets = [], []
        with _evaluating(self.model):
            for batch in _eval_batches(dl):
                p, _, y = self.forward(batch, self.model, with_loss=False)  # targets may be ids: no loss_fn
                preds.append(p)
                targets.append(y)
        out = _concat(preds)
        if not with_targets:
            return out
        return out, None if any(t is None for t in targets) else _concat(targets)


def _concat(values: list[Any]) -> Any:
    """Batches of tensors (or dicts or tuples of them) joined on the CPU, floats as float32."""
    if not values:
        raise ValueError("dl yielded no batch")
    first = values[0]
    if isinstance(first, Mapping):
        return {k: _concat([v[k] for v in values]) for k in first}
    if isinstance(first, tuple) and any(isinstance(x, (torch.Tensor, Mapping, tuple)) for x in first):
        # a model returning several outputs: each joined over the batches (a tuple of ids is flattened below)
        return tuple(_concat([v[i] for v in values]) for i in range(len(first)))
    if isinstance(first, torch.Tensor):
        out = torch.cat([v.detach().cpu() for v in values])
        return out.float() if out.is_floating_point() else out
    return [x for v in values for x in v]


def _eval_batches(dl: Iterable) -> Iterable:
    """Through ``eval_batches()`` where the loader has one (a ``TensorLoader``: bigger chunks)."""
    C.check_loader("dl", dl)
    return dl.eval_batches() if callable(getattr(dl, "eval_batches", None)) else dl


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards every module is back in its own mode (a BatchNorm frozen with
    ``bn_freeze`` stays in eval while the rest trains)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        restore_modes(modes)


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
