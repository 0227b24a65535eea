"""Metrics: plain functions ``(preds, targets) -> Tensor`` averaged per sample.

The Learner weights each batch's value by its number of targets (``targets.numel()``), so a
smaller last batch counts for what it holds; a metric with ``average = "geometric"`` has its
logarithm averaged instead. Objects following the torchmetrics protocol (``update``/``compute``/``reset``)
are used as they are. Functions here return a 0-d tensor and never call ``.item()``: the loop
decides when to read values from the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["accuracy", "top_k_accuracy", "perplexity", "bits_per_char", "metric_name", "MetricAccumulator"]


def _flat(preds: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence outputs (B, T, C) with targets (B, T) become (B*T, C) and (B*T,)."""
    if preds.ndim == targets.ndim + 1 and preds.ndim > 2:
        return preds.reshape(-1, preds.shape[-1]), targets.reshape(-1)
    return preds, targets


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose arg-max class equals the target."""
    preds, targets = _flat(preds, targets)
    return (preds.argmax(dim=-1) == targets).float().mean()


def top_k_accuracy(preds: torch.Tensor, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Fraction of samples whose target is among the ``k`` highest scores."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    preds, targets = _flat(preds, targets)
    top = preds.topk(min(k, preds.shape[-1]), dim=-1).indices
    return (top == targets.unsqueeze(-1)).any(dim=-1).float().mean()


def perplexity(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """exp of the mean cross-entropy. Marked ``average = "geometric"``: the Learner averages its
    logarithm over batches, so the set-level value is exp(mean cross-entropy over all targets),
    not a mean of per-batch perplexities."""
    preds, targets = _flat(preds, targets)
    return torch.exp(F.cross_entropy(preds, targets))


perplexity.average = "geometric"  # type: ignore[attr-defined]


def bits_per_char(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in bits (character-level language models)."""
    preds, targets = _flat(preds, targets)
    return F.cross_entropy(preds, targets) / math.log(2.0)


def metric_name(metric: object) -> str:
    """The name a metric is recorded under: a function's ``__name__``, a partial's function,
    an object's class name."""
    name = getattr(metric, "__name__", None)
    if name is None and hasattr(metric, "func"):
        name = getattr(metric.func, "__name__", None)
    return name or type(metric).__name__


def named_metrics(metrics: Any) -> dict[str, Any]:  # TEMP shim until the metrics work lands
    if metrics is None:
        return {}
    if isinstance(metrics, dict):
        return dict(metrics)
    out: dict[str, Any] = {}
    for m in metrics:
        if not (callable(m) or hasattr(m, "update")):
            raise TypeError(f"metrics must be callables or update/compute objects, got {m!r}")
        if metric_name(m) in out:
            raise ValueError(f"duplicate metric name {metric_name(m)!r}")
        out[metric_name(m)] = m
    return out


class MetricAccumulator:
    """Loss and metrics weighted by each batch's number of targets; objects with
    ``update``/``compute``/``reset`` (torchmetrics) accumulate themselves.

    Per batch only the values are kept (detached, on the device): the weighting, the logarithms of
    geometric metrics and the sums are one vectorised pass in ``result``, not a handful of small
    kernels per batch."""

    def __init__(self, loss_fn: Callable, metrics: Sequence[Any], device: torch.device) -> None:
        self.loss_fn, self.metrics = loss_fn, list(metrics.values())
        self.names = ["val_loss"] + list(metrics)
        self.device = device
        self._stateful = [hasattr(m, "update") and hasattr(m, "compute") for m in self.metrics]
        self._values: list[list[Any]] = [[] for _ in self.names]  # per name, one value per batch
        self._sizes: list[int] = []  # targets per batch
        for m in self.metrics:
            if hasattr(m, "update") and hasattr(m, "reset"):
                m.reset()

    def add(self, pred: torch.Tensor, y: torch.Tensor, loss: Any = None) -> None:
        n = y.numel() if torch.is_tensor(y) else len(y)
        if n == 0:  # a data-parallel rank's empty share of the last batch: nothing to add
            return
        self._values[0].append((self.loss_fn(pred, y) if loss is None else loss).detach())
        for values, m, stateful in zip(self._values[1:], self.metrics, self._stateful):
            if stateful:
                m.update(pred, y)
            else:
                v = m(pred, y)
                values.append(v.detach() if isinstance(v, torch.Tensor) else v)
        self._sizes.append(n)

    def _sums(self) -> torch.Tensor:
        """Per name, the sum over batches of value x batch size (float64, on the device)."""
        dev, n = self.device, len(self._sizes)
        rows = []
        for values, m in zip(self._values, [None, *self.metrics]):
            if not values:  # no batch yet, or a torchmetrics object (its compute() answers)
                rows.append(torch.zeros(n, dtype=torch.float64, device=dev))
                continue
            if all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in values):
                row = torch.stack(values).to(dev, torch.float64)
            else:
                row = torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev)
            rows.append(row.log() if getattr(m, "average", "") == "geometric" else row)
        return torch.stack(rows) @ torch.tensor(self._sizes, dtype=torch.float64, device=dev)

    def result(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Weighted means; ``reduce`` (a sum over data-parallel ranks) combines sums and counts
        first, so the result is over the whole set, not a mean of per-rank means."""
        totals = torch.cat([self._sums(), torch.tensor([float(sum(self._sizes))], dtype=torch.float64,
                                                       device=self.device)])
        if reduce is not None:
            totals = reduce(totals)
        sums = (totals[:-1] / totals[-1].clamp(min=1)).tolist()
        out = dict(zip(self.names, sums))
        for name, m, stateful in zip(self.names[1:], self.metrics, self._stateful):
            if stateful:
                out[name] = float(m.compute())
            elif getattr(m, "average", "") == "geometric":
                out[name] = math.exp(out[name])
        return out
