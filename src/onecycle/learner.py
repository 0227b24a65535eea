"""The Learner: the public training API over one model, its data, loss and optimizer.

``fit_one_cycle``/``fit_sched`` train (a fit runs a ``loop.Loop``, whose ``one_batch`` follows a
batch top to bottom), ``lr_find`` runs the LR range test on a loop of its own, ``validate``/
``predict`` evaluate (``evaluate.py``), ``save``/``load`` hold the weights, ``freeze``/``fine_tune``
do transfer learning. The running fit's state is ``learn.loop`` (callbacks read ``learn.epoch``,
``learn.loss``, ...). ``legacy.Learner`` (``onecycle.Learner``) adds the fastai 0.7 spellings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import checks as C
from . import distributed as D
from . import evaluate as E
from . import schedules as S
from .batches import in_place, split_batch, split_output, to_device
from .callbacks import Callback, check_callbacks
from .checkpointer import Checkpointer
from .loop import Loop, batches_per_epoch, steps_for
from .lr_finder import find
from .metrics import metric_columns, metric_directions, named_metrics
from .optim import build_optimizer, optimizer_factory
from .optim.extras import owns_weight_decay, prepare_fit
from .optim.groups import DECOUPLED_WD, DecoupledWeightDecay, freeze_groups, layer_groups, normalized_wd_for, spread_lrs
from .optim.scheduler import check_fit_schedules, fit_scheduler
from .recorder import Recorder
from .weights import load_weights, save_weights

__all__ = ["Learner", "CKPT_BUDGET", "default_device"]

CKPT_BUDGET = 0.005  # fit's default share of training time for checkpoints (RESULTS.md 4b)


# What fit_one_cycle sets itself, each with where to go instead (checks.check_keywords).
_ONE_CYCLE_SETS = {"lr": "", "lr_sched": "use fit_sched(epochs, lr, lr_sched, mom_sched) for schedules of your own",
                   "mom_sched": "use fit_sched(epochs, lr, lr_sched, mom_sched) for schedules of your own"}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _loop_state(name: str) -> property:
    """A read-only view of the running (or last) fit's ``learn.loop.<name>`` (None before a fit)."""
    return property(lambda self: getattr(self.loop, name, None), doc=f"learn.loop.{name} (see loop.Loop)")


