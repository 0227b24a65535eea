"""``LRFinder``: a drop-in for torch-lr-finder's (v0.2.x) ``LRFinder``, on onecycle's range test.

``LRFinder(model, optimizer, criterion).range_test(train_loader, val_loader, end_lr=10, num_iter=100)``
then ``finder.history`` (``{"lr": [...], "loss": [...]}``) and ``finder.plot()``, as with
``from torch_lr_finder import LRFinder``. The test runs on ``lr_finder.find`` (the loop every fit
runs), with the peer's rules where they show:

- each group's LR goes from its start (``start_lr``, else its current ``lr``) to ``end_lr``,
  geometrically (``"exp"``: ``start * (end/start) ** (i/(num_iter-1))``) or linearly; ``history["lr"]``
  is the first group's, the LR each recorded step trained at;
- ``history["loss"]`` is the step's training loss (the mean over an accumulation window), or with a
  ``val_loader`` the validation loss over the whole loader after the step, smoothed as the peer does
  (``s = smooth_f * x + (1 - smooth_f) * s_prev`` from the first point, no bias correction);
- the test stops after the first step whose smoothed loss is above ``diverge_th`` times the best
  smoothed loss so far (the first point included), that step recorded;
- batches are unpacked by ``inputs_labels_from_batch`` (``(inputs, labels, *extra)`` by default; a
  ``TrainDataLoaderIter``/``ValDataLoaderIter`` subclass for other layouts); the model is called as
  ``model(inputs)``, the loss is ``criterion(outputs, labels)``;
- ``plot(skip_start=10, skip_end=5, log_lr=True, show_lr=None, ax=None, suggest_lr=True)`` draws
  ``history`` as the peer does and returns ``ax`` (or ``(ax, lr)`` with the steepest-gradient
  suggestion); drawn by ``plots.peer``.

onecycle's extras, as options (keyword-only in ``range_test``): ``val_batches=k`` validates on the
next ``k`` batches of a rotating validation iterator instead of the whole loader (``None``, the
peer's way, is the default); ``metrics=[...]`` are recorded at every validated step. Always on:
``finder.result`` holds onecycle's ``LRFindResult`` (training and validation curves, metrics, every
suggestion rule); a non-finite loss stops the test before it updates the weights; and the model, the
optimizer (state, groups, LRs), the gradients, the train/eval modes and every RNG (torch, CUDA,
numpy, ``random``, the loaders' generators) are exactly as before when ``range_test`` returns or
raises.

Deliberate differences, each documented here and tested in ``tests/test_compat_lr_finder.py``:

1. Restoring is automatic, at the end of every ``range_test`` (normal, diverged, error, Ctrl-C),
   RNGs and gradients included; ``reset()`` is there for the peer's call sites and does nothing. The
   peer leaves the model trained and the RNGs advanced until ``reset()``, and refuses an optimizer
   with ``initial_lr`` in its groups ("already has a scheduler attached"): this one takes it, and
   its groups come back as they were.
2. A non-finite training loss stops the test before the step (it is not recorded); so does a
   non-finite (smoothed) validation loss, recorded. The peer records NaN and trains on.
3. A step that a ``GradScaler`` skips (fp16 overflow) keeps its LR: the schedule counts the
   optimizer steps taken. The peer's schedule moves on regardless. ``grad_scaler`` is used through a
   copy: its own scale is left as it was.
4. ``amp_backend`` defaults to ``"torch"`` (the peer's default is ``None``): either way there is no
   mixed precision until ``amp_config`` (``{"device_type": ..., "dtype": torch.float16 or
   torch.bfloat16}``, ``enabled`` and ``cache_enabled`` accepted) is given; ``grad_scaler`` is
   optional (fp16 makes one). ``"apex"`` is refused.
5. Every argument is checked before anything changes: ``start_lr`` must be below ``end_lr`` in every
   group (the peer runs a falling "range"), ``start_lr=0`` is refused (the peer takes it as None),
   ``num_iter`` is an int >= 2, ``diverge_th`` a positive number, ``show_lr`` any real number (the
   peer wants a float). ``train_loader``/``val_loader`` may be any re-iterable loader of batches (a
   ``DataLoader``, a ``TensorLoader``, an iterable class; the peer takes a ``DataLoader`` or a
   ``DataLoaderIter`` only), not a one-shot iterator.
6. A ``DataLoaderIter`` given to ``range_test`` is read from its loader's start, afresh at each pass,
   through its ``inputs_labels_from_batch``; the iterator itself is not advanced. Its iterator is
   made at the first ``next()``, not at construction (no worker starts and no RNG draw then).
7. Validation weighs each batch by its number of targets (``labels.numel()``) and divides by their
   sum; the peer weighs by ``len(labels)`` and divides by ``len(dataset)`` (which differs with
   ``drop_last``).
8. ``memory_cache``/``cache_dir`` are checked (``cache_dir`` must be a folder) and otherwise unused:
   the snapshot is kept in memory, on the model's device. ``device``: the test runs there and the
   model (with the optimizer's state) is moved back afterwards; the peer leaves it on ``device``.
9. ``non_blocking_transfer`` is accepted; tensors are always copied ``non_blocking`` (a no-op unless
   the source is pinned). No progress bar; the two lines the peer prints are printed.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import checks as C
from ..learner import Learner
from ..lr_find_result import LRFindResult
from ..lr_finder import find
from ..recorder import Recorder

__all__ = ["LRFinder", "DataLoaderIter", "TrainDataLoaderIter", "ValDataLoaderIter"]


# ---- the peer's batch iterators ----------------------------------------------------------------
class DataLoaderIter:
    """A loader's batches as ``(inputs, labels)``: override ``inputs_labels_from_batch`` for batches of
    another layout (a dict, an object)."""

    def __init__(self, data_loader: Iterable) -> None:
        self.data_loader = data_loader
        self._iterator: Iterator | None = None  # made at the first next(): nothing drawn at construction

    @property
    def dataset(self) -> Any:
        return self.data_loader.dataset  # type: ignore[attr-defined]

    def inputs_labels_from_batch(self, batch_data: Any) -> tuple[Any, Any]:
        if not isinstance(batch_data, (list, tuple)):
            raise ValueError(f"Your batch type is not supported: {type(batch_data)}. Please inherit from "
                             "`TrainDataLoaderIter` or `ValDataLoaderIter` and override the "
                             "`inputs_labels_from_batch` method.")
        inputs, labels, *_ = batch_data
        return inputs, labels

    def __iter__(self) -> DataLoaderIter:
        return self

    def _next_batch(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self.data_loader)
        return next(self._iterator)

    def __next__(self) -> tuple[Any, Any]:
        return self.inputs_labels_from_batch(self._next_batch())


class TrainDataLoaderIter(DataLoaderIter):
    """Starts the loader again when it ends (``auto_reset``), so ``next()`` never runs out."""

    def __init__(self, data_loader: Iterable, auto_reset: bool = True) -> None:
        super().__init__(data_loader)
        self.auto_reset = auto_reset

    def __next__(self) -> tuple[Any, Any]:
        try:
            batch = self._next_batch()
        except StopIteration:
            if not self.auto_reset:
                raise
            self._iterator = iter(self.data_loader)
            batch = next(self._iterator)
        return self.inputs_labels_from_batch(batch)


class ValDataLoaderIter(DataLoaderIter):
    """One pass over the loader; ``iter()`` on it starts a new pass once the last one is used up."""

    def __init__(self, data_loader: Iterable) -> None:
        super().__init__(data_loader)
        self.run_limit = len(data_loader)  # type: ignore[arg-type]
        self.run_counter = 0

    def __iter__(self) -> ValDataLoaderIter:
        if self.run_counter >= self.run_limit:
            self._iterator = None
            self.run_counter = 0
        return self

    def __next__(self) -> tuple[Any, Any]:
        self.run_counter += 1
        return super().__next__()


class _Unpacked:
    """What the range test reads: the loader's batches through ``it.inputs_labels_from_batch``, afresh
    at every pass. Its sampler, dataset and epoch are the loader's, and its ``generator`` is held here
    too, so the test captures and restores the generators the loader draws from, and its epoch."""

    def __init__(self, it: DataLoaderIter) -> None:
        self.it, self.loader = it, it.data_loader
        self.generator = getattr(self.loader, "generator", None)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for batch in self.loader:
            inputs, labels = self.it.inputs_labels_from_batch(batch)
            yield inputs, labels

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # What the test reads of a loader (generators' owners, its epoch), and nothing else: a loader's
        # eval_batches() would hand out batches that skip inputs_labels_from_batch.
        if name not in _FORWARDED:
            raise AttributeError(name)
        return getattr(self.loader, name)


_FORWARDED = frozenset({"sampler", "batch_sampler", "dataset", "set_epoch", "epoch", "iteration", "batch_size"})


def _unpacked(loader: Any, name: str) -> _Unpacked:
    """The test's view of a loader, or of a ``DataLoaderIter`` around one (its unpacking kept)."""
    it = loader if isinstance(loader, DataLoaderIter) else None
    inner = it.data_loader if it is not None else loader
    if isinstance(inner, Iterator):  # one pass only: the test reads the loader as often as it needs
        raise TypeError(f"{name} is an iterator ({type(inner).__name__}), read once: pass the loader itself (a "
                        "DataLoader), or a TrainDataLoaderIter/ValDataLoaderIter around it")
    C.check_loader(name, inner)
    return _Unpacked(it if it is not None else DataLoaderIter(inner))


