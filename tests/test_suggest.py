"""The suggestion rules and the divergence bound: hand-made curves with known answers, fastai's
published loops as references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecycle import suggest as sg
from onecycle.lr_finder import LRFindResult

# ---- suggestions on hand-made curves ----------------------------------------------------------------
LRS = [10.0 ** (k - 8) for k in range(8)]


def _fastai_valley_index(losses):
    """fastai's loop as published, max_end updated inside the inner loop, index clamped."""
    n = len(losses)
    lds, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return min(max(max_start + int(sections) + int(sections / 2), 0), n - 1)


def test_valley_known_answers():
    # longest decreasing subsequence 10,9,8,7,6,5 ends at 7, length 6: start 1, index 1 + 2 + 1
    assert sg.valley(LRS, [10, 9, 12, 8, 7, 11, 6, 5]) == LRS[4]
    assert sg.valley(LRS, [3, 5, 4, 3, 2, 1, 1.5, 6]) == LRS[1]
    assert sg.valley(LRS[:2], [2, 1]) == LRS[0]  # clamped where fastai would wrap to the end


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=2, max_size=40))
def test_valley_matches_fastai_loop(losses):
    lrs = [10.0 ** (k / 4 - 6) for k in range(len(losses))]
    assert sg.valley(lrs, losses) == lrs[_fastai_valley_index(losses)]


def test_slide_minimum_steep_known_answers():
    assert sg.slide(LRS, [0, 0, 0, 0, 0, 1, 3, 6], lr_diff=2, thresh=0.1) == LRS[2]
    assert sg.slide(LRS, [5, 4, 3, 2, 1, 1, 1, 1], lr_diff=2, thresh=0.1) == LRS[5]
    assert sg.minimum(LRS[:4], [3, 2, 1, 2]) == LRS[2] / 10
    assert sg.steep(LRS[:5], [5, 4.9, 3, 2.9, 2.8]) == LRS[1]


def test_val_steep_stays_below_the_validation_minimum():
    val = [3.0, 2.5, 1.0, 1.2, 5.0, 1.5]  # the steepest fall overall (5.0 -> 1.5) is past the minimum
    assert sg.val_steep(LRS[:6], val) == LRS[1] and LRS[1] < LRS[2]
    with pytest.raises(ValueError, match="never falls"):
        sg.val_steep(LRS[:4], [1, 2, 3, 4])


def test_val_min_and_its_light_smoothing():
    assert sg.val_min(LRS[:5], [3, 2, 1, 1.5, 4]) == LRS[2] / 2
    assert sg.val_min(LRS[:5], [3, 2, 1, 1.5, 4], div=10) == LRS[2] / 10
    lrs = [10.0 ** (k / 10 - 6) for k in range(60)]
    val = [2.0] * 30 + [2.0 - 0.05 * k for k in range(20)] + [1.05 + 0.1 * k for k in range(10)]
    out, _ = sg.suggest(lrs, val, val, skip_start=0, skip_end=0)
    # raw minimum at point 49; smoothed with 1 - 10/60 it bottoms out 2 points later
    smooth = _ema(val, 1 - 10 / 60)
    assert int(np.argmin(val)) == 49 and int(np.argmin(smooth)) == 51 and out["val_min"] == lrs[51] / 2
    assert sg.DEFAULT_RULE in sg.SUGGESTERS


