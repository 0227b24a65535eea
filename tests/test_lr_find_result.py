"""Tests for onecycle.lr_find_result: ``LRFindResult`` built by hand (no fit), its summary and repr
as the user reads them, the validation curve as the rules smooth it (a hand-written bias-corrected
EMA), the JSON round trip (NaN and infinities kept), and what ``plot``/``plot_lr`` pass to the
plotting module."""

from __future__ import annotations

import json
import math

import pytest

import onecycle.plots as plots
from onecycle.lr_find_result import LRFindResult
from onecycle.suggest import DEFAULT_RULE, RULE_NAMES, stop_words
from test_suggest import _ema  # the bias-corrected EMA, written out: one copy


def _result(**kw) -> LRFindResult:
    base = dict(lrs=[1e-3, 1e-2, 1e-1], group_lrs=[[1e-4, 1e-3, 1e-2], [1e-3, 1e-2, 1e-1]],
                losses=[2.0, 1.5, 3.0], smooth_losses=[2.0, 1.7, 2.2], val_losses=[2.1, 1.6, 2.9],
                suggestions={"val_min": 0.005, "valley": 0.0123456, "steep": None}, suggestion=0.005,
                stop_reason="diverged at iteration 2 (lr 0.1): smoothed loss 2.2 above 2.0", num_it=10)
    base.update(kw)
    return LRFindResult(**base)



def test_defaults_are_an_empty_finder_run_with_the_default_rule():
    res = LRFindResult(lrs=[], group_lrs=[], losses=[], smooth_losses=[])
    assert res.rule == DEFAULT_RULE and res.suggestion is None and res.step_mode == "exp" and res.num_it == 0
    assert res.val_losses == [] and res.metrics == {} and res.moms == [] and res.suggestions == {}
    assert res.notes == [] and res.run_suggestions == [] and res.stop_reason == ""
    other = LRFindResult(lrs=[], group_lrs=[], losses=[], smooth_losses=[])
    res.notes.append("x")
    assert other.notes == []  # each result its own lists


def test_smooth_val_losses_use_the_training_curves_smoothing():
    """beta = 1 - 10 / num_it (0.5 at least): num_it 40 -> 0.75; without num_it, the curve's length."""
    vals = [3.0, 2.0, 4.0, 1.0]
    res = _result(lrs=[1e-3, 1e-2, 1e-1, 1.0], val_losses=vals, num_it=40)
    assert res.smooth_val_losses == pytest.approx(_ema(vals, 0.75), rel=1e-15)
    assert res.smooth_val_losses[1] == pytest.approx((0.75 * 0.25 * 3 + 0.25 * 2) / (1 - 0.75 ** 2), rel=1e-15)
    lrs = [10 ** (i / 10) for i in range(40)]
    res = _result(lrs=lrs, val_losses=vals, num_it=0)  # 40 points: the same beta
    assert res.smooth_val_losses == pytest.approx(_ema(vals, 0.75), rel=1e-15)
    assert _result(val_losses=vals, num_it=0).smooth_val_losses == pytest.approx(_ema(vals, 0.5), rel=1e-15)


def test_summary_is_the_outcome_and_one_line_per_rule_with_the_chosen_one_marked():
    res = _result(notes=["steep: the curve never fell", "only 3 steps"])
    assert res.outcome == "stopped at LR 0.1 (step 3 of 10): the smoothed training loss blew up to 2.2, past " \
                          "its limit 2.0"
    assert res.outcome == stop_words(res.stop_reason, res.lrs, 10)
    assert res.summary().split("\n") == [
        f"LR finder: {res.outcome}",
        f"  val_min    0.005     {RULE_NAMES['val_min']}  <- suggestion",
        f"  valley     0.0123    {RULE_NAMES['valley']}",
        f"  steep      -         {RULE_NAMES['steep']}",
        "  1cycle range: 0.0002 up to the peak 0.005 (div 25), then down",
        "  note: steep: the curve never fell",
        "  note: only 3 steps",
    ]
    chosen = _result(rule="valley", suggestion=0.0123456, suggestions={"valley": 0.0123456, "custom": 2.0},
                     stop_reason="completed", num_it=3)
    assert chosen.summary() == (f"LR finder: ran all 3 steps, up to LR 0.1\n"
                                f"  valley     0.0123    {RULE_NAMES['valley']}  <- suggestion\n"
                                f"  custom     2         \n"  # a rule without a name: no words
                                f"  1cycle range: 0.000494 up to the peak 0.0123 (div 25), then down")


