"""Schedules against closed forms and torch's OneCycleLR."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onecycle import schedules as S
from onecycle.optim.scheduler import Scheduler


def test_basic_shapes_hand_values():
    assert S.lin(2, 4)(0.25) == pytest.approx(2.5)
    assert S.cos(1, 0)(0.5) == pytest.approx(0.5)
    assert S.cos(1, 0)(0.0) == 1 and S.cos(1, 0)(1.0) == pytest.approx(0.0)
    assert S.exp(1e-3, 1e-1)(0.5) == pytest.approx(1e-2)
    assert S.const(3)(0.7) == 3


def test_combine_phases():
    f = S.combine([0.25, 0.75], [S.lin(0, 1), S.lin(1, 0)])
    assert f(0.0) == 0 and f(0.125) == pytest.approx(0.5) and f(0.25) == pytest.approx(1.0)
    assert f(0.625) == pytest.approx(0.5) and f(1.0) == pytest.approx(0.0)


def test_repeat_restarts_each_cycle():
    f = S.repeat(S.lin(0, 1), 2)
    assert f(0.25) == pytest.approx(0.5) and f(0.5) == pytest.approx(0.0)
    assert f(0.75) == pytest.approx(0.5) and f(1.0) == pytest.approx(1.0)


def test_cos_one_cycle_fastai_shape():
    p = S.cos_one_cycle(div=25, div_final=1e5, pct_start=0.25, moms=(0.95, 0.85, 0.95))
    assert p.lr(0) == pytest.approx(1 / 25)
    assert p.lr(0.25) == pytest.approx(1.0)
    assert p.lr(1.0) == pytest.approx(1e-5)
    # halfway through the warm-up: the mean of start and peak (cosine midpoint)
    assert p.lr(0.125) == pytest.approx((1 / 25 + 1) / 2)
    # halfway through annealing
    assert p.lr(0.625) == pytest.approx((1 + 1e-5) / 2)
    assert p.mom(0) == 0.95 and p.mom(0.25) == pytest.approx(0.85) and p.mom(1) == pytest.approx(0.95)


def _clr_closed(t, nb, div, pct, mm, mn):
    """DESIGN.md's reference formula, written out independently."""
    c = int(nb * (1 - pct / 100) / 2)
    if t <= c:
        q = t / c
    elif t <= 2 * c:
        q = 1 - (t - c) / c
    else:
        p = (t - 2 * c) / (nb - 2 * c)
        return (1 - 0.99 * p) / div, mm
    return (1 + q * (div - 1)) / div, mm + q * (mn - mm)


@pytest.mark.parametrize("nb", [21, 40, 101])
def test_clr_beta_matches_closed_form(nb):
    p = S.clr_beta(nb, 10, 10, 0.95, 0.85)
    for t in range(nb):
        lr, mom = _clr_closed(t, nb, 10, 10, 0.95, 0.85)
        assert p.lr(t / nb) == pytest.approx(lr, abs=1e-12)
        assert p.mom(t / nb) == pytest.approx(mom, abs=1e-12)


def _run_pair(opt_cls, n_groups, total, kw, opt_kw, shift=0):
    """Torch's OneCycleLR on one optimizer, our Scheduler with ``torch_one_cycle`` on a twin;
    ``shift`` moves ours that many steps ahead (the negative control)."""
    params = [[torch.nn.Parameter(torch.randn(3))] for _ in range(n_groups)]
    peaks = [0.1 * (i + 1) for i in range(n_groups)]
    clones = [[torch.nn.Parameter(p[0].detach().clone())] for p in params]
    opt_t = opt_cls([{"params": p} for p in params], lr=0.1, **opt_kw)
    opt_o = opt_cls([{"params": p, "lr": lr} for p, lr in zip(clones, peaks)], lr=0.1, **opt_kw)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt_t, max_lr=peaks, total_steps=total, **kw)
    mom_kw = {"base_momentum": kw.get("base_momentum", 0.85), "max_momentum": kw.get("max_momentum", 0.95)}
    args = {k: v for k, v in kw.items() if k not in mom_kw}
    policy = S.torch_one_cycle(total, **args, **mom_kw)
    lr, mom = policy.lr, policy.mom
    if shift:
        lr, mom = (lambda p: policy.lr(p + shift / total)), (lambda p: policy.mom(p + shift / total))
    ours = Scheduler(opt_o, total, lr=lr, momentum=mom)
    return opt_t, ref, opt_o, ours


