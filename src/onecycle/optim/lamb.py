"""LAMB: layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep Learning").

Adam normalises each coordinate but not each layer, so at large batch sizes and high LRs some
layers take steps far larger than their weights. LAMB keeps the Adam direction and rescales it
per tensor by ``||w|| / ||update||`` (the trust ratio shared with LARS), so that 1cycle's peak LR
means a comparable relative change for every layer.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from onecycle.optim.trust import TrustStatsMixin, buckets_adapted_first, is_adapted, trust_ratio, trust_ratios

from ..checks import check_number

__all__ = ["LAMB"]


class LAMB(TrustStatsMixin, Optimizer):
    """Adam direction with decoupled weight decay, rescaled per tensor by a trust ratio.

    For every tensor with a gradient, at its step ``t`` (counted per tensor)::

        m = b1 * m + (1 - b1) * g ;  v = b2 * v + (1 - b2) * g * g
        denom = sqrt(v) / sqrt(1 - b2**t) + eps          (exactly as torch.optim.AdamW)
        u = m / (1 - b1**t) / denom + weight_decay * w
        ratio = ||w|| / ||u||                            (1 if either norm is 0)
        w -= lr * ratio * u

    Tensors excluded by ``exclude_1d`` get neither weight decay nor a trust ratio, and with
    ``trust_ratio=False`` every ratio is 1; with ``trust_ratio=False, exclude_1d=False`` the update
    is exactly ``torch.optim.AdamW``'s, which makes LAMB a drop-in to compare against it. Where the
    ratio is known to be 1 the update is even carried out in AdamW's operation order (decay
    ``w *= 1 - lr * wd``, then ``w -= lr / (1 - b1**t) * m / denom``), so the two agree to the bit
    rather than to a few ulps that would otherwise accumulate in float32.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (the key a scheduler cycles).
        betas: ``(b1, b2)`` in ``[0, 1)``. Read from the group every step, so a scheduler may cycle
            ``b1`` (as 1cycle cycles momentum) by assigning a new tuple to ``group["betas"]``.
        eps: added to the denominator, as in AdamW (after bias correction).
        weight_decay: decoupled decay coefficient, inside the trust-ratio-scaled update as in the
            paper. This optimizer applies it itself (``applies_weight_decay = True``).
        trust_ratio: whether to apply the layer-wise trust ratio at all.
        exclude_1d: tensors with ``ndim <= 1`` (biases, normalization scales) get ratio 1 and no
            weight decay; a per-group key.
        foreach: ``True`` uses multi-tensor ``torch._foreach_*`` kernels, ``False`` a per-tensor
            loop (the readable reference); ``None`` picks foreach.

    ``state[p]["step"]`` is a Python ``int`` so bias corrections are host arithmetic: no
    device-to-host transfer per step, and ``state_dict()`` round-trips unchanged. After each
    :meth:`step`, ``last_trust_stats`` (computed on first read) holds per group a device tensor
    ``[mean, min, max]`` of the trust ratios applied, or ``None`` where none were (no adapted
    tensors, or ``trust_ratio=False``).
    """

    #: Weight decay is part of this optimizer's update; the training loop must not also apply it.
    applies_weight_decay = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        trust_ratio: bool = True,
        exclude_1d: bool = True,
        foreach: bool | None = None,
    ) -> None:
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            check_number(name, value)  # a number first (TypeError naming it), then its range below
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Invalid betas: betas={betas!r} (must be a pair (b1, b2))")
        for i, beta in enumerate(betas):
            check_number(f"betas[{i}]", beta)
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: lr={lr} (must be >= 0)")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: betas={betas} (must be in [0, 1))")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: eps={eps} (must be >= 0)")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: weight_decay={weight_decay} (must be >= 0)")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "trust_ratio": trust_ratio,
            "exclude_1d": exclude_1d,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("trust_ratio", True)
            group.setdefault("exclude_1d", True)
            group.setdefault("foreach", None)

    def _init_group(
        self, group: dict
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[int]]:
        """Collect params with gradients and their moments, advancing each one's step count."""
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("LAMB does not support sparse gradients; use dense gradients")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, steps

    def _step_group(self, group: dict) -> list[Tensor]:
        params, grads, exp_avgs, exp_avg_sqs, steps = self._init_group(group)
        beta1, beta2 = group["betas"]
        impl = _lamb_loop if group["foreach"] is False else _lamb_foreach
        return impl(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            steps,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            trust=group["trust_ratio"],
            exclude_1d=group["exclude_1d"],
        )


