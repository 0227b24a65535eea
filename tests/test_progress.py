"""Progress: one bar over all of a fit's steps that moves within an epoch, the table above it (val_loss,
accuracy in percent, a dict-valued metric's keys and not its name), the finder's bar at every step, and
the notebook's HTML views (through a stand-in for IPython's display)."""

import io
import itertools
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle import notebook, progress
from onecycle.progress import Progress, finder_bar


class _TTY(io.StringIO):
    def isatty(self):
        return True


def _tiny_learner(quiet=False, metrics=None, batches=6):
    torch.manual_seed(0)
    x, y = torch.randn(16 * batches, 4), torch.randint(0, 2, (16 * batches,))
    dl = DataLoader(TensorDataset(x, y), batch_size=16)
    return oc.Learner(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), dl, dl,
                      metrics=[oc.metrics.accuracy] if metrics is None else metrics, device="cpu", quiet=quiet)


@pytest.fixture
def every_call_due(monkeypatch):
    """A clock that moves a second at every reading: every bar update is due."""
    clock = itertools.count()
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(notebook.time, "monotonic", lambda: float(next(clock)))
    import tqdm.std
    monkeypatch.setattr(tqdm.std, "time", lambda: float(next(clock)))  # tqdm's own redraw interval


def test_a_fit_shows_one_bar_over_all_its_steps(monkeypatch, capsys, every_call_due):
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    _tiny_learner().fit(0.05, 3)
    text = err.getvalue()
    # one bar: every position of the 18 steps, each drawn with its epoch, never reset to 0 at an epoch
    for done, epoch in [(1, 1), (5, 1), (6, 1), (7, 2), (12, 2), (13, 3), (18, 3)]:
        assert f"epoch {epoch}/3" in text and f"| {done}/18 [" in text, (done, epoch)
    assert "| 0/6 [" not in text and "/6 [" not in text
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["epoch", "train_loss", "val_loss", "accuracy", "time"]  # one spelling
    assert [r.split()[0] for r in table[1:]] == ["1", "2", "3"]
    assert all(r.split()[3].endswith("%") and r.endswith(" s") for r in table[1:])  # accuracy in %, times in s


def test_a_resumed_fit_starts_its_bar_where_it_is(monkeypatch, every_call_due):
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    prog = Progress(["accuracy"], total=30)
    bar = prog.bar(10, 1, 3)  # epoch 2 of 3, 10 batches each
    bar.update(0, [torch.tensor(0.5)])
    prog.close()
    assert "| 11/30 [" in err.getvalue() and "epoch 2/3" in err.getvalue() and "loss=0.5000" in err.getvalue()


