"""The suggestion rules and the divergence bound: hand-made curves with known answers, fastai's
published loops as references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecycle import suggest as sg
from onecycle.lr_find_result import LRFindResult

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


# ---- contracts the rules above leave open: defaults, error messages, boundaries ---------------------
def test_finite_prefix_errors_name_the_rule():
    for rule, need in [("valley", 2), ("slide", 16), ("minimum", 1), ("steep", 2), ("val_steep", 2), ("val_min", 1)]:
        fn = sg.SUGGESTERS[rule]
        with pytest.raises(ValueError, match=rf"^{rule} needs at least {need} finite points, got 0 \(of 0\)$"):
            fn([], [])
        shapes = r"got \(3,\) and \(2,\)$"
        with pytest.raises(ValueError, match=rf"^{rule}: lrs and losses must be 1-d of one length, {shapes}"):
            fn(LRS[:3], [2.0, 1.0])
    shapes = r"got \(1, 2\) and \(1, 2\)$"
    with pytest.raises(ValueError, match=rf"^minimum: lrs and losses must be 1-d of one length, {shapes}"):
        sg.minimum([LRS[:2]], [[2.0, 1.0]])


def test_a_zero_lr_or_a_missing_point_cuts_the_curve():
    # LR 0 is not on the log axis: the curve ends before it
    with pytest.raises(ValueError, match=r"^minimum needs at least 1 finite points, got 0 \(of 3\)$"):
        sg.minimum([0.0, 1e-3, 1e-2], [3.0, 1.0, 2.0])
    assert sg.minimum([1e-3, 0.0, 1e-2], [3.0, 1.0, 0.5]) == 1e-4
    # None reads as NaN (numbers, not objects): it cuts the curve like NaN does
    assert sg.minimum([1e-3, 1e-2, None], [3.0, 2.0, 1.0]) == 1e-3
    assert sg.minimum(LRS[:4], [3.0, 2.0, None, 1.0]) == LRS[1] / 10
    # integer inputs are read as floats: the answer is a float, and integer losses never wrap
    assert type(sg.valley([1, 2, 3], [3, 2, 1])) is float
    assert sg.steep([1, 10, 100], np.array([5, 3, 4], dtype=np.uint8)) == 1.0


def test_slide_defaults_and_arguments_against_fastai():
    lrs = [10.0 ** (k / 10 - 6) for k in range(40)]
    x = np.arange(40)
    losses = list(np.round(2 + 0.001 * (x - 25) ** 2 + 0.05 * np.random.default_rng(0).standard_normal(40), 3))
    ref = _fastai_slide(lrs, losses)  # fastai's defaults: lr_diff 15, thresh 0.005
    # the curve tells the defaults apart from their neighbours
    assert ref != _fastai_slide(lrs, losses, 16) and ref != _fastai_slide(lrs, losses, 15, 1.005)
    assert sg.slide(lrs, losses) == ref == lrs[21]
    assert sg.slide(lrs, losses, adjust_value=2.0) == 2 * lrs[21]
    with pytest.raises(ValueError, match=r"^slide needs at least 3 finite points, got 2 \(of 2\)$"):
        sg.slide(LRS[:2], [1.0, 2.0], lr_diff=2)
    assert sg.slide(LRS[:3], [1.0, 2.0, 4.0], lr_diff=2, thresh=10.0) == LRS[0]  # lr_diff + 1 points suffice
    for bad, error in ((0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError), ("2", TypeError)):
        with pytest.raises(error, match=rf"^lr_diff must be an int >= 1, got {bad!r}$"):
            sg.slide(LRS, [1.0] * 8, lr_diff=bad)


def test_slide_stops_when_the_gradients_differ_by_exactly_thresh():
    # np.gradient [1, 2, 4, 6, 8, 10, 12, 13]: the last window's ends differ by exactly 3, not more
    assert sg.slide(LRS, [0, 1, 4, 9, 16, 25, 36, 49], lr_diff=2, thresh=3.0) == LRS[5]
    assert _fastai_slide(LRS, [0, 1, 4, 9, 16, 25, 36, 49], lr_diff=2, thresh=3.0) == LRS[5]


def test_slopes_per_log_lr_and_a_repeated_lr():
    lrs = np.array([1.0, 2.0, 2.0, 2.2, 20.0])
    loss = np.array([3.0, 2.0, 1.0, 0.9, 0.0])
    slopes = sg._slopes(lrs, loss)
    expected = [-1 / math.log(2), math.nan, -0.1 / math.log(1.1), -0.9 / math.log(20 / 2.2)]
    np.testing.assert_allclose(slopes, expected, rtol=1e-12)
    # steepest per log LR: 1 -> 2 (-1.44), not 2.2 -> 20 (-0.41) nor the repeated LR's fall of 1
    assert sg.steep([1.0, 2.0, 20.0], [3.0, 2.0, 0.0]) == 1.0
    assert sg.steep([1e-4, 1e-3, 1e-3, 1e-2], [5.0, 4.8, 1.0, 0.9]) == 1e-4
    # a fine grid (log steps under 1)
    fine = [10.0 ** (k / 10 - 4) for k in range(5)]
    assert sg.steep(fine, [5.0, 4.9, 4.0, 3.95, 3.9]) == fine[1]
    with pytest.raises(ValueError, match=r"^steep: the LR never increases along the curve$"):
        sg.steep([1e-3, 1e-3, 1e-3], [3.0, 2.0, 1.0])


def test_val_steep_and_val_min_boundaries():
    assert sg.val_steep(LRS[:2], [2.0, 1.0]) == LRS[0]  # two points, the minimum at the second
    never = r"^val_steep: the validation loss never falls before its minimum$"
    with pytest.raises(ValueError, match=never):  # the minimum at the first point
        sg.val_steep(LRS[:3], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=never):  # the only fall is at a repeated LR
        sg.val_steep([1e-3, 1e-3], [2.0, 1.0])
    with pytest.raises(ValueError, match=never):  # flat, then the fall at a repeated LR: flat is no fall
        sg.val_steep([1e-3, 1e-2, 1e-2], [1.0, 1.0, 0.5])
    assert sg.val_min([1e-3], [2.0]) == 5e-4  # one point suffices


def test_suggest_default_skip_windows_and_notes():
    lrs = [10.0 ** (k / 4 - 6) for k in range(20)]
    # the default window is points 10..14 of 20: its first point is the lowest
    train = [0.0] * 10 + [1.0, 3.0, 3.0, 3.0, 2.0] + [0.0] * 5
    out, notes = sg.suggest(lrs, train)
    assert out["minimum"] == lrs[10] / 10
    # ... and its last point is the lowest
    out, notes = sg.suggest(lrs, [0.0] * 10 + [3.0, 3.0, 3.0, 3.0, 1.0] + [0.0] * 5)
    assert out["minimum"] == lrs[14] / 10
    assert set(out) == set(sg.SUGGESTERS) and out["val_steep"] is None and out["val_min"] is None
    assert notes == [
        "slide needs at least 16 finite points, got 5 (of 5) after skipping the first 10 and last 5 of 20 points",
        "val_steep: no validation curve (with_valid=False, or no point recorded)",
        "val_min: no validation curve (with_valid=False, or no point recorded)",
    ]
    # an empty training curve: its rules fail on their own, not as "no validation curve"
    out, notes = sg.suggest(LRS, [], [1.0] * 8, skip_start=0, skip_end=0)
    assert out["valley"] is None and notes[0].startswith("valley: lrs and losses must be 1-d of one length")
    assert out["val_min"] == LRS[0] / 2


def test_suggest_smooths_the_validation_curve_with_the_given_beta():
    lrs = [10.0 ** (k / 10 - 6) for k in range(60)]
    val = [2.0] * 30 + [2.0 - 0.05 * k for k in range(20)] + [1.05 + 0.1 * k for k in range(10)]
    # beta 0.5 lags one point (the default 1 - 10/60 two: see test_val_min_and_its_light_smoothing)
    assert int(np.argmin(_ema(val, 0.5))) == 50
    out, _ = sg.suggest(lrs, val, val, skip_start=0, skip_end=0, beta=0.5)
    assert out["val_min"] == lrs[50] / 2


def test_median_suggestion_of_four_and_five():
    runs = [{"val_min": v} for v in (0.4, 0.1, 0.8, 0.2)]
    assert sg.median_suggestion(runs) == pytest.approx(math.sqrt(0.2 * 0.4))
    assert sg.median_suggestion(runs + [{"val_min": 0.3}]) == 0.3


def test_every_rule_has_words_and_the_names_carry_their_key():
    assert set(sg.RULE_NAMES) == set(sg.SUGGESTERS)
    assert sg.rule_name("valley") == "halfway down the training-loss valley (valley)"
    assert sg.rule_name("val_min") == "lowest validation loss / 2 (val_min)"
    assert sg.rule_name("my_rule") == "my_rule"  # a rule without words is named by its key


def test_stop_words_name_where_the_test_stopped():
    lrs = [1e-3, 1e-2, 0.1, 1.0]
    assert sg.stop_words("completed num_it=4 iterations", lrs, 4) == "ran all 4 steps, up to LR 1"
    assert sg.stop_words("completed", lrs) == "ran all 4 steps, up to LR 1"  # num_it unknown: the points
    assert sg.stop_words("diverged at iteration 2 (lr 0.1): smoothed loss 9 above 4.5", lrs, 4) == \
        "stopped at LR 0.1 (step 3 of 4): the smoothed training loss blew up to 9, past its limit 4.5"
    assert sg.stop_words("diverged at iteration 2 (lr 0.1): smoothed loss 9 above 4.5 (diverge_th 5 x best 0.9, "
                         "the validation loss; torch-lr-finder's rule)", lrs, 4) == \
        "stopped at LR 0.1 (step 3 of 4): the smoothed validation loss blew up to 9, past its limit 4.5"
    assert sg.stop_words("non-finite loss inf at iteration 0 (lr 0.001)", lrs) == \
        "stopped at LR 0.001 (step 1 of ?): the training loss became inf"
    assert sg.stop_words("cancelled by a callback", lrs[:2]) == "cancelled by a callback after 2 steps, at LR 0.01"
    assert sg.stop_words("", []) == "LR range test" and sg.stop_words("other reason") == "other reason"



def test_a_test_that_diverged_at_its_last_step_ran_all_of_them():
    lrs = [1e-3, 1e-2, 0.1, 1.0]
    assert sg.stop_words("diverged at iteration 3 (lr 1): smoothed loss 9 above 4.5", lrs, 4) == \
        "ran all 4 steps, up to LR 1; at the last the smoothed training loss blew up to 9, past its limit 4.5"


def test_floor_and_flat_region_of_a_range_test_curve():
    lrs = [10.0 ** (k / 10 - 6) for k in range(50)]
    loss = [2.0] * 20 + [2.0 - 0.1 * k for k in range(1, 16)] + [0.5 + 0.5 * k for k in range(15)]
    # medians of 5 points: start 2.0, best 0.6; the floor is within 0.15 * 1.4 = 0.21 of 0.6
    med = [float(np.median(loss[max(0, i - 2):i + 3])) for i in range(50)]
    assert med[0] == 2.0 and min(med) == pytest.approx(0.6)
    floor = [m <= 0.81 + 1e-12 for m in med]
    assert sg.floor_mask(loss).tolist() == floor and sum(floor) == 5
    assert sg.floor_mask([-v for v in loss], lower=False).tolist() == floor  # a metric, higher is better
    assert not sg.floor_mask([1.0] * 10).any() and not sg.floor_mask([1.0, 2.0, 3.0]).any()  # never improves
    # the flat start ends where the median first moves 5% of the fall (0.075) below the start
    end = next(i for i, m in enumerate(med) if m < 2.0 - 0.075)
    assert sg.flat_end(lrs, loss) == lrs[end] and 19 <= end <= 22
    assert sg.in_flat_region(lrs[5], lrs, loss) and not sg.in_flat_region(lrs[end], lrs, loss)
    assert not sg.in_flat_region(None, lrs, loss) and sg.flat_end(lrs, [1.0] * 50) is None
    assert sg.one_cycle_range(0.25) == (0.01, 0.25) and sg.one_cycle_range(0.3, div=10) == pytest.approx((0.03, 0.3))


# ---- mutation-testing additions: stop_words without the usual details, the floor and the flat end at
# their bounds ---------------------------------------------------------------------------------------
def test_stop_words_without_the_usual_details():
    assert sg.stop_words("cancelled by a callback after 0 iterations") == \
        "cancelled by a callback after 0 steps, at LR ?"
    assert sg.stop_words("diverged at iteration 3 (lr 0.1)", [], 10) == \
        "stopped at LR 0.1 (step 4 of 10): the smoothed training loss blew up"  # no sizes in the reason
    # a reason without its iteration and LR (a stop rule's own): no place to name, and no stray space
    assert sg.stop_words("non-finite loss nan") == "stopped: the training loss became nan"
    assert sg.stop_words("non-finite loss") == "stopped: the training loss became non-finite"
    assert sg.stop_words("diverged") == "stopped: the smoothed training loss blew up"


def _medians(values, points=5):
    """The centred running median, fewer points at the ends, written out with statistics.median."""
    import statistics
    half = points // 2
    return [statistics.median(values[max(0, i - half):i + half + 1]) for i in range(len(values))]


def test_floor_mask_includes_a_median_exactly_at_its_bound_and_is_boolean():
    values = [1.0] * 7 + [0.15] * 7 + [0.0] * 7  # start 1, best 0: the bound is 0.15 exactly
    mask = sg.floor_mask(values)
    assert mask.dtype == bool and mask.tolist() == [m <= 0.15 for m in _medians(values)]
    assert mask[7:].all() and not mask[:5].any()
    flat = sg.floor_mask([1.0] * 8)  # never improves: no floor, still a boolean mask
    assert flat.dtype == bool and not flat.any()


def test_the_floor_is_measured_from_the_first_median():
    """Medians 5, 3, then 1: the fall is from 5, so a plateau at 0.6 (within 15% of a fall of 5 to 0:
    0.75) is floor; measured from the second median (3: 0.45) it would not be."""
    values = [5.0, 5.0] + [1.0] * 5 + [0.6] * 7 + [0.0] * 7
    assert _medians(values)[:3] == [5.0, 3.0, 1.0]
    mask = sg.floor_mask(values)
    assert mask.tolist() == [m <= 0.75 for m in _medians(values)] and mask[9:14].all()


def test_flat_end_is_the_first_median_strictly_past_its_bound():
    """Start 2, best 0: the flat start ends where the median falls below 2 - 0.05 x 2 = 1.9; a
    plateau at exactly 1.9 is still flat, one at 1.95 is too."""
    values = [2.0] * 7 + [1.95] * 7 + [1.9] * 7 + [0.0] * 7
    lrs = [10.0 ** (i / 4 - 7) for i in range(len(values))]
    first = next(i for i, m in enumerate(_medians(values)) if m < 1.9)
    assert first >= 19 and sg.flat_end(lrs, values) == lrs[first]
