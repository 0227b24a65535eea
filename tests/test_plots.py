"""Plots read back from the Figure's artists (line data, limits, ticks, legend texts) against
references computed here: the finder plot draws the rules' curves, keeps the diverged tail out of its
y-limits and puts the chosen suggestion on the curve in every panel; the dashboard shares one epoch
axis numbered from 1; epochs count from 1 in the table, the CSV and the JSON; the finder's bar."""

import csv
import io
import json
import math
import struct
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle import plots
from onecycle.lr_find_result import LRFindResult
from onecycle.progress import Progress
from onecycle.recorder import Recorder
from onecycle.smoothing import centred, range_test_curve
from onecycle.suggest import stop_words
from test_suggest import _ema  # the bias-corrected EMA, written out: one copy


def _finder(n=100, explode=False, stop="completed num_it=100 iterations", suggestion=1e-2, rule="val_min"):
    """A hand-made range test: losses with a dip at LR 0.03 (log-symmetric), optionally exploding to 1e6
    over the last fifth; accuracy mirrors the loss."""
    lrs = [1e-5 * 1e6 ** (i / (n - 1)) for i in range(n)]
    rng = np.random.default_rng(0)
    dip = [2.0 - 1.5 * math.exp(-(math.log10(lr / 0.03)) ** 2) for lr in lrs]
    losses = [d + 0.05 * float(rng.standard_normal()) for d in dip]
    if explode:
        losses = [v if i < 0.8 * n else 10 ** (6 * (i - 0.8 * n) / (0.2 * n - 1)) for i, v in enumerate(losses)]
    beta = 1 - 10 / n
    val = [v + 0.1 for v in losses]
    acc = [max(0.0, 1.0 - v / 2.5) for v in losses]
    suggestions = {"valley": 3e-3, "slide": 1e-4, "minimum": 3e-3, "steep": 5e-3, "val_steep": 6e-3,
                   "val_min": 1.5e-2}
    suggestions[rule] = suggestion
    return LRFindResult(lrs=lrs, group_lrs=[lrs], losses=losses, smooth_losses=_ema(losses, beta), val_losses=val,
                        metrics={"accuracy": acc}, moms=[0.9] * n, suggestions=suggestions, suggestion=suggestion,
                        rule=rule, stop_reason=stop, num_it=n)


def _by_gid(ax, gid):
    return [a for a in [*ax.lines, *ax.patches] if a.get_gid() == gid]


def _curve(ax):
    (line,) = _by_gid(ax, "curve")
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


# ---- the finder plot --------------------------------------------------------------------------------------
def test_drawn_curves_are_centred_smoothings_of_the_raw_points():
    res = _finder()
    x, _ = _curve(res.plot().axes[0])  # by default every step: from the first LR to the one it stopped at
    assert list(x) == res.lrs and x[-1] == res.lrs[-1]
    fig = res.plot(n_skip=10, n_skip_end=5)  # fastai 0.7's sched.plot window, cut after smoothing
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["training loss", "validation loss", "accuracy (%)"]  # as elsewhere
    x, y = _curve(axes[0])
    assert list(x) == res.lrs[10:95] and list(y) == range_test_curve(res.losses)[10:95]
    assert list(_curve(axes[1])[1]) == range_test_curve(res.val_losses)[10:95]
    acc = range_test_curve(res.metrics["accuracy"], lower=False)[10:95]
    assert list(_curve(axes[2])[1]) == pytest.approx([100 * v for v in acc], rel=1e-12)
    # ... which sit on the dip where the data has it (at LR 0.03), where the recorded EMA lags
    full = _curve(res.plot().axes[0])
    assert abs(math.log10(full[0][int(np.argmin(full[1]))] / 0.03)) < 0.15
    assert abs(math.log10(res.lrs[int(np.argmin(res.smooth_losses))] / 0.03)) > 0.3  # negative control
    (raw,) = _by_gid(axes[0], "raw")  # the raw points, faint
    assert list(raw.get_ydata()) == res.losses[10:95] and raw.get_alpha() < 0.5 and raw.get_linestyle() == "None"
    assert all(ax.get_xscale() == "log" for ax in axes)
    fig = res.plot(n_skip=3, n_skip_end=0, smoothed=False)
    assert list(_curve(fig.axes[0])[1]) == res.losses[3:] and not _by_gid(fig.axes[0], "raw")
    for bad, error in (({"n_skip": -1}, ValueError), ({"n_skip_end": 1.5}, TypeError), ({"band": 0.5}, ValueError),
                       ({"div": 1}, ValueError), ({"ylim_factor": 0}, ValueError), ({"div": True}, TypeError)):
        (name, value), = bad.items()
        with pytest.raises(error, match=rf"^{name} must be .*, got {value!r}$"):
            res.plot(**bad)


