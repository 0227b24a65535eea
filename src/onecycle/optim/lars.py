"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, Algorithm 1).

Large-batch SGD diverges early because some layers' gradients are large relative to their
weights; LARS gives every tensor a local learning rate proportional to ``||w|| / ||g||`` so that
all layers move by a comparable relative amount, which is what lets 1cycle push the global LR high.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from onecycle.optim.trust import TrustStatsMixin, buckets_adapted_first, is_adapted, trust_ratio, trust_ratios

from ..checks import check_number

__all__ = ["LARS"]


class LARS(TrustStatsMixin, Optimizer):
    """SGD with momentum and a per-tensor trust ratio (LARS), optionally clipped (LARC).

    For every tensor with a gradient, on each step::

        ratio = eta * ||w|| / (||g|| + weight_decay * ||w|| + eps)    (1 if ||w|| or ||g|| is 0)
        d     = ratio * (g + weight_decay * w)
        buf   = momentum * buf + d                                     (first step: buf = d)
        w    -= lr * buf                           (nesterov: w -= lr * (d + momentum * buf))

    The LR sits *outside* the momentum buffer, as in ``torch.optim.SGD``, rather than inside it as
    in Algorithm 1 of the paper (``v = m * v + lr * ratio * (g + wd * w); w -= v``). The two are
    identical while the LR is constant (``v = lr * buf``); with the LR outside, a 1cycle schedule
    changes the step size immediately instead of through the slowly decaying buffer, which is the
    behaviour the 1cycle recipe was designed around.

    Args:
        params: parameters or parameter groups.
        lr: global learning rate (the key a scheduler cycles).
        momentum: momentum factor in ``[0, 1)``; read from the group every step so it can be cycled.
        weight_decay: L2 coefficient, added to the gradient *before* the trust ratio is applied,
            as in the paper. This optimizer applies it itself (``applies_weight_decay = True``).
        eta: trust coefficient (how far, relative to ``||w||``, one step may move a tensor).
        nesterov: Nesterov momentum in the torch-SGD formulation; needs ``momentum > 0``.
        trust_clip: LARC clip mode, ``ratio = min(ratio / lr, 1)``: the local LR ``lr * ratio``
            never exceeds the global LR, so the schedule remains an upper bound on every layer.
        exclude_1d: tensors with ``ndim <= 1`` (biases, normalization scales) get ratio 1 and no
            weight decay; their norms say nothing about a layer's scale and decaying them hurts.
            A per-group key, so individual groups may opt out.
        eps: added to the ratio's denominator for numerical safety (0 reproduces the paper).
        foreach: ``True`` uses multi-tensor ``torch._foreach_*`` kernels, ``False`` a per-tensor
            loop (the readable reference); ``None`` picks foreach.

    After each :meth:`step`, ``last_trust_stats`` (computed on first read) holds one entry per
    param group: a device tensor ``[mean, min, max]`` of the ratios actually applied to the
    adapted tensors (after clipping), or ``None`` if the group adapted none. Reading it is the
    caller's (synchronising) choice; the step itself never waits for the device.
    """

    #: Weight decay is part of this optimizer's update; the training loop must not also apply it.
    applies_weight_decay = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
        nesterov: bool = False,
        trust_clip: bool = False,
        exclude_1d: bool = True,
        eps: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay), ("eta", eta),
                            ("eps", eps)):
            check_number(name, value)  # a number first (TypeError naming it), then its range below
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: lr={lr} (must be >= 0)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum value: momentum={momentum} (must be in [0, 1))")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: weight_decay={weight_decay} (must be >= 0)")
        if eta < 0.0:
            raise ValueError(f"Invalid trust coefficient: eta={eta} (must be >= 0)")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: eps={eps} (must be >= 0)")
        if nesterov and momentum <= 0.0:
            raise ValueError(f"nesterov=True requires momentum > 0, got momentum={momentum}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "nesterov": nesterov,
            "trust_clip": trust_clip,
            "exclude_1d": exclude_1d,
            "eps": eps,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key in ("nesterov", "trust_clip"):
                group.setdefault(key, False)
            group.setdefault("exclude_1d", True)
            group.setdefault("eps", 0.0)
            group.setdefault("foreach", None)

    def _init_group(self, group: dict) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Collect the params that have gradients, with their (lazily zero-initialised) buffers.

        A zero buffer gives ``momentum * 0 + d == d`` exactly, i.e. torch-SGD's "first buffer is
        the first update" without a separate first-step code path.
        """
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("LARS does not support sparse gradients; use dense gradients")
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            bufs.append(state["momentum_buffer"])
        return params, grads, bufs

    def _step_group(self, group: dict) -> list[Tensor]:
        params, grads, bufs = self._init_group(group)
        impl = _lars_loop if group["foreach"] is False else _lars_foreach
        return impl(
            params,
            grads,
            bufs,
            lr=group["lr"],
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            eta=group["eta"],
            nesterov=group["nesterov"],
            clip_lr=group["lr"] if group["trust_clip"] else None,
            exclude_1d=group["exclude_1d"],
            eps=group["eps"],
        )


def _lars_loop(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    nesterov: bool,
    clip_lr: float | None,
    exclude_1d: bool,
    eps: float,
) -> list[Tensor]:
    """Reference implementation: one tensor at a time, formulas as in the class docstring."""
    ratios = []
    for w, g, buf in zip(params, grads, bufs, strict=True):
        if is_adapted(w, exclude_1d):
            ratio = trust_ratio(w, g, eta, weight_decay, eps, clip_lr)
            ratios.append(ratio)
            d = g.add(w, alpha=weight_decay).mul_(ratio)
        else:
            d = g
        buf.mul_(momentum).add_(d)
        w.add_(d.add(buf, alpha=momentum) if nesterov else buf, alpha=-lr)
    return ratios


def _lars_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    nesterov: bool,
    clip_lr: float | None,
    exclude_1d: bool,
    eps: float,
) -> list[Tensor]:
    """Multi-tensor implementation: one set of ``torch._foreach_*`` calls per (device, dtype) bucket.

    Within a bucket the adapted tensors come first, so that their ratios followed by ones form
    the per-tensor factor list and the weight-decay terms act on a prefix of the lists.
    """
    ratios = []
    for order, n_adapted in buckets_adapted_first(params, exclude_1d):
        w, g, b = [params[i] for i in order], [grads[i] for i in order], [bufs[i] for i in order]
        scale, decay = None, None
        if n_adapted:
            ratio = trust_ratios(w[:n_adapted], g[:n_adapted], eta, weight_decay, eps, clip_lr)
            ratios.append(ratio)
            scale = list(ratio.unbind(0))
            scale += [ratio.new_ones(())] * (len(order) - n_adapted)
            decay = ratio * weight_decay if weight_decay != 0 else None
        _foreach_update(w, g, b, scale, n_adapted, decay, lr=lr, momentum=momentum, nesterov=nesterov)
    return ratios


def _foreach_update(
    w: list[Tensor],
    g: list[Tensor],
    bufs: list[Tensor],
    scale: list[Tensor] | None,
    n_adapted: int,
    decay: Tensor | None,
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
) -> None:
    """The momentum update with ``d = ratio * (g + wd * w)`` expanded as ``ratio*g + (ratio*wd)*w``.

    ``scale`` holds every tensor's ratio (``None``: all 1), ``decay`` the ``ratio * wd`` of the
    first ``n_adapted`` tensors (``None``: no decay). Expanding ``d`` lets every term accumulate
    in place, so no temporary the size of the model is allocated: on CPU such temporaries cost
    page faults every step, on GPU memory traffic.
    """
    torch._foreach_mul_(bufs, momentum)
    if scale is None:
        torch._foreach_add_(bufs, g)
    else:
        torch._foreach_addcmul_(bufs, g, scale)
    if decay is not None:
        torch._foreach_addcmul_(bufs[:n_adapted], w[:n_adapted], list(decay.unbind(0)))
    if not nesterov:
        torch._foreach_add_(w, bufs, alpha=-lr)
        return
    # Nesterov: w -= lr * (d + momentum * buf), term by term; the decay term first, as it reads w.
    if decay is not None:
        torch._foreach_mul_(w[:n_adapted], list((1 - lr * decay).unbind(0)))
    if scale is None:
        torch._foreach_add_(w, g, alpha=-lr)
    else:
        torch._foreach_addcmul_(w, g, scale, value=-lr)
    torch._foreach_add_(w, bufs, alpha=-lr * momentum)
