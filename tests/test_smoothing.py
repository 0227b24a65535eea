"""Smoothing: the causal EMA the finder's stop rule reads (hand-written reference, its lag), and the
centred smoother the plots draw (against an independent weighted least-squares fit, exact on lines,
no lag on a dip or a step, robust to spikes and to a diverged tail, the long-curve path)."""

import math

import numpy as np
import pytest

from onecycle import smoothing as sm
from test_suggest import _ema  # the bias-corrected EMA, written out: one copy


# ---- the causal EMA ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [40, 100, 300])
def test_the_smoothing_does_not_lag_a_symmetric_dip(n):
    """The smoothed curve's minimum lies within a tenth of the curve (in log LR, on an even log grid)
    of the raw dip, at any length; fastai's fixed 0.98 lands far past it."""
    x = np.linspace(-7, 1, n)  # log10 LR
    dip = x[n // 2]
    loss = 1 + (x - dip) ** 2  # symmetric about the dip
    smooth = _ema(loss, sm.smoothing_beta(n))
    assert sm.ema(loss, sm.smoothing_beta(n)) == pytest.approx(smooth, rel=1e-12)
    span = x[-1] - x[0]
    assert abs(x[int(np.argmin(smooth))] - dip) <= 0.1 * span
    assert abs(x[int(np.argmin(_ema(loss, 0.98)))] - dip) > 0.1 * span if n <= 100 else True  # the old lag


def test_the_smoothing_follows_a_step_within_a_tenth_of_the_curve():
    n = 100
    step = [2.0] * 50 + [1.0] * 50
    smooth = _ema(step, sm.smoothing_beta(n))
    # within 5% of the new level at most n/10 + a few points after the step: e-folding time 1/(1-beta) = 10
    settled = next(i for i in range(50, n) if smooth[i] < 1.05)
    assert settled - 50 <= 3 * 10 and sm.smoothing_beta(n) == pytest.approx(0.9)
    assert sm.smoothing_beta(5) == 0.5 and sm.smoothing_beta(1000) == pytest.approx(0.99)


def test_smooth_loss_defaults_and_state_dict_round_trip():
    # the default factor is 0.9: [1, 0] smooths to 1 and 0.09 / (1 - 0.81)
    assert sm.ema([1.0, 0.0]) == pytest.approx([1.0, 0.09 / 0.19], rel=1e-12)
    s = sm.SmoothLoss()
    assert s.add(1.0) == pytest.approx(1.0) and s.add(0.0) == pytest.approx(0.09 / 0.19, rel=1e-12)
    s = sm.SmoothLoss(0.8)
    for v in (3.0, 2.0, 4.0):
        s.add(v)
    state = s.state_dict()
    assert state == {"beta": 0.8, "avg": pytest.approx(0.2 * (0.8**2 * 3 + 0.8 * 2 + 4), rel=1e-12), "count": 3}
    t = sm.SmoothLoss(0.3)  # the loaded state replaces its factor too
    t.load_state_dict(state)
    assert t.state_dict() == state
    assert t.add(1.0) == s.add(1.0) == pytest.approx(_ema([3.0, 2.0, 4.0, 1.0], 0.8)[-1], rel=1e-12)




def test_extend_is_add_in_turn_and_carries_on_from_the_state():
    values = [3.0, 2.0, 4.0, 1.0, 7.5]
    s = sm.SmoothLoss(0.8)
    assert s.extend(values[:2]) == _ema(values[:2], 0.8)  # the same arithmetic: equal, not approximately
    assert s.extend(values[2:]) == _ema(values, 0.8)[2:]  # a second block continues the first
    assert s.state_dict()["count"] == 5 and s.extend([]) == [] and s.state_dict()["count"] == 5
    t = sm.SmoothLoss(0.8)
    assert [t.add(v) for v in values] == _ema(values, 0.8)

# ---- the centred smoother -----------------------------------------------------------------------------
def _median5(y):
    """The 5-point running median, fewer points at the ends, non-finite points left out."""
    y = [v if math.isfinite(v) else math.nan for v in y]
    return [float(np.nanmedian(y[max(0, i - 2):i + 3])) for i in range(len(y))]


def _reference(y, sd):
    """The local linear fit by weighted least squares (numpy's lstsq) at each point: the definition
    ``centred`` computes with convolutions."""
    m = np.asarray(_median5(y))
    n, out = len(m), []
    for i in range(n):
        j = np.arange(max(0, i - math.ceil(4 * sd)), min(n, i + math.ceil(4 * sd) + 1))
        j = j[np.isfinite(m[j])]
        w = np.sqrt(np.exp(-0.5 * ((j - i) / sd) ** 2))
        a = np.stack([np.ones(len(j)), j - i], 1) * w[:, None]
        out.append(np.linalg.lstsq(a, m[j] * w, rcond=None)[0][0])
    return out


def test_centred_is_a_local_linear_fit_over_the_running_median():
    rng = np.random.default_rng(0)
    y = list(np.cumsum(rng.normal(size=120)))
    assert sm.running_median(y).tolist() == pytest.approx(_median5(y), rel=1e-12)
    for sd in (1.0, 2.4, 7.0):
        assert sm.centred(y, sd) == pytest.approx(_reference(y, sd), rel=1e-9, abs=1e-9)
    assert sm.centred_width(100) == 2.0 and sm.centred_width(20) == 1.0 and sm.centred_width(1000) == 20.0


def test_centred_keeps_a_line_and_has_no_lag():
    line = [3.0 - 0.5 * i for i in range(50)]  # a local line is fitted exactly (the median window is
    out = sm.centred(line)  # shorter at the ends, as pandas' rolling(5, center=True, min_periods=1))
    assert out[10:-10] == pytest.approx(line[10:-10], abs=1e-9)
    assert all(abs(a - b) <= 0.5 for a, b in zip(out, line))
    x = np.linspace(-3, 3, 101)
    dip = list(1 + (x - 0.6) ** 2)  # the dip at point 60: a lagging EMA bottoms out later
    assert int(np.argmin(sm.centred(dip))) == 60
    assert int(np.argmin(_ema(dip, sm.smoothing_beta(101)))) > 63  # negative control: the EMA's lag
    step = [2.0] * 50 + [1.0] * 50  # crosses halfway exactly between the two levels
    c = sm.centred(step)
    assert c[49] > 1.5 > c[50] and c[49] - 1.5 == pytest.approx(1.5 - c[50]) and c[45] > 1.95 > 1.05 > c[54]
    assert _ema(step, 0.9)[55] > 1.5  # the EMA is still above halfway 5 points later


def test_centred_ignores_spikes_and_gaps_and_a_diverged_tail():
    y = [1.0] * 40
    y[20] = 50.0  # a single spike: the running median removes it
    assert sm.centred(y) == pytest.approx([1.0] * 40)
    y[20] = math.nan  # a gap: NaN where the point is missing, the rest smoothed around it
    out = sm.centred(y)
    assert math.isnan(out[20]) and out[:20] == pytest.approx([1.0] * 20)
    assert sm.centred([]) == [] and sm.centred([5.0]) == [5.0]
    with pytest.raises(ValueError, match="width must be positive"):
        sm.centred([1.0, 2.0], width=0)
    # a range test that falls then blows up: the cut keeps the tail's 1e6 from pulling up its floor
    fall = [2.0 - 1.5 * i / 100 for i in range(101)] + [10.0 ** (8 + k) for k in range(10)]
    curve = sm.range_test_curve(fall)  # the floor (within 15% of the fall: points 85-100) keeps its minimum
    assert int(np.argmin(curve)) in range(85, 101) and curve[94] == pytest.approx(fall[94], abs=0.02)
    assert sm.centred(fall)[94] > 1e3  # negative control: uncut, the tail lifts the floor
    acc = [0.1 + 0.8 * min(i, 30) / 30 for i in range(40)]  # higher is better: cut on the other side
    assert max(sm.range_test_curve(acc, lower=False)) == pytest.approx(0.9, abs=0.01)


def test_a_long_curve_is_smoothed_on_block_means():
    rng = np.random.default_rng(1)
    n = 20000
    y = list(np.exp(-np.arange(n) / 4000) + 0.05 * rng.normal(size=n))
    out = np.asarray(sm.centred(y))
    truth = np.exp(-np.arange(n) / 4000)
    assert len(out) == n and np.abs(out - truth)[200:-200].max() < 0.01  # on the curve, no lag
    assert abs(out[10000] - truth[10000]) < 0.005