def _floor_lrs(lrs, raw, higher=False):
    """The issue's floor, by hand: a centred 5-point median (fewer points at the ends, as pandas'
    rolling(5, center=True, min_periods=1)), and the LRs where it is within 15% of the drop from its start
    to its best."""
    raw = [v if v is not None and math.isfinite(v) else math.nan for v in raw]
    med = [float(np.nanmedian(raw[max(0, i - 2):i + 3])) for i in range(len(raw))]
    sign = -1.0 if higher else 1.0
    m = [sign * v for v in med]
    start, best = next(v for v in m if math.isfinite(v)), np.nanmin(m)
    return [lr for lr, v in zip(lrs, m) if math.isfinite(v) and v <= best + 0.15 * (start - best)]


def _in_floor(lr, floor):
    return any(abs(math.log10(lr / f)) <= 0.1 + 1e-9 for f in floor)


@pytest.fixture(scope="module")
def demo_and_digits_finders():
    """The range tests of ``onecycle demo`` (MNIST-1D, the CNN, AdamW) and of ``onecycle find --task digits
    --opt adamw``, as those commands run them."""
    from onecycle.runbuild import build_learner
    from onecycle.runconfig import FindConfig, make_config
    threads = torch.get_num_threads()
    out = {}
    try:
        for name, layers in (("demo", [("demo", {"task": "mnist1d", "name": "demo"})]),
                             ("digits", [("test", {"task": "digits", "opt": "adamw"})])):
            cfg = make_config(FindConfig, [*layers, ("test", {"quiet": True})])
            learn, _ = build_learner(cfg)
            out[name] = learn.lr_find(start_lr=cfg.start_lr, end_lr=cfg.end_lr, num_it=cfg.num_it)
    finally:
        torch.set_num_threads(threads)
    return out


def test_curves_sit_on_the_floor_of_the_demo_and_digits(demo_and_digits_finders):
    from onecycle.suggest import floor_mask
    for name, res in demo_and_digits_finders.items():
        fig = res.plot()
        panels = [(res.losses, False), (res.val_losses, False), (res.metrics["accuracy"], True)]
        for ax, (raw, higher) in zip(fig.axes, panels):
            floor = _floor_lrs(res.lrs, raw, higher)
            assert floor == [lr for lr, f in zip(res.lrs, floor_mask(raw, lower=not higher)) if f]
            x, y = _curve(ax)
            extreme = x[int(np.argmax(y) if higher else np.argmin(y))]
            assert _in_floor(extreme, floor), (name, ax.get_ylabel(), extreme, floor)
        if name == "demo":  # negative control: the lagging EMA the plot drew before misses it in every panel
            from onecycle.smoothing import ema, smoothing_beta
            for raw, higher in panels:
                lagged = ema(raw, smoothing_beta(len(raw)))
                extreme = res.lrs[int(np.argmax(lagged) if higher else np.argmin(lagged))]
                assert not _in_floor(extreme, _floor_lrs(res.lrs, raw, higher))
            # the suggestion never lands past the validation floor
            assert res.suggestion <= max(_floor_lrs(res.lrs, res.val_losses)) * 10 ** 0.1


