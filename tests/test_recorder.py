"""Recorder: smoothing against hand values, JSON/CSV round trips, plots headless."""

import csv
import json
import math

import pytest

from onecycle import legacy
from onecycle.recorder import Recorder, SmoothLoss


def _filled():
    rec = Recorder(["accuracy"])
    rec.add_iterations([[0.01, 0.1], [0.02, 0.2], [0.03, 0.3]], [0.95, 0.9, 0.85], [2.0, 1.0, 0.5])
    rec.add_epoch(1.1666, {"val_loss": 0.9, "accuracy": 0.5}, 1.5)
    rec.add_iterations([[0.02, 0.2]], [0.9], [0.4])
    rec.add_epoch(0.4, {"val_loss": 0.7, "accuracy": 0.75}, 1.2)
    rec.log("grad_norm/0", 3.0)
    for key, value in (("trust_mean/0", 0.5), ("trust_min/0", 0.1), ("trust_max/0", 0.9)):
        rec.log(key, value)
    return rec


def test_smooth_loss_bias_corrected_ema_hand_values():
    s = SmoothLoss(0.98)
    assert s.add(2.0) == pytest.approx(2.0)  # bias correction makes the first value exact
    avg = 0.98 * 0.02 * 2.0 + 0.02 * 1.0
    assert s.add(1.0) == pytest.approx(avg / (1 - 0.98 ** 2))


def test_seed_names_and_layout():
    rec = _filled()
    assert rec.lrs == [0.1, 0.2, 0.3, 0.2]  # head group
    assert rec.val_losses == [0.9, 0.7]
    assert legacy.Sched(rec).rec_metrics == [[0.5], [0.75]]
    assert rec.epoch_iters == [3, 4]


def test_json_round_trip(tmp_path):
    rec = _filled()
    path = rec.save_json(tmp_path / "h.json")
    back = Recorder.load_json(path)
    assert back.state_dict() == rec.state_dict()
    json.loads(path.read_text())  # plain JSON
    back.add_iterations([[0.1, 0.1]], [0.9], [0.3])  # smoothing continues where it left off
    rec.add_iterations([[0.1, 0.1]], [0.9], [0.3])
    assert back.smooth_losses[-1] == rec.smooth_losses[-1]


def test_nan_survives_json(tmp_path):
    rec = Recorder(["acc"])
    rec.add_epoch(1.0, None, 0.1)
    back = Recorder.load_json(rec.save_json(tmp_path / "h.json"))
    assert math.isnan(back.val_losses[0])


def test_csv(tmp_path):
    it_path, ep_path = _filled().save_csv(tmp_path)
    rows = list(csv.reader(it_path.open()))
    assert rows[0] == ["iteration", "lr_0", "lr_1", "mom", "loss", "smooth_loss", "grad_norm/0", "trust_max/0",
                       "trust_mean/0", "trust_min/0"]
    assert len(rows) == 5 and float(rows[2][2]) == 0.2
    ep = list(csv.reader(ep_path.open()))
    assert ep[0] == ["epoch", "train_loss", "val_loss", "accuracy (%)", "time (s)", "iterations"]  # accuracy in %,
    assert float(ep[2][3]) == 75.0  # as everywhere a person reads it


def test_plots_return_figures_and_save_png(tmp_path):
    from matplotlib.figure import Figure
    rec = _filled()
    for name, fig in [("lr", rec.plot_lr(save=tmp_path / "lr.png")),
                      ("losses", rec.plot_losses(save=tmp_path / "losses.png")),
                      ("metrics", rec.plot_metrics(save=tmp_path / "metrics.png")),
                      ("grads", rec.plot_grad_stats(save=tmp_path / "grads.png")),
                      ("trust", rec.plot_trust_ratios(save=tmp_path / "trust.png"))]:
        assert isinstance(fig, Figure)
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(rec.plot_lr().axes) == 2  # LR and momentum side by side


def _growing():
    """'f1_macro' appears at epoch 1 (a dict-valued metric's key), 'accuracy' is missing at epoch 2."""
    rec = Recorder(["accuracy"])
    rec.add_epoch(1.0, {"val_loss": 0.9, "accuracy": 0.5}, 1.0)
    rec.add_epoch(0.8, {"val_loss": 0.8, "accuracy": 0.6, "f1_macro": 0.4}, 1.1)
    rec.add_epoch(0.6, {"val_loss": 0.7, "f1_macro": 0.45}, 1.2)
    return rec


def _same(a, b):  # equality where NaN equals NaN
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def test_metric_columns_appear_and_disappear():
    rec = _growing()
    assert rec.metric_names == ["accuracy", "f1_macro"]
    assert _same(rec.metrics["accuracy"], [0.5, 0.6, math.nan])
    assert _same(rec.metrics["f1_macro"], [math.nan, 0.4, 0.45])
    assert rec.val_losses == [0.9, 0.8, 0.7]
    rows = legacy.Sched(rec).rec_metrics
    assert [len(row) for row in rows] == [2, 2, 2] and rows[1] == [0.6, 0.4]
    fresh = Recorder()  # no names known at construction: the first epoch brings them, in val's order
    fresh.add_epoch(1.0, {"val_loss": 0.5, "b": 0.25, "a": 0.75}, 1.0)
    assert fresh.metric_names == ["b", "a"] and fresh.metrics == {"b": [0.25], "a": [0.75]}
    with pytest.raises(TypeError, match="'a'.*'x'"):
        fresh.add_epoch(1.0, {"a": "x", "c": 1.0}, 1.0)
    assert fresh.n_epochs == 1 and fresh.metric_names == ["b", "a"]  # refused before any change


def test_grown_columns_csv_and_json_round_trip(tmp_path):
    rec = _growing()
    _, ep_path = rec.save_csv(tmp_path)
    ep = list(csv.reader(ep_path.open()))
    assert ep[0] == ["epoch", "train_loss", "val_loss", "accuracy (%)", "f1_macro (%)", "time (s)", "iterations"]
    assert [float(r[3]) for r in ep[1:3]] == [50.0, 60.0] and math.isnan(float(ep[3][3]))
    assert math.isnan(float(ep[1][4])) and [float(r[4]) for r in ep[2:]] == [40.0, 45.0]
    back = Recorder.load_json(rec.save_json(tmp_path / "h.json"))
    assert json.dumps(back.state_dict()) == json.dumps(rec.state_dict())
    assert back.metric_names == ["accuracy", "f1_macro"] and _same(back.metrics["f1_macro"], [math.nan, 0.4, 0.45])
    again = Recorder.from_state(rec.state_dict())
    again.add_epoch(0.5, {"val_loss": 0.6, "accuracy": 0.7, "f1_macro": 0.5, "top2": 0.9}, 1.3)
    assert _same(again.metrics["top2"], [math.nan] * 3 + [0.9]) and again.metrics["accuracy"][-1] == 0.7
    assert len(rec.metrics["accuracy"]) == 3  # from_state copied, not shared


def test_repr_is_the_last_epoch_not_the_lists():
    """A notebook shows this after ``fit_one_cycle(...)``."""
    assert repr(_filled()) == "Recorder(2 epochs, 4 iterations; epoch 2: train_loss 0.4, val_loss 0.7, accuracy 75.00%)"
    assert repr(Recorder()) == "Recorder(0 epochs, 0 iterations)"
    rec = Recorder()
    rec.add_iterations([[0.1]], [0.9], [2.0])
    rec.add_epoch(2.0, None, 1.0)  # no validation: no NaN shown
    assert repr(rec) == "Recorder(1 epoch, 1 iterations; epoch 1: train_loss 2)"