def test_no_bar_off_a_terminal_or_when_quiet(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file: the table only
    _tiny_learner().fit(0.05, 1)
    assert sys.stderr.getvalue() == "" and capsys.readouterr().out.splitlines()[0].startswith("     epoch")
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    _tiny_learner(quiet=True).fit(0.05, 1)
    assert err.getvalue() == "" and capsys.readouterr().out == ""


def test_the_table_shows_a_dict_metrics_keys_not_its_name():
    def scores(preds, targets):
        return {"hits": (preds.argmax(-1) == targets).float().mean(), "misses": torch.tensor(0.25)}
    out = io.StringIO()
    prog = Progress(["scores", "accuracy"], stream=out)
    prog.epoch_row(0, 1.0, {"val_loss": 0.5, "hits": 0.5, "misses": 0.25, "accuracy": 0.875}, 0.25)
    prog.epoch_row(1, 0.9, {"val_loss": 0.4, "hits": 0.5, "misses": 0.25, "accuracy": 0.9}, 12.0)
    header, *rows = out.getvalue().splitlines()
    assert header.split() == ["epoch", "train_loss", "val_loss", "accuracy", "hits", "misses", "time"]
    assert rows[0].split() == ["1", "1.0000", "0.5000", "87.50%", "0.5000", "0.2500", "0.25", "s"]
    assert rows[1].split()[-2:] == ["12.0", "s"]
    learn = _tiny_learner(quiet=True, metrics=[scores])  # the recorder and the CSV: no column of NaN either
    learn.fit(0.05, 2)
    assert learn.recorder.metric_names == ["hits", "misses"] and "scores" not in learn.recorder.metrics
    assert learn.recorder.epoch_rows()[0] == ["epoch", "train_loss", "val_loss", "hits", "misses", "time (s)",
                                              "iterations"]


def test_finder_bar_advances_at_every_step():
    out = io.StringIO()
    bar = finder_bar(3, file=out, interval=0.0)
    for i, (lr, loss) in enumerate([(1e-3, 2.0), (1e-2, 1.25), (1e-1, 5.0)]):
        bar.update(i, lr, loss)
        assert f"| {i + 1}/3 [" in out.getvalue()
    assert bar.best == 1.25
    text = out.getvalue()
    assert "lr_find" in text and "lr=0.1" in text and "best=1.25" in text
    bar.close(3)
    quiet = io.StringIO()
    finder_bar(3, quiet=True, file=quiet).update(0, 1e-3, 2.0)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_lr_find_shows_its_bar_unless_quiet(monkeypatch, quiet, every_call_due):
    learn = _tiny_learner(quiet=quiet)
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    learn.lr_find(num_it=12)
    assert ("lr_find" in err.getvalue() and "best=" in err.getvalue()) is not quiet
    assert learn.quiet is quiet  # the finder's own quiet is undone


class _Display:
    """IPython's ``display(obj, display_id=True)``, recording every update of the one handle it returns."""

    def __init__(self):
        self.shown = []

    def __call__(self, obj, display_id=False):
        assert display_id is True
        self.shown.append(obj.data)
        return self

    def update(self, obj):
        self.shown.append(obj.data)


def test_in_a_notebook_a_fit_and_the_finder_are_html_updated_in_place(monkeypatch, capsys, every_call_due):
    pytest.importorskip("IPython")
    import IPython.display
    shown = _Display()
    monkeypatch.setattr(IPython.display, "display", shown)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    learn = _tiny_learner()
    learn.lr_find(num_it=10)
    finder = [h for h in shown.shown if "lr_find" in h]
    assert [h.count("<progress") for h in finder] == [1] * len(finder) and len(finder) >= 10  # every step
    assert "ran 10 of 10 steps" in finder[-1]
    shown.shown.clear()
    learn.fit(0.05, 2)
    out = capsys.readouterr().out
    assert "epoch" not in out.replace("LR finder", "") and "\r" not in out  # no text table, no carriage return
    bars = [h for h in shown.shown if "<progress" in h]
    assert any('value="3" max="12"' in h and "epoch 1/2" in h for h in bars)  # it moves within an epoch
    assert "<table" in shown.shown[-1] and shown.shown[-1].count("<tr>") == 3  # header and two epochs
    assert "12/12 steps in" in shown.shown[-1] and "%</td>" in shown.shown[-1]
    assert not notebook.in_notebook()  # here, outside a kernel


def test_progress_header_from_first_row_and_new_columns():
    out = io.StringIO()
    prog = Progress([], stream=out)
    prog.epoch_row(0, 1.0, {"val_loss": 0.5, "MulticlassAccuracy": 0.25}, 1.0)
    prog.epoch_row(1, 0.9, {"val_loss": 0.4, "MulticlassAccuracy": 0.5, "f1": 0.125}, 1.0)
    prog.epoch_row(2, 0.8, {}, 0.0432)  # a short epoch reads 0.04 s, not "0.0s"
    prog.epoch_row(3, 0.8, {}, 0.949)
    lines = [line.split() for line in out.getvalue().splitlines()]
    assert lines[0] == ["epoch", "train_loss", "val_loss", "MulticlassAccuracy", "time"]
    assert lines[1] == ["1", "1.0000", "0.5000", "25.00%", "1.00", "s"]  # epochs numbered from 1
    assert lines[2] == ["epoch", "train_loss", "val_loss", "MulticlassAccuracy", "f1", "time"]
    assert lines[3] == ["2", "0.9000", "0.4000", "50.00%", "12.50%", "1.00", "s"]
    assert lines[4][-2:] == ["0.04", "s"] and lines[5][-2:] == ["0.95", "s"]
    assert len(lines) == 6
