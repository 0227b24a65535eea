"""LR range test (Smith 2015; fastai's ``lr_find``, fastai 0.7's ``lr_find2``) on the Learner's loop.

Iteration ``i`` of ``num_it`` (one optimizer step each; ``accum`` batches when accumulating) trains at
``start * (end/start) ** (i/(num_it-1))`` (``step_mode="exp"``) or ``start * (1 + i/(num_it-1) *
(end/start - 1))`` (``"linear"``), per group, keeping the groups' ratios. Unlike fastai v2 (which
uses ``i/num_it`` and stops one step short), the last iteration trains at ``end_lr``. A ``Scheduler``
sets the LR and advances on real optimizer steps, so an AMP step skipped on overflow repeats its LR.

After each step, with validation on: loss and metrics on the next ``val_batches`` batches of a
cycling validation iterator (``Learner.validate``: eval mode, no grad, back to train mode). Host
syncs: one ``.item()`` per batch (the stop rules need the loss before the step) and one per
validation; the finder is short, and a step taken with a NaN loss would be worse.

Stops at ``num_it``; at once, before stepping, on a non-finite raw loss; with ``stop_div`` when the
smoothed loss (bias-corrected EMA, beta 0.98) is non-finite or above ``div_th`` times the best seen
from iteration 10 on. Callback hooks run: before_fit, before_batch, after_backward, after_step,
after_batch and (always) after_fit; ``CancelFit`` ends the test cleanly.

Afterwards everything is as before, byte for byte, whatever the exit (exception and Ctrl-C
propagate): parameters, buffers, gradients, module attributes (train/eval modes, RNN state), the
optimizer's state and param groups, the Learner's attributes and recorder, every RNG, loader
generators and ``set_epoch``. The snapshot lives in memory (no files). The one change:
``learn.suggested_lr`` (``lr_find2`` also sets ``learn.sched``, the seed's contract).

Suggestions are pure functions of the curves, cut at their first non-finite point, without the
first ``num_it // 10`` and last 5 points (as fastai): fastai's ``valley``, ``slide``, ``minimum``,
``steep`` on the smoothed training loss; ``val_steep`` and ``val_min`` on the validation loss.
``DEFAULT_RULE`` was chosen with ``benchmarks/suggestion_quality.py``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import schedules as S
from .callbacks import Callback, CancelFit
from .checkpoint import get_rng_state, set_rng_state
from .metrics import metric_name
from .optim.groups import get_hyper, spread_lrs
from .optim.scheduler import Scheduler
from .recorder import SmoothLoss, atomic_write_text

__all__ = ["LRFindResult", "lr_find", "learner_lr_find", "learner_lr_find2", "valley", "slide", "minimum",
           "steep", "val_steep", "val_min", "suggest", "median_suggestion", "ema", "SUGGESTERS", "DEFAULT_RULE"]


# ---- suggestions: pure functions of a recorded curve ---------------------------------------------
def ema(values: Iterable[float], beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average (the finder's smoothing)."""
    s = SmoothLoss(beta)
    return [s.add(float(v)) for v in values]