def test_repr_shows_the_suggestions_not_the_curves():
    res = _result()
    assert repr(res) == (f"LRFindResult(suggestion=0.005 (val_min); val_min=0.005, valley=0.0123, steep=None; "
                         f"{res.outcome})")
    none = _result(suggestion=None, suggestions={}, stop_reason="completed", num_it=3)
    assert repr(none) == "LRFindResult(suggestion=None (val_min); ; ran all 3 steps, up to LR 0.1)"


def test_json_round_trip_keeps_every_field_and_non_finite_values(tmp_path):
    res = _result(metrics={"accuracy": [0.1, float("nan"), 0.3]}, moms=[0.95, None, 0.85],
                  losses=[2.0, float("inf"), float("nan")], run_suggestions=[{"val_min": 0.004}, {"val_min": None}],
                  rule="valley", step_mode="linear", notes=["n"])
    path = res.save_json(tmp_path / "finder.json")
    assert path == tmp_path / "finder.json"
    assert json.loads(path.read_text())["step_mode"] == "linear"
    back = LRFindResult.load_json(str(path))
    assert back.to_dict().keys() == res.to_dict().keys()
    for key, value in res.to_dict().items():
        if key in ("losses", "metrics"):
            continue
        assert getattr(back, key) == value, key
    assert back.losses[:2] == [2.0, math.inf] and math.isnan(back.losses[2])
    assert back.metrics["accuracy"][::2] == [0.1, 0.3] and math.isnan(back.metrics["accuracy"][1])
    assert LRFindResult.from_dict(res.to_dict()).to_dict().keys() == res.to_dict().keys()
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temporary left


def test_plot_and_plot_lr_pass_their_arguments_to_the_plotting_module(monkeypatch):
    seen = []
    monkeypatch.setattr(plots, "plot_finder", lambda *a, **kw: seen.append(("finder", a, kw)) or "fig")
    monkeypatch.setattr(plots, "plot_lr", lambda *a, **kw: seen.append(("lr", a, kw)) or "fig2")
    res = _result()
    assert res.plot() == "fig" and res.plot(False, 2, 3, "f.png", ylim_factor=2.0) == "fig"
    assert res.plot_lr() == "fig2" and res.plot_lr("lr.png", dpi=50) == "fig2"
    assert seen == [
        ("finder", (res,), {"smoothed": True, "n_skip": 0, "n_skip_end": 0, "save": None}),
        ("finder", (res,), {"smoothed": False, "n_skip": 2, "n_skip_end": 3, "save": "f.png", "ylim_factor": 2.0}),
        ("lr", (res,), {"save": None}),
        ("lr", (res,), {"save": "lr.png", "dpi": 50}),
    ]


def test_a_rule_answering_in_the_flat_start_is_flagged_and_noted():
    from onecycle.suggest import flat_end

    lrs = [1e-5 * 10 ** (i / 6) for i in range(31)]  # 1e-5 .. 1e0
    losses = [2.0] * 10 + [2.0 - 0.1 * k for k in range(1, 16)] + [0.8 + 0.5 * k for k in range(6)]
    end = flat_end(lrs, losses)
    assert end is not None and lrs[2] < end < lrs[15]  # the curve as meant: flat, then falling
    res = _result(lrs=lrs, group_lrs=[lrs], losses=losses, smooth_losses=losses, val_losses=[],
                  suggestions={"valley": lrs[15], "val_min": lrs[2], "steep": None}, suggestion=lrs[15],
                  rule="valley")
    assert res.flat_rules() == ["val_min"]
    lines = res.summary().splitlines()
    assert next(ln for ln in lines if ln.startswith("  val_min ")).endswith("  (flat region)")
    assert next(ln for ln in lines if ln.startswith("  valley ")).endswith("  <- suggestion")
    assert (f"  note: val_min answered in the flat region (LR below {end:.3g}), where the training loss had not "
            "started to fall") in lines
    assert res.one_cycle_range() == (lrs[15] / 25, lrs[15]) and res.one_cycle_range(10.0) == (lrs[15] / 10, lrs[15])
    assert _result(suggestion=None).one_cycle_range() is None