@pytest.mark.parametrize("smoothed", [True, False])
def test_suggestion_marker_lies_on_the_drawn_curve_in_every_panel(smoothed):
    res = _finder(suggestion=7.3e-3)
    fig = res.plot(smoothed=smoothed)
    for ax in fig.axes:
        x, y = _curve(ax)
        (mark,) = _by_gid(ax, "suggestion")
        mx, my = mark.get_xdata()[0], mark.get_ydata()[0]
        assert mx == 7.3e-3
        k = int(np.searchsorted(x, mx))  # the curve interpolated in log LR between its two neighbours
        t = (math.log(mx) - math.log(x[k - 1])) / (math.log(x[k]) - math.log(x[k - 1]))
        assert my == pytest.approx(y[k - 1] + t * (y[k] - y[k - 1]), rel=1e-9)
        (band,) = _by_gid(ax, "band")  # good LRs: a factor 2 either side
        assert band.get_x() == pytest.approx(7.3e-3 / 2) and band.get_x() + band.get_width() == pytest.approx(14.6e-3)
        (cycle,) = _by_gid(ax, "one_cycle")  # the 1cycle range: peak/25 up to the peak
        assert cycle.get_x() == pytest.approx(7.3e-3 / 25)
        assert cycle.get_x() + cycle.get_width() == pytest.approx(7.3e-3)
    fig = res.plot(band=3, div=10)
    assert _by_gid(fig.axes[0], "band")[0].get_x() == pytest.approx(7.3e-3 / 3)
    assert _by_gid(fig.axes[0], "one_cycle")[0].get_x() == pytest.approx(7.3e-4)


def test_marker_on_a_linear_sweep_interpolates_in_lr():
    res = _finder(suggestion=0.37)
    res.lrs = res.group_lrs[0] = [0.01 * (i + 1) for i in range(100)]
    res.step_mode = "linear"
    ax = res.plot().axes[0]
    x, y = _curve(ax)
    (mark,) = _by_gid(ax, "suggestion")
    assert ax.get_xscale() == "linear"
    assert mark.get_ydata()[0] == pytest.approx(float(np.interp(0.37, x, y)), rel=1e-9)


def test_y_limits_leave_out_a_diverging_tail():
    res = _finder(explode=True, stop="diverged at iteration 99 (lr 10): smoothed loss 2e+05 above 6 (best 0.5, "
                                        "start 2, div_th 4)")
    assert max(res.losses) == pytest.approx(1e6)
    fig = res.plot(n_skip=0, n_skip_end=0)
    start = range_test_curve(res.losses)[0]
    for ax in fig.axes[:2]:
        bottom, top = ax.get_ylim()
        x, y = _curve(ax)
        assert top < 2.5 * start and bottom < min(y)  # the dip fills the panel, not the explosion
        (up,) = [m for m in _by_gid(ax, "clipped") if m.get_marker() == "^"]
        assert set(up.get_ydata()) == {top} and len(up.get_xdata()) >= 15  # every point above, on the edge
    low, high = fig.axes[2].get_ylim()  # accuracy (%): its range where the training loss stayed in range
    assert -10 < low and high < 110
    bottom, top = plots.finder_ylim([2.0, 1.0, 0.5, 1e6], factor=2.0)
    assert top == pytest.approx(0.5 + 2 * 1.5 + 0.05 * (3.5 - 0.5))  # from the smoothed minimum, not the tail
    assert bottom == pytest.approx(0.5 - 2 * 0.05 * 3.0)


def test_title_says_why_the_test_stopped():
    diverged = ("diverged at iteration 81 (lr 0.351): smoothed loss 7.698 above 5.494 "
                "(best 1.374, start 2.321, div_th 4)")
    cases = {"completed num_it=100 iterations": "ran all 100 steps, up to LR 10",
             diverged: "stopped at LR 0.351 (step 82 of 100): the smoothed training loss blew up to 7.698, "
                       "past its limit 5.494",
             "non-finite loss nan at iteration 40 (lr 2.1): stopped before stepping":
                 "stopped at LR 2.1 (step 41 of 100): the training loss became nan",
             "cancelled by a callback after 100 iterations": "cancelled by a callback after 100 steps, at LR 10"}
    for reason, words in cases.items():
        assert stop_words(reason, _finder().lrs, 100) == words
        assert _finder(stop=reason).plot().get_suptitle() == "LR range test: " + words