def _finite_prefix(lrs: Sequence[float], losses: Sequence[float], need: int, rule: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The curve up to its first non-finite point (fastai cuts there too); ValueError if too short."""
    x, y = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"{rule}: lrs and losses must be 1-d of one length, got {x.shape} and {y.shape}")
    bad = ~(np.isfinite(x) & np.isfinite(y) & (x > 0))
    n = int(np.argmax(bad)) if bad.any() else len(y)
    if n < need:
        raise ValueError(f"{rule} needs at least {need} finite points, got {n} (of {len(y)})")
    return x[:n], y[:n]


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley``: the longest strictly decreasing subsequence of the loss (O(n^2) DP)
    ending at ``end`` with length ``L``; ``start = end - L``; the LR at ``start + int(L/3) +
    int(L/6)``, about halfway down. The index is clamped to the curve (fastai would wrap to the
    last point for a 2-long valley starting at 0)."""
    x, y = (a.tolist() for a in _finite_prefix(lrs, losses, 2, "valley"))
    lds, end = [1] * len(y), 0
    for i in range(1, len(y)):
        for j in range(i):
            if y[i] < y[j] and lds[j] + 1 > lds[i]:
                lds[i] = lds[j] + 1
        if lds[i] > lds[end]:
            end = i
    start = end - lds[end]
    third = (end - start) / 3
    return x[min(max(start + int(third) + int(third / 2), 0), len(y) - 1)]


def slide(lrs: Sequence[float], losses: Sequence[float], lr_diff: int = 15, thresh: float = 0.005,
          adjust_value: float = 1.0) -> float:
    """fastai's ``slide``: walk a window of ``lr_diff`` points back from the end while the loss
    gradients at its two ends differ by more than ``thresh``; the LR at its left end."""
    if isinstance(lr_diff, bool) or not isinstance(lr_diff, int) or lr_diff < 1:
        raise ValueError(f"lr_diff must be an int >= 1, got {lr_diff!r}")
    x, y = _finite_prefix(lrs, losses, lr_diff + 1, "slide")
    grad = np.gradient(y)
    right = len(y) - 1
    left = right - lr_diff
    lr = x[left]
    while left >= 0 and abs(grad[right] - grad[left]) > thresh:
        lr = x[left]
        right, left = right - 1, left - 1
    return float(lr) * adjust_value


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``minimum``: a tenth of the LR at the lowest loss."""
    x, y = _finite_prefix(lrs, losses, 1, "minimum")
    return float(x[int(np.argmin(y))]) / 10


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d loss / d log LR per segment; NaN where the LR repeats (an AMP-skipped step)."""
    dx = np.diff(np.log(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dx > 0, np.diff(y) / np.where(dx > 0, dx, 1.0), np.nan)


def steep(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``steep``: the LR at the start of the steepest fall of loss against log LR."""
    x, y = _finite_prefix(lrs, losses, 2, "steep")
    slopes = _slopes(x, y)
    if np.isnan(slopes).all():
        raise ValueError("steep: the LR never increases along the curve")
    return float(x[int(np.nanargmin(slopes))])


def val_steep(lrs: Sequence[float], val_losses: Sequence[float]) -> float:
    """Where the (smoothed) validation loss falls fastest against log LR, searched only before its
    minimum, so the answer always lies below the LR of the validation minimum."""
    x, y = _finite_prefix(lrs, val_losses, 2, "val_steep")
    low = int(np.argmin(y))
    slopes = _slopes(x[: low + 1], y[: low + 1])
    if low == 0 or np.isnan(slopes).all() or np.nanmin(slopes) >= 0:
        raise ValueError("val_steep: the validation loss never falls before its minimum")
    return float(x[int(np.nanargmin(slopes))])


def val_min(lrs: Sequence[float], val_losses: Sequence[float], div: float = 2.0) -> float:
    """``1/div`` of the LR at the lowest validation loss. ``suggest`` feeds it the validation curve
    smoothed lightly (EMA beta 0.9): the 0.98 of the training curve lags past the minimum."""
    x, y = _finite_prefix(lrs, val_losses, 1, "val_min")
    return float(x[int(np.argmin(y))]) / div


SUGGESTERS: dict[str, Callable[[Sequence[float], Sequence[float]], float]] = {
    "valley": valley, "slide": slide, "minimum": minimum, "steep": steep, "val_steep": val_steep,
    "val_min": val_min,
}
# The curve each rule reads: the training loss smoothed as fastai does (EMA 0.98), the validation
# loss smoothed the same way, or lightly (EMA 0.9).
_CURVE = {"val_steep": "val", "val_min": "val_light"}
# Chosen by benchmarks/suggestion_quality.py (MNIST-1D CNN, 20-epoch 1cycle, SGD and AdamW, the
# torch default of 2 threads): the rule with the smallest worst-case accuracy gap to the best swept
# peak. Seeds 0-2: 0.47 / 0.47 points (SGD / AdamW), the target of 0.5 met; seeds 3-5:
# 1.10 / 0.30; seeds 6-8: 5.73 / 1.20 (one SGD seed collapsed at 0.307, a peak that trained others
# to 94%). For a 1cycle peak, valley lands ~10x low, minimum ~4x low, steep/slide swing between far
# too low and divergent. Most of val_min's misses are the finder's noise, not the rule's: one run's
# val_min moves by a factor of ~1.25 with the data order (SD of log LR 0.11 SGD, 0.28 AdamW; more
# validation batches per step do not reduce it: the training trajectory does), around a peak that
# must land within ~1.2x of the best (the SGD optimum sits just below divergence). ``runs=3`` (the
# median over 3 data orders) removes the SGD collapses (pooled over seeds 0-8: gap 0.27 against
# 2.43) but lands AdamW lower (0.79 against 0.24), so the default stays one run.
DEFAULT_RULE = "val_min"


def suggest(lrs: Sequence[float], smooth_losses: Sequence[float], val_losses: Sequence[float] = (),
            skip_start: int = 10, skip_end: int = 5) -> tuple[dict[str, float | None], list[str]]:
    """Every rule on the curves without their first ``skip_start`` and last ``skip_end`` points
    (fastai: ``num_it // 10`` and 5). ``val_losses`` are the raw per-step validation losses. A rule
    that cannot answer gives None and a note instead of raising."""
    curves = {"train": list(smooth_losses), "val": ema(val_losses), "val_light": ema(val_losses, 0.9)}
    out: dict[str, float | None] = {}
    notes: list[str] = []
    n = len(lrs)
    window = slice(skip_start, max(n - skip_end, skip_start))
    for name, fn in SUGGESTERS.items():
        curve = curves[_CURVE.get(name, "train")]
        if not curve and name in _CURVE:
            out[name] = None
            notes.append(f"{name}: no validation curve (with_valid=False, or no point recorded)")
            continue
        try:
            out[name] = fn(list(lrs)[window], curve[window])
        except ValueError as err:
            out[name] = None
            notes.append(f"{err} after skipping the first {skip_start} and last {skip_end} of {n} points")
    return out, notes


def median_suggestion(results: Iterable[Any], rule: str | None = None) -> float | None:
    """The median over several range tests (``LRFindResult``s, or their ``suggestions`` dicts) of one
    rule's suggestion (default ``DEFAULT_RULE``), skipping tests where it gave None; the geometric
    mean of the middle two for an even count; None when no test answered. One test's suggestion
    moves by a factor of about 1.25 with the data order alone (MNIST-1D: ``val_min`` spans 0.18 to
    0.45 for SGD), while the best 1cycle peak sits just below a cliff: the median of 3 tests with
    different data orders halves that spread (``benchmarks/suggestion_quality.py --finder-runs 3``)."""
    rule = DEFAULT_RULE if rule is None else rule
    if rule not in SUGGESTERS:
        raise ValueError(f"rule must be one of {sorted(SUGGESTERS)}, got {rule!r}")
    values = []
    for res in results:
        suggestions = res if isinstance(res, dict) else res.suggestions
        if suggestions.get(rule) is not None:
            values.append(float(suggestions[rule]))
    if not values:
        return None
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else math.sqrt(values[mid - 1] * values[mid])


# ---- the result ------------------------------------------------------------------------------
@dataclass
class LRFindResult:
    """Per-iteration curves of one LR range test. ``lrs`` is the head (last) group's LR;
    ``group_lrs[g][i]`` every group's. ``suggestions``: rule -> head-group LR (None when a rule
    cannot answer, see ``notes``); ``suggestion`` is ``suggestions[rule]``."""
    lrs: list[float]
    group_lrs: list[list[float]]
    losses: list[float]
    smooth_losses: list[float]
    val_losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    moms: list[float | None] = field(default_factory=list)
    suggestions: dict[str, float | None] = field(default_factory=dict)
    suggestion: float | None = None
    rule: str = DEFAULT_RULE
    stop_reason: str = ""
    notes: list[str] = field(default_factory=list)
    step_mode: str = "exp"
    num_it: int = 0
    run_suggestions: list[dict[str, float | None]] = field(default_factory=list)  # per run, when runs > 1

    @property
    def smooth_val_losses(self) -> list[float]:
        return ema(self.val_losses)

    @property
    def rec_metrics(self) -> list[list[float]]:
        """The seed's layout: per iteration, the list of metric values."""
        return [list(v) for v in zip(*self.metrics.values())]

    def plot(self, smoothed: bool = True, n_skip: int = 10, n_skip_end: int = 5,
             save: str | os.PathLike | None = None) -> Any:
        """Training loss, validation loss and every metric against the LR; returns the Figure."""
        from . import plots
        return plots.plot_finder(self, smoothed=smoothed, n_skip=n_skip, n_skip_end=n_skip_end, save=save)

    def plot_lr(self, save: str | os.PathLike | None = None) -> Any:
        """The seed's ``sched.plot_lr()``: LR (every group) and momentum against iterations."""
        from . import plots
        return plots.plot_lr(self, save=save)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRFindResult:
        return cls(**data)

    def save_json(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), allow_nan=True))
        return Path(path)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> LRFindResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ---- arguments (all checked before anything changes) ---------------------------------------------
@dataclass
class _Config:
    starts: list[float]
    ratio: float  # end/start, the same for every group
    num_it: int
    step_mode: str
    stop_div: bool
    div_th: float
    with_valid: bool
    val_batches: int
    wds: list[float] | None  # None: leave the optimizer's weight decay alone
    callbacks: list[Callback]
    rule: str
    runs: int = 1


def _per_group(value: object) -> bool:
    return isinstance(value, slice) or (hasattr(value, "__len__") and not isinstance(value, str))


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _lr_range(start_lr: Any, end_lr: Any, n: int) -> tuple[list[float], float]:
    """Per-group start LRs and the end/start ratio shared by all groups (their ratios are kept); a
    single number on one side takes the other side's group ratios, the head group's value."""
    if _per_group(start_lr):
        starts = spread_lrs(start_lr, n, "start_lr")
        ends = spread_lrs(end_lr, n, "end_lr") if _per_group(end_lr) else None
        head_end = ends[-1] if ends else S.check_number("end_lr", end_lr, low=0, low_open=True)
        if ends and not all(math.isclose(e / s, head_end / starts[-1], rel_tol=1e-9)
                            for s, e in zip(starts, ends)):
            raise ValueError(f"start_lr={start_lr!r} and end_lr={end_lr!r} must have the same end/start "
                             "ratio in every group (the finder keeps the groups' LR ratios)")
    elif _per_group(end_lr):
        ends = spread_lrs(end_lr, n, "end_lr")
        head = S.check_number("start_lr", start_lr, low=0, low_open=True)
        starts, head_end = [e * head / ends[-1] for e in ends], ends[-1]
    else:
        starts = [S.check_number("start_lr", start_lr, low=0, low_open=True)] * n
        head_end = S.check_number("end_lr", end_lr, low=0, low_open=True)
    if not head_end > starts[-1]:
        raise ValueError(f"start_lr must be below end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    return starts, head_end / starts[-1]


def _check_wd(wd: Any, n: int) -> list[float]:
    values = list(wd) if isinstance(wd, (list, tuple)) else [wd] * n
    if len(values) != n:
        raise ValueError(f"wd has {len(values)} values but there are {n} param groups, got {wd!r}")
    return [S.check_number("wd", w, low=0) for w in values]


def _check_loader(name: str, dl: Any, required: bool) -> None:
    if dl is None:
        if required:
            raise ValueError(f"{name} is None: with_valid=True needs a validation loader")
        return
    try:
        n = len(dl)
    except TypeError:  # no length: emptiness shows when it is iterated
        return
    if n == 0:
        raise ValueError(f"{name} is empty (len 0)")


def _config(learn: Any, start_lr: Any, end_lr: Any, num_it: int, step_mode: str, stop_div: bool,
            div_th: float, with_valid: bool | None, val_batches: int, wd: Any, callbacks: Sequence[Callback],
            rule: str | None, use_wd: bool = True, runs: int = 1) -> _Config:
    n = len(learn.opt.param_groups) if learn.opt is not None else len(learn.layer_groups())
    num_it = _check_int("num_it", num_it, 2)
    if step_mode not in ("exp", "linear"):
        raise ValueError(f"step_mode must be 'exp' or 'linear', got {step_mode!r}")
    starts, ratio = _lr_range(start_lr, end_lr, n)
    div_th = S.check_number("div_th", div_th, low=1, low_open=True)
    _check_loader("train_dl", learn.train_dl, True)
    with_valid = learn.valid_dl is not None if with_valid is None else bool(with_valid)
    _check_loader("valid_dl", learn.valid_dl if with_valid else None, with_valid)
    rule = DEFAULT_RULE if rule is None else rule
    if rule not in SUGGESTERS:
        raise ValueError(f"rule must be one of {sorted(SUGGESTERS)}, got {rule!r}")
    wds = _check_wd(learn.wd if wd is None else wd, n) if use_wd else None
    return _Config(starts, ratio, num_it, step_mode, bool(stop_div), div_th, with_valid,
                   _check_int("val_batches", val_batches, 1), wds, list(callbacks), rule, _check_int("runs", runs, 1))


# ---- the snapshot: everything the test may change, in memory -------------------------------------
def _generators(dl: Any) -> list[torch.Generator]:
    """torch Generators a loader draws its shuffling from (its own attributes, its sampler's)."""
    found: dict[int, torch.Generator] = {}
    for obj in (dl, getattr(dl, "sampler", None), getattr(getattr(dl, "batch_sampler", None), "sampler", None)):
        for g in vars(obj).values() if hasattr(obj, "__dict__") else ():
            if isinstance(g, torch.Generator):
                found[id(g)] = g
    return list(found.values())


def _loader_epoch(dl: Any) -> int | None:
    """The epoch a ``set_epoch`` loader is at, when it can be read back (else the finder leaves
    ``set_epoch`` alone, since it could not undo it)."""
    if callable(getattr(dl, "set_epoch", None)) and isinstance(getattr(dl, "epoch", None), int):
        return dl.epoch
    return None


class _LoaderState:
    """A loader's attributes (epoch counters, cached states), generators and ``set_epoch`` epoch."""

    def __init__(self, dl: Any) -> None:
        self.dl, self.epoch = dl, _loader_epoch(dl)
        self.attrs = dict(vars(dl)) if hasattr(dl, "__dict__") else None
        self.gens = [(g, g.get_state()) for g in _generators(dl)]

    def restore(self, generators: bool = True) -> None:
        if self.attrs is not None:
            _restore_dict(vars(self.dl), self.attrs)
        for g, state in self.gens if generators else ():
            g.set_state(state)
        if self.epoch is not None:
            self.dl.set_epoch(self.epoch)  # also reaches what set_epoch forwards to (a sampler)


class _Snapshot:
    """Taken before the test, restored after it whatever happens."""

    def __init__(self, learn: Any) -> None:
        model = learn.model
        self.attrs = dict(vars(learn))
        # Module attributes hold train/eval flags and any carried state (an RNN's hidden state).
        self.modules = [(m, dict(vars(m))) for m in model.modules()]
        self.tensors = [(m, name, t, t.detach().clone()) for m in model.modules()
                        for name, t in (*m.named_parameters(recurse=False), *m.named_buffers(recurse=False))]
        self.grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
        self.opt = None if learn.opt is None else _opt_state(learn.opt)
        self.recorder = copy.deepcopy(learn.recorder.state_dict())
        self.rng = get_rng_state()
        self.loaders = [_LoaderState(dl) for dl in (learn.train_dl, learn.valid_dl) if dl is not None]
        self.epoch = self.loaders[0].epoch

    def restore(self, learn: Any, rng: bool = True) -> None:
        """Everything as it was; ``rng=False`` leaves the RNGs where they are (between the runs of
        a multi-run test: a DataLoader then shuffles afresh)."""
        hook = vars(learn).get("_wd_hook")
        _restore_dict(vars(learn), self.attrs)
        if hook is not None and hook is not learn.__dict__.get("_wd_hook"):
            hook.remove()  # the decay hook of an optimizer the finder created
        for m, attrs in self.modules:
            _restore_dict(vars(m), attrs)
        with torch.no_grad():
            for m, name, t, saved in self.tensors:
                if getattr(m, name) is not t:
                    setattr(m, name, t)
                t.copy_(saved)
        for p, g in self.grads:  # copies: a snapshot may be restored again (between runs)
            p.grad = None if g is None else g.clone()
        if self.opt is not None:
            _restore_opt(learn.opt, self.opt)
        learn.recorder.load_state_dict(self.recorder)
        if rng:
            set_rng_state(self.rng)
        for loader in self.loaders:
            loader.restore(generators=rng)  # between runs a loader's own generator draws on too


def _restore_dict(target: dict, saved: dict) -> None:
    for key in set(target) - set(saved):
        del target[key]
    target.update(saved)


def _opt_state(opt: torch.optim.Optimizer) -> tuple[list[list[tuple[str, Any]]], dict]:
    groups = [[(k, v if k == "params" else copy.deepcopy(v)) for k, v in g.items()] for g in opt.param_groups]
    return groups, {p: _copy_state(s) for p, s in opt.state.items()}


def _copy_state(state: dict) -> dict:
    """A parameter's optimizer state with its tensors cloned (not deep-copied: a tensor that views a
    larger storage, like onecycle's SGD's flat momentum buffers, would bring all of it along)."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()}


def _restore_opt(opt: torch.optim.Optimizer, saved: tuple[list[list[tuple[str, Any]]], dict]) -> None:
    groups, state = saved
    for group, items in zip(opt.param_groups, groups):
        group.clear()
        group.update((k, v if k == "params" else copy.deepcopy(v)) for k, v in items)  # keys in their order
    opt.state.clear()
    opt.state.update({p: _copy_state(s) for p, s in state.items()})  # copies: restored again between runs


# ---- the loop ----------------------------------------------------------------------------------
def _cycle(dl: Iterable, name: str, set_epoch: bool = False, first: int = 0) -> Iterator[Any]:
    """The loader's batches over and over (a fresh pass each time, ``set_epoch`` from ``first`` on
    when restorable)."""
    for epoch in itertools.count(first):
        if set_epoch:
            dl.set_epoch(epoch)
        empty = True
        for batch in dl:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"{name} yielded no batch")


class _Curves:
    """What the test records, as plain floats, and the stop rules."""

    def __init__(self, n_groups: int, metric_names: list[str]) -> None:
        self.group_lrs: list[list[float]] = [[] for _ in range(n_groups)]
        self.moms: list[float | None] = []
        self.losses: list[float] = []
        self.smooth_losses: list[float] = []
        self.val_losses: list[float] = []
        self.metrics: dict[str, list[float]] = {n: [] for n in metric_names}
        self.smoother, self.best, self.stop_reason = SmoothLoss(), math.inf, ""

    def add(self, lrs: list[float], mom: float | None, loss: float) -> None:
        for values, lr in zip(self.group_lrs, lrs):
            values.append(lr)
        self.moms.append(mom)
        self.losses.append(loss)
        self.smooth_losses.append(self.smoother.add(loss))

    def add_val(self, val: dict[str, float]) -> None:
        self.val_losses.append(val["val_loss"])
        for name, values in self.metrics.items():
            values.append(val.get(name, math.nan))

    def diverged(self, i: int, cfg: _Config) -> bool:
        s = self.smooth_losses[-1]
        if i >= 10:  # the first steps are noisy and their loss is still falling: no best yet
            self.best = min(self.best, s)
        if cfg.stop_div and (not math.isfinite(s) or s > cfg.div_th * self.best):
            self.stop_reason = (f"diverged at iteration {i} (lr {self.group_lrs[-1][-1]:.3g}): smoothed loss "
                                f"{s:.4g} > {cfg.div_th:g} x best {self.best:.4g}")
            return True
        return False


def _iteration(learn: Any, cfg: _Config, curves: _Curves, i: int, train: Iterator, valid: Iterator | None) -> bool:
    """One optimizer step (``accum`` batches), then validation; False when the test must stop."""
    groups, k = learn.opt.param_groups, learn.accum
    lrs = [float(get_hyper(g, "lr")) for g in groups]
    total = 0.0
    for j in range(k):
        learn.iter = i * k + j
        learn._call("before_batch")
        # The finder's one host sync per batch: a non-finite loss must stop it before the step.
        # Data-parallel ranks see the mean over ranks, so they all stop (or not) together.
        loss = learn.reduce_mean(learn.train_step(next(train), k, step=False, sync=j == k - 1)).item()
        if not math.isfinite(loss):
            curves.stop_reason = (f"non-finite loss {loss} at iteration {i} (lr {lrs[-1]:.3g}): "
                                  "stopped before stepping")
            return False
        total += loss
        if j == k - 1:
            learn._step()
        learn._call("after_batch")
    curves.add(lrs, get_hyper(groups[0], "momentum"), total / k)
    if valid is not None:  # on the next batches of the cycling iterator; validate() restores the modes
        curves.add_val(learn.validate([next(valid) for _ in range(cfg.val_batches)]))
    return not curves.diverged(i, cfg)


def _start(learn: Any, cfg: _Config) -> Scheduler:
    """Build the loop's state and the optimizer if needed; put every group at its start LR."""
    learn.setup_loop(cfg.callbacks)
    groups = learn.opt.param_groups
    for g, lr in zip(groups, cfg.starts):
        g["lr"] = lr
    for g, w in zip(groups, cfg.wds or ()):
        g[learn.wd_key] = w
    shape = S.Exp(1.0, cfg.ratio) if cfg.step_mode == "exp" else S.Lin(1.0, cfg.ratio)
    # num_it - 1 steps from start to end: iteration i trains at progress i / (num_it - 1).
    return Scheduler(learn.opt, cfg.num_it - 1, {"lr": shape})


def _run(learn: Any, cfg: _Config, epoch: int | None, run: int = 0) -> _Curves:
    """One range test; run ``k`` of a multi-run test starts ``set_epoch`` loaders at the epoch where
    run ``k - 1`` would have stopped, so each run trains on its own data order."""
    sched = _start(learn, cfg)
    curves = _Curves(len(cfg.starts), [metric_name(m) for m in learn.metrics])
    learn.scheduler, learn.n_epochs, learn.epoch = sched, 1, 0
    first = run * -(-cfg.num_it * learn.accum // len(learn.train_dl)) if run and epoch is not None else 0
    train = _cycle(learn.train_dl, "train_dl", set_epoch=epoch is not None, first=first)
    valid = _cycle(learn.valid_dl, "valid_dl") if cfg.with_valid else None
    try:
        learn._train_mode()  # as fit sets it: frozen BatchNorm layers stay in eval
        if callable(getattr(learn.model, "reset", None)):
            learn.model.reset()
        learn._call("before_fit")
        for i in range(cfg.num_it):
            if not _iteration(learn, cfg, curves, i, train, valid):
                break
        else:
            curves.stop_reason = f"completed num_it={cfg.num_it} iterations"
    except CancelFit:
        curves.stop_reason = f"cancelled by a callback after {len(curves.losses)} iterations"
    finally:
        sched.remove()
        train.close()  # ends the loaders' iterators (worker processes) now, not at garbage collection
        if valid is not None:
            valid.close()
        learn._call("after_fit")
    return curves


def _result(curves: _Curves, cfg: _Config, more: Sequence[_Curves] = ()) -> LRFindResult:
    """The result of the first run's curves; with ``more`` runs, each rule's suggestion is the
    median over all of them (``median_suggestion``)."""
    head = curves.group_lrs[-1]
    (suggestions, notes), *others = [suggest(c.group_lrs[-1], c.smooth_losses, c.val_losses,
                                             skip_start=cfg.num_it // 10) for c in (curves, *more)]
    per_run = [dict(suggestions), *(found for found, _ in others)]
    if more:
        suggestions = {rule: median_suggestion(per_run, rule) for rule in suggestions}
        notes.append(f"suggestions: the median over {len(per_run)} runs with different data orders")
    chosen = suggestions[cfg.rule]
    if chosen is None:
        fallback = next((k for k, v in suggestions.items() if v is not None), None)
        notes.append(f"the {cfg.rule!r} rule gave no suggestion; "
                     + (f"using {fallback!r}" if fallback else "no rule could suggest an LR"))
        chosen = suggestions[fallback] if fallback else None
    return LRFindResult(list(head), [list(g) for g in curves.group_lrs], curves.losses, curves.smooth_losses,
                        curves.val_losses, curves.metrics, curves.moms, suggestions, chosen, cfg.rule,
                        curves.stop_reason, notes, cfg.step_mode, cfg.num_it, per_run if more else [])


def _find(learn: Any, cfg: _Config) -> LRFindResult:
    learn._place_data()  # before the snapshot: the data stays on the GPU for every run and the fit after
    snap = _Snapshot(learn)
    runs: list[_Curves] = []
    try:
        with learn._cuda_backends():
            for k in range(cfg.runs):
                if k:
                    snap.restore(learn, rng=False)
                runs.append(_run(learn, cfg, snap.epoch, k))
    finally:
        snap.restore(learn)
    res = _result(runs[0], cfg, runs[1:])
    ratios = [s / cfg.starts[-1] for s in cfg.starts]
    # fit_one_cycle(lr_max=None) reads this: per group when the groups' LRs differ, keeping ratios.
    learn.suggested_lr = (res.suggestion if res.suggestion is None or len(set(ratios)) == 1
                          else [res.suggestion * r for r in ratios])
    return res


# ---- public entry points -------------------------------------------------------------------------
def learner_lr_find(learn: Any, start_lr: Any = 1e-7, end_lr: Any = 10.0, num_it: int = 100, *,
                    step_mode: str = "exp", stop_div: bool = True, div_th: float = 4.0,
                    with_valid: bool | None = None, val_batches: int = 1, wd: Any = None,
                    callbacks: Sequence[Callback] = (), rule: str | None = None, runs: int = 1) -> LRFindResult:
    """``Learner.lr_find``: the LR range test with validation at every step (see the module doc).

    ``start_lr``/``end_lr``: numbers, per-group lists or slices. ``with_valid``: None validates when
    the Learner has a validation loader. ``wd``: None uses ``learn.wd``, as ``fit`` does. ``rule``:
    the suggestion stored as ``res.suggestion`` and ``learn.suggested_lr`` (default ``DEFAULT_RULE``).
    ``runs``: range tests from the same starting state, each on its own data order (the loader's
    next epochs, or the RNG's next draws); every suggestion is then the median over them
    (``res.run_suggestions`` holds each run's), the curves are the first run's.
    """
    cfg = _config(learn, start_lr, end_lr, num_it, step_mode, stop_div, div_th, with_valid, val_batches,
                  wd, callbacks, rule, runs=runs)
    return _find(learn, cfg)


def learner_lr_find2(learn: Any, start_lr: Any = 1e-5, end_lr: Any = 10.0, num_it: int = 100, wds: Any = None,
                     linear: bool = False, stop_dv: bool = True, **kw: Any) -> LRFindResult:
    """The seed's ``lr_find2``: the same test; ``learn.sched`` becomes the result (``lrs``,
    ``losses``, per-iteration ``val_losses`` and ``rec_metrics``, ``plot()``, ``plot_lr()``)."""
    res = learner_lr_find(learn, start_lr, end_lr, num_it, step_mode="linear" if linear else "exp",
                          stop_div=stop_dv, wd=wds, **kw)
    learn.sched = res
    return res


def lr_find(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, train_dl: Iterable,
            valid_dl: Iterable | None = None, metrics: Sequence[Callable] = (), *, start_lr: Any = 1e-7,
            end_lr: Any = 10.0, num_it: int = 100, step_mode: str = "exp", stop_div: bool = True,
            div_th: float = 4.0, with_valid: bool | None = None, val_batches: int = 1,
            amp: bool | str = False, accum: int = 1, clip: float | None = None,
            callbacks: Sequence[Callback] = (), rule: str | None = None, runs: int = 1) -> LRFindResult:
    """The LR range test without a Learner: ``optimizer`` (its groups, state and weight decay) is
    used as it is and restored afterwards, like the model. Runs on the model's device."""
    from .learner import Learner  # the Learner imports this module lazily; keep the cycle lazy too
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    learn = Learner(model, train_dl, valid_dl, loss_fn, metrics=metrics, clip=clip, device=device,
                    amp=amp, accum=accum, quiet=True)
    # The optimizer applies its own weight decay (if any): no decoupled-decay hook, wd left alone.
    learn.opt, learn._owns_wd, learn._wd_hook = optimizer, True, None
    cfg = _config(learn, start_lr, end_lr, num_it, step_mode, stop_div, div_th, with_valid, val_batches,
                  None, callbacks, rule, use_wd=False, runs=runs)
    return _find(learn, cfg)
