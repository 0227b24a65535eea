"""warmup.py: WSD and linear warmup then cosine, against their closed forms (Hägele et al. 2024's
cool-downs written out here), against transformers' step-based schedules, and as a fit trains them."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from onecycle import schedules as S
from onecycle.optim.scheduler import Scheduler


def _wsd_closed(t, n, warmup, decay, shape):
    """Step ``t`` of ``n``: t/W in the warmup, 1 on the plateau, then at x = (t - (n - D)) / D through
    the cool-down 1 - x, (1 + cos(pi x)) / 2 or 1 - sqrt(x) (Hägele et al. 2024, section 3)."""
    if t < warmup:
        return t / warmup
    if t <= n - decay:
        return 1.0
    x = (t - (n - decay)) / decay
    return {"linear": 1 - x, "cos": (1 + math.cos(math.pi * x)) / 2, "1-sqrt": 1 - math.sqrt(x)}[shape]


@pytest.mark.parametrize("shape", ["linear", "cos", "1-sqrt"])
def test_wsd_hand_values(shape):
    f = S.wsd(0.1, 0.2, shape)
    assert f(0.0) == 0.0 and f(0.05) == pytest.approx(0.5) and f(0.1) == 1.0
    assert f(0.5) == 1.0 and f(0.8) == 1.0 and f(1.0) == pytest.approx(0.0, abs=1e-12)
    half = {"linear": 0.5, "cos": 0.5, "1-sqrt": 1 - math.sqrt(0.5)}[shape]  # halfway through the cool-down
    assert f(0.9) == pytest.approx(half)
    quarter = {"linear": 0.75, "cos": (1 + math.cos(math.pi / 4)) / 2, "1-sqrt": 0.5}[shape]
    assert f(0.85) == pytest.approx(quarter)


@pytest.mark.parametrize("shape", ["linear", "cos", "1-sqrt"])
@pytest.mark.parametrize("n,warmup,decay", [(100, 5, 20), (37, 3, 7), (50, 0, 10), (40, 4, 0)])
def test_wsd_matches_the_closed_form_at_every_step(shape, n, warmup, decay):
    f = S.wsd(warmup / n, decay / n, shape)
    for t in range(n + 1):
        assert f(t / n) == pytest.approx(_wsd_closed(t, n, warmup, decay, shape), abs=1e-12), t


@pytest.mark.parametrize("shape,theirs", [("linear", "linear"), ("cos", "cosine"), ("1-sqrt", "1-sqrt")])
def test_wsd_matches_transformers_get_wsd_schedule(shape, theirs):
    opt_mod = pytest.importorskip("transformers.optimization")
    n, warmup, decay = 200, 10, 40
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = opt_mod.get_wsd_schedule(opt, num_warmup_steps=warmup, num_decay_steps=decay, num_training_steps=n,
                                     decay_type=theirs, min_lr_ratio=0.0)
    f = S.wsd(warmup / n, decay / n, shape)
    for t in range(n):
        assert f(t / n) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12), t
        opt.step()
        sched.step()


def test_warmup_cos_matches_transformers_cosine_with_warmup():
    opt_mod = pytest.importorskip("transformers.optimization")
    n, warmup = 120, 12
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = opt_mod.get_cosine_schedule_with_warmup(opt, warmup, n)
    f = S.warmup_cos(warmup / n)
    for t in range(n):
        assert f(t / n) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12), t
        opt.step()
        sched.step()


def test_warmup_cos_hand_values_and_its_end():
    f = S.warmup_cos(0.2, end=0.1)
    assert f(0.0) == 0 and f(0.1) == pytest.approx(0.5) and f(0.2) == 1.0
    assert f(0.6) == pytest.approx(0.1 + 0.9 * 0.5) and f(1.0) == pytest.approx(0.1)
    assert S.warmup_cos(0.0)(0.0) == 1.0 and S.warmup_cos(0.0)(1.0) == pytest.approx(0.0)


def test_wsd_without_cool_down_is_warmup_then_constant():
    f = S.wsd(0.25, 0.0)
    assert [f(p) for p in (0.0, 0.125, 0.25, 0.5, 1.0)] == [0.0, 0.5, 1.0, 1.0, 1.0]


@given(st.floats(0, 0.5), st.floats(0, 0.5), st.sampled_from(["linear", "cos", "1-sqrt"]), st.floats(0, 1))
def test_wsd_bounded_and_never_rising_after_the_warmup(w, d, shape, pct):
    f = S.wsd(w, d, shape)
    assert 0.0 <= f(pct) <= 1.0
    if pct >= w:
        assert f(min(pct + 0.01, 1.0)) <= f(pct) + 1e-12


def test_a_fit_trains_the_wsd_values_step_by_step():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.3)
    n = 50
    Scheduler(opt, n, lr=S.wsd(0.1, 0.3, "1-sqrt"))
    seen = []
    for _ in range(n):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
    assert seen == pytest.approx([0.3 * _wsd_closed(t, n, 5, 15, "1-sqrt") for t in range(n)], abs=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda: S.wsd(0.5, 0.6), r"warmup_pct \+ decay_pct must be at most 1"),
    (lambda: S.wsd(0.1, 0.2, "exp"), "decay must be one of"),
    (lambda: S.wsd(-0.1, 0.2), "warmup_pct must be >= 0"),
    (lambda: S.wsd(0.1, 1.5), "decay_pct must be <= 1"),
    (lambda: S.warmup_cos(1.0), "warmup_pct must be < 1"),
    (lambda: S.warmup_cos(0.1, end=2), "end must be <= 1"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    with pytest.raises(TypeError, match="warmup_pct must be a number"):
        S.wsd("0.1", 0.2)
