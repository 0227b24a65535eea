"""Hostile input across the public API: a ValueError/TypeError naming the argument, never a crash from
deep inside (ZeroDivisionError, StopIteration, AttributeError, IndexError, KeyError), and no state
change; input the contract allows is accepted and trains.

Each hypothesis test varies one argument (the others valid), and an oracle written here from the
documented contract says whether the value is valid: invalid must raise naming the argument, valid
must train (the step count, and a weight moved where the LR is large enough to move one).
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3), st.lists(st.floats(-1, 1), max_size=3), st.tuples(st.floats(-2, 2)),
)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), junk)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BATCHES = 4  # 20 samples in batches of 5


# ---- the oracle: the documented contract, written out independently ----------------------------------
def _real(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _positive(v) -> bool:
    return _real(v) and v > 0


def _in(v, lo, hi, hi_open=True) -> bool:
    return _real(v) and lo <= v and (v < hi if hi_open else v <= hi)


def _lr_ok(v) -> bool:
    """A positive finite number, or a sequence of one per param group (one group here)."""
    return _positive(v) or (isinstance(v, (list, tuple)) and len(v) == 1 and _positive(v[0]))


def _moderate_lr(v) -> bool:
    """Large enough to move a float32 weight, small enough not to diverge in one epoch."""
    x = v[0] if isinstance(v, (list, tuple)) else v
    return 1e-3 <= x <= 1.0


def _epochs_ok(v) -> bool:
    return type(v) is int and v >= 1


# ---- the two outcomes ------------------------------------------------------------------------------
def _learn(train=None, valid=None):
    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    dl = DataLoader(TensorDataset(x, y), batch_size=5)
    return oc.Learner(nn.Linear(4, 2), dl if train is None else train, dl if valid is None else valid,
                      quiet=True, device="cpu")


def _state(learn):
    return {k: v.clone() for k, v in learn.model.state_dict().items()}


def _rejected(call, learn, arg):
    """``call`` raises ValueError/TypeError naming ``arg`` and leaves the model as it was."""
    before = _state(learn)
    with pytest.raises((ValueError, TypeError), match=arg):
        call()
    after = learn.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "state changed before the error"


def _trained(call, learn, steps, moves=True, may_diverge=False):
    """``call`` trains ``steps`` steps; with ``moves``, some weight changed. ``may_diverge``: an extreme
    but valid setting may instead stop with NonFiniteLossError (a FloatingPointError), never a
    ValueError/TypeError."""
    before = _state(learn)
    try:
        call()
    except FloatingPointError:
        assert may_diverge
        return
    assert len(learn.recorder.losses) == steps
    if moves:
        after = learn.model.state_dict()
        assert any(not torch.equal(after[k], v) for k, v in before.items()), "no weight changed"


# ---- fit ---------------------------------------------------------------------------------------------
@SETTINGS
@given(lr=numbers)
def test_fit_lr(lr):
    assume(not (_lr_ok(lr) and (lr[0] if isinstance(lr, (list, tuple)) else lr) > 1e30))  # see the next test
    learn = _learn()
    if _lr_ok(lr):
        _trained(lambda: learn.fit(lr, 1), learn, BATCHES, moves=_moderate_lr(lr), may_diverge=not _moderate_lr(lr))
    else:
        _rejected(lambda: learn.fit(lr, 1), learn, "lr")


@SETTINGS
@given(epochs=junk)
def test_fit_epochs(epochs):
    learn = _learn()
    if _epochs_ok(epochs):
        _trained(lambda: learn.fit(0.1, epochs), learn, BATCHES * epochs)
    else:
        _rejected(lambda: learn.fit(0.1, epochs), learn, "n_cycle")


@pytest.mark.xfail(strict=True, reason="Core v2: an LR beyond float32's range (valid: positive and finite) "
                                       "crashes in torch's SGD with a RuntimeError (float overflow)")
def test_fit_lr_beyond_float32_trains_or_reports_divergence():
    learn = _learn()
    _trained(lambda: learn.fit(1e39, 1), learn, BATCHES, moves=False, may_diverge=True)


def test_nan_lr_message_names_argument():
    learn = _learn()
    _rejected(lambda: learn.fit(math.nan, 1), learn, "lr")


# ---- use_clr_beta ------------------------------------------------------------------------------------
def _clr_ok(clr, nb) -> bool:
    """(div, pct) or (div, pct, mom_max, mom_min); the rising phase of a cycle of nb steps not empty."""
    if not isinstance(clr, (tuple, list)) or len(clr) not in (2, 4):
        return False
    div, pct, *moms = clr
    if not (_positive(div) and _in(pct, 0, 100)) or int(nb * (1 - pct / 100) / 2) < 1:
        return False
    return all(_in(m, 0, 1) for m in moms)


@SETTINGS
@given(clr=st.one_of(junk, st.tuples(numbers, numbers), st.tuples(numbers, numbers, numbers, numbers),
                     st.tuples(st.floats(1, 100), st.floats(0, 60)),
                     st.tuples(st.floats(1, 100), st.floats(0, 60), st.floats(0, 0.99), st.floats(0, 0.99))))
def test_use_clr_beta(clr):
    learn = _learn()
    call = lambda: learn.fit(0.1, 1, cycle_len=1, use_clr_beta=clr)  # noqa: E731
    if clr is None or _clr_ok(clr, BATCHES):  # None: cosine annealing per cycle (SGDR)
        assume(clr is None or 0.1 / clr[0] <= 1e30)  # an LR beyond float32: test_fit_lr_beyond_float32_...
        _trained(call, learn, BATCHES, moves=False, may_diverge=clr is not None and clr[0] < 0.1)
    else:
        _rejected(call, learn, "use_clr_beta|div|pct|mom_max|mom_min")


@SETTINGS
@given(cycle_len=junk)
def test_cycle_len(cycle_len):
    learn = _learn()
    call = lambda: learn.fit(0.1, 1, cycle_len=cycle_len, use_clr_beta=(10, 10))  # noqa: E731
    if cycle_len is None:  # use_clr_beta without cycle_len
        _rejected(call, learn, "cycle_len")
    elif _epochs_ok(cycle_len):
        _trained(call, learn, BATCHES * cycle_len)
    else:
        _rejected(call, learn, "cycle_len")


# ---- fit_one_cycle -----------------------------------------------------------------------------------
@SETTINGS
@given(div=numbers)
def test_fit_one_cycle_div(div):
    assume(not (_positive(div) and 0.1 / div > 1e30))  # an LR beyond float32: test_fit_lr_beyond_float32_...
    learn = _learn()
    call = lambda: learn.fit_one_cycle(1, 0.1, div=div)  # noqa: E731
    if _positive(div):  # a tiny div starts at a huge LR: it may diverge, but it is valid
        _trained(call, learn, BATCHES, moves=False, may_diverge=div < 0.1)
    else:
        _rejected(call, learn, "div")


@SETTINGS
@given(pct_start=numbers)
def test_fit_one_cycle_pct_start(pct_start):
    learn = _learn()
    call = lambda: learn.fit_one_cycle(1, 0.1, pct_start=pct_start)  # noqa: E731
    if _in(pct_start, 0, 1, hi_open=False):
        _trained(call, learn, BATCHES)
    else:
        _rejected(call, learn, "pct_start")


@SETTINGS
@given(moms=st.one_of(junk, st.tuples(numbers, numbers, numbers), st.tuples(numbers, numbers),
                      st.tuples(st.floats(0, 0.99), st.floats(0, 0.99), st.floats(0, 0.99))))
def test_fit_one_cycle_moms(moms):
    learn = _learn()
    call = lambda: learn.fit_one_cycle(1, 0.1, moms=moms)  # noqa: E731
    if moms is None or (isinstance(moms, (tuple, list)) and len(moms) in (2, 3) and all(_in(m, 0, 1) for m in moms)):
        _trained(call, learn, BATCHES)
    else:
        _rejected(call, learn, "moms")


@SETTINGS
@given(wd=numbers)
def test_fit_one_cycle_wd(wd):
    learn = _learn()
    call = lambda: learn.fit_one_cycle(1, 0.1, wd=wd)  # noqa: E731
    per_group = isinstance(wd, (list, tuple)) and len(wd) == 1  # one value per param group (one here)
    if wd is None or all(_real(w) and w >= 0 for w in (wd if per_group else [wd])):  # None: the Learner's wd
        _trained(call, learn, BATCHES, moves=False, may_diverge=True)  # a huge decay may diverge
    else:
        _rejected(call, learn, "wd")


# ---- lr_find: the model is restored afterwards, so "it ran" is the curve it returns ---------------------
def _found(call, learn, num_it=None):
    before = _state(learn)
    res = call()
    assert 1 <= len(res.lrs) <= (num_it or 100) and len(res.losses) == len(res.lrs)
    after = learn.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


@SETTINGS
@given(start=numbers)
def test_lr_find_start_lr(start):
    learn = _learn()
    call = lambda: learn.lr_find(start_lr=start, end_lr=10.0, num_it=5)  # noqa: E731
    value = start[0] if isinstance(start, (list, tuple)) and len(start) == 1 else start
    if _lr_ok(start) and value < 10:
        _found(call, learn, 5)
    else:
        _rejected(call, learn, "start_lr")


@SETTINGS
@given(end=numbers)
def test_lr_find_end_lr(end):
    learn = _learn()
    call = lambda: learn.lr_find(start_lr=1e-5, end_lr=end, num_it=5)  # noqa: E731
    value = end[0] if isinstance(end, (list, tuple)) and len(end) == 1 else end
    assume(not (_lr_ok(end) and value > 1e30))  # beyond float32: test_fit_lr_beyond_float32_...
    if _lr_ok(end) and value > 1e-5:
        _found(call, learn, 5)
    else:
        _rejected(call, learn, "end_lr")


@SETTINGS
@given(num_it=junk)
def test_lr_find_num_it(num_it):
    learn = _learn()
    call = lambda: learn.lr_find(num_it=num_it)  # noqa: E731
    if type(num_it) is int and num_it >= 2:
        _found(call, learn, num_it)
    else:
        _rejected(call, learn, "num_it")


@SETTINGS
@given(div_th=numbers)
def test_lr_find_div_th(div_th):
    learn = _learn()
    call = lambda: learn.lr_find(num_it=5, div_th=div_th)  # noqa: E731
    if _real(div_th) and div_th > 1:
        _found(call, learn, 5)
    else:
        _rejected(call, learn, "div_th")


# ---- setters, schedules and optimizers ---------------------------------------------------------------
@SETTINGS
@given(value=junk)
def test_clip_setter(value):
    learn = _learn()
    if value is None or _positive(value):
        learn.clip = value
        assert learn.clip == value
        _trained(lambda: learn.fit(0.1, 1), learn, BATCHES, moves=value is None or value >= 1e-3)
    else:
        _rejected(lambda: setattr(learn, "clip", value), learn, "clip")


@SETTINGS
@given(value=junk)
def test_freeze_to(value):
    learn = _learn()
    if type(value) is int and value == 0:  # one param group: unfreezing is all there is to do
        learn.freeze_to(value)
        assert all(p.requires_grad for p in learn.model.parameters())
    else:  # freezing part of a one-group model cannot mean anything: refused, saying how to make groups
        _rejected(lambda: learn.freeze_to(value), learn, "freeze_to")


@SETTINGS
@given(value=junk)
def test_schedule_divs(value):
    if _positive(value):
        assert oc.schedules.cos_one_cycle(div=value).lr(0.0) == pytest.approx(1 / value)
        assert oc.schedules.clr_beta(100, value, 10).lr(0.0) == pytest.approx(1 / value)
    else:
        with pytest.raises((ValueError, TypeError), match="div"):
            oc.schedules.cos_one_cycle(div=value)
        with pytest.raises((ValueError, TypeError), match="div"):
            oc.schedules.clr_beta(100, value, 10)


@SETTINGS
@given(value=junk)
def test_optimizer_momentum(value):
    params = [nn.Parameter(torch.ones(2, 2))]
    if _in(value, 0, 1):
        oc.optim.LARS(params, lr=0.1, momentum=value)
        oc.optim.LAMB(params, betas=(value, 0.99))
    else:
        with pytest.raises((ValueError, TypeError), match="momentum"):
            oc.optim.LARS(params, lr=0.1, momentum=value)
        with pytest.raises((ValueError, TypeError), match="beta"):
            oc.optim.LAMB(params, betas=(value, 0.99))


# ---- Core v2: 0-d tensors and arrays as LRs ----------------------------------------------------------
ZERO_D = [pytest.param(torch.tensor, id="tensor"), pytest.param(np.array, id="numpy"),
          pytest.param(lambda v: torch.tensor(v, dtype=torch.float64), id="tensor64")]  # v -> a 0-d value


@pytest.mark.parametrize("lr", ZERO_D)
def test_zero_d_lr_in_fit_one_cycle(lr):
    learn = _learn()
    _trained(lambda: learn.fit_one_cycle(1, lr(0.1)), learn, BATCHES)
    assert max(learn.recorder.lrs) == pytest.approx(0.1)


@pytest.mark.parametrize("lr", ZERO_D)
def test_zero_d_lr_in_lr_find(lr):
    learn = _learn()
    _found(lambda: learn.lr_find(start_lr=lr(1e-5), end_lr=lr(1.0), num_it=5), learn, 5)


@pytest.mark.parametrize("lr", ZERO_D)
def test_zero_d_lr_in_spread_lrs(lr):
    assert oc.optim.spread_lrs(lr(0.1), 3) == pytest.approx([0.1, 0.1, 0.1])


def test_sequence_lrs_in_spread_lrs():
    assert oc.optim.spread_lrs(torch.tensor([0.1, 0.2]), 2) == pytest.approx([0.1, 0.2])
    assert oc.optim.spread_lrs(np.array([0.1, 0.2]), 2) == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="lr has 2 values but there are 3 param groups"):
        oc.optim.spread_lrs([0.1, 0.2], 3)


# ---- Core v2: loaders are checked before the first step ------------------------------------------------
def _dataset():
    return TensorDataset(torch.randn(20, 4), torch.randint(0, 2, (20,)))


def _empty_loader():
    return DataLoader(TensorDataset(torch.randn(0, 4), torch.randint(0, 2, (0,))), batch_size=5)


def _fits():
    return {"fit": lambda learn: learn.fit(0.1, 1), "fit_one_cycle": lambda learn: learn.fit_one_cycle(1, 0.1),
            "lr_find": lambda learn: learn.lr_find(num_it=5)}


def _core_v2(what):
    return pytest.mark.xfail(strict=True, reason=f"Core v2: {what}")


BAD_TRAIN = {"not-iterable": lambda: 42, "a-dataset": _dataset, "a-tensor": lambda: torch.randn(20, 4),
             "empty": _empty_loader}


@pytest.mark.parametrize("train", sorted(BAD_TRAIN))
def test_a_bad_train_dl_is_refused_by_the_constructor_and_by_assignment(train):
    """A loader is checked wherever it is given: a Dataset assigned after construction trained one
    sample per batch."""
    with pytest.raises((ValueError, TypeError), match="train_dl"):
        _learn(train=BAD_TRAIN[train]())
    learn = _learn()
    given = learn.train_dl
    _rejected(lambda: setattr(learn, "train_dl", BAD_TRAIN[train]()), learn, "train_dl")
    assert learn.train_dl is given
    _trained(lambda: learn.fit_one_cycle(1, 0.1), learn, BATCHES)  # with the loader it kept


@pytest.mark.parametrize("how", sorted(_fits()))
def test_a_train_dl_emptied_after_it_was_given_is_refused_before_the_first_step(how):
    later = DataLoader(_dataset(), batch_size=5)
    learn = _learn(train=later)
    later.dataset.tensors = tuple(t[:0] for t in later.dataset.tensors)
    _rejected(lambda: _fits()[how](learn), learn, "train_dl")
    assert learn.opt is None and len(learn.recorder.losses) == 0


@pytest.mark.parametrize("data", [torch.randn(20, 4), np.zeros((20, 4), dtype=np.float32)], ids=["tensor", "array"])
def test_predict_and_validate_refuse_a_tensor_or_array(data):
    """Iterating a tensor yields its rows: predict(x) returned every row's output joined into one
    flat vector (shape (40,) for 20 rows of 2 outputs). A loader is asked for, by name."""
    learn = _learn()
    for call in (learn.predict, learn.validate):
        with pytest.raises(TypeError, match=r"^dl is a (Tensor|ndarray) of shape \(20, 4\), not a loader: pass a "
                                            r"loader of batches, e.g. torch.utils.data.DataLoader\(TensorDataset"):
            call(data)
    assert learn.predict(DataLoader(TensorDataset(torch.randn(20, 4)), batch_size=8)).shape[0] == 20


@pytest.mark.parametrize("how", ["fit", "fit_one_cycle"])
def test_empty_valid_dl_at_fit_start(how):
    with pytest.raises(ValueError, match="valid_dl is empty"):
        _learn(valid=_empty_loader())  # refused by the constructor already
    learn = _learn()
    with pytest.raises(ValueError, match="valid_dl is empty"):
        learn.valid_dl = _empty_loader()  # by the assignment
    later = DataLoader(TensorDataset(torch.zeros(4, 4), torch.zeros(4, dtype=torch.long)), batch_size=2)
    learn.valid_dl = later
    later.dataset.tensors = tuple(t[:0] for t in later.dataset.tensors)  # and by a fit, when emptied afterwards
    before = _state(learn)
    with pytest.raises((ValueError, TypeError), match="valid_dl"):
        _fits()[how](learn)
    assert len(learn.recorder.losses) == 0  # refused before the first step
    after = learn.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())



# ---- what a newcomer mistypes --------------------------------------------------------------------
@pytest.mark.parametrize("call,kw,message", [
    ("fit_one_cycle", {"lrmax": 0.1}, "fit_one_cycle() got an unexpected keyword argument 'lrmax'; did you mean "
                                      "'lr_max'?"),
    ("fit_one_cycle", {"lr": 0.1}, "fit_one_cycle() got an unexpected keyword argument 'lr'; did you mean 'lr_max'?"),
    ("fit_one_cycle", {"max_lr": 0.1}, "fit_one_cycle() got an unexpected keyword argument 'max_lr'; did you mean "
                                       "'lr_max'?"),
    ("fit_one_cycle", {"resum": True}, "fit_one_cycle() got an unexpected keyword argument 'resum'; did you mean "
                                       "'resume'?"),
    ("fit_one_cycle", {"zzz": 1}, "fit_one_cycle() got an unexpected keyword argument 'zzz'"),
    ("lr_find", {"num_iter": 20}, "lr_find() got an unexpected keyword argument 'num_iter'; did you mean 'num_it'?"),
    ("lr_find", {"learn": None}, "lr_find() got an unexpected keyword argument 'learn': lr_find sets it itself"),
    ("fine_tune", {"lr_max": 0.1}, "fine_tune() got an unexpected keyword argument 'lr_max'; did you mean 'base_lr'?"),
    ("fine_tune", {"checkpoint_dr": "x"}, "fine_tune() got an unexpected keyword argument 'checkpoint_dr'; did you "
                                         "mean 'checkpoint_dir'?"),
])
def test_a_mistyped_keyword_is_named_where_it_was_passed(call, kw, message):
    """Before: lrmax= said "lr_max is None and no lr_find suggestion is available", lr= "got multiple
    values for argument 'lr'", num_iter= named the inner find()."""
    learn = _learn()
    before = _state(learn)
    with pytest.raises(TypeError) as err:
        getattr(learn, call)(1, **kw)
    assert str(err.value) == message
    assert len(learn.recorder.losses) == 0
    assert all(torch.equal(learn.model.state_dict()[k], v) for k, v in before.items())