def test_one_legend_and_every_rule_named_at_its_line_in_its_colour():
    from onecycle.plots.finder import CHOSEN, RULE_COLORS
    res = _finder()
    fig = res.plot()
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "chosen: val_min = 0.01, lowest validation loss / 2" in texts
    assert "steep = 0.005, steepest training-loss fall" in texts
    assert "good LRs: 0.005 to 0.02 (x2 either side)" in texts
    assert "1cycle range: 0.0004 up to the peak 0.01 (div 25)" in texts
    assert all(t.get_fontsize() >= 9 for t in fig.legends[0].get_texts())  # readable at the report's size
    # valley and minimum coincide (3e-3): one line, one label naming both
    labels = sorted(a.get_text() for a in fig.axes[0].texts if a.get_gid() == "rule_label")
    assert labels == ["minimum = valley", "slide (flat region)", "steep", "val_min", "val_steep"]
    for ax in fig.axes:  # every panel: a line per LR, in the rule's own colour; the chosen one crimson
        lines = {line.get_xdata()[0]: line.get_color() for line in ax.lines if line.get_gid() == "rule"}
        assert lines == {3e-3: RULE_COLORS["minimum"], 1e-4: RULE_COLORS["slide"], 5e-3: RULE_COLORS["steep"],
                         6e-3: RULE_COLORS["val_steep"]}
        (chosen,) = [line for line in ax.lines if line.get_gid() == "chosen_rule"]
        assert chosen.get_xdata()[0] == 1e-2 and chosen.get_color() == CHOSEN
    assert len(set(RULE_COLORS.values())) == len(RULE_COLORS) and CHOSEN not in RULE_COLORS.values()


def test_a_rule_in_the_flat_region_is_flagged():
    res = _finder()  # the loss starts to fall near 1e-3; slide answered 1e-4
    fig = res.plot()
    labels = [a.get_text() for a in fig.axes[0].texts if a.get_gid() == "rule_label"]
    assert "slide (flat region)" in labels and "minimum = valley" in labels
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "slide = 0.0001, where the training-loss slope settles; in the flat region" in texts
    assert any(t.startswith("flat region (below ") for t in texts)
    (flat,) = _by_gid(fig.axes[0], "flat")
    from onecycle.suggest import flat_end
    assert flat.get_x() + flat.get_width() == pytest.approx(flat_end(res.lrs, res.losses))
    assert 1e-4 < flat_end(res.lrs, res.losses) < 3e-3
    res.suggestions["slide"] = 2e-3  # out of it: no flag, no shading
    assert not _by_gid(res.plot().axes[0], "flat")
    assert res.flat_rules() == [] and "flat region" not in res.summary()
    res.suggestions["slide"] = 1e-4
    assert res.flat_rules() == ["slide"] and "slide      0.0001    where the training-loss slope settles  (flat " \
        "region)" in res.summary()


def test_a_fallback_rule_is_the_one_marked():
    res = _finder(suggestion=5e-3, rule="steep")  # as if val_min gave None and steep answered
    res.suggestions["val_min"], res.rule = None, "val_min"  # an older result, whose rule named the one asked for
    texts = [t.get_text() for t in res.plot().legends[0].get_texts()]
    assert "chosen: steep = 0.005, steepest training-loss fall" in texts


def test_plot_from_a_dict_equals_plot_from_the_result():
    res = _finder()
    a, b = res.plot(), plots.plot_finder(json.loads(json.dumps(res.to_dict())))
    for ax, bx in zip(a.axes, b.axes):
        assert list(_curve(ax)[1]) == list(_curve(bx)[1]) and ax.get_ylim() == bx.get_ylim()


def _tiny_learner(quiet=True):
    torch.manual_seed(0)
    x, y = torch.randn(96, 4), torch.randint(0, 2, (96,))
    dl = DataLoader(TensorDataset(x, y), batch_size=16)
    return oc.Learner(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), dl, dl,
                      metrics=[oc.metrics.accuracy], device="cpu", quiet=quiet)


