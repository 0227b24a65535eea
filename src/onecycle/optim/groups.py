"""Param groups and hyper-parameters, in torch's own param-group keys.

- ``get_hyper``/``set_hyper``: ``"momentum"`` means SGD's ``momentum`` or ``betas[0]`` for
  Adam-likes (any length of ``betas``); every other name is the param-group key itself.
- ``layer_groups``: a model's layer groups for discriminative LRs.
- ``spread_lrs``: ``slice(lo, hi)`` spread geometrically over the groups.
- ``DecoupledWeightDecay``: AdamW-style decay ``w -= lr * wd * w`` for any torch optimizer, applied
  by an optimizer pre-step hook, so a step skipped by a GradScaler decays nothing either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..checks import check_int, check_number, is_scalar

__all__ = ["get_hyper", "set_hyper", "momentum_key", "layer_groups", "freeze_groups", "spread_lrs",
           "DecoupledWeightDecay", "DECOUPLED_WD", "normalized_wd", "normalized_wd_for"]

DECOUPLED_WD = "decoupled_wd"  # group key read by DecoupledWeightDecay


def momentum_key(group: dict) -> str | None:
    """The key holding a group's momentum: ``momentum``, ``betas``, or None when it has neither."""
    if "betas" in group:
        return "betas"
    if "momentum" in group:
        return "momentum"
    return None


def get_hyper(group: dict, name: str) -> float | None:
    """Read a hyper-parameter; ``"momentum"`` is SGD's momentum or ``betas[0]``."""
    if name == "momentum":
        key = momentum_key(group)
        if key is None:
            return None
        value = group[key][0] if key == "betas" else group[key]
    else:
        value = group.get(name)
    return float(value) if isinstance(value, torch.Tensor) else value


def set_hyper(group: dict, name: str, value: float) -> None:
    """Write a hyper-parameter; tensors (capturable/fused optimizers) are filled in place."""
    if name == "momentum":
        key = momentum_key(group)
        if key == "betas":
            group["betas"] = (value, *tuple(group["betas"])[1:])
            return
        name = key or name
    current = group.get(name)
    if isinstance(current, torch.Tensor):
        current.fill_(value)
    else:
        group[name] = value


def _params(obj: object) -> list[nn.Parameter]:
    if isinstance(obj, nn.Module):
        return list(obj.parameters())
    if isinstance(obj, torch.Tensor):
        return [obj]
    return list(obj)  # an iterable of parameters


def layer_groups(model: nn.Module, groups: object = None) -> list[list[nn.Parameter]]:
    """Layer groups, body first and head last.

    ``groups``: None uses ``model.param_groups()`` when the model has it, else one group; a
    callable is called with the model; a list of modules or of parameter lists is used as given.
    Every parameter must belong to exactly one group.
    """
    if groups is None:
        groups = model.param_groups() if callable(getattr(model, "param_groups", None)) else [model]
    elif callable(groups) and not isinstance(groups, nn.Module):
        groups = groups(model)
    if isinstance(groups, nn.Module):
        groups = [groups]
    if not hasattr(groups, "__iter__") or isinstance(groups, str):
        raise TypeError(f"groups must be a list of modules or of parameter lists, or a function of the model, "
                        f"got {groups!r}")
    out = [[p for p in _params(g)] for g in groups]
    seen: set[int] = set()
    for i, g in enumerate(out):
        if not g:
            raise ValueError(f"param group {i} is empty")
        for p in g:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"param group {i} holds a {type(p).__name__}, not a tensor")
            if id(p) in seen:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} appears in two param groups")
            seen.add(id(p))
    # A parameter left out would silently never train; one from elsewhere would train another model.
    missing = [name for name, p in model.named_parameters() if id(p) not in seen]
    if missing:
        names = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"the layer groups leave out {len(missing)} of the model's parameters ({names}): "
                         "every parameter must be in exactly one group")
    foreign = len(seen - {id(p) for p in model.parameters()})
    if foreign:
        raise ValueError(f"the layer groups hold {foreign} parameters that are not the model's")
    return out


# torch's public BatchNorm classes (their common base class is private); a lazy
# one becomes a BatchNormNd at its first forward.
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)


def freeze_groups(model: nn.Module, groups: list[list[nn.Parameter]], n: int, bn_freeze: bool = False
                  ) -> list[nn.Module]:
    """Freeze layer groups ``[:n]`` (no gradients) and unfreeze the rest (``n`` may be negative);
    returns the BatchNorm layers of frozen groups to keep in eval mode (with ``bn_freeze``)."""
    if len(groups) < 2 and n not in (0, False):
        raise ValueError(f"freeze_to({n!r}) needs several layer groups, but the model has 1: define them with "
                         "Learner(groups=[params_of_body, params_of_head]) or a model.param_groups() method")
    check_int("freeze_to n", n)
    if not -len(groups) <= n <= len(groups):
        raise ValueError(f"freeze_to n must be an int in [-{len(groups)}, {len(groups)}] "
                         f"for {len(groups)} param groups, got {n!r}")
    frozen = {id(p) for g in groups[:n] for p in g}
    for g in groups:
        for p in g:
            p.requires_grad_(id(p) not in frozen)
    return [m for m in model.modules() if isinstance(m, _BATCH_NORMS)
            and any(id(p) in frozen for p in m.parameters())] if bn_freeze else []