def _parity_mismatches(opt_t, ref, opt_o, total, key):
    """Every (step, group, what) where our LR or momentum differs from OneCycleLR's, stepping both."""
    bad = []
    for step in range(total):
        for i, (gt, go) in enumerate(zip(opt_t.param_groups, opt_o.param_groups)):
            if go["lr"] != pytest.approx(gt["lr"], rel=1e-9, abs=1e-12):
                bad.append((step, i, "lr"))
            mt = gt[key][0] if key == "betas" else gt[key]
            mo = go[key][0] if key == "betas" else go[key]
            if mo != pytest.approx(mt, abs=1e-9):
                bad.append((step, i, "momentum"))
        for o in (opt_t, opt_o):
            for g in o.param_groups:
                g["params"][0].grad = torch.zeros(3)
            o.step()
        ref.step()
    return bad


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("opt_cls,opt_kw", [(torch.optim.SGD, {"momentum": 0.9}), (torch.optim.Adam, {})])
@pytest.mark.parametrize("n_groups", [1, 2, 4])
def test_parity_with_torch_onecycle(anneal, three_phase, opt_cls, opt_kw, n_groups):
    total = 37
    kw = dict(pct_start=0.3, anneal_strategy=anneal, three_phase=three_phase, div_factor=25.0,
              final_div_factor=1e4)
    opt_t, ref, opt_o, _ = _run_pair(opt_cls, n_groups, total, kw, opt_kw)
    key = "betas" if opt_cls is torch.optim.Adam else "momentum"
    assert _parity_mismatches(opt_t, ref, opt_o, total, key) == []


@pytest.mark.parametrize("shift", [1, -1])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_parity_check_detects_a_schedule_one_step_off(shift, anneal):
    """Negative control: the same comparison, with our schedule one step ahead (or behind) of
    torch's, reports a mismatch in LR and momentum of every group at nearly every step."""
    total = 37
    kw = dict(pct_start=0.3, anneal_strategy=anneal, three_phase=False, div_factor=25.0, final_div_factor=1e4)
    opt_t, ref, opt_o, _ = _run_pair(torch.optim.SGD, 2, total, kw, {"momentum": 0.9}, shift=shift)
    bad = _parity_mismatches(opt_t, ref, opt_o, total, "momentum")
    assert {what for _, _, what in bad} == {"lr", "momentum"}
    assert {i for _, i, _ in bad} == {0, 1}
    # a one-step shift agrees only where the schedule is flat: at most the held end step(s)
    assert len({step for step, _, _ in bad}) >= total - 2


# ---- property tests: every accepted schedule stays finite, positive, and at most the peak ----
@settings(max_examples=60, deadline=None)
@given(div=st.floats(1.0, 1e3), div_final=st.floats(1.0, 1e6), pct_start=st.floats(0.0, 1.0),
       pct=st.floats(0.0, 1.0))
def test_cos_one_cycle_bounded(div, div_final, pct_start, pct):
    v = S.cos_one_cycle(div, div_final, pct_start).lr(pct)
    assert math.isfinite(v) and 0 < v <= 1.0 + 1e-12


@settings(max_examples=60, deadline=None)
@given(nb=st.integers(4, 500), div=st.floats(1.0, 100.0), pct=st.floats(0.0, 60.0), x=st.floats(0.0, 1.0))
def test_clr_beta_bounded(nb, div, pct, x):
    if int(nb * (1 - pct / 100) / 2) < 1:
        with pytest.raises(ValueError):
            S.clr_beta(nb, div, pct)
        return
    v = S.clr_beta(nb, div, pct).lr(x)
    assert math.isfinite(v) and 0 < v <= 1.0 + 1e-12


@settings(max_examples=60, deadline=None)
@given(total=st.integers(10, 1000), pct_start=st.floats(0.05, 0.45), x=st.floats(0.0, 1.0),
       three=st.booleans(), anneal=st.sampled_from(["cos", "linear"]))
def test_torch_shape_bounded(total, pct_start, x, three, anneal):
    v = S.torch_one_cycle(total, pct_start=pct_start, three_phase=three, anneal_strategy=anneal).lr(x)
    assert math.isfinite(v) and 0 < v <= 1.0 + 1e-12


@pytest.mark.parametrize("call,arg", [
    (lambda: S.cos_one_cycle(div=0), "div"),
    (lambda: S.cos_one_cycle(div=-1), "div"),
    (lambda: S.cos_one_cycle(div_final=float("nan")), "div_final"),
    (lambda: S.cos_one_cycle(pct_start=1.5), "pct_start"),
    (lambda: S.cos_one_cycle(moms=(0.95, 1.2, 0.95)), "moms"),
    (lambda: S.cos_one_cycle(moms=(0.95,)), "moms"),
    (lambda: S.clr_beta(100, 0, 10), "div"),
    (lambda: S.clr_beta(100, 10, 100), "pct"),
    (lambda: S.clr_beta(100, 10, -5), "pct"),
    (lambda: S.clr_beta(100, 10, 10, 0.95), "mom_max"),
    (lambda: S.clr_beta(100, 10, 10, 0.95, -0.1), "mom_min"),
    (lambda: S.torch_one_cycle(1), "total_steps"),
    (lambda: S.torch_one_cycle(10, anneal_strategy="tri"), "anneal_strategy"),
    (lambda: S.exp(0, 1), "start"),
    (lambda: S.combine([0.5, 0.6], [S.const(1), S.const(1)]), "pcts"),
])
def test_bad_schedule_input(call, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        call()
