"""Metrics: plain functions ``(preds, targets) -> Tensor`` averaged per sample, and how metrics are named.

Naming (``named_metrics``): metrics come as a sequence, each named by ``metric_name`` (a function's
``__name__``, a partial's function, an object's class name), or as a Mapping ``name -> metric`` with names
you choose. Two metrics with the same name are refused (``ValueError``), never recorded in one column.

Columns (``MetricAccumulator.result``): ``val_loss`` first (when a loss was known), then each metric's
columns in the metrics' order. A metric giving a number records one column, its name. A metric giving a
dict (a function returning one, an object whose ``compute()`` does, a torchmetrics ``MetricCollection``)
records one column per key, in the order the dict holds them:

* under its default name (given in a sequence): the keys as they are (a collection's keys already carry
  its ``prefix``/``postfix``: ``MulticlassAccuracy``, ``val_MulticlassAccuracy``);
* under a name you chose (a Mapping key other than ``metric_name(m)``): ``f"{name}_{key}"``, the way
  torchmetrics joins a prefix: ``{"val": MetricCollection([...])}`` gives ``val_MulticlassAccuracy``.

A column name claimed twice (two dicts sharing a key, a key equal to another metric's name or to
``val_loss``) raises ``ValueError`` in ``result()``. Values must be numbers or 0-d tensors: a per-class
tensor raises ``ValueError`` (reduce it, or return a dict of named numbers).

Direction and unit: ``higher_is_better`` says which way a metric improves (its own attribute, as
torchmetrics objects and the functions here carry one, else the name rule ``lower_is_better``), and
``metric_directions`` gives it per column, which the Recorder keeps for the plots and reports. An
accuracy-like column (``is_fraction``: by its name, its values in [0, 1]) is shown in percent
everywhere a person reads it (``percent_column``).

Weighting: the accumulator weights each batch's value by its number of targets (``targets.numel()``), so a
smaller last batch counts for what it holds; a metric with ``average = "geometric"`` (also on a partial's
function) has its logarithm averaged instead. Objects following the torchmetrics protocol
(``update``/``compute``/``reset``) accumulate themselves. Functions here return a 0-d tensor and never
call ``.item()``: the loop decides when to read values from the device.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .batches import batch_size
from .checks import check_int

__all__ = ["accuracy", "top_k_accuracy", "perplexity", "bits_per_char", "lower_is_better", "higher_is_better",
           "is_fraction", "percent_column", "metric_name", "named_metrics", "metric_columns", "metric_directions",
           "MetricAccumulator"]


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
    check_int("k", k, 1)
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
perplexity.higher_is_better = False  # type: ignore[attr-defined]


def bits_per_char(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in bits (character-level language models)."""
    preds, targets = _flat(preds, targets)
    return F.cross_entropy(preds, targets) / math.log(2.0)


accuracy.higher_is_better = top_k_accuracy.higher_is_better = True  # type: ignore[attr-defined]
bits_per_char.higher_is_better = False  # type: ignore[attr-defined]


# ---- a metric's direction and unit: the one home ------------------------------------------------------
# The name rule, for a metric that does not say: losses (``val_loss``, ``train_loss``, a user's
# ``l1_loss``), perplexity, bits per character and error rates fall as a model improves; everything
# else (accuracy, F1, AUROC...) rises.
_LOWER_IS_BETTER = ("perplexity", "bits_per_char", "error")
_FRACTION_WORDS = ("acc", "precision", "recall", "f1", "auroc", "auc", "iou", "dice", "error")


def lower_is_better(name: str) -> bool:
    """The name rule: whether a smaller value of the column ``name`` is better (the fallback of
    ``higher_is_better`` when a metric does not say, and how a saved history without directions reads)."""
    return "loss" in name or any(w in name for w in _LOWER_IS_BETTER)


