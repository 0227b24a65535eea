"""``SGD``: torch's SGD with a lighter step for the configuration the Learner uses.

``torch.optim.SGD`` pays a fixed Python cost per param group on every step (gathering the group,
choosing an implementation, a call with a dozen keyword arguments), which on a small model with a
few layer groups (discriminative LRs) is a visible share of the step. For plain momentum SGD
(no Nesterov, dampening, coupled weight decay, ``maximize`` or sparse gradients: the Learner's
decay is decoupled and applied before the step) this class does the same arithmetic as torch's
with one multi-tensor call per distinct momentum and per distinct LR across all groups (three
calls in all when the groups share them); any other configuration goes to torch's own ``step``.
The momentum buffers live in one flat tensor, so decaying them is one kernel: on the CPU a
multi-tensor multiply by a scalar loops a kernel per tensor (MNIST-1D CNN: 20 us a step saved).
The result and the optimizer state (``momentum_buffer`` per parameter) are those of
``torch.optim.SGD``, bit for bit on the CPU (its multi-tensor kernels loop the same per-tensor
operations), so checkpoints move freely between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .groups import drop_grads

__all__ = ["SGD"]


class SGD(torch.optim.SGD):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reset_flat()

    def _reset_flat(self) -> None:
        """The flat-buffer bookkeeping (not part of the state: rebuilt after unpickling)."""
        self._flat: dict[tuple[int, ...], tuple] = {}  # buffer ids -> (flat, buffers, their data_ptrs)
        self._flat_steps = 0
        self._flat_miss = (-(10**9), 0)  # step of the last rebuild, rebuilds in a row

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for key in ("_flat", "_flat_steps", "_flat_miss"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._reset_flat()

    def _plain(self, group: dict) -> bool:
        return (not group["nesterov"] and group["dampening"] == 0 and group["weight_decay"] == 0
                and not group["maximize"] and not group["differentiable"] and not group.get("fused")
                and not isinstance(group["lr"], torch.Tensor))

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if not all(self._plain(g) for g in self.param_groups):
            step = torch.optim.SGD.step  # torch's, without its hook wrapper (ours already ran them)
            return (step.__wrapped__ if getattr(step, "hooked", False) else step)(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Gather every group's tensors, then one multi-tensor call per distinct momentum (buffers)
        # and per distinct LR (parameters): with one LR for all layer groups, three calls in all.
        self._flat_steps += 1
        by_mom: dict[float, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        by_lr: dict[float, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        with torch.no_grad():
            for group in self.param_groups:
                self._gather(group, by_mom, by_lr)
            for momentum, (bufs, grads) in by_mom.items():
                if not bufs:  # every buffer was just made
                    continue
                self._flat_buffers(bufs).mul_(momentum)
                torch._foreach_add_(bufs, grads)
            for lr, (params, steps) in by_lr.items():
                torch._foreach_add_(params, steps, alpha=-lr)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad`` without its profiler annotation (a few microseconds a step)."""
        if not set_to_none:
            return super().zero_grad(set_to_none=False)
        return drop_grads(self)

    def _flat_buffers(self, bufs: list[torch.Tensor]) -> torch.Tensor:
        """One tensor whose elements are exactly those of ``bufs``: scaling it is one kernel instead
        of one per buffer (a multi-tensor scalar multiply loops them on the CPU). The first time a
        set of buffers is seen, their values move into one flat tensor and each buffer becomes a
        view of it in place (``set_``: the same tensor objects, the same values); a state_dict load
        or a new set of parameters just makes a new flat tensor."""
        cache = self._flat
        key = tuple(map(id, bufs))  # the set of buffers, not the momentum (cycled every step)
        hit = cache.get(key)
        # Still the same tensors (ids are reused once freed), still where this flat tensor holds them
        # (another set's flat tensor may have taken some of them since).
        if hit is not None and all(a is b for a, b in zip(hit[1], bufs)) and \
                [b.data_ptr() for b in bufs] == hit[2]:
            return hit[0]
        # A set that changes every few steps (gradients that come and go) would be copied every
        # time: after 8 changes in a row, each within 16 steps of the last, stop flattening.
        last, streak = self._flat_miss
        streak = streak + 1 if self._flat_steps - last <= 16 else 1
        self._flat_miss = (self._flat_steps, streak)
        if streak > 8 or len({(b.device, b.dtype) for b in bufs}) != 1:
            return _Each(bufs)
        flat = torch.cat([b.reshape(-1) for b in bufs])
        storage, offset = flat.untyped_storage(), 0
        for b in bufs:
            b.set_(storage, offset, b.shape, _contiguous_strides(b.shape))
            offset += b.numel()
        cache.clear()  # other sets' entries may hold buffers moved here, or ones replaced by a load
        cache[key] = (flat, list(bufs), [b.data_ptr() for b in bufs])
        return flat

    def _gather(self, group: dict, by_mom: dict, by_lr: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("onecycle.optim.SGD does not support sparse gradients")
        momentum = group["momentum"]
        if momentum != 0:
            state = self.state
            bufs = [state[p].get("momentum_buffer") for p in params]
            mom_bufs, mom_grads = by_mom.setdefault(momentum, ([], []))
            for i, (p, b) in enumerate(zip(params, bufs)):
                if b is None:  # first step for this parameter: the buffer starts as the gradient
                    bufs[i] = state[p]["momentum_buffer"] = torch.clone(grads[i]).detach()
                else:
                    mom_bufs.append(b)
                    mom_grads.append(grads[i])
            grads = bufs
        lr_params, lr_steps = by_lr.setdefault(group["lr"], ([], []))
        lr_params.extend(params)
        lr_steps.extend(grads)


class _Each:
    """``mul_`` over tensors that cannot share one flat buffer (mixed devices or dtypes)."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors

    def mul_(self, value: float) -> None:
        torch._foreach_mul_(self.tensors, value)


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))
