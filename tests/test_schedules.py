"""Schedules against closed forms and torch's OneCycleLR."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onecycle import schedules as S
from onecycle.compat import OneCycleLR
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


# ---- exact boundaries and messages of every validator (each value at, just inside, just outside) ------
@pytest.mark.parametrize("call,message", [
    (lambda: S.check_number("x", True), r"^x must be a number, got True$"),
    (lambda: S.check_number("x", "1"), r"^x must be a number, got '1'$"),
    (lambda: S.check_number("x", None), r"^x must be a number, got None$"),
    (lambda: S.check_number("x", math.inf), r"^x must be finite, got inf$"),
    (lambda: S.check_number("x", 0, low=0, low_open=True), r"^x must be > 0, got 0$"),
    (lambda: S.check_number("x", -1, low=0), r"^x must be >= 0, got -1$"),
    (lambda: S.check_number("x", 1, high=1, high_open=True), r"^x must be < 1, got 1$"),
    (lambda: S.check_number("x", 2, high=1), r"^x must be <= 1, got 2$"),
    (lambda: S.exp(1, 0), r"^end must be > 0, got 0$"),
    (lambda: S.exp(0, 1), r"^start must be > 0, got 0$"),
    (lambda: S.combine([0.5], [S.const(1), S.const(1)]),
     r"^pcts and scheds must have the same non-zero length, got 1 and 2$"),
    (lambda: S.combine([], []), r"^pcts and scheds must have the same non-zero length, got 0 and 0$"),
    (lambda: S.combine([1.5, -0.5], [S.const(1), S.const(1)]), r"^pcts\[1\] must be >= 0, got -0.5$"),
    (lambda: S.combine([0.5, 0.5 + 1e-6], [S.const(1), S.const(1)]), r"^pcts must sum to 1"),
    (lambda: S.repeat(S.const(1), 0), r"^n_cycle must be an int >= 1, got 0$"),
    (lambda: S.repeat(S.const(1), True), r"^n_cycle must be an int >= 1, got True$"),
    (lambda: S.repeat(S.const(1), 2.0), r"^n_cycle must be an int >= 1, got 2.0$"),
    (lambda: S.cos_one_cycle(div=0), r"^div must be > 0, got 0$"),
    (lambda: S.cos_one_cycle(div_final=0), r"^div_final must be > 0, got 0$"),
    (lambda: S.cos_one_cycle(pct_start=-0.1), r"^pct_start must be >= 0, got -0.1$"),
    (lambda: S.cos_one_cycle(pct_start=1.1), r"^pct_start must be <= 1, got 1.1$"),
    (lambda: S.cos_one_cycle(moms=(0.95, 1.0, 0.95)), r"^moms\[1\] must be < 1, got 1.0$"),
    (lambda: S.cos_one_cycle(moms=(-0.1, 0.5)), r"^moms\[0\] must be >= 0, got -0.1$"),
    (lambda: S.cos_one_cycle(moms=[0.9] * 4),
     r"^moms must be a tuple of 2 or 3 momentums, got \[0.9, 0.9, 0.9, 0.9\]$"),
    (lambda: S.cos_one_cycle(moms=0.9), r"^moms must be a tuple of 2 or 3 momentums, got 0.9$"),
    (lambda: S.clr_beta(0, 10, 10), r"^nb \(iterations per cycle\) must be an int >= 1, got 0$"),
    (lambda: S.clr_beta(True, 10, 10), r"^nb \(iterations per cycle\) must be an int >= 1, got True$"),
    (lambda: S.clr_beta(4.0, 10, 10), r"^nb \(iterations per cycle\) must be an int >= 1, got 4.0$"),
    (lambda: S.clr_beta(100, 0, 10), r"^div must be > 0, got 0$"),
    (lambda: S.clr_beta(100, 10, 100), r"^pct must be < 100, got 100$"),
    (lambda: S.clr_beta(100, 10, -1), r"^pct must be >= 0, got -1$"),
    (lambda: S.clr_beta(3, 10, 40), r"^a cycle of nb=3 iterations is too short for pct=40.0: the rising phase would "
                                    r"have no iteration$"),
    (lambda: S.clr_beta(100, 10, 10, 0.95, None), r"^mom_max and mom_min go together, got 0.95 and None$"),
    (lambda: S.clr_beta(100, 10, 10, None, 0.85), r"^mom_max and mom_min go together, got None and 0.85$"),
    (lambda: S.clr_beta(100, 10, 10, 1.0, 0.85), r"^mom_max must be < 1, got 1.0$"),
    (lambda: S.clr_beta(100, 10, 10, -0.1, 0.85), r"^mom_max must be >= 0, got -0.1$"),
    (lambda: S.clr_beta(100, 10, 10, 0.95, 1.0), r"^mom_min must be < 1, got 1.0$"),
    (lambda: S.clr_beta(100, 10, 10, 0.95, -0.1), r"^mom_min must be >= 0, got -0.1$"),
    (lambda: S.torch_one_cycle(1), r"^total_steps must be an int >= 2, got 1$"),
    (lambda: S.torch_one_cycle(True), r"^total_steps must be an int >= 2, got True$"),
    (lambda: S.torch_one_cycle(10.0), r"^total_steps must be an int >= 2, got 10.0$"),
    (lambda: S.torch_one_cycle(10, anneal_strategy="COS"), r"^anneal_strategy must be 'cos' or 'linear', got 'COS'$"),
    (lambda: S.torch_one_cycle(10, pct_start=0), r"^pct_start must be > 0, got 0$"),
    (lambda: S.torch_one_cycle(10, pct_start=1), r"^pct_start must be < 1, got 1$"),
    (lambda: S.torch_one_cycle(10, div_factor=0), r"^div_factor must be > 0, got 0$"),
    (lambda: S.torch_one_cycle(10, final_div_factor=0), r"^final_div_factor must be > 0, got 0$"),
    (lambda: S.torch_one_cycle(10, base_momentum=1.0), r"^moms\[0\] must be < 1, got 1.0$"),
    (lambda: S.torch_one_cycle(10, max_momentum=-0.5), r"^moms\[1\] must be >= 0, got -0.5$"),
])
def test_validators_exact_messages(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_validators_accept_their_boundaries():
    assert S.check_number("x", 0, low=0) == 0.0 and S.check_number("x", 1, high=1) == 1.0
    assert S.check_number("x", torch.tensor(0.5), low=0, high=1) == 0.5  # anything with __float__
    assert S.check_number("x", 3) == 3.0 and type(S.check_number("x", 3)) is float
    assert S.exp(1e-300, 1e-300)(0.5) == 1e-300
    assert S.combine([0.0, 1.0], [S.const(7), S.lin(0, 1)])(0.5) == 0.5
    assert S.repeat(S.lin(0, 1), 1) == S.lin(0, 1)  # one cycle: the schedule itself
    p = S.cos_one_cycle(div=1e-3, div_final=1e-3, pct_start=0.5, moms=(0.0, 0.0))
    assert p.lr(0.0) == pytest.approx(1000.0) and p.mom(0.5) == 0.0
    assert S.cos_one_cycle(pct_start=1.0).lr(1.0) == pytest.approx(1.0)
    assert S.cos_one_cycle(pct_start=0.0).lr(0.0) == pytest.approx(1.0)  # no warm-up: starts at the peak
    assert S.clr_beta(2, 10, 0).lr(0.0) == pytest.approx(0.1)  # nb=2, pct=0: c=1, the shortest legal cycle
    assert S.clr_beta(4, 10, 50).lr(0.25) == pytest.approx(1.0)  # c = int(4 * 0.5 / 2) = 1
    assert S.clr_beta(100, 10, 10, 0.0, 0.0).mom(0.0) == 0.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=2)  # the shortest: same as torch
    assert S.torch_one_cycle(2).lr(0.0) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    opt.step()
    ref.step()
    assert S.torch_one_cycle(2).lr(0.5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    assert S.torch_one_cycle(10, base_momentum=0.0, max_momentum=0.0).mom(0.5) == 0.0


def test_defaults_are_the_documented_ones():
    assert S.cos_one_cycle() == S.cos_one_cycle(25.0, 1e5, 0.25, (0.95, 0.85, 0.95))
    assert S.cos_one_cycle(moms=(0.9, 0.8)) == S.cos_one_cycle(moms=(0.9, 0.8, 0.9))  # two: mirrored back
    assert S.cos_one_cycle(moms=None).mom is None
    p = S.cos_one_cycle(moms=(0.9, 0.8, 0.7))
    assert (p.mom(0.0), p.mom(0.25), p.mom(1.0)) == pytest.approx((0.9, 0.8, 0.7))
    # torch's OneCycleLR defaults: pct_start 0.3, cos, div 25, final div 1e4, two phases, moms 0.85/0.95
    assert S.torch_one_cycle(100) == S.torch_one_cycle(100, 0.3, "cos", 25.0, 1e4, False, 0.85, 0.95)
    lr = S.torch_one_cycle(100).lr
    assert lr(0.0) == pytest.approx(1 / 25) and lr(0.99) == pytest.approx(1 / 25 / 1e4)
    assert S.torch_one_cycle(100, base_momentum=None).mom is None
    assert S.clr_beta(100, 10, 10).mom is None


def test_torch_shape_with_a_rise_of_no_width():
    """pct_start * total_steps == 1 puts the rise's end at step 0: torch's OneCycleLR divides by zero
    there (and this shape did, before); now step 0 is the peak, and every later step is the fall's
    value, the same as ``compat.OneCycleLR``'s."""
    with pytest.raises(ZeroDivisionError):
        torch.optim.lr_scheduler.OneCycleLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9),
                                            max_lr=1.0, total_steps=10, pct_start=0.1)
    policy = S.torch_one_cycle(10, pct_start=0.1)
    assert policy.lr(0.0) == 1.0 and policy.mom(0.0) == 0.85
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.1)
    for k in range(10):
        assert policy.lr(k / 10) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        assert policy.mom(k / 10) == pytest.approx(opt.param_groups[0]["momentum"], rel=1e-12)
        opt.step()
        sched.step()
    # by hand: the fall is steps 0..9, a cosine from 1 to 1/25/1e4; step 9 is its end
    assert policy.lr(0.9) == 1 / 25 / 1e4


