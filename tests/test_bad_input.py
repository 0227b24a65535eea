"""Hostile input across the public API: only ValueError/TypeError, never a crash from deep inside
(ZeroDivisionError, StopIteration, AttributeError, IndexError, KeyError), and no state change."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3), st.lists(st.floats(-1, 1), max_size=3), st.tuples(st.floats(-2, 2)),
)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), junk)


def _learn():
    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    dl = DataLoader(TensorDataset(x, y), batch_size=5)
    return oc.Learner(nn.Linear(4, 2), dl, dl, quiet=True, device="cpu")


def _check(call, learn):
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    try:
        call()
    except (ValueError, TypeError):
        for k, v in learn.model.state_dict().items():
            assert torch.equal(v, before[k]), "state changed before the error"


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(lr=numbers, epochs=junk)
def test_fit(lr, epochs):
    learn = _learn()
    _check(lambda: learn.fit(lr, epochs), learn)


@SETTINGS
@given(clr=st.one_of(junk, st.tuples(numbers, numbers), st.tuples(numbers, numbers, numbers, numbers)),
       cycle_len=junk)
def test_use_clr_beta(clr, cycle_len):
    learn = _learn()
    _check(lambda: learn.fit(0.1, 1, cycle_len=cycle_len, use_clr_beta=clr), learn)


@SETTINGS
@given(div=numbers, pct_start=numbers, moms=st.one_of(junk, st.tuples(numbers, numbers, numbers)),
       wd=numbers)
def test_fit_one_cycle(div, pct_start, moms, wd):
    learn = _learn()
    _check(lambda: learn.fit_one_cycle(1, 0.1, div=div, pct_start=pct_start, moms=moms, wd=wd), learn)


@SETTINGS
@given(start=numbers, end=numbers, num_it=junk, div_th=numbers)
def test_lr_find(start, end, num_it, div_th):
    learn = _learn()
    _check(lambda: learn.lr_find(start_lr=start, end_lr=end, num_it=num_it, div_th=div_th), learn)


@SETTINGS
@given(value=junk)
def test_setters_and_schedules(value):
    learn = _learn()
    for call in (lambda: setattr(learn, "clip", value), lambda: oc.schedules.cos_one_cycle(div=value),
                 lambda: oc.schedules.clr_beta(100, value, 10), lambda: learn.freeze_to(value),
                 lambda: oc.optim.LARS(learn.model.parameters(), lr=0.1, momentum=value),
                 lambda: oc.optim.LAMB(learn.model.parameters(), betas=(value, 0.99))):
        _check(call, learn)


def test_nan_lr_message_names_argument():
    with pytest.raises(ValueError, match="lr"):
        _learn().fit(math.nan, 1)
