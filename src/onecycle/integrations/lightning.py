"""Lightning: onecycle's LR range test on a ``LightningModule``, and 1cycle as a ``Callback`` (the
optional ``lightning`` extra: ``pip install 'onecycle[lightning]'``).

``lr_find(trainer, model, train_dataloaders=None, val_dataloaders=None, datamodule=None,
**finder_options) -> LRFindResult`` drives the module's own hooks, without running the Trainer's loop:
``configure_optimizers`` gives the optimizer (its schedulers are left aside: the test sets the LR),
``training_step(batch, batch_idx)`` the loss to step on, ``validation_step`` the validation loss at
every step (returned as a tensor or as ``{"loss": ...}``/``{"val_loss": ...}``, or logged as
``val_loss``) and, as metrics, everything else it logs with ``self.log``/``self.log_dict``. Loaders:
the ones given, else the datamodule's (``prepare_data()`` and ``setup("fit")`` called first), else the
module's ``train_dataloader()``/``val_dataloader()``. From the trainer: its device, precision
(``bf16-mixed``, ``16-mixed``), ``accumulate_grad_batches`` and ``gradient_clip_val`` (by norm).
Afterwards the model is as it was, weights bit for bit (buffers, gradients, modes, device too), and
every RNG; the optimizer was the test's own. ``finder_options``: ``Learner.lr_find``'s (``start_lr``,
``end_lr``, ``num_it``, ``val_batches``, ``rule``, ...). The suggestion is kept for ``OneCycle``.

While the test runs, ``self.log`` reaches onecycle through a Lightning ``Fabric`` set as the module's
``fabric`` (its public logging path outside a Trainer): ``self.trainer`` inside the steps is then
that Fabric, and ``batch_idx`` counts the steps' batches from 0 through the test.

``OneCycle(lr_max=None, div=25, div_final=1e5, pct_start=0.25, moms=(0.95, 0.85, 0.95), wd=None)`` is
a ``Callback`` that drives the LR, the momentum (SGD's ``momentum``, Adam's beta1) and the weight
decay (the optimizer's own ``weight_decay``; None leaves it) of the Trainer's optimizer at every
optimizer step, exactly as ``Learner.fit_one_cycle`` does on that optimizer (fastai's cosine 1cycle,
by an optimizer hook counting the steps really taken), over ``trainer.estimated_stepping_batches``.
``lr_max=None`` takes the last ``lr_find`` suggestion for the module. Its position is in the
Trainer's checkpoints (``state_dict``), so a resumed fit continues the cycle.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import checks as C
from .. import schedules as S
from ..evaluate import restore_modes
from ..learner import Learner
from ..lr_find_result import LRFindResult
from ..lr_finder import find
from ..optim.groups import spread_lrs
from ..optim.scheduler import Scheduler, fit_scheduler
from ..rng import get_rng_state, set_rng_state

__all__ = ["lr_find", "OneCycle", "INSTALL"]

INSTALL = C.install_hint("lightning")

# The last lr_find suggestion per module (weakly: a dropped module does not linger), for OneCycle.
_SUGGESTIONS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def _pl() -> Any:
    """``lightning.pytorch``; ``ImportError`` naming the extra when it is not installed."""
    return C.import_extra("lightning.pytorch", "lightning", "onecycle.integrations.lightning needs Lightning")


# ---- logging: self.log(...) through a Fabric of our own ---------------------------------------------------
def _sink() -> Any:
    """A Fabric whose one logger keeps what ``self.log`` sends, in ``fabric.loggers[0].logged``."""
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import Logger

    class Sink(Logger):
        def __init__(self) -> None:
            super().__init__()
            self.logged: dict[str, float] = {}

        @property
        def name(self) -> str:
            return "onecycle"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            self.logged.update(metrics)

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    return Fabric(accelerator="cpu", devices=1, loggers=[Sink()])


@contextlib.contextmanager
def _logging_to(model: Any, fabric: Any) -> Iterator[None]:
    before = model.fabric
    model.fabric = fabric
    try:
        yield
    finally:
        model.fabric = before


class _Steps(nn.Module):
    """The module as the range test calls it: in train mode its ``training_step``, in eval mode its
    ``validation_step``; returns ``{"loss": ..., "logits": what it logged}``."""

    def __init__(self, module: Any, fabric: Any, val_key: str | None = None) -> None:
        super().__init__()
        self.module, self.fabric, self.val_key = module, fabric, val_key
        self.counts = {True: 0, False: 0}  # batch_idx, per kind of step

    def forward(self, batch: Any) -> dict[str, Any]:
        logged = self.fabric.loggers[0].logged
        logged.clear()
        training, idx = self.training, self.counts[self.training]
        self.counts[training] += 1
        if training:
            return {"loss": _training_loss(self.module.training_step(batch, idx)), "logits": {}}
        out = self.module.validation_step(batch, idx)
        key = self.val_key or _val_key(out, logged)
        loss = out if isinstance(out, torch.Tensor) else out[key] if isinstance(out, Mapping) and key in out \
            else logged[key]
        return {"loss": loss, "logits": {k: v for k, v in logged.items() if k != key}}


def _training_loss(out: Any) -> torch.Tensor:
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, torch.Tensor):
        raise ValueError(f"training_step returned {type(out).__name__}: the range test needs the loss (a tensor, or "
                         "a dict with 'loss') at every step")
    return loss


def _val_key(out: Any, logged: Mapping[str, Any]) -> str:
    """Where validation_step's loss is: returned (a tensor, or a dict's ``val_loss``/``loss``), else logged."""
    if isinstance(out, torch.Tensor):
        return "val_loss"
    for key in ("val_loss", "loss"):
        if (isinstance(out, Mapping) and key in out) or key in logged:
            return key
    raise ValueError("validation_step gave no validation loss: return it (a tensor, or a dict with 'val_loss' or "
                     f"'loss') or log it as 'val_loss' (it logged {sorted(logged)})")


class _Logged:
    """A metric: the value the module logged under ``key`` for the batch."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.__name__ = key

    def __call__(self, preds: Mapping[str, Any], target: Any) -> Any:
        return preds[self.key]