def test_snap_boundary_and_ramp_peak():
    """Progress times a step count lands within 1e-7 of the step it stands for: snapped to it."""
    shape = S.clr_beta(10, 10, 0)  # c = 5: up over steps 0..5, down over 5..10
    assert shape.lr(0.5) == 1.0 and shape.lr(0.5 - 1e-9) == 1.0  # snapped onto the peak step
    assert shape.lr(0.5 - 1e-6) < 1.0  # 1e-5 steps off: not snapped
    assert shape.lr(0.5 + 1e-6) < 1.0
    assert shape.lr(0.0) == pytest.approx(0.1) and shape.lr(1.0) == pytest.approx(0.1)


def test_combined_and_repeat_at_edges():
    f = S.combine([0.5, 0.5], [S.lin(0, 1), S.lin(10, 20)])
    assert f(0.5) == 1.0  # the edge belongs to the first phase
    assert f(0.5 + 1e-12) == pytest.approx(10.0)
    assert f(1.0) == 20.0
    g = S.combine([0.5, 0.5, 0.0], [S.lin(0, 1), S.lin(10, 20), S.const(5)])
    assert g(1.0) == 20.0  # a zero-width last phase is never the one that answers inside [0, 1]
    r = S.repeat(S.lin(0, 1), 3)
    assert r(1 / 3) == 0.0 and r(1.0) == 1.0 and r(0.5) == pytest.approx(0.5)


