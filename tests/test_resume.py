"""Checkpoints and exact resume: bit-identical continuation after a crash or an error, refusal of
inconsistent resumes, NaN handling, weights save/load."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import onecycle as oc
from onecycle import resume as R
from onecycle.checkpoint import CheckpointError, safe_load

sys.path.insert(0, str(Path(__file__).parent))
from _resume_job import final_state, make_learner  # noqa: E402

JOB = Path(__file__).parent / "_resume_job.py"
STEPS = 12 * 3  # 96 samples / batch 8, 3 epochs


def assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


class RaiseAt(oc.Callback):
    def __init__(self, k):
        self.k, self.seen = k, 0

    def after_batch(self, learn):
        self.seen += 1
        if self.seen == self.k:
            raise RuntimeError(f"crash at {self.k}")


def _run(tmp, callbacks=(), resume=False, every=5, workers=0):
    learn = make_learner(workers, callbacks)
    torch.manual_seed(42)
    learn.fit_one_cycle(3, 0.1, checkpoint_dir=tmp, every=every, ckpt_budget=None, resume=resume)  # every write
    return learn


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return final_state(_run(tmp_path_factory.mktemp("ref")))


@pytest.mark.parametrize("k", [3, 5, 12, 13, 26, STEPS])
def test_resume_after_error_is_bit_identical(tmp_path, reference, k):
    with pytest.raises(RuntimeError, match="crash"):
        _run(tmp_path, [RaiseAt(k)])
    learn = _run(tmp_path, resume="auto")  # k < every: no checkpoint yet, a fresh start
    assert_same(final_state(learn), reference)


def test_negative_control_without_rng_restore(tmp_path, reference, monkeypatch):
    """Prove the comparison has teeth: resuming without restoring the RNG state differs."""
    with pytest.raises(RuntimeError):
        _run(tmp_path, [RaiseAt(8)])
    monkeypatch.setattr("onecycle.loop.set_rng_state", lambda state: None)
    learn = _run(tmp_path, resume=True)
    with pytest.raises(AssertionError):
        assert_same(final_state(learn), reference)


def _job(tmp, out, kill_at=0, resume="", workers=0):
    cmd = [sys.executable, str(JOB), "--ckpt", str(tmp / "ckpt"), "--out", str(out), "--workers", str(workers)]
    if kill_at:
        cmd += ["--kill-at", str(kill_at)]
    if resume:
        cmd += ["--resume", resume]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kill_at,workers", [(1, 0), (12, 0), (STEPS, 0), (17, 2)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, kill_at, workers):
    ref = _job(tmp_path / "a", tmp_path / "ref.pt", workers=workers)
    assert ref.returncode == 0, ref.stderr
    killed = _job(tmp_path / "b", tmp_path / "never.pt", kill_at=kill_at, workers=workers)
    assert killed.returncode == -signal.SIGKILL
    resumed = _job(tmp_path / "b", tmp_path / "resumed.pt", resume="auto", workers=workers)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(torch.load(tmp_path / "resumed.pt", weights_only=True),
                torch.load(tmp_path / "ref.pt", weights_only=True))


def test_resume_true_without_checkpoint_says_so(tmp_path):
    learn = make_learner(0)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        learn.fit_one_cycle(1, 0.1, checkpoint_dir=tmp_path, resume=True)
    assert learn.recorder.n_epochs == 0


@pytest.mark.parametrize("change,key", [
    (lambda l: l.fit_one_cycle(4, 0.1, checkpoint_dir=l._d, resume=True), "epochs"),
    (lambda l: l.fit_one_cycle(3, 0.2, checkpoint_dir=l._d, resume=True), "peaks"),
    (lambda l: l.fit_one_cycle(3, 0.1, div=10, checkpoint_dir=l._d, resume=True), "schedules"),
    (lambda l: (setattr(l, "train_dl", torch.utils.data.DataLoader(l.train_dl.dataset, batch_size=16)),
                l.fit_one_cycle(3, 0.1, checkpoint_dir=l._d, resume=True)), "batches_per_epoch"),
    (lambda l: (setattr(l, "accum", 2), l.fit_one_cycle(3, 0.1, checkpoint_dir=l._d, resume=True)),
     "steps_per_epoch"),
])
def test_inconsistent_resume_refused(tmp_path, change, key):
    with pytest.raises(RuntimeError):
        _run(tmp_path, [RaiseAt(8)])
    learn = make_learner(0)
    learn._d = tmp_path
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(ValueError, match=f"cannot resume: {key} differs"):
        change(learn)
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())


def test_layout_change_refused_and_reschedule(tmp_path):
    with pytest.raises(RuntimeError):
        _run(tmp_path, [RaiseAt(8)])
    learn = make_learner(0)
    learn.groups = lambda m: [list(m[0].parameters()), list(m[3].parameters())]
    with pytest.raises(ValueError, match="layout differs"):
        learn.fit_one_cycle(3, 0.1, checkpoint_dir=tmp_path, resume=True, reschedule=True)
    learn = make_learner(0)
    learn.fit_one_cycle(4, 0.1, checkpoint_dir=tmp_path, resume=True, reschedule=True)
    assert learn.scheduler.total_steps == 48 and learn.recorder.n_epochs == 4


def test_corrupt_checkpoint_named(tmp_path):
    with pytest.raises(RuntimeError):
        _run(tmp_path, [RaiseAt(8)])
    path = tmp_path / R.CKPT_NAME
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path.name)):
        make_learner(0).fit_one_cycle(3, 0.1, checkpoint_dir=tmp_path, resume=True)


def _nan_at(k):
    calls = {"n": 0}

    def loss_fn(pred, y):
        calls["n"] += 1
        loss = F.cross_entropy(pred, y)
        return loss * float("nan") if calls["n"] == k else loss
    return loss_fn


def test_nan_at_k_stops_with_weights_of_k_minus_1(tmp_path):
    learn = make_learner(0)
    learn.loss_fn = _nan_at(6)
    torch.manual_seed(42)
    with pytest.raises(R.NonFiniteLossError, match="epoch 0, iteration 5"):
        learn.fit_one_cycle(3, 0.1, checkpoint_dir=tmp_path, every=2, ckpt_budget=None)  # no write skipped
    ref = make_learner(0)

    class StopAfter5(oc.Callback):
        def after_batch(self, l):
            if l.iter == 4:
                raise oc.CancelFit

    torch.manual_seed(42)
    ref.fit_one_cycle(3, 0.1, callbacks=[StopAfter5()])
    assert_same(learn.model.state_dict(), ref.model.state_dict())
    state = safe_load(tmp_path / R.CKPT_NAME)
    assert state["position"] == {"epoch": 0, "batch": 4, "step": 4}  # the last good checkpoint stays


@pytest.mark.parametrize(("budget", "every", "expected"), [
    (None, None, [(1, 0), (2, 0), (3, 0)]),  # every epoch end
    (None, 5, [(0, 5), (0, 10), (1, 0), (1, 3), (1, 8), (2, 0), (2, 1), (2, 6), (2, 11), (3, 0)]),  # 12 steps/epoch
    (1e-9, None, [(3, 0)]),  # a tiny budget: only the last epoch end
    (1e-9, 5, [(3, 0)]),
])
def test_ckpt_budget_decides_which_scheduled_writes_happen(tmp_path, monkeypatch, budget, every, expected):
    written = []
    real_save = R.save
    monkeypatch.setattr(R, "save", lambda learn, state: (written.append(
        (state["position"]["epoch"], state["position"]["batch"])), real_save(learn, state))[1])
    learn = make_learner(0)
    learn.fit_one_cycle(3, 0.1, checkpoint_dir=tmp_path, every=every, ckpt_budget=budget)
    assert written == expected
    assert safe_load(tmp_path / R.CKPT_NAME)["position"]["epoch"] == 3  # the fit returns with its end on disk


def test_nan_skip_counts_and_continues():
    learn = make_learner(0)
    learn.loss_fn = _nan_at(3)
    learn.fit_one_cycle(1, 0.1, on_nan="skip")
    assert learn.nan_skipped == 1 and learn.scheduler.step_count == 11


def test_save_load_weights_and_optimizer(tmp_path):
    learn = make_learner(0)
    learn.fit_one_cycle(1, 0.1)
    learn.save(tmp_path / "w.pt", with_opt=True)
    other = make_learner(0)
    other.load(tmp_path / "w.pt", with_opt=True)
    assert_same(other.model.state_dict(), learn.model.state_dict())
    assert_same(other.opt.state_dict()["state"], learn.opt.state_dict()["state"])
    torch.save(learn.model.state_dict(), tmp_path / "plain.pt")  # a user's own weights file
    make_learner(0).load(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="optimizer"):
        make_learner(0).load(tmp_path / "plain.pt", with_opt=True)


@pytest.mark.parametrize("kw,arg", [
    ({"every": 0, "checkpoint_dir": "x"}, "every"),
    ({"resume": "yes", "checkpoint_dir": "x"}, "resume"),
    ({"resume": True}, "checkpoint_dir"),
    ({"ckpt_budget": 0, "checkpoint_dir": "x"}, "ckpt_budget"),
    ({"ckpt_budget": 1.5, "checkpoint_dir": "x"}, "ckpt_budget"),
    ({"ckpt_budget": True, "checkpoint_dir": "x"}, "ckpt_budget"),
    ({"ckpt_budget": "1%", "checkpoint_dir": "x"}, "ckpt_budget"),
    ({"on_nan": "ignore"}, "on_nan"),
    ({"checkpoint_dir": 3}, "checkpoint_dir"),
])
def test_bad_fit_options(kw, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        make_learner(0).fit_one_cycle(1, 0.1, **kw)


def test_safetensors_export_round_trip(tmp_path):
    pytest.importorskip("safetensors")
    learn = make_learner(0)
    learn.fit_one_cycle(1, 0.1)
    learn.save(tmp_path / "w.safetensors")
    other = make_learner(0)
    other.load(tmp_path / "w.safetensors")
    assert_same(other.model.state_dict(), learn.model.state_dict())
    with pytest.raises(ValueError, match="with_opt"):
        learn.save(tmp_path / "x.safetensors", with_opt=True)


def test_history_is_packed_into_float64_tensors_and_unpacked_exactly(tmp_path):
    import math
    plain = {"losses": [0.5, -0.0, math.nan, math.inf, 1e-300, 0.1 + 0.2], "epoch_iters": [12, 24],
             "moms": [None, 0.9], "empty": [], "group_lrs": [[0.1, 0.2], [0.3, 0.4]],
             "metrics": {"accuracy": [0.25, 0.75]}, "beta": 0.98}
    packed = R.pack_floats(plain)
    assert packed["losses"].dtype == torch.float64 and packed["group_lrs"][1].tolist() == [0.3, 0.4]
    assert packed["epoch_iters"] == [12, 24] and packed["moms"] == [None, 0.9] and packed["empty"] == []
    back = R.unpack_floats(packed)
    assert_same(back, plain)
    assert math.copysign(1, back["losses"][1]) == -1 and type(back["losses"][0]) is float
    # what a fit writes: the recorder's per-iteration history as tensors, restored to lists
    learn = make_learner(0)
    learn.fit_one_cycle(1, 0.1, checkpoint_dir=tmp_path)
    state = safe_load(tmp_path / R.CKPT_NAME)
    assert isinstance(state["recorder"]["losses"], torch.Tensor)
    assert R.unpack_floats(state["recorder"]) == learn.recorder.state_dict()