def test_a_real_lr_find_draws_its_own_curves(tmp_path):
    res = _tiny_learner().lr_find(num_it=40, stop_div=False)
    fig = res.plot(n_skip=4, n_skip_end=2, save=tmp_path / "finder.png")
    n = len(res.lrs)
    assert list(_curve(fig.axes[0])[1]) == range_test_curve(res.losses)[4:n - 2]
    assert list(_curve(fig.axes[1])[1]) == range_test_curve(res.val_losses)[4:n - 2]
    for ax in fig.axes:
        marks = _by_gid(ax, "suggestion")
        if marks:
            x, y = _curve(ax)
            mx = marks[0].get_xdata()[0]
            assert mx == res.suggestion
            assert marks[0].get_ydata()[0] == pytest.approx(float(np.interp(np.log(mx), np.log(x), y)), rel=1e-9)
    assert _png_size(tmp_path / "finder.png")[0] == 2200  # an 1100-px column at 2x


# ---- saving -----------------------------------------------------------------------------------------------
def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_save_png_at_2x_and_svg_by_suffix(tmp_path):
    fig = plots.plot_metrics(_history())
    plots.save_figure(fig, tmp_path / "m.png")
    assert _png_size(tmp_path / "m.png") == (2200, round(fig.get_figheight() * 200))
    plots.save_figure(fig, tmp_path / "m.svg")
    assert b"<svg" in (tmp_path / "m.svg").read_bytes()[:500]


# ---- a run's history: the dashboard and its parts ---------------------------------------------------------
def _history():
    """Two epochs of 4 iterations and a half-done third; groups 0 and 1 identical, group 2 a tenth."""
    rec = Recorder(["accuracy", "error"])
    for epoch, (val, acc, err) in enumerate([(0.9, 0.5, 0.4), (0.7, 0.75, 0.3)]):
        lrs = [[0.1 * (epoch * 4 + i + 1)] * 2 + [0.01 * (epoch * 4 + i + 1)] for i in range(4)]
        rec.add_iterations(lrs, [0.9] * 4, [2.0 - 0.2 * (epoch * 4 + i) for i in range(4)])
        rec.add_epoch(1.0, {"val_loss": val, "accuracy": acc, "error": err}, 1.0)
    rec.add_iterations([[0.9, 0.9, 0.09]] * 2, [0.9] * 2, [0.3, 0.2])
    return rec


def _ticks(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def test_iteration_epochs_hand_values():
    assert plots.iteration_epochs(10, [4, 8]) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5]
    assert plots.iteration_epochs(5, [2, 5]) == pytest.approx([0.5, 1.0, 1 + 1 / 3, 1 + 2 / 3, 2.0])
    assert plots.iteration_epochs(3, []) == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_dashboard_shares_one_epoch_axis_numbered_from_1():
    rec = _history()
    fig = plots.plot_dashboard(rec, momentum_label="beta1")
    ax_lr, ax_mom, ax_loss, ax_acc, ax_err = fig.axes
    assert all(ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in fig.axes)  # every axis labelled
    assert all(_ticks(ax) == ["1", "2", "3"] for ax in fig.axes)  # whole epochs from 1
    assert all(ax.get_xlim() == ax_lr.get_xlim() for ax in fig.axes) and ax_lr.get_xlim()[0] == 0
    assert ax_mom.get_ylabel() == "beta1"
    lines = ax_lr.get_lines()  # identical groups drawn once, labelled
    assert [line.get_label() for line in lines] == ["groups 0-1", "group 2"]
    assert list(lines[0].get_xdata()) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5]
    assert list(lines[0].get_ydata()) == rec.group_lrs[0] and list(lines[1].get_ydata()) == rec.group_lrs[2]
    raw, smooth, val, star = ax_loss.get_lines()
    assert list(raw.get_ydata()) == rec.losses and list(smooth.get_ydata()) == centred(rec.losses)
    assert raw.get_alpha() < 0.5 and list(val.get_xdata()) == [1, 2] and list(val.get_ydata()) == [0.9, 0.7]
    assert star.get_gid() == "best" and (star.get_xdata()[0], star.get_ydata()[0]) == (2, 0.7)  # val_loss's best
    (best,) = _by_gid(ax_acc, "best")  # higher is better for accuracy (in percent, as everywhere), lower for error
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (2, 75.0) and "best 75% at epoch 2" in ax_acc.get_title()
    assert ax_acc.get_ylabel() == "accuracy (%)" and "higher is better" in ax_acc.get_title()
    (best,) = _by_gid(ax_err, "best")
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (2, 30.0) and "lower is better" in ax_err.get_title()
    assert plots.plot_dashboard(rec, log_loss=True).axes[2].get_yscale() == "log"