# ---- the peer's smoothing and stop rule ----------------------------------------------------------
def peer_smooth(values: Sequence[float], smooth_f: float) -> list[float]:
    """torch-lr-finder's curve: ``s[0] = x[0]``, ``s[i] = smooth_f * x[i] + (1 - smooth_f) * s[i-1]``."""
    out: list[float] = []
    for x in values:
        out.append(x if not out or smooth_f == 0 else smooth_f * x + (1 - smooth_f) * out[-1])
    return out


class _PeerStop:
    """``stop_rule`` for ``find``: the peer's smoothing of the loss it watches (the validation loss
    when validating), its best from the first point, and its stop: ``smoothed > diverge_th * best``;
    also a non-finite smoothed loss."""

    def __init__(self, smooth_f: float, diverge_th: float, key: str | None) -> None:
        self.smooth_f, self.diverge_th, self.key = smooth_f, diverge_th, key
        self.last: float | None = None
        self.best = math.inf

    def __call__(self, history: Recorder) -> str | None:
        x = history.series[self.key][-1] if self.key else history.losses[-1]
        f = self.smooth_f
        s = x if self.last is None or f == 0 else f * x + (1 - f) * self.last  # as peer_smooth, one point on
        self.last, i, lr = s, len(history.losses) - 1, history.group_lrs[0][-1]
        what = "validation loss" if self.key else "loss"
        if not math.isfinite(s):
            return f"diverged at iteration {i} (lr {lr:.3g}): smoothed {what} {s} (non-finite)"
        self.best = min(self.best, s)
        if s > self.diverge_th * self.best:
            bound = self.diverge_th * self.best
            return (f"diverged at iteration {i} (lr {lr:.3g}): smoothed loss {s:.4g} above {bound:.4g} (diverge_th "
                    f"{self.diverge_th:g} x best {self.best:.4g}, the {what}; torch-lr-finder's rule)")
        return None


