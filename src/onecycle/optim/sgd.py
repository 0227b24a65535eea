"""``SGD``: torch's SGD with a lighter step for the configuration the Learner uses.

``torch.optim.SGD`` pays a fixed Python cost per param group on every step (gathering the group,
choosing an implementation, a call with a dozen keyword arguments), which on a small model with a
few layer groups (discriminative LRs) is a visible share of the step. For plain momentum SGD
(no Nesterov, dampening, coupled weight decay, ``maximize`` or sparse gradients: the Learner's
decay is decoupled and applied before the step) this class does the same arithmetic as torch's
with three multi-tensor calls per group; any other configuration goes to torch's own ``step``.
The result and the optimizer state (``momentum_buffer`` per parameter) are those of
``torch.optim.SGD``, bit for bit on the CPU (its multi-tensor kernels loop the same per-tensor
operations), so checkpoints move freely between the two.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["SGD"]


class SGD(torch.optim.SGD):
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
        with torch.no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("onecycle.optim.SGD does not support sparse gradients")
        lr, momentum = group["lr"], group["momentum"]
        if momentum != 0:
            state = self.state
            bufs = [state[p].get("momentum_buffer") for p in params]
            fresh = [i for i, b in enumerate(bufs) if b is None]
            if fresh:  # first step for these parameters: the buffer starts as the gradient itself
                for i in fresh:
                    bufs[i] = state[params[i]]["momentum_buffer"] = torch.clone(grads[i]).detach()
                old = [i for i, b in enumerate(bufs) if i not in set(fresh)]
                _momentum([bufs[i] for i in old], [grads[i] for i in old], momentum)
            else:
                _momentum(bufs, grads, momentum)
            grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)


def _momentum(bufs: list[torch.Tensor], grads: list[torch.Tensor], momentum: float) -> None:
    if bufs:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
