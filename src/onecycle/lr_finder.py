"""LR range test (Smith 2015; fastai's ``lr_find``, fastai 0.7's ``lr_find2``) as a callback on the
Learner's own loop.

Iteration ``i`` of ``num_it`` (one optimizer step each; ``accum`` batches when accumulating) trains at
``start * (end/start) ** (i/(num_it-1))`` (``step_mode="exp"``) or ``start * (1 + i/(num_it-1) *
(end/start - 1))`` (``"linear"``), per group, keeping the groups' ratios: the fit's ``Scheduler``
sets it, so an AMP step skipped on overflow repeats its LR. Unlike fastai v2 (``i/num_it``, one step
short), the last iteration trains at ``end_lr``. The loader is looped over as often as needed; with
accumulation, a pass's last batches close a shorter window (as in a fit), except over a loader
without ``len()``, whose end is known only once it is reached: there a pass that ends inside a window
drops that window's batches (no step: every step sees ``accum`` batches).

``RangeTest`` (the callback), after each optimizer step: the step's mean loss (one host read per
batch), then with validation the loss and metrics on the next ``val_batches`` batches of a cycling
validation iterator, or on the whole loader (``val_batches=None``) (``Learner.validate``), all into a
``Recorder`` (the history type of ``fit``). ``keep_ratios=False`` takes each group from its own start
to its own end (``PerGroup`` schedules), and ``stop_rule`` replaces the divergence rule: the ways of
torch-lr-finder, for its drop-in (``compat.LRFinder``).
It cancels the fit at ``num_it``, or with ``stop_div`` when the smoothed loss (bias-corrected EMA,
``suggest.smoothing_beta(num_it)``: 0.9 for 100 iterations; the curve the suggestion rules read
and the plot draws) diverges (``suggest.divergence_bound``, with the
best tracked from iteration 10). A non-finite loss stops it before the step (the loop's NaN guard).

The test runs a ``Loop`` of its own with its own history, scheduler and a copy of the user's
``GradScaler``, and only the callbacks given to it (not the Learner's). Afterwards the model
(parameters, buffers, gradients, train/eval modes), the optimizer, every RNG, loader generators and
``set_epoch`` are as before, whatever the exit: restored from ``state_dict()``s and an RNG capture
taken before; the Learner's loop is put back, so a test started from a callback inside a fit leaves
that fit as it was (the fit's schedulers hold still meanwhile: ``optim.scheduler.paused``). The one
change: ``learn.suggested_lr``. The suggestion rules are in ``suggest.py``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import checks as C
from . import distributed as D
from . import progress
from . import schedules as S
from .callbacks import Callback, CancelFit, check_callbacks
from .evaluate import restore_modes
from .loop import Loop, NonFiniteLossError
from .lr_find_result import LRFindResult
from .optim.extras import check_lrs, single_lr
from .optim.groups import spread_lrs
from .optim.scheduler import Scheduler, paused
from .recorder import Recorder
from .rng import get_rng_state, set_rng_state
from .smoothing import smoothing_beta
from .suggest import DEFAULT_RULE, SUGGESTERS, divergence_bound, median_suggestion, suggest

__all__ = ["LRFindResult", "RangeTest", "find"]


# ---- arguments (all checked before anything changes) ---------------------------------------------
@dataclass
class _Config:
    starts: list[float]
    ratios: list[float]  # end/start per group: all the same unless keep_ratios=False
    num_it: int
    step_mode: str
    stop_div: bool
    div_th: float
    with_valid: bool
    val_batches: int | None  # None: the whole validation loader at every step
    wds: list[float] | None  # None: leave the optimizer's weight decay alone
    callbacks: list[Callback]
    rule: str
    runs: int = 1
    stop_rule: Callable[[Recorder], str | None] | None = None  # None: onecycle's divergence rule


class PerGroup:
    """One schedule per param group (``Scheduler`` takes the list it returns: one value per group)."""

    def __init__(self, scheds: Sequence[Callable[[float], float]]) -> None:
        self.scheds = list(scheds)

    def __call__(self, pct: float) -> list[float]:
        return [fn(pct) for fn in self.scheds]

    def __repr__(self) -> str:
        return f"PerGroup({self.scheds!r})"


def _per_group(value: object) -> bool:
    return isinstance(value, slice) or not C.is_scalar(value)


def _lr_range(start_lr: Any, end_lr: Any, n: int, keep_ratios: bool = True) -> tuple[list[float], list[float]]:
    """Per-group start LRs and end/start ratios, shared by all groups (their ratios are kept); a
    single number on one side takes the other side's group ratios, the head group's value. Without
    ``keep_ratios`` each group goes from its own start to its own end (a single end: every group's)."""
    if not keep_ratios:
        starts, ends = spread_lrs(start_lr, n, "start_lr"), spread_lrs(end_lr, n, "end_lr")
        if not all(e > s for s, e in zip(starts, ends)):
            raise ValueError(f"start_lr must be below end_lr in every group, got start_lr={start_lr!r}, "
                             f"end_lr={end_lr!r}")
        return starts, [e / s for s, e in zip(starts, ends)]
    if _per_group(start_lr):
        starts = spread_lrs(start_lr, n, "start_lr")
        ends = spread_lrs(end_lr, n, "end_lr") if _per_group(end_lr) else None
        head_end = ends[-1] if ends else C.check_number("end_lr", end_lr, low=0, low_open=True)
        if ends and not all(math.isclose(e / s, head_end / starts[-1], rel_tol=1e-9)
                            for s, e in zip(starts, ends)):
            raise ValueError(f"start_lr={start_lr!r} and end_lr={end_lr!r} must have the same end/start "
                             "ratio in every group (the finder keeps the groups' LR ratios)")
    elif _per_group(end_lr):
        ends = spread_lrs(end_lr, n, "end_lr")
        head = C.check_number("start_lr", start_lr, low=0, low_open=True)
        starts, head_end = [head * (e / ends[-1]) for e in ends], ends[-1]  # the ratio first: no underflow
    else:
        starts = [C.check_number("start_lr", start_lr, low=0, low_open=True)] * n
        head_end = C.check_number("end_lr", end_lr, low=0, low_open=True)
    if not head_end > starts[-1]:
        raise ValueError(f"start_lr must be below end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    return starts, [head_end / starts[-1]] * n


def _config(learn: Any, start_lr: Any, end_lr: Any, num_it: int, step_mode: str, stop_div: bool,
            div_th: float, with_valid: bool | None, val_batches: int | None, wd: Any, callbacks: Sequence[Callback],
            rule: str | None, use_wd: bool = True, runs: int = 1, keep_ratios: bool = True,
            stop_rule: Callable[[Recorder], str | None] | None = None) -> _Config:
    n = len(learn.opt.param_groups) if learn.opt is not None else len(learn.layer_groups())
    num_it = C.check_int("num_it", num_it, 2)
    if step_mode not in ("exp", "linear"):
        raise ValueError(f"step_mode must be 'exp' or 'linear', got {step_mode!r}")
    starts, ratios = _lr_range(start_lr, end_lr, n, C.check_bool("keep_ratios", keep_ratios))
    C.check_callable("stop_rule", stop_rule, none_ok=True)
    div_th = C.check_number("div_th", div_th, low=1, low_open=True)
    C.check_loader("train_dl", learn.train_dl)  # not empty
    with_valid = learn.valid_dl is not None if with_valid is None else bool(with_valid)
    if with_valid and learn.valid_dl is None:
        raise ValueError("valid_dl is None: with_valid=True needs a validation loader")
    if with_valid:
        C.check_loader("valid_dl", learn.valid_dl)  # not emptied since it was given
    rule = DEFAULT_RULE if rule is None else rule
    if rule not in SUGGESTERS:
        raise ValueError(f"rule must be one of {sorted(SUGGESTERS)}, got {rule!r}")
    wds = C.per_group("wd", learn.wd if wd is None else wd, n, low=0) if use_wd else None
    val_batches = None if val_batches is None else C.check_int("val_batches", val_batches, 1)
    return _Config(starts, ratios, num_it, step_mode, bool(stop_div), div_th, with_valid, val_batches, wds,
                   check_callbacks(callbacks), rule, C.check_int("runs", runs, 1), stop_rule)


# ---- the callback ------------------------------------------------------------------------------
class RangeTest(Callback):
    """Records each optimizer step's LR, loss and (with validation) validation loss and metrics
    into ``history``, and cancels the fit at ``num_it`` steps or on divergence."""

    order = 50  # after the user's callbacks: one that cancels at a batch end cancels before its step is recorded

    def __init__(self, cfg: _Config, valid: Iterator | None, quiet: bool = True, run: int = 0) -> None:
        self.cfg, self.valid, self.quiet, self.run = cfg, valid, quiet, run
        self.stop_rule = copy.deepcopy(cfg.stop_rule)  # each run's own: a rule may keep state
        self.bar: Any = None
        self.history, self.best, self.stop_reason = Recorder(smooth_beta=smoothing_beta(cfg.num_it)), math.inf, ""
        self._window: list[float] = []
        self._lrs: list[float] = []

    def before_fit(self, learn: Any) -> None:
        run = f" run {self.run + 1}/{self.cfg.runs}" if self.cfg.runs > 1 else ""
        self.bar = progress.finder_bar(self.cfg.num_it, self.quiet, desc=f"lr_find{run}")

    def after_fit(self, learn: Any) -> None:
        if self.bar is not None:
            self.bar.close(len(self.history.losses))

    def after_batch(self, learn: Any) -> None:
        if not self._window:
            self._lrs = learn.loop.epoch_lrs[-1]
        # The finder's one host read per batch; data-parallel ranks see the mean over ranks.
        self._window.append(D.mean_over_ranks(learn.loss, learn.world_size).item())
        if learn.stepped:
            self._record(learn)

    def _record(self, learn: Any) -> None:
        cfg, h = self.cfg, self.history
        i, loss = len(h.losses), sum(self._window) / len(self._window)
        self._window = []
        h.add_iterations([self._lrs], [learn.loop.epoch_moms[-1]], [loss])
        if cfg.with_valid:  # the next batches of the cycling iterator, or the whole loader; modes restored
            batches = None if self.valid is None else [next(self.valid) for _ in range(cfg.val_batches)]
            for name, value in learn.validate(batches).items():
                h.log(name, value)
        smooth = h.smooth_losses[-1]
        if self.bar is not None:
            self.bar.update(i, self._lrs[-1], smooth)
        if self.stop_rule is not None:
            self.stop_reason = self.stop_rule(h) or ""
            if self.stop_reason:
                raise CancelFit
        if i >= 10:  # the first steps are noisy and their loss is still falling: no best yet
            self.best = min(self.best, smooth)
        bound = divergence_bound(self.best, h.smooth_losses[0], cfg.div_th)
        if cfg.stop_div and self.stop_rule is None and (not math.isfinite(smooth) or smooth > bound):
            self.stop_reason = (f"diverged at iteration {i} (lr {self._lrs[-1]:.3g}): smoothed loss {smooth:.4g} "
                                f"above {bound:.4g} (best {self.best:.4g}, start {h.smooth_losses[0]:.4g}, "
                                f"div_th {cfg.div_th:g})")
            raise CancelFit
        if i + 1 == cfg.num_it:
            self.stop_reason = f"completed num_it={cfg.num_it} iterations"
            raise CancelFit

    def nan_stop(self, learn: Any) -> None:
        self.stop_reason = (f"non-finite loss {float(learn.loss.float().mean())} at iteration "
                            f"{len(self.history.losses)} (lr {learn.loop.epoch_lrs[-1][-1]:.3g}): stopped before "
                            "stepping")


def _cycle(dl: Iterable, name: str) -> Iterator[Any]:
    """The loader's batches over and over."""
    while True:
        empty = True
        for batch in dl:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"{name} yielded no batch")


# ---- the snapshot: what the test changes, from state_dicts ------------------------------------------
class _Snapshot:
    """Taken before the test, restored after it whatever happens."""

    def __init__(self, learn: Any) -> None:
        model = learn.model
        self.model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
        self.modes = [(m, m.training) for m in model.modules()]
        self.opt = learn.opt
        self.opt_state = None if learn.opt is None else copy.deepcopy(learn.opt.state_dict())
        self.loop = learn.loop  # a fit's, when the test runs inside one: never touched, put back
        self.loaders = [dl for dl in (learn.train_dl, learn.valid_dl) if dl is not None]
        self.rng = get_rng_state(self.loaders)
        self.epochs = [_loader_epoch(dl) for dl in self.loaders]
        self.epoch = self.epochs[0]

    def restore(self, learn: Any, rng: bool = True) -> None:
        """Everything as it was; ``rng=False`` leaves the RNGs (and loader generators) where they
        are: between the runs of a multi-run test, a DataLoader then shuffles afresh."""
        learn.model.load_state_dict(self.model)
        for p, g in self.grads:  # copies: a snapshot may be restored again (between runs)
            p.grad = None if g is None else g.clone()
        restore_modes(self.modes)
        if self.opt is None:
            learn.drop_opt()  # the optimizer the test made, and its weight-decay hook
        else:
            learn.opt = self.opt
            self.opt.load_state_dict(copy.deepcopy(self.opt_state))
        learn.loop = self.loop
        if rng:
            set_rng_state(self.rng, self.loaders, same_loaders=True)
        for dl, epoch in zip(self.loaders, self.epochs):
            if epoch is not None:
                dl.set_epoch(epoch)  # also reaches what set_epoch forwards to (a sampler)


def _loader_epoch(dl: Any) -> int | None:
    """The epoch a ``set_epoch`` loader is at, when it can be read back (else the finder leaves
    ``set_epoch`` alone, since it could not undo it)."""
    if not callable(getattr(dl, "set_epoch", None)):
        return None
    # accelerate's DataLoaderShard (a Hugging Face Trainer's loaders) counts its epochs as `iteration`
    epoch = getattr(dl, "epoch", getattr(dl, "iteration", None))
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


# ---- running it --------------------------------------------------------------------------------
def _run(learn: Any, cfg: _Config, set_epoch: bool, run: int = 0) -> RangeTest:
    """One range test on a ``Loop`` of its own. Run ``k`` of a multi-run test starts a ``set_epoch``
    loader at the epoch where run ``k - 1`` would have stopped, so each run has its own data order."""
    opt = learn.opt if learn.opt is not None else learn.create_opt()
    opt.zero_grad(set_to_none=True)  # the test starts from no gradient (the snapshot puts any back)
    check_lrs(opt, cfg.starts, "start_lr")  # Prodigy: one LR (the snapshot restores what this made)
    for g, lr in zip(opt.param_groups, cfg.starts):
        g["lr"] = g["initial_lr"] = lr
    for g, w in zip(opt.param_groups, cfg.wds or ()):
        g[learn.wd_key] = w
    kind = S.Exp if cfg.step_mode == "exp" else S.Lin
    shape = kind(1.0, cfg.ratios[0]) if len(set(cfg.ratios)) == 1 else PerGroup([kind(1.0, r) for r in cfg.ratios])
    # num_it - 1 steps from start to end: iteration i trains at progress i / (num_it - 1).
    sched = Scheduler(opt, cfg.num_it - 1, {"lr": shape})
    n = C.loader_len(learn.train_dl)
    batches = n if n is not None else cfg.num_it * learn.accum  # no len(): each epoch ends with the loader
    epochs = -(-cfg.num_it * learn.accum // n) if n is not None else cfg.num_it
    first = run * epochs if set_epoch else 0
    valid = _cycle(learn.valid_dl, "valid_dl") if cfg.with_valid and cfg.val_batches is not None else None
    finder = RangeTest(cfg, valid, quiet=learn.quiet, run=run)  # the finder's bar shows unless the Learner is quiet
    # The test's own history and a copy of the user's GradScaler (it keeps its scale, and no error leaves it
    # stuck mid-step: "unscale_() already called"); no epoch table or bar; the Learner's callbacks stay out.
    learn.loop = Loop(learn, first + epochs, batches, sched, callbacks=[finder, *cfg.callbacks], recorder=Recorder(),
                      validate=False, quiet=True, scaler=copy.deepcopy(learn.user_scaler), warn_short=False)
    try:
        learn.loop.run(start_epoch=first)
        if not finder.stop_reason:
            finder.stop_reason = f"cancelled by a callback after {len(finder.history.losses)} iterations"
    except NonFiniteLossError:
        finder.nan_stop(learn)
    finally:
        sched.remove()
        if valid is not None:
            valid.close()  # ends the validation loader's iterator (worker processes) now
    return finder


def _result(runs: list[RangeTest], cfg: _Config, names: Iterable[str], directions: dict[str, bool]
            ) -> LRFindResult:
    """The result of the first run's curves; with more runs, each rule's suggestion is the median
    over all of them (``median_suggestion``)."""
    first = runs[0].history
    (suggestions, notes), *others = [suggest(f.history.lrs, f.history.smooth_losses,
                                             f.history.series.get("val_loss", []), skip_start=cfg.num_it // 10,
                                             beta=f.history.smoother.beta)
                                     for f in runs]
    per_run = [dict(suggestions), *(found for found, _ in others)]
    if len(runs) > 1:
        suggestions = {rule: median_suggestion(per_run, rule) for rule in suggestions}
        notes.append(f"suggestions: the median over {len(per_run)} runs with different data orders")
    rule, chosen = cfg.rule, suggestions[cfg.rule]
    if chosen is None:  # res.rule then names the rule that answered, whose value res.suggestion is
        fallback = next((k for k, v in suggestions.items() if v is not None), None)
        notes.append(f"the {cfg.rule!r} rule gave no suggestion; "
                     + (f"using {fallback!r}" if fallback else "no rule could suggest an LR"))
        rule, chosen = (fallback, suggestions[fallback]) if fallback else (cfg.rule, None)
    series = first.series
    recorded = {name: list(values) for name, values in series.items() if name != "val_loss"}
    # without validation every metric is an empty panel; with it, the columns recorded (a dict-valued
    # metric's keys, not its own name)
    metrics = recorded if recorded else {name: [] for name in names}
    return LRFindResult(list(first.lrs), [list(g) for g in first.group_lrs], list(first.losses),
                        list(first.smooth_losses), list(series.get("val_loss", [])), metrics, list(first.moms),
                        suggestions, chosen, rule, runs[0].stop_reason, notes, cfg.step_mode, cfg.num_it,
                        per_run if len(runs) > 1 else [], dict(directions))


def find(learn: Any, start_lr: Any = 1e-7, end_lr: Any = 10.0, num_it: int = 100, *, step_mode: str = "exp",
         stop_div: bool = True, div_th: float = 4.0, with_valid: bool | None = None, val_batches: int | None = 1,
         wd: Any = None, callbacks: Sequence[Callback] = (), rule: str | None = None, runs: int = 1,
         use_wd: bool = True, keep_ratios: bool = True,
         stop_rule: Callable[[Recorder], str | None] | None = None) -> LRFindResult:
    """``Learner.lr_find``: the LR range test with validation at every step (see the module doc).

    ``start_lr``/``end_lr``: numbers, per-group lists or slices. ``with_valid``: None validates when
    the Learner has a validation loader; ``val_batches``: how many batches of it each step reads
    (rotating through it), None for all of it (Smith's and torch-lr-finder's way). ``wd``: None uses
    ``learn.wd``, as ``fit`` does. ``div_th``: the divergence threshold (``suggest.divergence_bound``).
    ``keep_ratios=False``: each group goes from its own start to its own end (torch-lr-finder's way:
    every group to the one ``end_lr``) instead of keeping the groups' ratios. ``stop_rule``: instead
    of onecycle's divergence rule, ``stop_rule(history)`` after each step (a ``Recorder``: ``lrs``,
    ``losses``, ``series["val_loss"]``), copied for each run so it may keep state; a non-empty string
    it returns stops the test and is its ``stop_reason``. ``rule``: the suggestion stored as
    ``res.suggestion`` and ``learn.suggested_lr`` (default ``DEFAULT_RULE``). ``runs``: range tests
    from the same starting state, each on its own data order (the loader's next epochs, or the RNG's
    next draws); every suggestion is then the median over them (``res.run_suggestions`` holds each
    run's), the curves are the first run's.
    """
    cfg = _config(learn, start_lr, end_lr, num_it, step_mode, stop_div, div_th, with_valid, val_batches,
                  wd, callbacks, rule, use_wd=use_wd, runs=runs, keep_ratios=keep_ratios, stop_rule=stop_rule)
    learn.place_data()  # before the snapshot: the data stays on the GPU for every run and the fit after
    snap = _Snapshot(learn)
    finders: list[RangeTest] = []
    try:
        with paused(learn.opt) if learn.opt is not None else contextlib.nullcontext():  # a running fit's
            for k in range(cfg.runs):
                if k:
                    snap.restore(learn, rng=False)
                finders.append(_run(learn, cfg, snap.epoch is not None, k))
        scaled_d = single_lr(learn.opt)  # the optimizer it ran (a fresh Learner's is gone after the restore)
    finally:
        snap.restore(learn)
    res = _result(finders, cfg, learn.recorder.metric_names, learn.recorder.higher_is_better)
    ratios = [s / cfg.starts[-1] for s in cfg.starts]  # (keep_ratios=False: the ratios at the start)
    # fit_one_cycle(lr_max=None) reads this: per group when the groups' LRs differ, keeping ratios.
    learn.suggested_lr = (res.suggestion if res.suggestion is None or len(set(ratios)) == 1
                          else [res.suggestion * r for r in ratios])
    learn.no_suggestion_reason = None if res.suggestion is not None else "; ".join([res.stop_reason, *res.notes])
    if res.suggestion is not None and scaled_d:  # Prodigy: its LR scales the step d it estimates
        C.warn("Prodigy's LR multiplies the step size d it estimates, which starts tiny (d0) and "
               "grows only as the weights move: over a range test the loss barely moves, so this suggestion "
               f"({res.suggestion:.3g}) is no LR to train at. Train it at lr=1 (its authors' default)")
    if not learn.quiet:
        print(res.summary(), flush=True)
    return res