class Learner:
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
        C.check_callable("loss_fn", loss_fn, "callable (None: the model's own .loss)", none_ok=True)
        C.check_callable("batch_fn", batch_fn, none_ok=True)
        if scaler is not None:
            C.check_type("scaler", scaler, torch.amp.GradScaler)
        for name, flag in (("compile", compile), ("scale_lr", scale_lr), ("cudnn_benchmark", cudnn_benchmark)):
            C.check_choice(name, flag, (True, False, None) if name == "cudnn_benchmark" else (True, False))
        C.check_choice("amp", amp, (False, True, "bf16", "fp16"))
        device = C.check_device("device", device)
        self.metrics = named_metrics(metrics)
        self.opt_func = opt
        self.wd = C.check_number("wd", wd, low=0)
        self.clip, self.amp, self.accum = clip, amp, C.check_int("accum", accum, 1)
        self.rank, self.world_size, dist_device = 0, 1, None
        if distributed or (distributed is None and D.env_world()[2] > 1):
            self.rank, self.world_size, dist_device = D.setup(C.check_number("dist_timeout", dist_timeout, low=1))
        self.scale_lr = scale_lr
        self.device = device if device is not None else dist_device or default_device()
        self.model = model.to(self.device)
        self.train_dl, self.valid_dl = train_dl, valid_dl  # checked and sharded by their setters
        self.loss_fn, self.batch_fn, self.user_scaler = loss_fn, batch_fn, scaler
        self.groups, self.callbacks = groups, check_callbacks(callbacks)
        self.quiet = quiet or self.rank != 0  # one progress display: rank 0's
        self.compile, self.cudnn_benchmark = compile, cudnn_benchmark
        self.channels_last = (channels_last if channels_last is not None else
                              self.device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._compiled: nn.Module | None = None
        self._ddp = D.wrap(self.model, self.device) if self.world_size > 1 else None
        self.recorder = Recorder(metric_columns(self.metrics), higher_is_better=metric_directions(self.metrics))
        self.opt: torch.optim.Optimizer | None = None
        self._owns_wd, self._wd_hook = False, None
        self.loop: Loop | None = None  # the running fit's loop (or the last one's): its whole state
        self.suggested_lr, self.no_suggestion_reason = None, None  # from the last lr_find
        self.frozen_bn: list[nn.Module] = []  # BatchNorm layers freeze(bn_freeze=True) keeps in eval mode

    # The running (or last) fit's state, read-only views of learn.loop for callbacks.
    epoch, iter, n_epochs, batches, loss, pred, target, stepped, val_result, scheduler, scaler, checkpointer, \
        nan_skipped = (_loop_state(name) for name in (
            "epoch", "iter", "n_epochs", "batches", "loss", "pred", "target", "stepped", "val_result", "scheduler",
            "scaler", "checkpointer", "nan_skipped"))

    # ---- settings ---------------------------------------------------------------------------
    @property
    def train_dl(self) -> Iterable:
        return self._train_dl

    @train_dl.setter
    def train_dl(self, dl: Iterable) -> None:
        C.check_loader("train_dl", dl)  # a Dataset, a tensor or an empty loader is refused here too
        self._train_dl = D.shard_loader(dl, self.rank, self.world_size, train=True)

    @property
    def valid_dl(self) -> Iterable | None:
        return self._valid_dl

    @valid_dl.setter
    def valid_dl(self, dl: Iterable | None) -> None:
        if dl is not None:
            C.check_loader("valid_dl", dl)
        self._valid_dl = D.shard_loader(dl, self.rank, self.world_size, train=False)

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
        self._opt_func = optimizer_factory(value)
        self.opt = None  # the next fit or lr_find builds it

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """None without amp; float16 when asked for (or amp=True on CUDA), else bfloat16."""
        fp16 = self.amp == "fp16" or (self.amp is True and self.device.type == "cuda")
        return None if not self.amp else torch.float16 if fp16 else torch.bfloat16

    # ---- optimizer --------------------------------------------------------------------------
    def layer_groups(self) -> list[list[nn.Parameter]]:
        return layer_groups(self.model, self.groups)

    def create_opt(self, groups: list[list[nn.Parameter]] | None = None) -> torch.optim.Optimizer:
        """The optimizer over the layer groups (frozen parameters included, so unfreezing needs no
        new optimizer), with the decoupled weight decay hook unless it decays weights itself."""
        opt = build_optimizer(self.opt_func, self.layer_groups() if groups is None else groups)
        self._owns_wd = owns_weight_decay(opt)  # LARS, LAMB, schedule-free, Prodigy
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
            wd = normalized_wd_for(wd_norm, self.train_dl, epochs)
        if lr_max is None and (lr_max := self.suggested_lr) is None:
            why = self.no_suggestion_reason
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
        window the loader ended inside are dropped. Schedule-free optimizers and Prodigy: ``optim.extras``.
        """
        epochs = C.check_int("epochs", epochs, 1)
        ckpt = Checkpointer(checkpoint_dir, every, ckpt_budget, resume, reschedule)  # checks its arguments
        C.check_choice("on_nan", on_nan, ("raise", "skip", "off"))
        check_fit_schedules(lr_sched, mom_sched, wd_sched, extra_scheds)  # here: the optimizer is set below
        callbacks = check_callbacks(callbacks)
        batches = batches_per_epoch(self.train_dl, self.accum, steps_per_epoch)
        if self.valid_dl is not None:
            C.check_loader("valid_dl", self.valid_dl)  # not emptied since it was given
        n = len(self.opt.param_groups) if self.opt is not None else len(self.layer_groups())
        peaks, wds = spread_lrs(lr, n), C.per_group("wd", self.wd if wd is None else wd, n, low=0)
        opt = self.opt or self.create_opt()  # after every check: nothing changes when the input is bad
        mom_sched = prepare_fit(opt, peaks, lr_sched, mom_sched)  # optim.extras: what this optimizer takes
        if self.scale_lr:  # the linear scaling rule: world_size times the global batch, times the LR
            peaks = [p * self.world_size for p in peaks]
        scheds = {"lr": lr_sched, "momentum": mom_sched, self.wd_key: wd_sched, **(extra_scheds or {})}
        scheduler = fit_scheduler(opt, epochs * steps_for(batches, self.accum), peaks, {self.wd_key: wds}, scheds)
        if self._wd_hook is not None:  # no decay all fit long: no hook to call every step
            self._wd_hook.set_active(any(wds) or wd_sched is not None or DECOUPLED_WD in (extra_scheds or {}))
        try:
            self.place_data()
            self.loop = Loop(self, epochs, batches, scheduler, ckpt, [*self.callbacks, *callbacks], on_nan=on_nan)
            self.loop.run()
        finally:
            scheduler.remove()
            if self._wd_hook is not None:
                self._wd_hook.set_active(True)
        return self.recorder

    # ---- what a fit runs on -------------------------------------------------------------------
    @property
    def ddp(self) -> nn.Module | None:
        """The ``DistributedDataParallel`` wrapper under data-parallel training, else None."""
        return self._ddp

    def training_model(self) -> nn.Module:
        """The module a fit calls: the model, wrapped for data-parallel, compiled when asked."""
        base = self.model if self._ddp is None else self._ddp
        if self.compile and self._compiled is None:
            self._compiled = torch.compile(base)
        return self._compiled if self.compile else base

    def train_mode(self) -> None:
        """The model in train mode, except BatchNorm layers frozen with ``bn_freeze=True`` (eval), and
        an optimizer with modes (schedule-free) in its train mode."""
        self.model.train()
        for m in self.frozen_bn:
            m.eval()
        E.set_optimizer_mode(self.opt, train=True)

    def place_data(self) -> None:
        """In-memory data (``TensorLoader``, ``LMLoader``) onto a GPU once, when it fits."""
        if self.device.type != "cpu":
            from .data import place_loaders
            place_loaders((self.train_dl, self.valid_dl), self.device)

    def forward(self, batch: Any, model: nn.Module | None = None,
                with_loss: bool = True) -> tuple[Any, torch.Tensor | None, Any]:
        """Move one batch to the device and run ``model`` (default ``learn.model``) under
        autocast: ``(predictions, loss, target)``; the loss is None when there is none to compute
        (no target and no ``.loss`` from the model), or, for ``loss_fn``, when not ``with_loss``."""
        args, kwargs, target = split_batch(batch, self.batch_fn, keep_target=self.loss_fn is None)
        if kwargs or self.channels_last or not in_place(args, target, self.device):  # else already there (most often)
            args, kwargs = to_device((args, kwargs), self.device, self.channels_last)
            target = to_device(target, self.device)
        if self.amp:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                preds, loss = self._model_loss(self.model if model is None else model, args, kwargs, target, with_loss)
        else:  # (no null context to enter: this runs every batch)
            preds, loss = self._model_loss(self.model if model is None else model, args, kwargs, target, with_loss)
        if loss is None and torch.is_grad_enabled():
            raise ValueError("no loss for this batch: it has no target and the model returned no .loss "
                             "(give batches a target, or use a model that computes its loss with loss_fn=None)")
        return preds, loss, target

    def _model_loss(self, model: nn.Module, args: tuple, kwargs: dict, target: Any, with_loss: bool) -> tuple:
        out = model(*args, **kwargs)
        own_loss, preds = (None, out) if type(out) is torch.Tensor else split_output(out)
        if self.loss_fn is None:
            return preds, own_loss
        return preds, None if target is None or not with_loss else self.loss_fn(preds, target)

    # ---- weights ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, with_opt: bool = False) -> Path:
        """Model weights (and optimizer state with ``with_opt``), written atomically with a hash;
        a path ending in ``.safetensors`` exports the weights in that format (optional extra). A
        schedule-free optimizer's evaluation weights are what is saved."""
        if with_opt and self.opt is None:
            raise ValueError("with_opt=True but there is no optimizer yet (fit or create_opt first)")
        with E.evaluating(None, self.opt):
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
        self.frozen_bn = freeze_groups(self.model, self.layer_groups(), n, bn_freeze)

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
        """LR range test, validation loss and metrics at every step: an ``LRFindResult``. Options (each
        in ``onecycle.lr_finder.find``'s doc): step_mode, stop_div, div_th, with_valid, val_batches, wd, rule,
        runs, callbacks (the Learner's own do not run inside), keep_ratios, stop_rule. Model, optimizer,
        RNG and history are restored afterwards; inside a fit, it leaves that fit as it was."""
        C.check_keywords("lr_find", kw, self.lr_find, [find], sets={"learn": ""})
        return find(self, start_lr=start_lr, end_lr=end_lr, num_it=num_it, **kw)

    # ---- evaluation -------------------------------------------------------------------------
    def validate(self, dl: Iterable | None = None) -> dict[str, float]:
        """Loss and every metric over the whole loader (default ``valid_dl``), each batch weighted by
        its number of targets: ``{"val_loss": ..., <metric>: ...}``; the model's modes are restored.
        A loader with ``eval_batches()`` (``TensorLoader``) is read through it: in bigger chunks."""
        return E.validate(self, self.valid_dl if dl is None else dl)

    def predict(self, dl: Iterable | None = None, with_targets: bool = False) -> Any:
        """The model's predictions over ``dl`` (default ``valid_dl``), concatenated on the CPU (a dict
        of them for dict outputs); batches need no target. ``with_targets``: also the concatenated
        targets (None when the batches have none)."""
        return E.predict(self, self.valid_dl if dl is None else dl, with_targets)