def higher_is_better(metric: object, name: str | None = None) -> bool:
    """Whether a larger value of ``metric`` is better: its own ``higher_is_better`` attribute (torchmetrics
    objects carry one; set it on a function: ``f.higher_is_better = False``; a partial's function's counts),
    else the name rule (``lower_is_better``) on its own name and on its column's ``name``."""
    for owner in (metric, getattr(metric, "func", None)):
        said = getattr(owner, "higher_is_better", None)
        if isinstance(said, bool):
            return said
    return not (lower_is_better(metric_name(metric)) or (name is not None and lower_is_better(name)))


def is_fraction(name: str) -> bool:
    """Accuracy-like metrics by name (a fraction in [0, 1], shown as a percentage wherever a person reads
    it: the terminal, plots, reports, CSV files)."""
    low = name.lower()
    return "loss" not in low and any(w in low for w in _FRACTION_WORDS)


def percent_column(name: str, values: Iterable[Any]) -> bool:
    """Whether a column is shown in percent: an accuracy-like name whose finite values all lie in [0, 1]."""
    finite = [v for v in values if isinstance(v, numbers.Real) and math.isfinite(v)]
    return is_fraction(name) and all(-1e-9 <= v <= 1 + 1e-9 for v in finite)


def metric_name(metric: object) -> str:
    """The name a metric is recorded under: a function's ``__name__``, a partial's function,
    an object's class name."""
    name = getattr(metric, "__name__", None)
    if name is None and hasattr(metric, "func"):
        name = getattr(metric.func, "__name__", None)
    return name or type(metric).__name__


def _is_stateful(metric: object) -> bool:
    """torchmetrics' protocol: the object accumulates itself (``update``) and answers (``compute``)."""
    return callable(getattr(metric, "update", None)) and callable(getattr(metric, "compute", None))


def _check_metric(metric: object, where: str) -> None:
    if not (_is_stateful(metric) or callable(metric)):
        raise TypeError(f"{where} must be a function (preds, targets) -> number or an object with "
                        f"update/compute/reset (torchmetrics), got {metric!r} ({type(metric).__name__})")


def metric_columns(metrics: Mapping[str, Any]) -> list[str]:
    """The columns ``named_metrics``' result records, as far as they are known before any batch: a
    ``MetricCollection``'s keys (its own, or prefixed by the name you gave it), every other metric's
    name. A function that returns a dict adds its keys at the first epoch instead."""
    out = []
    for name, m in metrics.items():
        keys = m.keys() if _is_stateful(m) and callable(getattr(m, "keys", None)) else None
        if keys is None:
            out.append(name)
        else:
            out += [str(k) if name == metric_name(m) else f"{name}_{k}" for k in keys]
    return out


def metric_directions(metrics: Mapping[str, Any]) -> dict[str, bool]:
    """``higher_is_better`` of each column ``metric_columns`` lists (a ``MetricCollection``'s keys take
    their member's direction where it has one)."""
    out = {}
    for name, m in metrics.items():
        keys = m.keys() if _is_stateful(m) and callable(getattr(m, "keys", None)) else None
        if keys is None:
            out[name] = higher_is_better(m, name)
            continue
        for k in keys:
            col = str(k) if name == metric_name(m) else f"{name}_{k}"
            member = m[k] if callable(getattr(m, "__getitem__", None)) else None
            said = getattr(member, "higher_is_better", None)
            out[col] = said if isinstance(said, bool) else higher_is_better(m, col)
    return out