def test_options_passed_on_are_still_taken(tmp_path):
    learn = _learn()
    learn.fit_one_cycle(1, 0.1, checkpoint_dir=tmp_path / "a", every=2, on_nan="skip", steps_per_epoch=2)
    assert learn.scheduler.total_steps == 2 and (tmp_path / "a" / "last.ckpt").exists()
    res = learn.lr_find(num_it=5, with_valid=False, rule="valley", stop_div=False, end_lr=1.0)
    assert res.rule == "valley" and res.val_losses == [] and len(res.lrs) == 5 and res.lrs[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("kw,message", [
    ({"lr_max": "0.1"}, "lr must be a number, a sequence of numbers (one per param group) or a slice, got '0.1'"),
    ({"lr_max": 0.1, "wd": "0.1"}, "wd must be a number or a sequence of numbers (one per param group), got '0.1'"),
])
def test_a_number_as_a_string_is_named_whole(kw, message):
    """Not read character by character ("lr[0] must be a number, got '0'")."""
    with pytest.raises(TypeError) as err:
        _learn().fit_one_cycle(1, **kw)
    assert str(err.value) == message


def test_loss_fn_given_as_a_class_is_named():
    with pytest.raises(TypeError, match=r"^loss_fn is the class CrossEntropyLoss: pass an instance, "
                                        r"CrossEntropyLoss\(\), or a function such as F.cross_entropy$"):
        oc.Learner(nn.Linear(4, 2), _learn().train_dl, loss_fn=nn.CrossEntropyLoss)


def test_mistyped_keywords_named_with_a_hint_and_none_refused_behind_a_wrapper(tmp_path):
    learn = _learn()
    for kw, message in [({"lr_sched": None}, "fit_one_cycle() got an unexpected keyword argument 'lr_sched': "
                         "fit_one_cycle sets it itself; use fit_sched(epochs, lr, lr_sched, mom_sched) for schedules "
                         "of your own"),
                        ({"learning_rate": 0.1}, "fit_one_cycle() got an unexpected keyword argument 'learning_rate'; "
                         "did you mean 'lr_max'?")]:
        with pytest.raises(TypeError) as err:
            learn.fit_one_cycle(1, **kw)
        assert str(err.value) == message
    with pytest.raises(TypeError) as err:
        learn.lr_find(max_lr=1.0)  # no guess between start_lr and end_lr
    assert str(err.value) == "lr_find() got an unexpected keyword argument 'max_lr'"

    class Wrapped(oc.Learner):  # a subclass (or a mock) whose fit_sched hides what it takes: not second-guessed
        def fit_sched(self, *args, **kw):
            return super().fit_sched(*args, **kw)

    wrapped = Wrapped(nn.Linear(4, 2), learn.train_dl, quiet=True, device="cpu")
    wrapped.fit_one_cycle(1, 0.1, steps_per_epoch=2, checkpoint_dir=tmp_path)
    assert wrapped.scheduler.total_steps == 2


def test_check_loader_refuses_arrays_only():
    from onecycle.checks import check_loader
    check_loader("dl", np.arange(5).flat)  # another numpy iterable: no shape to report, not refused
    with pytest.raises(TypeError, match="dl is a ndarray of shape"):
        check_loader("dl", np.arange(5))
