"""Layer-wise trust ratios shared by the LARS and LAMB optimizers (:mod:`onecycle.optim`).

Both optimizers rescale each tensor's update by a *trust ratio* that compares the size of the
weights with the size of the proposed update, so that every layer moves by a similar *relative*
amount whatever the scale of its gradients. The formula is the same for both (LAMB is the
special case ``eta=1, weight_decay=0`` applied to the Adam direction), so it lives here once.

Everything in this module stays on the device: no ``.item()``, no Python ``if`` on a tensor
value. A training loop that steps thousands of times per epoch must not wait for the GPU just to
decide whether a norm was zero; ``torch.where`` makes that decision on the device instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "TrustStatsMixin",
    "buckets_adapted_first",
    "is_adapted",
    "ratio_stats",
    "trust_ratio",
    "trust_ratios",
]


def _ratio_from_norms(
    w_norm: Tensor,
    u_norm: Tensor,
    eta: float,
    weight_decay: float,
    eps: float,
    clip_lr: float | None,
) -> Tensor:
    """The trust-ratio formula on (batched) norms; shared by the per-tensor and foreach entry points."""
    denom = torch.add(u_norm, w_norm, alpha=weight_decay) if weight_decay != 0 else u_norm
    if eps != 0:
        denom = denom + eps
    ratio = torch.div(w_norm, denom)  # a fresh tensor: the in-place ops below touch nothing else
    if eta != 1:
        ratio.mul_(eta)
    if clip_lr is not None:
        # LARC "clip" mode: the local LR lr*ratio may not exceed the global LR. As lr -> 0 the
        # capped ratio min(ratio/lr, 1) tends to 1, which also avoids 0/0 when lr == 0.
        ratio = ratio.div_(clip_lr).clamp_(max=1.0) if clip_lr > 0 else torch.ones_like(ratio)
    # A zero-norm tensor (fresh zero-initialised weights, or a layer with no gradient signal)
    # has no meaningful ratio; fall back to the plain update instead of 0 or nan.
    return torch.where(torch.minimum(w_norm, u_norm) > 0, ratio, 1.0)


def trust_ratio(
    weight: Tensor,
    update: Tensor,
    eta: float = 1.0,
    weight_decay: float = 0.0,
    eps: float = 0.0,
    clip_lr: float | None = None,
) -> Tensor:
    """Trust ratio of one tensor as a 0-d device tensor (reference path of the optimizers).

    ``ratio = eta * ||w|| / (||u|| + weight_decay * ||w|| + eps)``, and ``1`` where ``||w||`` or
    ``||u||`` is zero. With ``clip_lr`` set, the ratio becomes ``min(ratio / clip_lr, 1)`` (LARC).
    """
    w_norm = torch.linalg.vector_norm(weight)
    u_norm = torch.linalg.vector_norm(update)
    return _ratio_from_norms(w_norm, u_norm, eta, weight_decay, eps, clip_lr)


def trust_ratios(
    weights: Sequence[Tensor],
    updates: Sequence[Tensor],
    eta: float = 1.0,
    weight_decay: float = 0.0,
    eps: float = 0.0,
    clip_lr: float | None = None,
) -> Tensor:
    """Trust ratios of many tensors at once, as a 1-D device tensor with one entry per tensor.

    Same formula as :func:`trust_ratio`, but the norms come from a single ``torch._foreach_norm``
    call, so the cost is a handful of kernel launches however many layers there are. All
    tensors must share one device and dtype (use :func:`buckets_adapted_first`), because the
    norms are stacked into a single vector. ``ratios.unbind(0)`` gives the list of 0-d tensors
    that ``torch._foreach_mul_`` / ``_foreach_addcmul_`` accept as per-tensor factors.
    """
    if len(weights) != len(updates):
        raise ValueError(f"weights and updates differ in length: {len(weights)} != {len(updates)}")
    if not weights:
        return torch.empty(0)
    w_norm, u_norm = _norms([*weights, *updates]).chunk(2)
    return _ratio_from_norms(w_norm, u_norm, eta, weight_decay, eps, clip_lr)


# Mean tensor size (elements) above which per-tensor ``dot`` beats ``_foreach_norm`` on CPU.
_DOT_MIN_MEAN_NUMEL = 1 << 14


def _norms(tensors: list[Tensor]) -> Tensor:
    """L2 norms of same-device, same-dtype tensors, as one 1-D tensor.

    On accelerators ``torch._foreach_norm`` is a single fused multi-tensor kernel. On CPU it runs
    one ``vector_norm`` per tensor, which we measured at about twice the time of a BLAS dot
    product on large float32 tensors (and with float32 accumulation error ~1e-6 relative), so CPU
    float32/float64 take ``sqrt(dot(x, x))``. Half precisions keep ``_foreach_norm``: their
    squared norms would overflow. Lists of small tensors also keep the single ``_foreach_norm``
    call, since there the per-call overhead of one ``dot`` per tensor dominates.
    """
    first = tensors[0]
    large = sum(t.numel() for t in tensors) >= _DOT_MIN_MEAN_NUMEL * len(tensors)
    if large and first.device.type == "cpu" and first.dtype in (torch.float32, torch.float64):
        flat = [t.reshape(-1) for t in tensors]
        return torch.stack([torch.dot(x, x) for x in flat]).sqrt_()
    return torch.stack(torch._foreach_norm(tensors))


def ratio_stats(ratios: Sequence[Tensor]) -> Tensor | None:
    """Reduce trust ratios to a device tensor ``[mean, min, max]`` (``None`` if there are none).

    Accepts 0-d tensors (one per layer, as the reference path produces) and/or 1-D tensors (one
    per device bucket, as the foreach path produces). Nothing is copied to the host, so logging
    code decides when it is worth a synchronisation. Results from several devices/dtypes are
    moved to the first tensor's device and the promoted dtype.
    """
    if not ratios:
        return None
    device = ratios[0].device
    dtype = functools.reduce(torch.promote_types, (r.dtype for r in ratios))
    if len(ratios) == 1:
        flat = ratios[0].reshape(-1)
    else:
        flat = torch.cat([r.to(device=device, dtype=dtype).reshape(-1) for r in ratios])
    if flat.numel() == 0:
        return None
    lo, hi = torch.aminmax(flat)
    return torch.stack((flat.mean(), lo, hi))


def is_adapted(p: Tensor, exclude_1d: bool) -> bool:
    """Whether a tensor gets a trust ratio and weight decay: not a bias / normalization vector
    when ``exclude_1d`` is set. A shape test only, so it never waits for the device."""
    return not (exclude_1d and p.ndim <= 1)


def buckets_adapted_first(tensors: Sequence[Tensor], exclude_1d: bool) -> list[tuple[list[int], int]]:
    """Indices of ``tensors`` grouped by ``(device, dtype)``, adapted tensors first in each group.

    Multi-tensor (``torch._foreach_*``) kernels and :func:`trust_ratios` need homogeneous lists;
    mixed-precision or model-parallel models give heterogeneous ones, so optimizers split first.
    Putting the adapted tensors first lets the optimizers address them as a prefix of each list,
    with one set of multi-tensor calls for the whole bucket. Returns ``(indices, n_adapted)`` pairs.
    """
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[int], list[int]]] = {}
    for i, t in enumerate(tensors):
        adapted, plain = buckets.setdefault((t.device, t.dtype), ([], []))
        (adapted if is_adapted(t, exclude_1d) else plain).append(i)
    return [(adapted + plain, len(adapted)) for adapted, plain in buckets.values()]


class TrustStatsMixin:
    """Gives a trust-ratio optimizer its ``last_trust_stats`` attribute, computed on first read.

    ``step()`` only records each group's ratio tensors (which it has anyway); the reduction to
    ``[mean, min, max]`` is deferred until someone reads ``last_trust_stats`` (typically a logger,
    every N steps), which saves a few kernel launches per step that small models would notice.
    The result is the same device tensors, still without synchronising.
    """

    _last_ratios: list[list[Tensor]] | None = None
    _last_stats: list[Tensor | None] | None = None

    def _record_ratios(self, per_group: list[list[Tensor]]) -> None:
        """Called by ``step()`` with, per param group, the ratio tensors it applied."""
        self._last_ratios = per_group
        self._last_stats = None

    def _step_group(self, group: dict) -> list[Tensor]:
        """Update one param group; return the trust-ratio tensors applied (the subclass's job)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step and refresh ``last_trust_stats``.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._record_ratios([self._step_group(g) for g in self.param_groups])  # type: ignore[attr-defined]
        return loss

    @property
    def last_trust_stats(self) -> list[Tensor | None]:
        """Per param group, a device tensor ``[mean, min, max]`` of the last step's trust ratios
        (``None`` for a group that adapted no tensor; all ``None`` before the first step)."""
        if self._last_ratios is None:
            return [None] * len(self.param_groups)  # type: ignore[attr-defined]
        if self._last_stats is None:
            self._last_stats = [ratio_stats(r) for r in self._last_ratios]
        return self._last_stats
