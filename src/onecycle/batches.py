"""How a batch becomes ``(args, kwargs, target)``, and a model's output becomes ``(loss, preds)``.

Batches:
- a tuple or list is ``(inputs..., target)``; one element, or a bare tensor, is inputs without a
  target (``predict`` on unlabelled data, or a model that computes its own loss);
- a Mapping (a dict, a Hugging Face ``BatchEncoding``) goes to the model as keyword arguments, its
  target under the first of ``TARGET_KEYS`` it has. The target key stays in the keyword arguments
  when the model computes its own loss (``loss_fn=None``), as Hugging Face models expect;
- ``batch_fn(batch) -> (args, kwargs, target)`` overrides both rules.

numpy arrays in a batch become tensors (as a ``DataLoader``'s ``default_convert`` makes them).

Outputs: a tensor is the predictions. A Mapping, or an object with ``.loss``/``.logits`` (a Hugging
Face ``ModelOutput``), gives its ``loss`` (None when absent) and its ``logits`` as predictions (for
a Mapping without ``logits``: its one other value, or the Mapping without ``loss``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["TARGET_KEYS", "split_batch", "to_device", "in_place", "split_output", "batch_size"]

TARGET_KEYS = ("labels", "label", "target", "y")
_CPU = torch.device("cpu")


def split_batch(batch: Any, batch_fn: Callable | None = None, keep_target: bool = False) -> tuple[tuple, dict, Any]:
    """``(args, kwargs, target)`` of one batch (see the module doc); ``target`` is None when the
    batch has none. ``keep_target``: leave a Mapping's target key among the keyword arguments."""
    if batch_fn is not None:
        out = batch_fn(batch)
        if not (isinstance(out, tuple) and len(out) == 3 and isinstance(out[1], Mapping)):
            raise TypeError(f"batch_fn must return (args, kwargs, target) with kwargs a dict, got {_kind(out)}")
        args, kwargs, target = out
        if not isinstance(args, (tuple, list)):  # tuple(a tensor) would split it into its rows
            raise TypeError(f"batch_fn must return (args, kwargs, target) with args a tuple of positional "
                            f"arguments, got args of type {type(args).__name__}; return ((x,), {{}}, y) for one input")
        return tuple(args), dict(kwargs), target
    if type(batch) is tuple and len(batch) == 2:  # the common case, (inputs, target), the shortest way
        return (batch[0],), {}, batch[1]
    if isinstance(batch, (tuple, list)):  # a namedtuple too
        if len(batch) >= 2:
            return tuple(batch[:-1]), {}, batch[-1]
        if len(batch) == 1:
            return (batch[0],), {}, None
        raise TypeError("a batch is an empty tuple: expected (inputs..., target)")
    if isinstance(batch, Mapping):
        kwargs = dict(batch)
        key = next((k for k in TARGET_KEYS if k in kwargs), None)
        if key is None:
            return (), kwargs, None
        return (), kwargs, kwargs[key] if keep_target else kwargs.pop(key)
    if isinstance(batch, torch.Tensor):
        return (batch,), {}, None
    raise TypeError(f"a batch must be a tuple (inputs..., target), a Mapping of model arguments or a tensor, "
                    f"got {_kind(batch)}; pass batch_fn=fn(batch) -> (args, kwargs, target) for other layouts")


def to_device(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Tensors inside ``obj`` (nested tuples, lists, Mappings) on ``device`` (``non_blocking``);
    4-d floating-point tensors in NHWC layout with ``channels_last``. numpy arrays and scalars of
    numbers become tensors first, as a DataLoader's ``default_convert`` makes them (same dtype:
    float64 stays float64). Other values as they are."""
    if isinstance(obj, torch.Tensor):
        if obj.device != device:  # (a .to() that moves nothing still costs a dispatch)
            obj = obj.to(device, non_blocking=True)
        if channels_last and obj.ndim == 4 and obj.is_floating_point():
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, (tuple, list)):
        items = [to_device(o, device, channels_last) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)  # namedtuples too
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (np.ndarray, np.number, np.bool_)) and obj.dtype.kind in "biufc":
        return to_device(torch.as_tensor(obj), device, channels_last)
    return obj


def in_place(args: tuple, target: Any, device: torch.device) -> bool:
    """Whether a batch of positional tensors (and a tensor target, or none) needs nothing from
    ``to_device``: every one already on ``device`` (the common case, checked without a call per
    tensor). Exact ``torch.Tensor`` only: a subclass may move differently."""
    if device == _CPU:  # is_cpu costs less than a device comparison (and device.type makes a new str)
        for a in args:
            if type(a) is not torch.Tensor or not a.is_cpu:
                return False
        return target is None or (type(target) is torch.Tensor and target.is_cpu)
    for a in args:
        if type(a) is not torch.Tensor or a.device != device:
            return False
    return target is None or (type(target) is torch.Tensor and target.device == device)


def split_output(out: Any) -> tuple[torch.Tensor | None, Any]:
    """``(the model's own loss or None, the predictions)`` of one forward pass."""
    if isinstance(out, torch.Tensor):
        return None, out
    if isinstance(out, Mapping):
        loss, rest = out.get("loss"), {k: v for k, v in out.items() if k != "loss"}
        if "logits" in rest:
            return loss, rest["logits"]
        return loss, next(iter(rest.values())) if len(rest) == 1 else rest
    if hasattr(out, "logits") or hasattr(out, "loss"):
        return getattr(out, "loss", None), getattr(out, "logits", None)
    return None, out


def batch_size(target: Any, preds: Any) -> int:
    """How much a batch weighs in epoch means: its number of targets, else its number of samples."""
    if isinstance(target, torch.Tensor):
        return target.numel()
    if target is not None and hasattr(target, "__len__"):
        return len(target)
    values = preds.values() if isinstance(preds, Mapping) else preds if isinstance(preds, (tuple, list)) else [preds]
    first = next((v for v in values if isinstance(v, torch.Tensor)), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _kind(obj: Any) -> str:
    return type(obj).__name__ if not isinstance(obj, tuple) else f"a tuple of {len(obj)}"