def _ema(values, beta):
    """The bias-corrected EMA, written out."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


@pytest.mark.parametrize("n", [40, 100, 300])
def test_the_smoothing_does_not_lag_a_symmetric_dip(n):
    """The smoothed curve's minimum lies within a tenth of the curve (in log LR, on an even log grid)
    of the raw dip, at any length; fastai's fixed 0.98 lands far past it."""
    x = np.linspace(-7, 1, n)  # log10 LR
    dip = x[n // 2]
    loss = 1 + (x - dip) ** 2  # symmetric about the dip
    smooth = _ema(loss, sg.smoothing_beta(n))
    assert sg.ema(loss, sg.smoothing_beta(n)) == pytest.approx(smooth, rel=1e-12)
    span = x[-1] - x[0]
    assert abs(x[int(np.argmin(smooth))] - dip) <= 0.1 * span
    assert abs(x[int(np.argmin(_ema(loss, 0.98)))] - dip) > 0.1 * span if n <= 100 else True  # the old lag


def test_the_smoothing_follows_a_step_within_a_tenth_of_the_curve():
    n = 100
    step = [2.0] * 50 + [1.0] * 50
    smooth = _ema(step, sg.smoothing_beta(n))
    # within 5% of the new level at most n/10 + a few points after the step: e-folding time 1/(1-beta) = 10
    settled = next(i for i in range(50, n) if smooth[i] < 1.05)
    assert settled - 50 <= 3 * 10 and sg.smoothing_beta(n) == pytest.approx(0.9)
    assert sg.smoothing_beta(5) == 0.5 and sg.smoothing_beta(1000) == pytest.approx(0.99)


def test_median_suggestion_over_runs():
    runs = [{"val_min": 0.3, "valley": None}, {"val_min": 0.2, "valley": 0.01}, {"val_min": 0.45, "valley": None}]
    assert sg.median_suggestion(runs) == 0.3 and sg.median_suggestion(runs, "val_min") == 0.3
    assert sg.median_suggestion(runs, "valley") == 0.01  # runs without an answer are skipped
    assert sg.median_suggestion(runs[:2], "val_min") == pytest.approx(math.sqrt(0.3 * 0.2))  # even: geometric
    assert sg.median_suggestion([{"val_min": None}]) is None and sg.median_suggestion([]) is None
    res = LRFindResult(LRS, [LRS], [1.0] * 8, [1.0] * 8, suggestions={"val_min": 0.25})
    assert sg.median_suggestion([res, runs[0], runs[2]]) == 0.3  # LRFindResults and dicts mix
    with pytest.raises(ValueError, match="rule must be one of"):
        sg.median_suggestion(runs, "nope")


def test_nan_cuts_the_curve():
    assert sg.minimum(LRS[:5], [3, 2, 1, math.nan, 0]) == LRS[2] / 10
    assert sg.steep(LRS[:5], [3, 2, 1.5, math.inf, 0]) == LRS[0]
    with pytest.raises(ValueError, match="steep needs at least 2 finite points, got 1"):
        sg.steep(LRS[:3], [1, math.nan, 0])
    out, notes = sg.suggest(LRS, [5, math.nan, 4, 3, 2, 1, 0, 0], [], skip_start=0, skip_end=0)
    assert out["steep"] is None and out["minimum"] == LRS[0] / 10 and len(notes) >= 3


def _fastai_slide(lrs, losses, lr_diff=15, thresh=0.005, adjust_value=1.0):
    """fastai's ``slide`` as published (negative indices, np.gradient)."""
    loss_grad = np.gradient(np.asarray(losses, dtype=float))
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr) * adjust_value


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=4, max_size=40), st.integers(1, 3),
       st.sampled_from([0.005, 0.1, 1.0]))
def test_slide_matches_fastai(losses, lr_diff, thresh):
    lrs = [10.0 ** (k / 4 - 6) for k in range(len(losses))]
    assert sg.slide(lrs, losses, lr_diff=lr_diff, thresh=thresh) == _fastai_slide(lrs, losses, lr_diff, thresh)


def test_slide_uses_central_differences():
    # np.gradient [1, 2, 4, 6, 8, 10, 12, 13]: the last two ends differ by 3 <= 3.5 at once
    assert sg.slide(LRS, [0, 1, 4, 9, 16, 25, 36, 49], lr_diff=2, thresh=3.5) == LRS[5]


def test_curves_shorter_than_the_skip_windows():
    out, notes = sg.suggest(LRS, list(range(8, 0, -1)), list(range(8, 0, -1)), skip_start=10, skip_end=5)
    assert set(out.values()) == {None} and len(notes) == len(sg.SUGGESTERS)


def test_divergence_bound_is_a_fall_or_the_best_not_a_ratio():
    # a positive loss that fell by less than half: fastai's div_th x best
    assert sg.divergence_bound(2.0, 2.0, 4.0) == 8.0 and sg.divergence_bound(2.0, 3.0, 1.5) == 3.0
    # fell from 10 to 2: the scale is the fall, 2 + 3 x 8 = 26 (div_th 4)
    assert sg.divergence_bound(2.0, 10.0, 4.0) == 26.0
    # negative losses: the bound lies above the best (a ratio 4 x -5 = -20 would lie below it)
    assert sg.divergence_bound(-5.0, -1.0, 4.0) == -5.0 + 3 * 5.0
    assert sg.divergence_bound(-5.0, -4.0, 2.0) == 0.0
    assert sg.divergence_bound(0.0, 1.0, 4.0) == 3.0
