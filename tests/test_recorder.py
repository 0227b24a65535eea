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


# ---- what the tests above leave open: values, not only shapes -----------------------------------------
def test_plots_draw_the_recorders_own_data():
    rec = _filled()
    lr_ax, mom_ax = rec.plot_lr().axes
    assert sorted(list(line.get_ydata()) for line in lr_ax.lines) == [[0.01, 0.02, 0.03, 0.02], [0.1, 0.2, 0.3, 0.2]]
    assert [list(line.get_ydata()) for line in mom_ax.lines] == [[0.95, 0.9, 0.85, 0.9]]
    assert any(list(line.get_ydata()) == [0.9, 0.7] for line in rec.plot_losses().axes[0].lines)  # validation
    assert any(list(line.get_ydata()) == [50.0, 75.0] for line in rec.plot_metrics().axes[0].lines)  # accuracy in %
    grads = rec.plot_grad_stats()
    assert [ax.get_title() for ax in grads.axes] == ["grad_mean_abs", "grad_norm"]
    assert [(line.get_label(), list(line.get_ydata())) for line in grads.axes[1].lines] == [("group 0", [3.0])]
    trust = rec.plot_trust_ratios()
    assert [ax.get_title() for ax in trust.axes] == ["trust_mean", "trust_min", "trust_max"]
    assert [[list(line.get_ydata()) for line in ax.lines] for ax in trust.axes] == [[[0.5]], [[0.1]], [[0.9]]]