# ---- what lr_find takes from the module, the datamodule and the trainer ---------------------------------
def _optimizer(model: Any) -> torch.optim.Optimizer:
    """The one optimizer ``configure_optimizers`` gives (its LR schedulers set aside)."""
    out = model.configure_optimizers()
    if isinstance(out, Mapping):
        out = out.get("optimizer")
    elif isinstance(out, (list, tuple)):
        out = out[0] if len(out) == 2 and isinstance(out[1], (list, tuple, Mapping)) else out
        out = list(out) if isinstance(out, (list, tuple)) else out
        if isinstance(out, list):
            if len(out) != 1:
                raise ValueError(f"configure_optimizers gave {len(out)} optimizers: the range test takes one")
            out = out[0]
    if isinstance(out, Mapping):
        out = out.get("optimizer")
    if not isinstance(out, torch.optim.Optimizer):
        raise TypeError(f"configure_optimizers must give a torch optimizer, got {type(out).__name__}")
    return out


def _loaders(model: Any, train: Any, val: Any, datamodule: Any) -> tuple[Any, Any]:
    from lightning.pytorch.utilities.model_helpers import is_overridden
    source = model
    if datamodule is not None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        source = datamodule
    if train is None:
        if not is_overridden("train_dataloader", source):
            raise ValueError("no training data: pass train_dataloaders, a datamodule, or define train_dataloader()")
        train = source.train_dataloader()
    if val is None and is_overridden("val_dataloader", source) and is_overridden("validation_step", model):
        val = source.val_dataloader()
    for name, dl in (("train_dataloaders", train), ("val_dataloaders", val)):
        if isinstance(dl, (list, tuple, Mapping)):
            raise ValueError(f"{name}: the range test takes one loader, got {type(dl).__name__}")
    return train, val


def _amp(precision: Any) -> bool | str:
    text = str(precision)
    return "bf16" if text.startswith("bf16") else "fp16" if text.startswith("16") else False


def _probe(model: Any, val: Any, fabric: Any) -> tuple[str, list[str]]:
    """One validation_step on the first validation batch, in eval mode without gradients, to learn where
    the loss is and what else the module logs (the metrics' names); modes and every RNG put back."""
    rng = get_rng_state([val])
    modes = [(m, m.training) for m in model.modules()]
    logged = fabric.loggers[0].logged
    try:
        model.eval()
        logged.clear()
        with torch.no_grad():
            out = model.validation_step(next(iter(val)), 0)
        key = _val_key(out, logged)
        return key, [k for k in logged if k != key]
    finally:
        restore_modes(modes)
        set_rng_state(rng, [val], same_loaders=True)