def named_metrics(metrics: Iterable[Any] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``name -> metric`` in order, from None, a sequence (each named by ``metric_name``) or a Mapping
    (your names). Two metrics of a sequence with the same name raise ``ValueError``: name them with a
    Mapping, ``metrics={"f1_macro": m1, "f1_weighted": m2}``."""
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        out: dict[str, Any] = {}
        for name, m in metrics.items():
            if not isinstance(name, str):
                raise TypeError(f"metrics: a name must be a str, got {name!r} ({type(name).__name__}) for {m!r}")
            if not name:
                raise ValueError(f"metrics: a name must not be empty, got {name!r} for {m!r}")
            _check_metric(m, f"metrics[{name!r}]")
            out[name] = m
    elif isinstance(metrics, (str, bytes)) or callable(metrics) or _is_stateful(metrics) \
            or not isinstance(metrics, Iterable):
        raise TypeError(f"metrics must be None, a sequence of metrics or a mapping name -> metric, got {metrics!r}"
                        " (a single metric goes in a list: metrics=[m])")
    else:
        items = list(metrics)
        for i, m in enumerate(items):
            _check_metric(m, f"metrics[{i}]")
        names = [metric_name(m) for m in items]
        dups = [n for n, count in Counter(names).items() if count > 1]
        if dups:
            raise ValueError(f"metrics: several metrics are named {', '.join(map(repr, dups))}, and one column "
                             "would hold only the last one's values; name each: metrics={'name': m, ...}")
        out = dict(zip(names, items))
    if "val_loss" in out:
        raise ValueError("metrics: 'val_loss' is the loss's column; give the metric another name")
    return out


_NO_BATCH = "MetricAccumulator.result: no batch was added (an empty validation set?); there is nothing to average"


def _number(value: Any, what: str) -> torch.Tensor | float:
    """A 0-d tensor (detached, left on its device) or a float; anything else raises, naming ``what``."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0:
            raise ValueError(f"{what} gave a tensor of shape {tuple(value.shape)}, not one number: reduce it "
                             "(e.g. .mean()), or return a dict of named numbers")
        return value.detach()
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{what} gave {value!r} ({type(value).__name__}); expected a number or a 0-d tensor")


def _numbers(value: Any, name: str) -> dict[Any, torch.Tensor | float]:
    """A metric's value as ``{key: number}``: a dict's keys, or the single key None for a number."""
    if isinstance(value, Mapping):
        return {key: _number(v, f"metric {name!r} (key {key!r})") for key, v in value.items()}
    return {None: _number(value, f"metric {name!r}")}


def _average(metric: object) -> str:
    """``"geometric"`` when the function (or a partial's function) says so."""
    return getattr(metric, "average", None) or getattr(getattr(metric, "func", None), "average", None) or ""


def _row(values: list, device: torch.device) -> torch.Tensor:
    """Per-batch values as one float64 row on ``device``; 0-d tensors are stacked without a host sync."""
    if values and all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values).to(device, torch.float64)
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)


def _keys_text(keys: Any) -> str:
    return "a number" if list(keys) == [None] else f"keys {list(keys)}"


