"""Evaluation: validation loss and metrics over a loader, predictions, and the train/eval modes of a
model and of an optimizer that has them.

Schedule-free optimizers (``schedulefree``) keep two points: the one gradients are taken at (train
mode) and the average that evaluates best (eval mode); ``opt.train()``/``opt.eval()`` swap which one
sits in the model's parameters. Whatever evaluates the model here (validation, predictions, saving
weights) puts such an optimizer in eval mode first and back afterwards, as it does the model's own
modes; a fit leaves it in eval mode when it ends, so ``learn.model`` holds the weights to use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import checks as C
from . import distributed as D
from .metrics import MetricAccumulator
from .optim.extras import has_modes

if TYPE_CHECKING:
    from .learner import Learner

__all__ = ["restore_modes", "evaluating", "optimizer_mode", "set_optimizer_mode", "validate", "predict"]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Each module back in its saved train/eval mode (``[(m, m.training) for m in model.modules()]``),
    parents first, each through its own ``train()``: a parent's call resets its children, which are
    checked after it."""
    for m, training in modes:
        if m.training != training:
            m.train(training)


def optimizer_mode(opt: torch.optim.Optimizer | None) -> bool | None:
    """Whether ``opt`` is in train mode; None for an optimizer without modes (most)."""
    if not has_modes(opt):
        return None
    return bool(opt.param_groups[0].get("train_mode", True))


def set_optimizer_mode(opt: torch.optim.Optimizer | None, train: bool) -> None:
    """``opt.train()`` or ``opt.eval()`` when the optimizer has modes and is not in that one already."""
    mode = optimizer_mode(opt)
    if mode is not None and mode != train:
        opt.train() if train else opt.eval()  # type: ignore[union-attr]


@contextlib.contextmanager
def evaluating(model: nn.Module | None, opt: torch.optim.Optimizer | None = None) -> Iterator[None]:
    """Eval mode inside, for the model and an optimizer with modes; afterwards every module is back
    in its own mode (a BatchNorm frozen with ``bn_freeze`` stays in eval while the rest trains), and
    the optimizer too."""
    modes = [(m, m.training) for m in model.modules()] if model is not None else []
    opt_mode = optimizer_mode(opt)
    if model is not None:
        model.eval()
    set_optimizer_mode(opt, False)
    try:
        yield
    finally:
        if opt_mode:
            set_optimizer_mode(opt, True)
        restore_modes(modes)


def eval_batches(dl: Iterable) -> Iterable:
    """Through ``eval_batches()`` where the loader has one (a ``TensorLoader``: bigger chunks)."""
    C.check_loader("dl", dl)
    return dl.eval_batches() if callable(getattr(dl, "eval_batches", None)) else dl


@torch.no_grad()
def validate(learn: Learner, dl: Iterable | None) -> dict[str, float]:
    """``Learner.validate``: loss and every metric over ``dl``, each batch weighted by its number
    of targets."""
    if dl is None:
        raise ValueError("validate needs a loader: valid_dl is None")
    with evaluating(learn.model, learn.opt):
        if callable(getattr(learn.model, "reset", None)):
            learn.model.reset()
        acc = MetricAccumulator(None, learn.metrics, learn.device)
        for batch in eval_batches(dl):
            preds, loss, target = learn.forward(batch, learn.model)
            if loss is None:  # a loss of nothing would read NaN
                raise ValueError("validation needs a target in every batch (or a model that returns its .loss), "
                                 "and a batch of the validation loader has none; predict() takes batches "
                                 "without targets")
            acc.add(preds, target, loss=loss)
    return acc.result(reduce=D.all_reduce_sum if learn.world_size > 1 else None)


@torch.no_grad()
def predict(learn: Learner, dl: Iterable | None, with_targets: bool = False) -> Any:
    """``Learner.predict``: the model's predictions over ``dl``, joined on the CPU."""
    if dl is None:
        raise ValueError("predict needs a loader: valid_dl is None")
    preds, targets = [], []
    with evaluating(learn.model, learn.opt):
        for batch in eval_batches(dl):
            p, _, y = learn.forward(batch, learn.model, with_loss=False)  # targets may be ids: no loss_fn
            preds.append(p)
            targets.append(y)
    out = concat(preds)
    if not with_targets:
        return out
    return out, None if any(t is None for t in targets) else concat(targets)


def concat(values: list[Any]) -> Any:
    """Batches of tensors (or dicts or tuples of them) joined on the CPU, floats as float32."""
    if not values:
        raise ValueError("dl yielded no batch")
    first = values[0]
    if isinstance(first, Mapping):
        return {k: concat([v[k] for v in values]) for k in first}
    if isinstance(first, tuple) and any(isinstance(x, (torch.Tensor, Mapping, tuple)) for x in first):
        # a model returning several outputs: each joined over the batches (a tuple of ids is flattened below)
        return tuple(concat([v[i] for v in values]) for i in range(len(first)))
    if isinstance(first, torch.Tensor):
        out = torch.cat([v.detach().cpu() for v in values])
        return out.float() if out.is_floating_point() else out
    return [x for v in values for x in v]