def test_dashboard_from_plain_data_and_forwarded():
    rec = _history()
    a, b = rec.plot_dashboard(), plots.plot_dashboard(json.loads(json.dumps(rec.state_dict())))
    for ax, bx in zip(a.axes, b.axes):
        assert [list(x.get_ydata()) for x in ax.lines] == [list(x.get_ydata()) for x in bx.lines]
    assert a.axes[1].get_ylabel() == "momentum"


def test_lr_losses_and_metrics_on_the_same_epoch_axis():
    rec = _history()
    lr, losses, metrics = rec.plot_lr(momentum_label="beta1"), rec.plot_losses(), rec.plot_metrics()
    axes = [*lr.axes, *losses.axes, *metrics.axes]
    assert all(_ticks(ax) == ["1", "2", "3"] and ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in axes)
    assert len({ax.get_xlim() for ax in axes}) == 1
    assert [line.get_label() for line in lr.axes[0].get_lines()] == ["groups 0-1", "group 2"]
    assert lr.axes[1].get_ylabel() == "beta1"
    assert [len(_by_gid(ax, "best")) for ax in metrics.axes] == [1, 1]
    one = Recorder()  # one group: one line, no legend
    one.add_iterations([[0.1], [0.2]], [0.9, 0.8], [1.0, 0.5])
    one.add_epoch(0.75, {"val_loss": 0.6}, 1.0)
    assert len(one.plot_lr().axes[0].get_lines()) == 1 and one.plot_lr().axes[0].get_legend() is None


def test_epoch_ticks_thin_out_and_still_start_at_1():
    rec = Recorder(["accuracy"])
    for e in range(40):
        rec.add_iterations([[0.1]], [0.9], [1.0])
        rec.add_epoch(1.0, {"val_loss": 1.0, "accuracy": e / 40}, 1.0)
    ticks = _ticks(rec.plot_metrics().axes[0])
    assert ticks == ["1", "5", "10", "15", "20", "25", "30", "35", "40"]


def test_finder_lr_plot_runs_in_iterations_with_distinct_groups():
    res = _finder()
    res.group_lrs = [res.lrs, res.lrs]
    fig = res.plot_lr()
    assert fig.axes[0].get_xlabel() == "iteration" and len(fig.axes[0].get_lines()) == 1
    assert fig.axes[0].get_lines()[0].get_label() == "all 2 groups (identical)"
    assert plots.momentum_label("adamw") == "beta1" and plots.momentum_label("sgd") == "momentum"


# ---- epochs numbered from 1: the table, the CSV, the JSON -------------------------------------------------
def test_epochs_from_1_in_the_table_csv_and_json(tmp_path):
    out = io.StringIO()
    prog = Progress(["accuracy"], stream=out)
    for e in range(3):
        prog.epoch_row(e, 1.0, {"val_loss": 0.5, "accuracy": 0.5}, 1.0)
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["epoch", "1", "2", "3"]
    rec = _history()
    _, ep_path = rec.save_csv(tmp_path)
    rows = list(csv.reader(ep_path.open()))
    assert [r[0] for r in rows] == ["epoch", "1", "2"] and rows[0][3] == "accuracy (%)" and float(rows[2][3]) == 75.0
    path = rec.save_json(tmp_path / "h.json")
    assert json.loads(path.read_text())["epoch_numbering"] == "from 1"
    assert Recorder.load_json(path).state_dict() == rec.state_dict()
    old = tmp_path / "old.json"  # written before the key existed
    old.write_text(json.dumps(rec.state_dict()))
    assert Recorder.load_json(old).state_dict() == rec.state_dict()