# ---- arguments -------------------------------------------------------------------------------------
def _amp(amp_backend: Any, amp_config: Any, device: torch.device) -> bool | str:
    """The Learner's ``amp`` for the peer's ``amp_backend``/``amp_config`` (checked)."""
    if amp_backend == "apex":
        raise ValueError("amp_backend='apex' is not supported (NVIDIA apex's amp is deprecated): use "
                         "amp_backend='torch' with amp_config={'device_type': ..., 'dtype': torch.float16}")
    C.check_choice("amp_backend", amp_backend, (None, "torch"))
    if amp_config is None:
        return False
    if not isinstance(amp_config, dict):
        raise TypeError(f"amp_config must be a dict of torch.autocast arguments, got {type(amp_config).__name__}")
    unknown = set(amp_config) - {"device_type", "dtype", "enabled", "cache_enabled"}
    if unknown:
        raise ValueError(f"amp_config has keys torch.autocast does not take here: {sorted(unknown)}")
    device_type = amp_config.get("device_type", device.type)
    if device_type != device.type:
        raise ValueError(f"amp_config['device_type']={device_type!r} but the test runs on {device}")
    if not C.check_bool("amp_config['enabled']", amp_config.get("enabled", True)):
        return False
    dtype = amp_config.get("dtype", torch.float16 if device.type == "cuda" else torch.bfloat16)
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"amp_config['dtype'] must be torch.float16 or torch.bfloat16, got {dtype!r}")
    return "fp16" if dtype == torch.float16 else "bf16"