def lr_find(trainer: Any, model: Any, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: Any = None, *, quiet: bool = False, **finder_options: Any) -> LRFindResult:
    """onecycle's LR range test on a ``LightningModule`` (see the module's docstring); it prints its
    bar and every rule's suggestion, as ``Learner.lr_find`` does, unless ``quiet``."""
    pl = _pl()
    C.check_type("trainer", trainer, pl.Trainer)
    C.check_type("model", model, pl.LightningModule)
    if not model.automatic_optimization:
        raise ValueError("the range test steps the optimizer itself: automatic_optimization must be True")
    C.check_bool("quiet", quiet)
    C.check_keywords("lr_find", finder_options, lr_find, [find], sets={
        "learn": "", "use_wd": "the optimizer's own weight decay is used"})
    train, val = _loaders(model, train_dataloaders, val_dataloaders, datamodule)
    home = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    fabric = _sink()
    clip = trainer.gradient_clip_val if trainer.gradient_clip_algorithm in (None, "norm") else None
    try:
        model.to(trainer.strategy.root_device)
        with _logging_to(model, fabric):
            key, names = _probe(model, val, fabric) if val is not None else (None, [])
            learn = Learner(_Steps(model, fabric, key), train, val, loss_fn=None,
                            metrics={name: _Logged(name) for name in names},
                            device=trainer.strategy.root_device, batch_fn=lambda b: ((b,), {}, None),
                            accum=trainer.accumulate_grad_batches, clip=clip or None,
                            amp=_amp(trainer.precision), quiet=quiet, channels_last=False)
            learn.use_opt(_optimizer(model))
            res = find(learn, use_wd=False, **finder_options)
    finally:
        model.to(home)
    _SUGGESTIONS[model] = learn.suggested_lr
    return res


# ---- 1cycle as a callback ---------------------------------------------------------------------------------
def _callback_base() -> type:
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:  # the class can be defined without Lightning; using it needs it
        return object
    return Callback


class OneCycle(_callback_base()):  # type: ignore[misc]
    """fastai's 1cycle (``Learner.fit_one_cycle``) for a Lightning ``Trainer``: see the module's docstring."""

    def __init__(self, lr_max: float | Sequence[float] | slice | None = None, div: float = 25.0,
                 div_final: float = 1e5, pct_start: float = 0.25, moms: Sequence[float] | None = (0.95, 0.85, 0.95),
                 wd: float | None = None) -> None:
        _pl()
        super().__init__()
        self.policy = S.cos_one_cycle(div=div, div_final=div_final, pct_start=pct_start, moms=moms)  # checks them
        if lr_max is not None:
            spread_lrs(lr_max, 2 if isinstance(lr_max, slice) else 1 if C.is_scalar(lr_max) else len(lr_max),
                       "lr_max")
        self.lr_max, self.wd = lr_max, None if wd is None else C.check_number("wd", wd, low=0)
        self.scheduler: Scheduler | None = None
        self._resume: dict[str, Any] | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        opts = trainer.optimizers
        if len(opts) != 1:
            raise ValueError(f"OneCycle drives one optimizer, the Trainer has {len(opts)}")
        if trainer.lr_scheduler_configs:
            raise ValueError("configure_optimizers also returned an LR scheduler: OneCycle sets the LR itself; "
                             "return the optimizer alone")
        opt = opts[0]
        lr_max = self.lr_max if self.lr_max is not None else _SUGGESTIONS.get(pl_module)
        if lr_max is None:
            raise ValueError("OneCycle(lr_max=None) takes the last onecycle.integrations.lightning.lr_find "
                             "suggestion for this module, and there is none: run lr_find first, or pass lr_max")
        total = trainer.estimated_stepping_batches
        if not isinstance(total, int) and not (isinstance(total, float) and total.is_integer()):
            raise ValueError(f"OneCycle needs a finite number of steps: trainer.estimated_stepping_batches is {total} "
                             "(set max_epochs or max_steps)")
        n = len(opt.param_groups)
        bases = {} if self.wd is None else {"weight_decay": [self.wd] * n}
        self.scheduler = fit_scheduler(opt, int(total), spread_lrs(lr_max, n, "lr_max"), bases,
                                       {"lr": self.policy.lr, "momentum": self.policy.mom})
        if self._resume is not None:
            self.scheduler.load_state_dict(self._resume)
            self._resume = None

    def _remove(self) -> None:
        if self.scheduler is not None:
            self.scheduler.remove()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._remove()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._remove()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict) or None