def test_step_and_triangular_closed_forms():
    st_ = S.step((0.5, 0.75), 0.1)
    assert [st_(p) for p in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert S.step() == S.Step((0.5, 0.75), 0.1)
    assert S.step([0.2], 0.5)(0.2) == 0.5
    tri = S.triangular(4.0, 2)
    assert [tri(p) for p in (0, 0.125, 0.25, 0.375, 0.5, 1)] == pytest.approx([0.25, 0.625, 1, 0.625, 0.25, 0.25])
    assert S.triangular() == S.Triangular(4.0, 1) and S.triangular(1.0, 1)(0.3) == 1.0
    for call, message in [
        (lambda: S.step(0.5), r"^milestones must be a sequence of fractions, got 0.5$"),
        (lambda: S.step((0.0,)), r"^milestones\[0\] must be > 0, got 0.0$"),
        (lambda: S.step((0.5, 1.0)), r"^milestones\[1\] must be < 1, got 1.0$"),
        (lambda: S.step((0.5, 0.5)), r"^milestones must increase, got \[0.5, 0.5\]$"),
        (lambda: S.step((0.5,), 0), r"^gamma must be > 0, got 0$"),
        (lambda: S.step((0.5,), 1.5), r"^gamma must be <= 1, got 1.5$"),
        (lambda: S.triangular(0.5), r"^div must be >= 1, got 0.5$"),
        (lambda: S.triangular(4.0, 0), r"^cycles must be an int >= 1, got 0$"),
        (lambda: S.triangular(4.0, True), r"^cycles must be an int >= 1, got True$"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            call()
    assert S.step((0.5,), 1)(0.9) == 1.0  # gamma 1 is allowed (no decay)


def test_second_phases_and_non_default_torch_settings():
    p = S.cos_one_cycle(moms=(0.9, 0.8, 0.7))
    assert p.mom(0.625) == pytest.approx((0.8 + 0.7) / 2)  # the second phase starts at moms[1]
    tri = S.triangular(4.0, 2)
    assert tri(0.75) == pytest.approx(1.0) and tri(0.875) == pytest.approx(0.625)  # the second cycle's peak
    assert S.Repeat(S.lin(0, 1), 1)(0.5) == 0.5
    f = S.combine([0.7, 0.3 - 1e-10], [S.const(1.0), S.const(2.0)])  # edges end a hair below 1
    assert f(1.0) == 2.0  # the last phase answers past its edge
    assert S.torch_one_cycle(100, base_momentum=None).lr(0.0) == pytest.approx(1 / 25)
    with pytest.raises(ValueError, match=r"^a cycle of nb=1 iterations is too short for pct=0.0"):
        S.clr_beta(1, 10, 0)
    with pytest.raises(ValueError, match=r"^a cycle of nb=4 iterations is too short for pct=50.5"):
        S.clr_beta(4, 10, 50.5)  # int(4 * 0.495 / 2) = 0
    # every setting reaches the shape: non-default ones against torch's OneCycleLR
    total, kw = 40, dict(pct_start=0.4, div_factor=10.0, final_div_factor=100.0, anneal_strategy="linear")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total, **kw)
    ours = S.torch_one_cycle(total, **kw)
    for k in range(total):
        assert ours.lr(k / total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        ref.step()


def test_phase_at_by_hand():
    """``phase_at`` (what ``compat.OneCycleLR`` steps by), by OneCycleLR's own rule: phase ends at
    ``pct_start * n - 1`` (and ``2 * pct_start * n - 2`` for three phases) and ``n - 1``; the fraction is
    ``(step - start) / (end - start)``, a phase's end belongs to it, and past the last it is unclamped."""
    two = S.TorchOneCycle(10)  # ends at steps 2 and 9
    assert two.ends == (2.0, 9.0)
    assert [two.phase_at(s) for s in (0, 1, 2, 5.5, 9, 10)] == [
        (0, 0.0), (0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0), (1, 8 / 7)]
    three = S.TorchOneCycle(10, three_phase=True)  # ends at steps 2, 4 and 9
    assert three.ends == (2.0, 4.0, 9.0)
    assert [three.phase_at(s) for s in (1, 3, 4, 6.5)] == [(0, 0.5), (1, 0.5), (1, 1.0), (2, 0.5)]
    assert S.TorchOneCycle(10, pct_start=0.1).phase_at(0) == (0, 1.0)  # a phase of no width is complete


def test_points_by_hand():
    """``points``: each phase's (start, end) level, by OneCycleLR's names, as its phases are laid out:
    the LR rises from initial to max and falls to min (three phases: back to initial first, then to
    min), the momentum mirrors it between max and base."""
    two, three = S.TorchOneCycle(10), S.TorchOneCycle(10, three_phase=True)
    assert two.points() == two.points("lr") == (("initial", "max"), ("max", "min"))
    assert two.points("mom") == S.TorchOneCycle(10, value="mom").points() == (("max", "base"), ("base", "max"))
    assert three.points() == (("initial", "max"), ("max", "initial"), ("initial", "min"))
    assert three.points("mom") == (("max", "base"), ("base", "max"), ("max", "max"))
    assert S.TorchOneCycle(10, value="mom").points("lr") == two.points()  # asked for: not this one's
    policy = S.torch_one_cycle(10)  # its two shapes, named as points() and the docs name them
    assert (policy.lr.value, policy.mom.value) == ("lr", "mom")