def _check_lr(name: str, value: object) -> float:
    return check_number(name, value, low=0, low_open=True)


def spread_lrs(lr: object, n_groups: int, name: str = "lr") -> list[float]:
    """One LR per group: a number for all, a sequence (or array) of one per group, or
    ``slice(lo, hi)`` spread geometrically from the first group to the last (``slice(hi)``: the
    head gets ``hi`` and every other group ``hi/10``, as fastai does)."""
    if isinstance(lr, (str, bytes)):  # not a sequence of one-character LRs
        raise TypeError(f"{name} must be a number, a sequence of numbers (one per param group) or a slice, "
                        f"got {lr!r}")
    if isinstance(lr, slice):
        if lr.step is not None:
            raise ValueError(f"{name} slice takes no step, got {lr!r}")
        if n_groups < 2:
            raise ValueError(f"{name}={lr!r}: a slice needs a model with several param groups, got {n_groups}")
        hi = _check_lr(f"{name}.stop", lr.stop)
        if lr.start is None:
            return [hi / 10] * (n_groups - 1) + [hi]
        lo = _check_lr(f"{name}.start", lr.start)
        if lo > hi:
            raise ValueError(f"{name} slice must go from low to high, got {lr!r}")
        return [lo * (hi / lo) ** (i / (n_groups - 1)) for i in range(n_groups)]
    if not is_scalar(lr):
        values = [_check_lr(f"{name}[{i}]", v) for i, v in enumerate(list(lr))]
        if len(values) != n_groups:
            raise ValueError(f"{name} has {len(values)} values but there are {n_groups} param groups")
        return values
    return [_check_lr(name, lr)] * n_groups


class DecoupledWeightDecay:
    """Decoupled weight decay (Loshchilov & Hutter) for any torch optimizer: before each real step,
    every tensor with more than one dimension in a group is multiplied by ``1 - lr * wd`` where
    ``wd = group["decoupled_wd"]``. Biases and normalization weights (1-D) are left alone.

    With torch's AdamW this is exactly AdamW's own decay (it multiplies before its update too);
    with SGD it is the decoupled SGDW of the paper.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, wd: float | Sequence[float] = 0.0) -> None:
        wds = list(wd) if isinstance(wd, Sequence) else [wd] * len(optimizer.param_groups)
        for group, w in zip(optimizer.param_groups, wds):
            group[DECOUPLED_WD] = float(w)
        self._decay = [[p for p in g["params"] if p.ndim > 1] for g in optimizer.param_groups]
        self.optimizer = optimizer
        self._handle: Any = None
        self.set_active(True)

    def set_active(self, active: bool) -> None:
        """Register the pre-step hook, or take it off (then a step costs nothing extra: the
        Learner does so for a fit whose decay is zero throughout)."""
        if active and self._handle is None:
            self._handle = self.optimizer.register_step_pre_hook(self._hook)
        elif not active and self._handle is not None:
            self._handle.remove()
            self._handle = None

    @torch.no_grad()
    def _hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        for group, params in zip(optimizer.param_groups, self._decay):
            wd = group.get(DECOUPLED_WD, 0.0)
            if not wd:
                continue
            factor = 1.0 - float(group["lr"]) * wd
            for p in params:
                if p.grad is not None:
                    p.mul_(factor)

    def remove(self) -> None:
        self.set_active(False)


def normalized_wd(wd_norm: float, batch_size: int, n_train: int, epochs: int) -> float:
    """Loshchilov & Hutter's normalized weight decay: ``wd_norm * sqrt(b / (B * T))`` for batch
    size ``b``, ``B`` training samples and ``T`` epochs, so one value transfers across budgets."""
    return check_number("wd_norm", wd_norm, low=0) * math.sqrt(batch_size / (n_train * epochs))


def normalized_wd_for(wd_norm: float, train_dl: Any, epochs: int) -> float:
    """``normalized_wd`` with the batch size and sample count read off ``train_dl`` (``batch_size``;
    ``n``, or ``len(dataset)``)."""
    bs = getattr(train_dl, "batch_size", None)
    n = getattr(train_dl, "n", None) or (len(train_dl.dataset) if hasattr(train_dl, "dataset") else None)
    if not bs or not n:
        raise ValueError("wd_norm needs train_dl.batch_size and the number of training samples")
    return normalized_wd(wd_norm, int(bs), int(n), epochs)


def named_layout(model: nn.Module, groups: list[list[nn.Parameter]]) -> list[list[tuple[str, tuple]]]:
    """Names and shapes per group: what a checkpoint stores to refuse a resume into another layout."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[(names.get(id(p), "?"), tuple(p.shape)) for p in g] for g in groups]

