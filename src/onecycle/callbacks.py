"""Callbacks: a typed base with a few no-op hooks that receive the Learner explicitly.

The loop dispatches a hook only to the callbacks that override it (see ``hooks_of``), so a callback
that does nothing costs nothing. Stopping early is one exception, ``CancelFit``; ``after_fit``
always runs.

Hook order in ``fit``::

    before_fit
      before_epoch
        before_batch -> (forward, loss, backward) -> after_backward (every optimizer step, grads
        unscaled and not yet clipped) -> after_step -> after_batch
      before_validate -> after_validate
      after_epoch
    after_fit        (always, also on CancelFit or an error)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: callbacks never import the loop
    from .learner import Learner

__all__ = ["Callback", "CancelFit", "HOOKS", "hooks_of", "check_callbacks", "StepSeries", "GradStats", "TrustRatios"]

HOOKS = ("before_fit", "before_epoch", "before_batch", "after_backward", "after_step", "after_batch",
         "before_validate", "after_validate", "after_epoch", "after_fit")


class CancelFit(Exception):
    """Raise from any hook to end ``fit`` cleanly after the current point (``after_fit`` runs)."""


class Callback:
    """Override the hooks you need; each gets the Learner. ``order`` sorts callbacks (low first)."""

    order: int = 0

    def before_fit(self, learn: Learner) -> None: ...
    def before_epoch(self, learn: Learner) -> None: ...
    def before_batch(self, learn: Learner) -> None: ...
    def after_backward(self, learn: Learner) -> None: ...
    def after_step(self, learn: Learner) -> None: ...
    def after_batch(self, learn: Learner) -> None: ...
    def before_validate(self, learn: Learner) -> None: ...
    def after_validate(self, learn: Learner) -> None: ...
    def after_epoch(self, learn: Learner) -> None: ...
    def after_fit(self, learn: Learner) -> None: ...


def check_callbacks(callbacks: object) -> list[Callback]:
    """``callbacks`` as a list, each an object with hooks: ``hooks_of`` would silently skip a class
    passed for an instance (``[MyCallback]``) or a function."""
    if isinstance(callbacks, Callback) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a list of Callback instances, got {callbacks!r}")
    out = list(callbacks)  # type: ignore[call-overload]
    for cb in out:
        if isinstance(cb, type):
            raise TypeError(f"callbacks holds the class {cb.__name__}, not an instance: pass {cb.__name__}()")
        if not any(callable(getattr(cb, name, None)) for name in HOOKS):
            raise TypeError(f"callbacks must hold Callback instances (objects with hook methods), got {cb!r}")
    return out


def hooks_of(callbacks: list[Callback]) -> dict[str, list]:
    """For each hook, the bound methods of the callbacks that override it, in ``order``."""
    ordered = sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))
    out: dict[str, list] = {}
    for name in HOOKS:
        base = getattr(Callback, name)
        out[name] = [getattr(cb, name) for cb in ordered if getattr(type(cb), name, base) is not base]
    return out


class StepSeries(Callback):
    """Base for per-step statistics: each step adds a device tensor of shape (groups, k) without a
    host sync; at each epoch end (and at the end of fit) one sync turns them into recorder series
    named ``<names[j]>/<group>``."""

    names: tuple[str, ...] = ()

    def before_fit(self, learn: Learner) -> None:
        self._rows: list = []

    def add(self, row) -> None:
        self._rows.append(row)

    def after_epoch(self, learn: Learner) -> None:
        self.flush(learn)

    def after_fit(self, learn: Learner) -> None:
        self.flush(learn)

    def flush(self, learn: Learner) -> None:
        """The rows kept so far into the running fit's recorder (``learn.loop.recorder``: inside an
        LR range test, the test's own history)."""
        import torch
        if not getattr(self, "_rows", None):
            return
        values = torch.stack(self._rows).cpu().tolist()  # one sync per epoch
        self._rows = []
        for row in values:
            for g, stats in enumerate(row):
                for name, v in zip(self.names, stats):
                    learn.loop.recorder.log(f"{name}/{g}", v)


class GradStats(StepSeries):
    """Per param group and per optimizer step: the mean absolute gradient and the gradient L2
    norm, taken before clipping (the seed's evidence for why Adam diverges under 1cycle)."""

    names = ("grad_mean_abs", "grad_norm")

    def after_backward(self, learn: Learner) -> None:
        import torch
        row = []
        for group in learn.opt.param_groups:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if not grads:
                row.append(torch.full((2,), float("nan"), device=learn.device))
                continue
            n = sum(g.numel() for g in grads)
            mean_abs = torch.stack([g.abs().sum() for g in grads]).sum() / n
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            row.append(torch.stack([mean_abs, norm]).float())
        self.add(torch.stack(row))


class TrustRatios(StepSeries):
    """Mean, min and max of the LARS/LAMB trust ratios per group and step (added automatically
    when the optimizer exposes ``last_trust_stats``)."""

    names = ("trust_mean", "trust_min", "trust_max")
    order = 100

    def after_step(self, learn: Learner) -> None:
        import torch
        stats = getattr(learn.opt, "last_trust_stats", None)
        if stats is None:
            return
        nan = torch.full((3,), float("nan"), device=learn.device)
        self.add(torch.stack([s.float() if s is not None else nan for s in stats]))
