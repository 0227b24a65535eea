"""Checkpointer: its arguments, the write budget, the last write's error, and clean stops on
SIGINT/SIGTERM in this process (with their checkpoint, resumed bit-identically)."""

import os
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import onecycle as oc
from onecycle import checkpointer as CK
from onecycle import resume as R
from test_resume import STEPS, FirstStep, _run, assert_same, final_state, make_learner, position  # noqa: F401


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The final state of a run never stopped (the resume tests' reference run)."""
    state = final_state(_run(tmp_path_factory.mktemp("ref")))
    return lambda: state


@pytest.mark.parametrize("kw,err,arg", [
    ({"every": True, "folder": "x"}, TypeError, "every"),
    ({"every": 1.0, "folder": "x"}, TypeError, "every"),
    ({"every": 0, "folder": "x"}, ValueError, "every"),
    ({"budget": -0.1}, ValueError, "ckpt_budget"),
    ({"budget": 1.0001}, ValueError, "ckpt_budget"),
    ({"budget": "0.1"}, TypeError, "ckpt_budget"),
    ({"resume": "auto"}, ValueError, "checkpoint_dir"),
    ({"every": 3}, ValueError, "checkpoint_dir"),
    ({"resume": 1.5, "folder": "x"}, ValueError, "resume"),
    ({"folder": b"x"}, TypeError, "checkpoint_dir"),
])
def test_checkpointer_rejects(kw, err, arg):
    with pytest.raises(err, match=arg):
        CK.Checkpointer(**kw)


@pytest.mark.parametrize("kw", [{"every": 1, "folder": "x"}, {"budget": 1}, {"budget": 1.0}, {"budget": 1e-9},
                                {"budget": None}, {"resume": True, "folder": Path("x")},
                                {"resume": "auto", "folder": "x"}, {"resume": False}])
def test_checkpointer_accepts(kw):
    ck = CK.Checkpointer(**kw)
    assert (ck.every, ck.budget, ck.resume) == (kw.get("every"), kw.get("budget", 0.005), kw.get("resume", False))


# ---- clean stops on SIGINT/SIGTERM, in this process ---------------------------------------------

class SignalAfterStep(oc.Callback):
    """Send ``signum`` to this process ``times`` times after optimizer step ``k`` (1-based)."""

    def __init__(self, k, signum=signal.SIGINT, times=1):
        self.k, self.signum, self.times, self.seen = k, signum, times, 0

    def after_step(self, learn):
        self.seen += 1
        if self.seen == self.k:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum,k,at", [
    (signal.SIGINT, 7, (0, 7, 7)),  # mid-epoch: the stop checkpoints the step it was signalled after
    (signal.SIGTERM, 12, (1, 0, 12)),  # an epoch's last step: the stop comes at the epoch's end
    (signal.SIGINT, 36, (3, 0, 36)),  # the fit's last step: the end is written, and the stop still reported
])
def test_signal_stops_cleanly_with_a_checkpoint_and_resumes_bit_identically(tmp_path, reference, signum, k, at):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(CK.TrainingInterrupted) as stopped:
        _run(tmp_path, [SignalAfterStep(k, signum)])
    assert stopped.value.signum == signum and isinstance(stopped.value, KeyboardInterrupt)
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    assert str(stopped.value) == (f"training interrupted by signal {signum} ({name}): stopped after optimizer step "
                                  f"{at[2]} of {STEPS}; the checkpoint {tmp_path / R.CKPT_NAME} continues it exactly: "
                                  "the same fit with resume=True")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored
    assert position(tmp_path / R.CKPT_NAME) == at
    if at[2] == STEPS:
        return
    first = FirstStep()
    learn = _run(tmp_path, [first], resume=True)
    assert first.step == at[2]
    assert_same(final_state(learn), reference())


def test_training_interrupted_names_the_signal_and_says_more_only_when_told():
    stop = CK.TrainingInterrupted(signal.SIGTERM, "stopped after optimizer step 3 of 9")
    assert str(stop) == "training interrupted by signal 15 (SIGTERM): stopped after optimizer step 3 of 9"
    assert stop.signum == signal.SIGTERM and isinstance(stop, KeyboardInterrupt)
    assert str(CK.TrainingInterrupted(signal.SIGINT)) == "training interrupted by signal 2 (SIGINT)"
    assert str(CK.TrainingInterrupted(99)) == "training interrupted by signal 99"  # no such signal: no name