def test_a_real_fit_numbers_epochs_from_1_everywhere(tmp_path, capsys):
    learn = _tiny_learner(quiet=False)
    learn.fit(0.05, 2)
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table] == ["epoch", "1", "2"]
    _, ep_path = learn.recorder.save_csv(tmp_path)
    assert [r[0] for r in csv.reader(ep_path.open())][1:] == ["1", "2"]
    assert all(_ticks(ax) == ["1", "2"] for ax in learn.recorder.plot_dashboard().axes)


# ---- a caller's Axes or Figure, and a Figure that shows itself in a notebook ---------------------------------
def test_every_plot_draws_into_a_callers_axes_or_figure():
    from matplotlib.figure import Figure
    res, rec = _finder(), _history()
    for k in range(3):
        rec.log("grad_mean_abs/0", 0.1 * (k + 1))
        rec.log("grad_norm/0", 1.0 + k)
    fig = Figure()
    ax = fig.subplots()
    assert res.plot(ax=ax) is fig and _curve(ax)[1].tolist() == range_test_curve(res.losses)  # the training loss
    assert not fig.legends and ax.get_legend() is not None  # its legend stays inside the caller's Axes
    fig = Figure()
    axes = fig.subplots(2)
    assert res.plot(ax=axes) is fig and [a.get_ylabel() for a in axes] == ["training loss", "validation loss"]
    fig = Figure()
    assert res.plot(fig=fig) is fig and len(fig.axes) == 3  # the panels added to the caller's figure
    with pytest.raises(ValueError, match="this range test has 3 panels, got 4 Axes"):
        res.plot(ax=Figure().subplots(4))
    with pytest.raises(ValueError, match="not both"):
        res.plot(ax=ax, fig=fig)
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        res.plot(ax="left")
    for draw, n in ((rec.plot_losses, 1), (rec.plot_lr, 2), (rec.plot_metrics, 2), (rec.plot_dashboard, 5),
                    (res.plot_lr, 2), (lambda **kw: plots.plot_overlay({"a": [rec]}, **kw), 3),
                    (lambda **kw: plots.plot_seed_dots([("a", [0.5, 0.6])], "x", **kw), 1),
                    (lambda **kw: plots.plot_finder_overlay({"a": [(res.lrs, res.losses, 0.01)]}, "loss", **kw), 1),
                    (lambda **kw: rec.plot_grad_stats(**kw), 2)):
        fig = Figure()
        axes = fig.subplots(1, n, squeeze=False)[0]
        assert draw(ax=axes if n > 1 else axes[0]) is fig and all(a.has_data() or a.texts for a in axes), draw
        fig = Figure()
        assert draw(fig=fig) is fig and len(fig.axes) == n
        with pytest.raises(ValueError, match=f"this plot draws {n} panel"):
            draw(ax=Figure().subplots(1, n + 1))


def test_a_figure_shows_itself_once_in_a_notebook():
    fig = _finder().plot()
    png, meta = fig._repr_png_()  # what IPython asks for; no pyplot, so nothing else draws it
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and meta == {"width": 1100, "height": round(fig.get_figheight() * 100)}
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()
    assert isinstance(_history().plot_losses(), __import__("matplotlib.figure").figure.Figure)


def test_seed_dots_name_each_seed_once_and_seeds_on_one_value_together():
    fig = plots.plot_seed_dots([("a", [0.9, 0.95, 0.9], ["seed 0", "seed 1", "seed 2"])], "accuracy")
    labels = {t.get_text(): t.xy for t in fig.axes[0].texts if t.get_gid() == "seed_label"}
    assert labels == {"seeds 0, 2": (0.9, 0), "seed 1": (0.95, 0)}  # two seeds on 0.9: one label, not two on top
    fig = plots.plot_seed_dots([("a", [0.9, 0.95], ["seed 0", "seed 1"])], "accuracy")  # negative control
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["seed 0", "seed 1"]