def _lamb_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    trust: bool,
    exclude_1d: bool,
) -> list[Tensor]:
    """Reference implementation: one tensor at a time, formulas as in the class docstring."""
    ratios = []
    for w, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**t
        denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(eps)
        adapted = is_adapted(w, exclude_1d)
        if adapted and trust:
            u = m.div(denom).div_(bias_correction1)
            if weight_decay != 0:
                u.add_(w, alpha=weight_decay)
            ratio = trust_ratio(w, u)
            ratios.append(ratio)
            w.addcmul_(u, ratio, value=-lr)
        else:  # ratio 1: the same update in AdamW's operation order
            if adapted and weight_decay != 0:
                w.mul_(1 - lr * weight_decay)
            w.addcdiv_(m, denom, value=-lr / bias_correction1)
    return ratios


def _lamb_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    trust: bool,
    exclude_1d: bool,
) -> list[Tensor]:
    """Multi-tensor implementation, per (device, dtype) bucket; agrees with the loop to rounding."""
    ratios = []
    for order, n_adapted in buckets_adapted_first(params, exclude_1d):
        w, m = [params[i] for i in order], [exp_avgs[i] for i in order]
        g, v = [grads[i] for i in order], [exp_avg_sqs[i] for i in order]
        bias_correction1 = [1 - beta1 ** steps[i] for i in order]
        bc2_sqrt = [(1 - beta2 ** steps[i]) ** 0.5 for i in order]
        torch._foreach_lerp_(m, g, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)
        denom = torch._foreach_sqrt(v)  # the step's only parameter-sized temporary, as in AdamW
        if trust:
            ratio = _foreach_trust_update(
                w, m, denom, bias_correction1, bc2_sqrt, n_adapted, lr=lr, eps=eps, weight_decay=weight_decay
            )
            ratios += [] if ratio is None else [ratio]
            continue
        # No trust ratio: AdamW's own operation order (decay, then addcdiv), to the bit.
        if n_adapted and weight_decay != 0:
            torch._foreach_mul_(w[:n_adapted], 1 - lr * weight_decay)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(w, m, denom, [-lr / bc1 for bc1 in bias_correction1])
    return ratios


def _foreach_trust_update(
    w: list[Tensor],
    m: list[Tensor],
    sqrt_v: list[Tensor],
    bias_correction1: list[float],
    bc2_sqrt: list[float],
    n_adapted: int,
    *,
    lr: float,
    eps: float,
    weight_decay: float,
) -> Tensor | None:
    """``u = m / bc1 / (sqrt(v) / sqrt(bc2) + eps) (+ wd * w); w -= lr * (||w|| / ||u||) * u``.

    The first ``n_adapted`` tensors get weight decay and a trust ratio, the rest a ratio of 1.
    ``u`` is built in place in the ``sqrt_v`` scratch list (as ``m * 1 / (bc1 * denom)``) rather
    than in a second temporary. Returns the adapted tensors' ratios (``None`` if there are none).
    """
    u = sqrt_v
    torch._foreach_mul_(u, [b1 / b2 for b1, b2 in zip(bias_correction1, bc2_sqrt, strict=True)])
    torch._foreach_add_(u, [b1 * eps for b1 in bias_correction1])
    torch._foreach_reciprocal_(u)
    torch._foreach_mul_(u, m)
    if n_adapted == 0:
        torch._foreach_add_(w, u, alpha=-lr)
        return None
    if weight_decay != 0:
        torch._foreach_add_(u[:n_adapted], w[:n_adapted], alpha=weight_decay)
    ratio = trust_ratios(w[:n_adapted], u[:n_adapted])
    scale = list(ratio.unbind(0)) + [ratio.new_ones(())] * (len(w) - n_adapted)
    torch._foreach_addcmul_(w, u, scale, value=-lr)
    return ratio