def test_a_second_signal_stops_at_once_and_leaves_the_last_scheduled_checkpoint(tmp_path):
    with pytest.raises(CK.TrainingInterrupted, match=r"^training interrupted by signal 2 \(SIGINT\): a second signal "
                                                    r"stops at once, without a checkpoint$"):
        _run(tmp_path, [SignalAfterStep(7, times=2)])  # raised inside the callback, before any stop point
    assert position(tmp_path / R.CKPT_NAME) == (0, 5, 5)  # every=5: nothing was written for the stop


def test_signal_without_a_checkpoint_folder_stops_after_that_step():
    learn = make_learner(0)
    with pytest.raises(CK.TrainingInterrupted, match=r"signal 15 \(SIGTERM\): stopped after optimizer step 4 of "
                                                    r"36 \(no checkpoint_dir, so there is no checkpoint to resume "
                                                    r"from\)$"):
        learn.fit_one_cycle(3, 0.1, callbacks=[SignalAfterStep(4, signal.SIGTERM)])
    assert learn.scheduler.step_count == 4 and len(learn.recorder.losses) == 4


def test_fit_in_another_thread_leaves_the_signal_handlers_alone():
    seen = []

    class Handlers(oc.Callback):
        def before_fit(self, learn):
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    learn = make_learner(0, [Handlers()])
    t = threading.Thread(target=learn.fit_one_cycle, args=(1, 0.1))
    t.start()
    t.join(timeout=300)  # a hang guard only
    assert not t.is_alive() and learn.scheduler.step_count == 12
    assert seen == [before]


# ---- the time budget and the last write ---------------------------------------------------------

class FakeWriter:
    def __init__(self, busy=False, seconds=0.0, error=None):
        self.busy, self.seconds, self.error, self.waited = busy, seconds, error, 0

    def wait(self):
        self.waited += 1
        if self.error is not None:
            raise self.error


# The first guess of a write's cost, for make_learner's 163 parameters: 3 ms plus the weights and two
# optimizer states (3 x 652 bytes) at 300 MB/s = 0.00300652 s; at a budget of 1% due 0.300652 s after the start.
@pytest.mark.parametrize("busy,ago,writer_s,budget,due", [
    (False, 0.3007, 0.0, 0.01, True),
    (False, 0.3006, 0.0, 0.01, False),
    (False, 2.3006, 0.01, 0.01, False),  # the writer's time counts twice: + 2 x 0.01 / 0.01 = 2 s
    (False, 2.3007, 0.01, 0.01, True),
    (True, 100.0, 0.0, 0.01, False),  # never while the last write is still going
    (True, 0.0, 1.0, None, True),  # no budget: every scheduled write
])
def test_a_scheduled_write_is_due_when_it_fits_the_budget(monkeypatch, busy, ago, writer_s, budget, due):
    clock = [1000.0]
    monkeypatch.setattr(CK.time, "perf_counter", lambda: clock[0])
    loop = SimpleNamespace(learn=make_learner(0))  # what the checkpointer reads of the fit's loop
    ck = CK.Checkpointer(folder="x", budget=budget)
    ck.epoch_start(loop)  # the budget counts from the fit's start
    ck.writer = FakeWriter(busy, writer_s)
    clock[0] += ago
    assert ck.due(loop) is due


def test_wait_raises_the_write_error_or_attaches_it_to_a_failure():
    learn = make_learner(0)
    ck = CK.Checkpointer(folder="x")
    ck.writer = FakeWriter()
    ck.wait(learn)
    ck.writer = FakeWriter(error=OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        ck.wait(learn)
    failure = RuntimeError("crash")
    ck.wait(learn, failure)  # not raised over the failure: noted on it
    assert failure.__notes__ == ["onecycle: writing the last checkpoint also failed: OSError: disk full"]
    assert ck.writer.waited == 2


def test_a_failed_last_write_is_raised_by_the_fit(tmp_path, monkeypatch):
    """The write fails on the writer thread (its final rename: a full disk, say); the fit waits for
    it and raises its error, and no partial file is left."""
    rename = os.replace

    def full(src, dst, **kw):
        if str(dst).endswith(R.CKPT_NAME):
            raise OSError(28, "No space left on device")
        return rename(src, dst, **kw)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left on device"):
        make_learner(0).fit_one_cycle(1, 0.1, checkpoint_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
