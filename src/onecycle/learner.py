"""The Learner: the public API over the training loop (``loop.py``).

Settings (optimizer, weight decay, clipping, AMP, accumulation, data-parallel), the fit methods
(the seed's ``fit``, ``fit_one_cycle``, ``fit_sched``), fine-tuning, weights, the LR finder entry
points, validation and prediction. Hyper-parameters are set by a ``Scheduler`` that advances on the
optimizer's real steps, so AMP overflow skips and accumulation windows never shift the schedule.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as D
from . import schedules as S
from .callbacks import Callback
from .checkpoint import (
    MAGIC,
    CheckpointWriter,
    atomic_save,
    load_safetensors,
    load_state_dict_file,
    safe_load,
    save_safetensors,
)
from .loop import TrainingLoop
from .metrics import MetricAccumulator, metric_name
from .optim.groups import (
    DECOUPLED_WD,
    DecoupledWeightDecay,
    layer_groups,
    normalized_wd,
    spread_lrs,
)
from .optim.scheduler import Scheduler, check_momentum_schedule
from .recorder import Recorder

__all__ = ["Learner", "OPTIMIZERS", "CKPT_BUDGET", "default_device"]

CKPT_BUDGET = 0.005  # fit's default share of training time for checkpoints (RESULTS.md 4b)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sgd(params: list[dict], lr: float) -> torch.optim.Optimizer:
    from .optim.sgd import SGD  # torch's SGD, with a lighter step for several param groups
    return SGD(params, lr=lr, momentum=0.9)


def _adamw(params: list[dict], lr: float) -> torch.optim.Optimizer:
    # beta2 0.99 and eps 1e-5 (fastai's choice): with 0.999/1e-8 the second moment lags the large
    # early-cycle gradients and tiny denominators late in the cycle blow steps up (the seed's
    # "diverges once out of two"). Weight decay is applied decoupled by the loop.
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.0)


def _lars(params: list[dict], lr: float) -> torch.optim.Optimizer:
    from .optim.lars import LARS
    return LARS(params, lr=lr, momentum=0.9)


def _lamb(params: list[dict], lr: float) -> torch.optim.Optimizer:
    from .optim.lamb import LAMB
    return LAMB(params, lr=lr, betas=(0.9, 0.99), eps=1e-6)


OPTIMIZERS: dict[str, Callable[[list[dict], float], torch.optim.Optimizer]] = {
    "sgd": _sgd, "adam": _adamw, "adamw": _adamw, "lars": _lars, "lamb": _lamb,
}


def _check_epochs(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


def _check_clip(value: object) -> float | None:
    if value is None:
        return None
    return S.check_number("clip", value, low=0, low_open=True)


def _is_onecycle_file(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


class Learner(TrainingLoop):
    """Train ``model`` on ``train_dl`` with ``loss_fn``, validating on ``valid_dl``.

    ``opt``: a name in ``OPTIMIZERS`` or a factory ``(param_groups, lr) -> Optimizer``.
    ``groups``: layer groups (default: ``model.param_groups()`` when present, else one group).
    ``wd``: decoupled weight decay (on tensors of 2+ dims). ``clip``: global grad-norm clipping.
    ``amp``: mixed precision (bf16 on CPU, fp16 with a GradScaler on CUDA; or "bf16"/"fp16").
    ``accum``: optimizer step every ``accum`` batches. ``compile``: ``torch.compile`` the model
    for training. ``channels_last``: NHWC memory format for 4-D inputs (default: on CUDA when the
    model has 2-D convolutions). ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` during
    fits and ``lr_find`` on CUDA (default: on, unless ``torch.backends.cudnn.deterministic`` or
    ``torch.use_deterministic_algorithms`` asks for determinism); the previous setting comes back
    afterwards. On a GPU, the data of a ``TensorLoader`` or ``LMLoader`` moves there at the first
    fit or ``lr_find``, in place, when training and validation data together fit in half the free memory
    (``onecycle.data.place_on_device``).
    """

    def __init__(self, model: nn.Module, train_dl: Iterable, valid_dl: Iterable | None = None,
                 loss_fn: Callable = F.cross_entropy, opt: str | Callable = "sgd",
                 metrics: Sequence[Callable] = (), *, wd: float = 0.0, clip: float | None = None,
                 groups: Any = None, device: str | torch.device | None = None,
                 callbacks: Sequence[Callback] = (), amp: bool | str = False, accum: int = 1,
                 quiet: bool = False, compile: bool = False, channels_last: bool | None = None,
                 distributed: bool | None = None, dist_timeout: float = D.DEFAULT_TIMEOUT,
                 scale_lr: bool = False, cudnn_benchmark: bool | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
        if cudnn_benchmark is not None and not isinstance(cudnn_benchmark, bool):
            raise TypeError(f"cudnn_benchmark must be True, False or None, got {cudnn_benchmark!r}")
        for m in metrics:
            if not (callable(m) or hasattr(m, "update")):
                raise TypeError(f"metrics must be callables or update/compute objects, got {m!r}")
        self.opt_fn = opt
        self.wd = S.check_number("wd", wd, low=0)
        self.clip = clip
        self.accum = _check_epochs("accum", accum)
        self.amp = self._check_amp(amp)
        self.rank, self.world_size, dist_device = 0, 1, None
        if distributed or (distributed is None and D.env_world()[2] > 1):
            self.rank, self.world_size, dist_device = D.setup(S.check_number("dist_timeout", dist_timeout, low=1))
        self.scale_lr = bool(scale_lr)
        self.device = torch.device(device) if device is not None else dist_device or default_device()
        self.model = model.to(self.device)
        train_dl = D.shard_loader(train_dl, self.rank, self.world_size, train=True)
        valid_dl = D.shard_loader(valid_dl, self.rank, self.world_size, train=False)
        self.train_dl, self.valid_dl, self.loss_fn = train_dl, valid_dl, loss_fn
        self.metrics = list(metrics)
        self.groups = groups
        self.callbacks = list(callbacks)
        self.quiet = quiet or self.rank != 0  # one progress display: rank 0's
        self.compile = bool(compile)
        self.cudnn_benchmark = cudnn_benchmark
        # channels_last pays off for 2-D convolutions on CUDA (tensor cores); None: automatic.
        self.channels_last = (channels_last if channels_last is not None else
                              self.device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._compiled: nn.Module | None = None
        self._ddp: nn.Module | None = None
        if self.world_size > 1:
            self._ddp = D.wrap(self.model, self.device)
        self.recorder = Recorder(metric_name(m) for m in self.metrics)
        self.sched: Any = self.recorder
        self.opt: torch.optim.Optimizer | None = None
        self.epoch = self.iter = 0
        self.n_epochs = 0
        self._frozen_bn: list[nn.Module] = []
        self.nan_skipped = 0
        self.checkpoint_dir: str | os.PathLike | None = None
        self.every: int | None = None
        self.ckpt_budget: float | None = CKPT_BUDGET
        self._ckpt_writer = CheckpointWriter()  # training checkpoints reach the disk in the background
        self.on_nan = "raise"
        self._signal: int | None = None

    # ---- settings ---------------------------------------------------------------------------
    @property
    def clip(self) -> float | None:
        return self._clip

    @clip.setter
    def clip(self, value: float | None) -> None:
        self._clip = _check_clip(value)

    @property
    def opt_fn(self) -> str | Callable:
        return self._opt_fn

    @opt_fn.setter
    def opt_fn(self, value: str | Callable) -> None:
        if isinstance(value, str):
            if value.lower() not in OPTIMIZERS:
                raise ValueError(f"opt must be one of {sorted(OPTIMIZERS)} or a factory, got {value!r}")
            value = value.lower()
        elif not callable(value):
            raise TypeError(f"opt must be a name or a factory (params, lr) -> Optimizer, got {value!r}")
        self._opt_fn = value
        self.opt = None  # the seed's `learn.opt_fn = LARS`: the next fit or lr_find builds it

    @staticmethod
    def _check_amp(amp: bool | str) -> bool | str:
        if amp not in (False, True, "bf16", "fp16"):
            raise ValueError(f"amp must be False, True, 'bf16' or 'fp16', got {amp!r}")
        return amp

    @property
    def amp_dtype(self) -> torch.dtype | None:
        if not self.amp:
            return None
        if self.amp == "fp16" or (self.amp is True and self.device.type == "cuda"):
            return torch.float16
        return torch.bfloat16

    # ---- optimizer --------------------------------------------------------------------------
    def layer_groups(self) -> list[list[nn.Parameter]]:
        return layer_groups(self.model, self.groups)

    def create_opt(self, groups: list[list[nn.Parameter]] | None = None) -> torch.optim.Optimizer:
        """Build the optimizer over the layer groups (all parameters, frozen ones included, so
        unfreezing needs no new optimizer)."""
        factory = OPTIMIZERS[self.opt_fn] if isinstance(self.opt_fn, str) else self.opt_fn
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

    @property
    def wd_key(self) -> str:
        """The param-group key the weight decay goes to for this optimizer."""
        return "weight_decay" if self._owns_wd else DECOUPLED_WD

    def _prepare_opt(self, lrs: object, wd: object) -> tuple[torch.optim.Optimizer, list[float], list[float]]:
        """Check ``lrs``/``wd`` against the groups; build the optimizer if needed. Nothing changes
        when the input is bad."""
        groups = self.layer_groups() if self.opt is None else None
        n = len(groups) if groups is not None else len(self.opt.param_groups)
        peaks = spread_lrs(lrs, n)
        wd = self.wd if wd is None else wd
        wds = [S.check_number("wd", w, low=0) for w in (wd if isinstance(wd, (list, tuple)) else [wd] * n)]
        if len(wds) != n:
            raise ValueError(f"wd has {len(wds)} values but there are {n} param groups")
        opt = self.opt or self.create_opt(groups)
        return opt, peaks, wds

    # ---- public training API ----------------------------------------------------------------
    def fit(self, lr: float | Sequence[float] | slice, n_cycle: int = 1, cycle_len: int | None = None,
            use_clr_beta: Sequence[float] | None = None, *, wd: float | None = None,
            callbacks: Sequence[Callback] = (), **kw: Any) -> Recorder:
        """The seed's ``fit``: ``fit(lr, epochs)`` trains at a constant LR;
        ``fit(lr, n_cycle, cycle_len=E, use_clr_beta=(div, pct[, mom_max, mom_min]))`` runs
        ``n_cycle`` 1cycles of ``E`` epochs each; ``cycle_len`` alone runs cosine annealing
        restarting every cycle (SGDR, as fastai 0.7 did)."""
        n_cycle = _check_epochs("n_cycle", n_cycle)
        if use_clr_beta is not None and cycle_len is None:
            raise ValueError("use_clr_beta needs cycle_len (epochs per cycle), got cycle_len=None")
        sgdr = cycle_len is not None
        cycle_len = 1 if cycle_len is None else _check_epochs("cycle_len", cycle_len)
        steps = self._steps_per_epoch()
        if use_clr_beta is not None:
            if not isinstance(use_clr_beta, (tuple, list)) or len(use_clr_beta) not in (2, 4):
                raise ValueError(f"use_clr_beta must be (div, pct) or (div, pct, mom_max, mom_min), "
                                 f"got {use_clr_beta!r}")
            policy = S.clr_beta(cycle_len * steps, *use_clr_beta)
            lr_sched, mom_sched = S.repeat(policy.lr, n_cycle), policy.mom and S.repeat(policy.mom, n_cycle)
        elif sgdr:
            lr_sched, mom_sched = S.repeat(S.cos(1.0, 0.0), n_cycle), None
        else:
            lr_sched, mom_sched = S.const(1.0), None
        return self.fit_sched(n_cycle * cycle_len, lr, lr_sched, mom_sched, wd=wd, callbacks=callbacks, **kw)

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
        _check_epochs("epochs", epochs)
        if wd_norm is not None:
            if wd is not None:
                raise ValueError(f"pass wd or wd_norm, not both (got wd={wd!r}, wd_norm={wd_norm!r})")
            wd = normalized_wd(wd_norm, *self._batch_and_size(), epochs)
        if lr_max is None:
            lr_max = getattr(self, "suggested_lr", None)
            if lr_max is None:
                raise ValueError("lr_max is None and no lr_find suggestion is available: pass lr_max")
        policy = S.cos_one_cycle(div=div, div_final=div_final, pct_start=pct_start, moms=moms)
        return self.fit_sched(epochs, lr_max, policy.lr, policy.mom, wd=wd, wd_sched=wd_sched,
                              callbacks=callbacks, **kw)

    def fit_sched(self, epochs: int, lr: float | Sequence[float] | slice, lr_sched: Callable[[float], float],
                  mom_sched: Callable[[float], float] | None = None, *, wd: float | None = None,
                  wd_sched: Callable[[float], float] | None = None, callbacks: Sequence[Callback] = (),
                  extra_scheds: dict[str, Callable] | None = None, checkpoint_dir: str | os.PathLike | None = None,
                  every: int | None = None, ckpt_budget: float | None = CKPT_BUDGET, resume: bool | str = False,
                  reschedule: bool = False, on_nan: str = "raise") -> Recorder:
        """Train ``epochs`` epochs with any schedules of progress: ``lr_sched`` multiplies each
        group's peak LR, ``mom_sched`` sets momentum (or beta1), ``wd_sched`` multiplies ``wd``.

        ``checkpoint_dir``: keep the latest full training state there (every ``every`` optimizer
        steps and at each epoch end); ``resume=True`` continues exactly from it (``"auto"``: also
        start fresh when there is none); ``reschedule=True`` allows a resume into a fit of another
        length or schedule. ``ckpt_budget``: the share of training time checkpoints may take. A
        scheduled write (every ``every`` steps, each epoch end) is skipped while the last one
        finished (or the fit started) less than its cost divided by the budget ago (the default
        0.005 with a 5 ms write: at most one per second or so), so short epochs do not spend their
        time writing; the file on disk then lags by at most that long. The last epoch end and
        SIGINT/SIGTERM always write; ``None`` writes at every scheduled point. ``on_nan``: ``"raise"``
        (``NonFiniteLossError``) or ``"skip"`` the batch; the check reads the loss before each step
        (free on the CPU, one sync per step on CUDA); ``"off"`` removes it.
        """
        epochs = _check_epochs("epochs", epochs)
        self._check_fit_options(checkpoint_dir, every, resume, on_nan, ckpt_budget)
        if mom_sched is not None:
            check_momentum_schedule(mom_sched)
        total = epochs * self._steps_per_epoch()
        opt, peaks, wds = self._prepare_opt(lr, wd)
        if self.scale_lr:  # the linear scaling rule: world_size times the global batch, times the LR
            peaks = [p * self.world_size for p in peaks]
        for group, peak, w in zip(opt.param_groups, peaks, wds):
            group["lr"], group[self.wd_key] = peak, w
        scheds = {"lr": lr_sched, **(extra_scheds or {})}
        if mom_sched is not None:
            scheds["momentum"] = mom_sched
        if wd_sched is not None:
            scheds[self.wd_key] = wd_sched
        scheduler = Scheduler(opt, total, scheds)
        self.checkpoint_dir, self.every, self.on_nan = checkpoint_dir, every, on_nan
        self.ckpt_budget = ckpt_budget
        if self._wd_hook is not None:  # no decay all fit long: no hook to call every step
            self._wd_hook.set_active(any(wds) or DECOUPLED_WD in scheds)
        try:
            self._fit(epochs, scheduler, list(callbacks), resume, reschedule)
        finally:
            scheduler.remove()
            if self._wd_hook is not None:
                self._wd_hook.set_active(True)
        return self.recorder

    @staticmethod
    def _check_fit_options(checkpoint_dir: object, every: object, resume: object, on_nan: object,
                           ckpt_budget: object = None) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be an int >= 1 or None, got {every!r}")
        if ckpt_budget is not None and (isinstance(ckpt_budget, bool) or not isinstance(ckpt_budget, int | float)
                                        or not 0 < ckpt_budget <= 1):
            raise ValueError(f"ckpt_budget must be a number in (0, 1] or None, got {ckpt_budget!r}")
        if resume not in (False, True, "auto"):
            raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
        if (resume or every) and checkpoint_dir is None:
            raise ValueError(f"resume={resume!r} / every={every!r} need checkpoint_dir, got None")
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path, got {checkpoint_dir!r}")
        if on_nan not in ("raise", "skip", "off"):
            raise ValueError(f"on_nan must be 'raise', 'skip' or 'off', got {on_nan!r}")

    # ---- weights ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, with_opt: bool = False) -> Path:
        """Model weights (and optimizer state with ``with_opt``), written atomically with a hash;
        a path ending in ``.safetensors`` exports the weights in that format (optional extra)."""
        if str(path).endswith(".safetensors"):
            if with_opt:
                raise ValueError("with_opt=True: safetensors holds weights only; use a .pt path")
            save_safetensors(self.model.state_dict(), path)
            return Path(path)
        state = {"model": self.model.state_dict()}
        if with_opt:
            if self.opt is None:
                raise ValueError("with_opt=True but there is no optimizer yet (fit or create_opt first)")
            state["opt"] = self.opt.state_dict()
        atomic_save(state, path)
        return Path(path)

    def load(self, path: str | os.PathLike, with_opt: bool = False, strict: bool = True) -> None:
        """Load what ``save`` wrote (verified, ``weights_only``); a plain state_dict file or a
        ``.safetensors`` file works too."""
        if str(path).endswith(".safetensors"):
            if with_opt:
                raise ValueError("with_opt=True: safetensors holds weights only")
            self.model.load_state_dict(load_safetensors(path, device=str(self.device)), strict=strict)
            return
        state = safe_load(path, map_location=self.device) if _is_onecycle_file(path) else \
            {"model": load_state_dict_file(path, map_location=self.device)}
        if with_opt and "opt" not in state:
            raise ValueError(f"with_opt=True but {path} holds no optimizer state")
        self.model.load_state_dict(state["model"], strict=strict)
        if with_opt:
            (self.opt or self.create_opt()).load_state_dict(state["opt"])

    def _batch_and_size(self) -> tuple[int, int]:
        dl = self.train_dl
        bs = getattr(dl, "batch_size", None)
        n = getattr(dl, "n", None) or (len(dl.dataset) if hasattr(dl, "dataset") else None)
        if not bs or not n:
            raise ValueError("wd_norm needs train_dl.batch_size and the number of training samples")
        return int(bs), int(n)

    # ---- fine-tuning --------------------------------------------------------------------------
    def freeze_to(self, n: int, bn_freeze: bool = False) -> None:
        """Freeze layer groups ``[:n]`` (no gradients) and unfreeze the rest; ``n`` may be
        negative (``-1``: all but the head). ``bn_freeze=True`` (the seed era's ``bn_freeze``) also
        keeps the BatchNorm layers of frozen groups in eval mode, their running statistics fixed;
        by default they stay in train mode like the rest of the model."""
        groups = self.layer_groups()
        if isinstance(n, bool) or not isinstance(n, int) or not -len(groups) <= n <= len(groups):
            raise ValueError(f"freeze_to n must be an int in [-{len(groups)}, {len(groups)}] "
                             f"for {len(groups)} param groups, got {n!r}")
        frozen = groups[:n]
        ids = {id(p) for g in frozen for p in g}
        for g in groups:
            for p in g:
                p.requires_grad_(id(p) not in ids)
        self._frozen_bn = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                           and any(id(p) in ids for p in m.parameters())] if bn_freeze else []

    def freeze(self, bn_freeze: bool = False) -> None:
        """Train only the last layer group (the head)."""
        self.freeze_to(-1, bn_freeze)

    def unfreeze(self) -> None:
        self.freeze_to(0)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100.0,
                  pct_start: float = 0.3, div: float = 5.0, bn_freeze: bool = False, **kw: Any) -> Recorder:
        """The thread's recipe: a short 1cycle on the head with the body frozen, then one long
        1cycle on the unfrozen network with discriminative LRs from ``base_lr/2/lr_mult`` to
        ``base_lr/2``. The returned recorder holds the second phase; the first is kept in
        ``learn.head_history``."""
        _check_epochs("epochs", epochs)
        _check_epochs("freeze_epochs", freeze_epochs)
        S.check_number("base_lr", base_lr, low=0, low_open=True)
        S.check_number("lr_mult", lr_mult, low=1)
        if len(self.layer_groups()) < 2:
            raise ValueError("fine_tune needs a model with several param groups (body and head), got 1")
        self.freeze(bn_freeze)
        self.fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99, **kw)
        self.head_history = Recorder.from_state(self.recorder.state_dict())
        self.unfreeze()
        lr = base_lr / 2
        return self.fit_one_cycle(epochs, slice(lr / lr_mult, lr), pct_start=pct_start, div=div, **kw)

    # ---- LR range test (lr_finder.py does the work) ------------------------------------------
    def lr_find(self, start_lr: Any = 1e-7, end_lr: Any = 10.0, num_it: int = 100, **kw: Any) -> Any:
        """LR range test with validation loss and metrics at every step; returns an
        ``LRFindResult``. Model, optimizer, RNG and settings are restored exactly afterwards."""
        from .lr_finder import learner_lr_find
        return learner_lr_find(self, start_lr=start_lr, end_lr=end_lr, num_it=num_it, **kw)

    def lr_find2(self, start_lr: Any = 1e-5, end_lr: Any = 10.0, num_it: int = 100, wds: Any = None,
                 linear: bool = False, stop_dv: bool = True, **kw: Any) -> Any:
        """The seed's spelling; afterwards ``learn.sched`` holds the finder's curves (per
        iteration ``val_losses`` and ``rec_metrics``; ``sched.plot()``)."""
        from .lr_finder import learner_lr_find2
        return learner_lr_find2(self, start_lr=start_lr, end_lr=end_lr, num_it=num_it, wds=wds,
                                linear=linear, stop_dv=stop_dv, **kw)

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, dl: Iterable | None = None) -> dict[str, float]:
        """Loss and every metric over the whole loader, each batch weighted by its number of
        targets. Returns ``{"val_loss": ..., <metric name>: ...}``; the model's mode is restored.
        A loader with ``eval_batches()`` (``TensorLoader``) is read through it: in bigger chunks."""
        dl = self.valid_dl if dl is None else dl
        if dl is None:
            raise ValueError("validate needs a loader: valid_dl is None")
        with _evaluating(self.model):
            if callable(getattr(self.model, "reset", None)):
                self.model.reset()
            acc = MetricAccumulator(self.loss_fn, self.metrics, self.device)
            autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else contextlib.nullcontext()
            for batch in _eval_batches(dl):
                xs, y = self._to_device(batch)
                with autocast:
                    pred = self.model(*xs)
                acc.add(pred, y)
        return acc.result(reduce=D.all_reduce_sum if self.world_size > 1 else None)

    @torch.no_grad()
    def predict(self, dl: Iterable | None = None, with_targets: bool = False) -> Any:
        """Model outputs over ``dl`` (default the validation loader), concatenated on the CPU."""
        dl = self.valid_dl if dl is None else dl
        preds, targets = [], []
        with _evaluating(self.model):
            for batch in _eval_batches(dl):
                xs, y = self._to_device(batch)
                preds.append(self.model(*xs).float().cpu())
                targets.append(y.cpu() if torch.is_tensor(y) else y)
        out = torch.cat(preds)
        return (out, torch.cat(targets)) if with_targets else out


def _eval_batches(dl: Iterable) -> Iterable:
    """The loader's batches for evaluation: through ``eval_batches()`` where it has one (a
    ``TensorLoader``: bigger chunks), else the loader itself."""
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
        # Parents before children (modules() order), each through its own train(), should it define
        # one: a parent's call resets its children, which are checked after it.
        for m, training in modes:
            if m.training != training:
                m.train(training)