class MetricAccumulator:
    """Validation loss and metrics over batches, weighted by each batch's number of targets; objects
    with ``update``/``compute``/``reset`` (torchmetrics) accumulate themselves (reset here).

    Per batch only the values are kept (detached, on the device): the weighting, the logarithms of
    geometric metrics and the sums are one vectorised pass in ``result``, not a handful of small
    kernels per batch. Data-parallel: a rank that added no batch cannot know whether a function gives
    a number or a dict, and takes it for a number; a dict-valued function needs a batch on every rank."""

    def __init__(self, loss_fn: Callable | None, metrics: Mapping[str, Any] | Iterable[Any] | None,
                 device: torch.device | str) -> None:
        """``metrics``: ``name -> metric`` (``named_metrics``' answer), or anything ``named_metrics`` takes."""
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable or None, got {loss_fn!r}")
        self.loss_fn, self.metrics, self.device = loss_fn, named_metrics(metrics), torch.device(device)
        self._stateful = {name: _is_stateful(m) for name, m in self.metrics.items()}
        # per function metric: its keys (None until its first batch), and per key one value per batch
        self._keys: dict[str, tuple | None] = {name: None for name, s in self._stateful.items() if not s}
        self._values: dict[str, dict[Any, list]] = {name: {} for name in self._keys}
        self._losses: list[Any] = []
        self._loss_sizes: list[int] = []  # targets of the batches that had a loss
        self._sizes: list[int] = []  # targets per batch
        for name, m in self.metrics.items():
            if self._stateful[name] and callable(getattr(m, "reset", None)):
                m.reset()

    def add(self, preds: Any, target: Any, loss: torch.Tensor | float | None = None) -> None:
        """One batch. ``loss``: its mean loss when already known (a model's own ``output.loss``), else
        ``loss_fn(preds, target)``; with neither the batch adds no loss. Weight: ``target.numel()``
        (``len(preds)`` when the target is None)."""
        n = batch_size(target, preds)
        if n == 0:  # a data-parallel rank's empty share of the last batch: nothing to add
            return
        if loss is None and self.loss_fn is not None:
            loss = self.loss_fn(preds, target)
        loss = None if loss is None else _number(loss, "the loss")
        batch = {name: self._checked(name, m(preds, target))
                 for name, m in self.metrics.items() if not self._stateful[name]}
        for name, m in self.metrics.items():
            if self._stateful[name]:
                m.update(preds, target)
        if loss is not None:  # every value checked: record
            self._losses.append(loss)
            self._loss_sizes.append(n)
        for name, values in batch.items():
            if self._keys[name] is None:
                self._keys[name] = tuple(values)
            for key, v in values.items():
                self._values[name].setdefault(key, []).append(v)
        self._sizes.append(n)

    def _checked(self, name: str, value: Any) -> dict[Any, Any]:
        values = _numbers(value, name)
        known = self._keys[name]
        if known is not None and set(values) != set(known):
            raise ValueError(f"metric {name!r} gave {_keys_text(values)} for this batch but {_keys_text(known)} "
                             "before; a metric must give the same keys for every batch")
        return values

    def _column(self, name: str, key: Any) -> str:
        if key is None:
            return name
        return str(key) if name == metric_name(self.metrics[name]) else f"{name}_{key}"

    def _totals(self) -> tuple[list[tuple[str, Any]], torch.Tensor]:
        """The function metrics' columns, and [loss sum, their sums (value x batch size), targets with a
        loss, targets] as one float64 vector on the device."""
        dev, f64 = self.device, torch.float64
        cols, rows = [], []
        for name, keys in self._keys.items():
            # a data-parallel rank that saw no batch takes a function to give a number: its zero row keeps
            # the layout of the other ranks' sums (a dict-valued function needs a batch on every rank)
            for key in keys or (None,):
                row = _row(self._values[name].get(key, []), dev)
                rows.append(row.log() if _average(self.metrics[name]) == "geometric" else row)
                cols.append((name, key))
        sizes = torch.tensor(self._sizes, dtype=f64, device=dev)
        sums = torch.stack(rows) @ sizes if rows else torch.zeros(0, dtype=f64, device=dev)
        loss_sum = _row(self._losses, dev) @ torch.tensor(self._loss_sizes, dtype=f64, device=dev)
        counts = torch.tensor([sum(self._loss_sizes), sum(self._sizes)], dtype=f64, device=dev)
        return cols, torch.cat([loss_sum.reshape(1), sums, counts])

    def result(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Weighted means as plain floats: ``val_loss`` (when a batch had a loss), then each metric's
        columns in the metrics' order. ``reduce`` (a sum over data-parallel ranks) combines sums and
        counts first, so the result is over the whole set, not a mean of per-rank means."""
        if not self._sizes and reduce is None:
            raise ValueError(_NO_BATCH)
        cols, totals = self._totals()
        if reduce is not None:
            totals = reduce(totals)
        loss_sum, *sums, n_loss, n = totals.tolist()
        if n == 0:
            raise ValueError(_NO_BATCH)
        means = {col: s / n for col, s in zip(cols, sums)}
        out = {"val_loss": loss_sum / n_loss} if n_loss > 0 else {}
        owners = {"val_loss": "the loss"}
        for name, m in self.metrics.items():
            if self._stateful[name]:
                values = {k: float(v) for k, v in _numbers(m.compute(), name).items()}
            else:
                geometric = _average(m) == "geometric"
                values = {key: math.exp(means[name, key]) if geometric else means[name, key]
                          for key in self._keys[name] or (None,)}
            for key, v in values.items():
                col = self._column(name, key)
                if col in owners:
                    raise ValueError(f"metric {name!r} and {owners[col]} both give a column {col!r}; one would "
                                     "overwrite the other: name them apart, metrics={'name': m, ...}")
                owners[col] = f"metric {name!r}"
                out[col] = v
        return out