def _device_of(model: nn.Module) -> torch.device:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device


# ---- the finder ------------------------------------------------------------------------------------
class LRFinder:
    """torch-lr-finder's ``LRFinder`` (see the module's docstring for what differs, on purpose).

    >>> finder = LRFinder(model, optimizer, criterion)
    >>> finder.range_test(train_loader, val_loader=val_loader, end_lr=1, num_iter=100)
    >>> ax, lr = finder.plot()          # finder.history["lr"], finder.history["loss"]
    >>> finder.reset()                  # nothing to do: range_test restored everything already
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: Callable,
                 device: str | torch.device | None = None, memory_cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, amp_backend: str | None = "torch",
                 amp_config: dict[str, Any] | None = None, grad_scaler: torch.amp.GradScaler | None = None) -> None:
        C.check_type("model", model, nn.Module)
        C.check_type("optimizer", optimizer, torch.optim.Optimizer)
        if isinstance(criterion, type):
            raise TypeError(f"criterion is the class {criterion.__name__}: pass an instance, {criterion.__name__}()")
        C.check_callable("criterion", criterion)
        C.check_bool("memory_cache", memory_cache)
        if cache_dir is not None and not os.path.isdir(cache_dir):
            raise ValueError(f"Given `cache_dir` is not a valid directory: {cache_dir!r}")
        if grad_scaler is not None:
            C.check_type("grad_scaler", grad_scaler, torch.amp.GradScaler)
        self.model, self.optimizer, self.criterion = model, optimizer, criterion
        self.device = C.check_device("device", device) if device is not None else _device_of(model)
        self.amp = _amp(amp_backend, amp_config, self.device)
        self.memory_cache, self.cache_dir, self.grad_scaler = memory_cache, cache_dir, grad_scaler
        self.amp_backend, self.amp_config = amp_backend, amp_config
        self.history: dict[str, list[float]] = {"lr": [], "loss": []}
        self.best_loss: float | None = None
        self.result: LRFindResult | None = None  # onecycle's curves, metrics and suggestions of the last test

    def reset(self) -> None:
        """The peer's: restore model and optimizer. ``range_test`` already has, on every exit."""

    def range_test(self, train_loader: Any, val_loader: Any = None, start_lr: Any = None, end_lr: float = 10,
                   num_iter: int = 100, step_mode: str = "exp", smooth_f: float = 0.05, diverge_th: float = 5,
                   accumulation_steps: int = 1, non_blocking_transfer: bool = True, *,
                   val_batches: int | None = None, metrics: Sequence[Any] = ()) -> None:
        """The LR range test from ``start_lr`` (None: each group's current LR) to ``end_lr`` over
        ``num_iter`` optimizer steps. ``val_loader``: the loss is the validation loss after each step,
        over the whole loader (``val_batches=k``: the next ``k`` batches of a rotating iterator).
        ``metrics``: onecycle metrics ``(preds, targets) -> number`` recorded at each validated step
        (in ``finder.result.metrics``)."""
        self.history, self.best_loss = {"lr": [], "loss": []}, None
        if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter <= 1:
            raise ValueError(f"`num_iter` must be an int larger than 1, got {num_iter!r}")
        C.check_type("step_mode", step_mode, str)
        mode = step_mode.lower()
        if mode not in ("exp", "linear"):
            raise ValueError(f"expected one of (exp, linear), got {step_mode!r}")
        smooth_f = C.check_number("smooth_f", smooth_f)
        if not 0 <= smooth_f < 1:
            raise ValueError(f"smooth_f is outside the range [0, 1[: {smooth_f!r}")
        diverge_th = C.check_number("diverge_th", diverge_th, low=0, low_open=True)
        C.check_bool("non_blocking_transfer", non_blocking_transfer)
        C.check_int("accumulation_steps", accumulation_steps, 1)
        train = _unpacked(train_loader, "train_loader")
        val = None if val_loader is None else _unpacked(val_loader, "val_loader")
        starts = [g["lr"] for g in self.optimizer.param_groups] if start_lr is None else start_lr
        end_lr = C.check_number("end_lr", end_lr, low=0, low_open=True)
        home = _device_of(self.model)
        learn = Learner(self.model, train, val, self.criterion, metrics=metrics, device=self.device, amp=self.amp,
                        accum=accumulation_steps, scaler=self.grad_scaler, quiet=True, channels_last=False)
        learn.use_opt(self.optimizer)
        try:
            res = find(learn, start_lr=starts, end_lr=end_lr, num_it=num_iter, step_mode=mode,
                       with_valid=val is not None, val_batches=val_batches, use_wd=False, keep_ratios=False,
                       stop_rule=_PeerStop(smooth_f, diverge_th, "val_loss" if val is not None else None))
        finally:
            if _device_of(self.model) != home:  # the model back where it was, the optimizer's state with it
                self.model.to(home)
                self.optimizer.load_state_dict(self.optimizer.state_dict())
        self.result = res
        curve = peer_smooth(res.val_losses if val is not None else res.losses, smooth_f)
        self.history = {"lr": list(res.group_lrs[0]), "loss": curve}
        finite = [v for v in curve if math.isfinite(v)]
        self.best_loss = min(finite) if finite else None
        if res.stop_reason.startswith("diverged") or res.stop_reason.startswith("non-finite"):
            print("Stopping early, the loss has diverged")
        print("Learning rate search finished. See the graph with LRFinder.plot()")

    def plot(self, skip_start: int = 10, skip_end: int = 5, log_lr: bool = True, show_lr: float | None = None,
             ax: Any = None, suggest_lr: bool = True) -> Any:
        """``history["loss"]`` against ``history["lr"]``, less ``skip_start`` points at the start and
        ``skip_end`` at the end; with ``suggest_lr`` the point of steepest descent (``np.gradient`` of
        the loss, its minimum) is marked and returned: ``(ax, lr)``, else ``ax``. Draws into ``ax``
        when given; else makes a figure with pyplot and shows it, as the peer does."""
        skip_start = C.check_int("skip_start", skip_start, 0)
        skip_end = C.check_int("skip_end", skip_end, 0)
        if show_lr is not None:
            show_lr = C.check_number("show_lr", show_lr)
        lrs, losses = self.history["lr"], self.history["loss"]
        if suggest_lr and len(lrs) < skip_start + skip_end + 2:
            raise RuntimeError(f"Need at least {skip_start + skip_end + 2} iterations to suggest a learning rate. "
                               f"Got {len(lrs)}")
        end = len(lrs) - skip_end
        lrs, losses = lrs[skip_start:end], losses[skip_start:end]
        point = None
        if suggest_lr:
            i = int(np.gradient(np.asarray(losses, dtype=float)).argmin())
            point = (lrs[i], losses[i])
            print("LR suggestion: steepest gradient")
            print(f"Suggested LR: {lrs[i]:.2E}")
        from ..plots.peer import plot_range_test
        ax = plot_range_test(lrs, losses, point, log_lr=bool(log_lr), show_lr=show_lr, ax=ax)
        return (ax, point[0]) if point is not None else ax