def test_configurations_with_the_same_finder_tests_are_told_apart():
    lrs, ys = [1e-3, 1e-2, 1e-1], [2.0, 1.0, float("nan")]
    fig = plots.plot_finder_overlay({"cos sgd": [(lrs, ys, 0.01)], "wsd sgd": [(lrs, list(ys), 0.01)],
                                     "cos adamw": [(lrs, [2.0, 1.5, 1.0], 0.1)]}, "loss")
    lines = [ln for ln in fig.axes[0].lines if ln.get_gid() == "finder"]
    assert [ln.get_label() for ln in lines] == ["cos sgd", "wsd sgd (dashed: the same tests as cos sgd)", "cos adamw"]
    assert [ln.get_linestyle() for ln in lines] == ["-", "--", "-"]  # the second drawn over the first, dashed


def test_the_dashboards_training_curve_agrees_with_the_epoch_table():
    """The table's train_loss is each epoch's mean; the drawn curve's mean over each epoch is the same
    number within 5% (the noise is 20% a step), and at each epoch's end it reads the loss of that
    moment (the last steps' level), where a lagging EMA reads well above it (the negative control)."""
    rng = np.random.default_rng(0)
    rec, n = Recorder([]), 60
    for epoch in range(8):
        raw = [2.0 * math.exp(-(epoch * n + i) / 120) * (1 + 0.2 * rng.standard_normal()) for i in range(n)]
        rec.add_iterations([[0.1]] * n, [0.9] * n, raw)
        rec.add_epoch(sum(raw) / n, {"val_loss": 1.0}, 1.0)
    (line,) = [ln for ln in plots.plot_losses(rec).axes[0].lines if ln.get_gid() == "smooth"]
    y = np.asarray(line.get_ydata(), float)
    assert len(y) == 8 * n
    for e in range(8):
        assert y[e * n:(e + 1) * n].mean() == pytest.approx(rec.train_losses[e], rel=0.05), e
        level = 2.0 * math.exp(-((e + 1) * n - 1) / 120)  # the noiseless loss at the epoch's last step
        assert y[(e + 1) * n - 1] == pytest.approx(level, rel=0.1), e
    lagging = oc.smoothing.ema(rec.losses, 0.98)  # the causal EMA the dashboard used to draw
    assert lagging[4 * n - 1] > 1.15 * 2.0 * math.exp(-(4 * n - 1) / 120)


def test_the_overlay_draws_each_configurations_seed_mean_and_min_max_band():
    """compare.png: per configuration the mean over its seeds, per epoch, and a band from their min to
    their max (a seed that stopped early counts only where it ran); accuracy-like metrics in percent;
    one legend entry per configuration, below the panels, saying what the line and band are."""
    import numpy as np
    seeds = [{"val_losses": [1.0, 0.5, 0.2], "metrics": {"accuracy": [0.5, 0.7, 0.9]}},
             {"val_losses": [2.0, 0.7, 0.4], "metrics": {"accuracy": [0.3, 0.6, 0.8]}},
             {"val_losses": [0.6, 0.3], "metrics": {"accuracy": [0.4, 0.8]}}]
    alone = [{"val_losses": [0.9, 0.8, 0.7], "metrics": {"accuracy": [0.1, 0.2, 0.3]}}]
    fig = plots.plot_overlay({"three seeds": seeds, "one run": alone})
    loss, acc = fig.axes[:2]
    (mean, _) = _by_gid(loss, "mean")
    assert list(mean.get_xdata()) == [1, 2, 3]
    assert np.allclose(mean.get_ydata(), [3.6 / 3, 1.5 / 3, 0.3])  # epoch 3: the two seeds that got there
    (band,) = [c for c in loss.collections if c.get_gid() == "band"]  # the one configuration with seeds
    verts = band.get_paths()[0].vertices
    for epoch, low, high in ((1, 0.6, 2.0), (2, 0.3, 0.7), (3, 0.2, 0.4)):
        ys = verts[np.isclose(verts[:, 0], epoch), 1]
        assert np.isclose(ys.min(), low) and np.isclose(ys.max(), high)
    assert np.allclose(_by_gid(acc, "mean")[0].get_ydata(), [40.0, 70.0, 85.0])  # percent
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["three seeds", "one run"]
    assert legend.get_title().get_text() == "mean of each one's seeds, shaded: their min-max"
    assert plots.plot_overlay({"a": seeds}).legends[0].get_title().get_text() == \
        "mean of 3 seeds each, shaded: their min-max"