def test_the_dashboard_draws_the_recorders_data_and_takes_its_arguments(tmp_path):
    rec = _filled()
    dash = rec.plot_dashboard(save=tmp_path / "dash.png")
    drawn = [list(line.get_ydata()) for ax in dash.axes for line in ax.lines]
    assert [0.95, 0.9, 0.85, 0.9] in drawn and [0.9, 0.7] in drawn  # momentum, validation loss
    assert (tmp_path / "dash.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_values_recorded_as_given_and_the_defaults():
    rec = _filled()
    assert rec.losses == [2.0, 1.0, 0.5, 0.4] and rec.times == [1.5, 1.2]
    assert rec.smooth_losses[0] == 2.0 and rec.series["grad_norm/0"] == [3.0]
    assert Recorder().smoother.beta == 0.98 and Recorder(smooth_beta=0.5).smoother.beta == 0.5
    rec = Recorder(smooth_beta=0.7)
    rec.add_iterations([[0.1]], [0.9], [1.0])
    rec.reset()  # the EMA factor stays unless given
    assert rec.smoother.beta == 0.7 and rec.losses == []
    rec.reset(0.9)
    assert rec.smoother.beta == 0.9


def test_add_epoch_names_a_bad_metric_and_its_type():
    rec = Recorder()
    with pytest.raises(TypeError, match=r"^val: a metric name must be a str, got 3 \(int\)$"):
        rec.add_epoch(1.0, {3: 0.5}, 1.0)
    with pytest.raises(TypeError, match=r"^val\['acc'\] must be a number, got '0.5' \(str\)$"):
        rec.add_epoch(1.0, {"acc": "0.5"}, 1.0)
    assert rec.n_epochs == 0  # nothing written


def test_state_round_trips_series_copies_lists_and_reads_files_without_series(tmp_path):
    rec = _filled()
    assert rec.state_dict()["series"] == rec.series and Recorder.from_state(rec.state_dict()).series == rec.series
    other = Recorder()
    other.load_state_dict(rec.state_dict())
    other.add_iterations([[0.5, 0.5]], [0.9], [0.1])
    other.log("grad_norm/0", 1.0)
    assert rec.group_lrs == [[0.01, 0.02, 0.03, 0.02], [0.1, 0.2, 0.3, 0.2]]  # its lists are not shared
    assert rec.series["grad_norm/0"] == [3.0]
    old = {k: v for k, v in rec.state_dict().items() if k != "series"}  # a history saved before series existed
    back = Recorder()
    back.load_state_dict(old)
    assert back.series == {} and back.losses == rec.losses
    assert json.loads(rec.save_json(tmp_path / "h.json").read_text())["epoch_numbering"] == "from 1"


def test_csv_files_epochs_numbered_from_one_and_rows_from_start(tmp_path):
    rec = _filled()
    paths = rec.save_csv(tmp_path)
    assert [p.name for p in paths] == ["iterations.csv", "epochs.csv"] and all(p.exists() for p in paths)
    assert [row[0] for row in list(csv.reader(paths[1].open()))[1:]] == ["1", "2"]
    assert [row[0] for row in rec.epoch_rows(1)[1]] == [2]
    assert [row[0] for row in rec.iteration_rows(2)[1]] == [2, 3]
    # a series shorter than the iterations: NaN where it has no value
    assert math.isnan(rec.iteration_rows(1)[1][0][-1]) and rec.iteration_rows()[1][0][-1] == 0.1


def test_the_history_log_is_a_snapshot_then_only_the_new_rows():
    rec = Recorder(["accuracy"])
    rec.add_iterations([[0.1]], [0.9], [1.0])
    rec.add_epoch(1.0, {"val_loss": 0.5, "accuracy": 0.25}, 2.0)
    line, lengths = rec.log_snapshot()
    assert json.loads(line)["snapshot"]["epoch_numbering"] == "from 1" and line.endswith("}\n")
    rec.add_iterations([[0.2], [0.3]], [0.8, 0.85], [0.9, 0.8])
    rec.add_epoch(0.85, {"val_loss": 0.4, "accuracy": 0.5, "f1": 0.3}, 2.0)
    rec.log("grad_norm/0", 4.0)
    more, lengths2 = rec.log_delta(lengths)
    delta = json.loads(more)
    assert delta["losses"] == [1, [0.9, 0.8]]  # only the new rows, with where they start
    assert delta["group_lrs"] == {"0": [1, [0.2, 0.3]]} and delta["train_losses"] == [1, [0.85]]
    assert delta["metrics"]["accuracy"] == [1, [0.5]] and delta["metrics"]["f1"][0] == 0  # a new column: all of it
    assert _same(delta["metrics"]["f1"][1], [math.nan, 0.3])
    assert delta["series"] == {"grad_norm/0": [0, [4.0]]} and delta["metric_names"] == ["accuracy", "f1"]
    assert lengths2["losses"] == 3 and lengths2["group_lrs"] == {"0": 3} and lengths2["metrics"]["f1"] == 2
    back = Recorder.from_log(line + more)
    whole = [{k: v for k, v in r.state_dict().items() if k != "metrics"} for r in (back, rec)]
    assert whole[0] == whole[1] and back.metrics.keys() == rec.metrics.keys()
    assert all(_same(back.metrics[k], rec.metrics[k]) for k in rec.metrics)  # f1's first epoch is NaN
    assert Recorder.from_log(line + more[:-1]).n_epochs == 1  # no newline: cut short, left out


def test_the_history_log_from_an_empty_snapshot_grows_its_groups():
    rec = Recorder()
    line, lengths = rec.log_snapshot()
    rec.add_iterations([[0.1, 1.0], [0.2, 2.0]], [0.9, 0.9], [1.0, 0.5])
    more, _ = rec.log_delta(lengths)
    assert Recorder.from_log(line + more).group_lrs == [[0.1, 0.2], [1.0, 2.0]]


def test_a_bad_history_log_is_named_by_its_line():
    rec = _filled()
    line, lengths = rec.log_snapshot()
    rec.add_iterations([[0.5, 0.5]], [0.9], [0.1])
    more, _ = rec.log_delta(lengths)
    for text, message in [("", r"^h\.jsonl: no complete line$"),
                          ("{cut", r"^h\.jsonl: no complete line$"),
                          ("x\n", r"^h\.jsonl: line 1 is not JSON: "),
                          ('{"a": 1}\n', r"^h\.jsonl: line 1 is not a snapshot$"),
                          (line + "[\n", r"^h\.jsonl: line 2 is not JSON: "),
                          (line + more + more, r"^h\.jsonl: line 3: moms continues at 4, the history holds 5$")]:
        with pytest.raises(ValueError, match=message):
            Recorder.from_log(text, "h.jsonl")
    with pytest.raises(ValueError, match=r"^history log: no complete line$"):
        Recorder.from_log("")
    broken = json.loads(more)
    broken["group_lrs"]["1"][0] = 0
    with pytest.raises(ValueError, match=r"^h\.jsonl: line 2: group_lrs\[1\] continues at 0, the history holds 4$"):
        Recorder.from_log(line + json.dumps(broken) + "\n", "h.jsonl")
    broken = json.loads(more)
    broken["series"] = {"grad_norm/0": [0, [1.0]]}
    with pytest.raises(ValueError, match=r"^h\.jsonl: line 2: series\['grad_norm/0'\] continues at 0, the history "
                                         r"holds 1$"):
        Recorder.from_log(line + json.dumps(broken) + "\n", "h.jsonl")


def test_repr_after_three_epochs_and_the_rows_of_a_metric_not_in_percent():
    rec = Recorder(["accuracy", "score"])
    for e, (acc, score) in enumerate([(0.5, 3.0), (0.6, 4.0), (0.7, 5.0)]):
        rec.add_iterations([[0.1]], [0.9], [1.0 - e / 10])
        rec.add_epoch(1.0 - e / 10, {"val_loss": 0.5, "accuracy": acc, "score": score}, 1.0)
    assert repr(rec).endswith("epoch 3: train_loss 0.8, val_loss 0.5, accuracy 70.00%, score 5)")
    header, rows = rec.epoch_rows()
    assert header[3:5] == ["accuracy (%)", "score"]
    assert rows[2][3:5] == [pytest.approx(70.0), 5.0]


def test_directions_round_trip_through_state_and_json(tmp_path):
    rec = _filled()
    rec.higher_is_better = {"accuracy": True, "err": False}
    assert Recorder.from_state(rec.state_dict()).higher_is_better == {"accuracy": True, "err": False}
    back = Recorder.load_json(rec.save_json(tmp_path / "h.json"))
    assert back.higher_is_better == {"accuracy": True, "err": False}
    old = rec.state_dict()
    del old["higher_is_better"]  # a file from before directions were kept: read by name
    assert Recorder.from_state(old).higher_is_better == {}
