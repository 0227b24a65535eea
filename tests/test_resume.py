"""Checkpoints and exact resume: bit-identical continuation after SIGKILL or an error, for every
kind of shuffling loader (global RNG, a generator owned by the loader, its sampler or its batch
sampler's sampler, worker processes, torchdata's StatefulDataLoader); refusal of inconsistent
resumes, NaN handling, weights save/load."""

import copy
import functools
import json
import math
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle import checkpoint as C
from onecycle import resume as R
from onecycle import rng
from onecycle.checkpoint import CheckpointError, safe_load
from onecycle.loop import NonFiniteLossError

sys.path.insert(0, str(Path(__file__).parent))
from _resume_job import FirstStep, final_state, fit, make_learner  # noqa: E402

JOB = Path(__file__).parent / "_resume_job.py"
STEPS = 12 * 3  # 96 samples / batch 8, 3 epochs
# The last checkpoint on disk when a run stops after batch k ("b<k>", 1-based) or as epoch E begins
# ("e<E>"), as (epoch, next batch, optimizer step), worked out by hand from the schedule: every 5
# steps except on an epoch's last batch (steps 5, 10, 15, 20, 25, 30, 35), and at each epoch's end.
CKPT_BEFORE = {"b5": (0, 5, 5), "b7": (0, 5, 5), "b12": (0, 10, 10), "b13": (1, 0, 12), "b22": (1, 8, 20),
               "b26": (2, 1, 25), "b36": (2, 11, 35), "e2": (2, 0, 24)}


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


def test_assert_same_sees_one_bit_one_float_and_a_missing_key(reference):
    state = reference()
    assert_same(state, copy.deepcopy(state))
    other = copy.deepcopy(state)
    w = other["model"]["0.weight"].view(-1)
    w[0] = torch.nextafter(w[0], torch.tensor(1.0))
    with pytest.raises(AssertionError, match="0.weight"):
        assert_same(state, other)
    other = copy.deepcopy(state)
    other["recorder"]["losses"][-1] += 1e-12
    with pytest.raises(AssertionError, match="losses"):
        assert_same(state, other)
    del other["rng"]["loaders"]
    with pytest.raises(AssertionError):
        assert_same(state, other)


def position(path):
    pos = safe_load(path)["position"]
    return pos["epoch"], pos["batch"], pos["step"]


class RaiseAt(oc.Callback):
    def __init__(self, k):
        self.k, self.seen = k, 0

    def after_batch(self, learn):
        self.seen += 1
        if self.seen == self.k:
            raise RuntimeError(f"crash at {self.k}")


def _run(tmp, callbacks=(), resume=False, loader="shuffle"):
    learn = make_learner(0, callbacks, loader=loader)
    fit(learn, tmp, resume)  # every=5, ckpt_budget=None: every scheduled write happens
    return learn


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The final state of a run that was never stopped, per loader kind (computed once each)."""
    cache = {}

    def get(loader="shuffle"):
        if loader not in cache:
            cache[loader] = final_state(_run(tmp_path_factory.mktemp(f"ref-{loader}"), loader=loader))
        return cache[loader]
    return get


def _crash_and_resume(tmp, k, loader="shuffle"):
    """Crash after batch k, check the checkpoint left is the expected one, resume from it (resume=True:
    a missing checkpoint raises, never a fresh start) and return the resumed learner."""
    with pytest.raises(RuntimeError, match="crash"):
        _run(tmp, [RaiseAt(k)], loader=loader)
    assert position(tmp / R.CKPT_NAME) == CKPT_BEFORE[f"b{k}"]
    first = FirstStep()
    learn = _run(tmp, [first], resume=True, loader=loader)
    assert first.step == CKPT_BEFORE[f"b{k}"][2] > 0  # it started from the checkpoint
    return learn


@pytest.mark.parametrize("k", [5, 7, 12, 13, 26, STEPS])
def test_resume_after_error_is_bit_identical(tmp_path, reference, k):
    assert_same(final_state(_crash_and_resume(tmp_path, k)), reference())


# What else a fit may hold across a checkpoint: the optimizer's state (Adam's moments and step, LARS's
# momentum and trust ratios, LAMB's), an accumulation window, autocast, a GradScaler's scale and growth.
VARIANTS = {
    "adamw": dict(opt="adamw"), "lars": dict(opt="lars"), "lamb": dict(opt="lamb"), "accum3": dict(accum=3),
    "bf16": dict(amp="bf16"), "fp16_scaler": dict(amp="fp16", scaler=dict(init_scale=2.0**12, growth_interval=3)),
}


def _variant(tmp, name, callbacks=(), resume=False):
    kw = dict(VARIANTS[name])
    learn = make_learner(0, callbacks)
    learn.opt_func, learn.accum, learn.amp = kw.get("opt", "sgd"), kw.get("accum", 1), kw.get("amp", False)
    if "scaler" in kw:
        learn.user_scaler = torch.amp.GradScaler("cpu", **kw["scaler"])
    fit(learn, tmp, resume)
    state = final_state(learn)
    if learn.scaler is not None:
        state["scaler"] = learn.scaler.state_dict()
    return learn, state


@pytest.mark.parametrize("k", [13, 17, 29])  # just past epoch 1's end, mid-epoch 2, mid-epoch 3
@pytest.mark.parametrize("name", list(VARIANTS))
def test_resume_is_bit_identical_for_other_optimizers_accumulation_and_amp(tmp_path, name, k):
    _, reference = _variant(tmp_path / "ref", name)
    with pytest.raises(RuntimeError, match="crash"):
        _variant(tmp_path / "run", name, [RaiseAt(k)])
    first = FirstStep()
    learn, resumed = _variant(tmp_path / "run", name, [first], resume=True)
    assert first.step > 0  # it continued from a checkpoint
    assert_same(resumed, reference)
    if name == "fp16_scaler":  # the scaler did its job: a scale that moved, and the same one after the resume
        assert resumed["scaler"]["scale"] != 2.0**12
    if name == "accum3":
        assert learn.scheduler.step_count == learn.scheduler.total_steps == 3 * 4  # 12 batches, windows of 3


def test_per_step_series_resume_exactly_mid_epoch(tmp_path):
    """GradStats buffers its per-step rows until the epoch ends: a mid-epoch checkpoint holds the
    rows so far, so the resumed run's series equal an uninterrupted run's, row for row."""
    ref = _run(tmp_path / "ref", [oc.GradStats()])
    with pytest.raises(RuntimeError, match="crash"):
        _run(tmp_path / "run", [oc.GradStats(), RaiseAt(22)])
    assert len(safe_load(tmp_path / "run" / R.CKPT_NAME)["recorder"]["series"]["grad_norm/0"]) == 20  # mid-epoch 2
    learn = _run(tmp_path / "run", [oc.GradStats()], resume=True)
    assert len(ref.recorder.series["grad_norm/0"]) == STEPS
    assert_same(final_state(learn)["recorder"], final_state(ref)["recorder"])


# Kinds whose loader owns a generator, each at a stop where restoring it matters (a later epoch: in
# epoch 0 a fresh generator is still in its epoch-start state; the stateful loader's own position
# restores its generator mid-epoch, so it is stopped at an epoch's end).
OWNED = [("generator", 22), ("sampler", 22), ("batch_sampler", 22), ("stateful", 13)]


@pytest.mark.parametrize("loader,k", OWNED)
def test_resume_after_error_restores_the_loaders_generator(tmp_path, reference, loader, k):
    assert_same(final_state(_crash_and_resume(tmp_path, k, loader)), reference(loader))


@pytest.mark.parametrize("loader,k", OWNED)
def test_negative_control_without_loader_generators(tmp_path, reference, monkeypatch, loader, k):
    """The same comparison fails when the loader's generators are neither captured nor restored."""
    monkeypatch.setattr(rng, "loader_generators", lambda dl: [])
    learn = _crash_and_resume(tmp_path, k, loader)
    with pytest.raises(AssertionError):
        assert_same(final_state(learn)["model"], reference(loader)["model"])


def test_negative_control_without_rng_restore(tmp_path, reference, monkeypatch):
    """Prove the comparison has teeth: resuming without restoring the RNG state differs."""
    with pytest.raises(RuntimeError):
        _run(tmp_path, [RaiseAt(8)])
    monkeypatch.setattr("onecycle.loop.set_rng_state", lambda state, loaders=(): None)
    learn = _run(tmp_path, resume=True)
    with pytest.raises(AssertionError):
        assert_same(final_state(learn), reference())


# (loader kind, stop): mid-epoch and epoch-end stops for every kind, more stops for two of them.
KILLS = [("shuffle", m) for m in ("b7", "b13", "e2", "b36")] + [("generator", m) for m in ("b7", "b22", "e2", "b36")] \
    + [(kind, m) for kind in ("sampler", "batch_sampler", "stateful") for m in ("b22", "e2")] + [("workers", "b22")]


def _drive(d, kills):
    """Run the SIGKILL cases ``kills`` in one driver process that forks each job: per kind a reference
    run, then per stop a run that kills itself once its checkpoints are on disk, and a run resuming
    from what it left. Returns the folder, each job's exit code and the driver's stderr."""
    jobs = []
    for kind in dict.fromkeys(kind for kind, _ in kills):
        jobs.append({"name": f"{kind}/ref", "loader": kind, "ckpt": str(d / kind / "ref"),
                     "out": str(d / f"{kind}-ref.pt")})
    for kind, stop in kills:
        ckpt = str(d / kind / stop)
        jobs.append({"name": f"{kind}/{stop}/kill", "loader": kind, "ckpt": ckpt, "kill": stop,
                     "keep": str(d / f"{kind}-{stop}-at-kill.ckpt")})
        jobs.append({"name": f"{kind}/{stop}/resume", "loader": kind, "ckpt": ckpt, "resume": True,
                     "out": str(d / f"{kind}-{stop}.pt")})
    (d / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(JOB), "--jobs", str(d / "jobs.json")], capture_output=True,
                          text=True, timeout=600)  # a hang guard only
    assert done.returncode == 0, done.stderr
    return d, json.loads(done.stdout.splitlines()[-1]), done.stderr


def _check_killed_and_resumed(runs, kind, stop):
    d, codes, stderr = runs
    assert codes[f"{kind}/ref"] == 0, stderr
    assert codes[f"{kind}/{stop}/kill"] == -signal.SIGKILL, stderr
    assert codes[f"{kind}/{stop}/resume"] == 0, stderr
    at_kill = d / f"{kind}-{stop}-at-kill.ckpt"
    assert at_kill.exists(), "no checkpoint was on disk when the job was killed"
    assert position(at_kill) == CKPT_BEFORE[stop]
    # A loader that keeps its own position (in the main process) saves it mid-epoch; the others are replayed.
    kept = safe_load(at_kill)["ranks"][0]["loader"]
    assert (kept is not None) == (kind == "stateful" and CKPT_BEFORE[stop][1] > 0)
    resumed = torch.load(d / f"{kind}-{stop}.pt", weights_only=True)
    ref = torch.load(d / f"{kind}-ref.pt", weights_only=True)
    assert resumed["first_step"] == CKPT_BEFORE[stop][2] > 0  # it started from that checkpoint
    assert ref["first_step"] == 0
    assert_same(resumed["final"], ref["final"])


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    return _drive(tmp_path_factory.mktemp("killed"), KILLS)


@pytest.mark.parametrize("kind,stop", KILLS)
def test_sigkill_then_resume_is_bit_identical(killed_runs, kind, stop):
    _check_killed_and_resumed(killed_runs, kind, stop)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["b22", "e2"])
def test_sigkill_then_resume_stateful_loader_with_workers(tmp_path, stop):
    _check_killed_and_resumed(_drive(tmp_path, [("stateful_workers", stop)]), "stateful_workers", stop)


def _workers_learner(callbacks=(), persistent=True):
    learn = make_learner(0, callbacks)
    g = torch.Generator().manual_seed(7)
    learn.train_dl = DataLoader(learn.train_dl.dataset, batch_size=8, shuffle=True, generator=g, num_workers=2,
                                persistent_workers=persistent)
    return learn


class StopBeforeFit(oc.Callback):
    def before_fit(self, learn):  # after the checkpoint is loaded; before any worker starts
        raise oc.CancelFit


@pytest.mark.parametrize("k,persistent,warns", [(13, True, True), (26, True, True), (7, True, False),
                                                (13, False, False), (None, True, False)])
def test_resume_at_a_later_epoch_with_persistent_workers_warns(tmp_path, k, persistent, warns):
    """Persistent workers are seeded once, as the first epoch begins: a resume at a later epoch
    starts them afresh, so what they draw differs from an uninterrupted run's (shown by the test
    below). Said, not silent; no warning in epoch 1 (both runs start their workers there) or
    without persistent workers (started every epoch), nor for a fit already complete (k None)."""
    if k is None:
        _run(tmp_path, loader="generator")
    else:
        with pytest.raises(RuntimeError, match="crash"):
            _run(tmp_path, [RaiseAt(k)], loader="generator")  # the same loader, with no workers
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(_workers_learner([StopBeforeFit()], persistent), tmp_path, resume=True)
    said = [str(w.message) for w in seen if "persistent_workers" in str(w.message)]
    package = str(Path(oc.__file__).parent)  # pointed at the caller's line, outside the library
    assert all(not w.filename.startswith(package) for w in seen if "persistent_workers" in str(w.message))
    epoch = CKPT_BEFORE[f"b{k}"][0] + 1 if k else 4
    assert said == ([f"resuming at epoch {epoch} with persistent_workers=True: train_dl's workers start afresh, "
                     "where an uninterrupted run's went on from epoch 1, so the random numbers they draw (random "
                     "augmentations) differ from here on; resume is exact without persistent_workers, or with a "
                     "dataset that draws none"] if warns else [])


@pytest.mark.slow  # 20 s (persistent worker processes over several fits); the warning's wording is also
# checked in the case just above
def test_workers_resume_inexact_when_persistent_past_epoch_1(tmp_path):
    """What the warning above says, measured with real workers (the other tests start none)."""
    ref = _workers_learner()
    fit(ref, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="crash"):
        fit(_workers_learner([RaiseAt(7)]), tmp_path / "early")  # epoch 1: exact
    early = _workers_learner()
    with warnings.catch_warnings():  # in epoch 1 both runs start their workers from the same RNG
        warnings.simplefilter("error", UserWarning)
        fit(early, tmp_path / "early", resume=True)
    assert_same(final_state(early), final_state(ref))
    with pytest.raises(RuntimeError, match="crash"):
        fit(_workers_learner([RaiseAt(13)]), tmp_path / "late")
    late = _workers_learner()
    with pytest.warns(UserWarning, match="persistent_workers"):
        fit(late, tmp_path / "late", resume=True)
    with pytest.raises(AssertionError, match="model"):
        assert_same(final_state(late), final_state(ref))


def test_short_fit_has_a_checkpoint_after_its_first_epoch_with_the_default_budget(tmp_path):
    """Short fits are resumable too: the time budget may thin writes, never remove them all. The
    model is big enough (1M parameters) that the budget alone would skip every write but the last."""
    seen = []

    class Look(oc.Callback):
        def before_epoch(self, learn):
            if learn.epoch == 1:
                learn.checkpointer.wait(learn)
                path = tmp_path / R.CKPT_NAME
                seen.append(position(path) if path.exists() else None)

    torch.manual_seed(0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    model = nn.Sequential(nn.Linear(6, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 3))
    learn = oc.Learner(model, DataLoader(TensorDataset(x, y), batch_size=8), quiet=True, device="cpu",
                       callbacks=[Look()])
    learn.fit_one_cycle(2, 0.01, checkpoint_dir=tmp_path)
    assert seen == [(1, 0, 4)]


def test_a_resume_says_where_it_continues_from_unless_quiet(tmp_path, capsys):
    with pytest.raises(RuntimeError, match="crash"):
        _run(tmp_path, [RaiseAt(7)])
    path = tmp_path / R.CKPT_NAME
    learn = make_learner(0)
    learn.quiet = False
    fit(learn, tmp_path, resume=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"resuming from {path} at optimizer step 5 of 36 (epoch 1, after batch 5)"
    assert [line.split()[0] for line in out[1:]] == ["epoch", "1", "2", "3"]  # then the table, every epoch
    learn = make_learner(0)
    learn.quiet = False
    fit(learn, tmp_path, resume=True)  # a finished fit: nothing to do, and said so
    assert capsys.readouterr().out == (f"resuming from {path} at optimizer step 36 of 36 (the end of epoch 3); "
                                       "the fit is already complete\n")
    fit(make_learner(0), tmp_path, resume=True)
    assert capsys.readouterr().out == ""  # quiet


def test_resume_true_without_checkpoint_says_so(tmp_path):
    learn = make_learner(0)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        learn.fit_one_cycle(1, 0.1, checkpoint_dir=tmp_path, resume=True)
    assert learn.recorder.n_epochs == 0


def test_resume_with_a_schedule_function_of_ones_own(tmp_path):
    """A process that resumes defines the same function at another address: not a different schedule."""
    def make_schedule():
        def my_sched(pct):
            return 1.0 - 0.9 * pct
        return my_sched

    with pytest.raises(RuntimeError, match="crash"):
        make_learner(0, [RaiseAt(16)]).fit_sched(3, 0.1, make_schedule(), checkpoint_dir=tmp_path, every=5,
                                                 ckpt_budget=None)
    first = FirstStep()
    learn = make_learner(0, [first])
    learn.fit_sched(3, 0.1, make_schedule(), checkpoint_dir=tmp_path, every=5, ckpt_budget=None, resume=True)
    assert first.step == 15 and len(learn.recorder.losses) == STEPS
    with pytest.raises(ValueError, match="cannot resume: schedules differs"):  # another function still differs
        make_learner(0).fit_sched(3, 0.1, oc.schedules.const(1.0), checkpoint_dir=tmp_path, resume=True)


def _scaled(k):
    return lambda p: k * (1.0 - p)  # a closure: its cell holds k


GLOBAL_K = 0.5


def _global_k(p):
    return GLOBAL_K * (1.0 - p)


def test_a_function_schedule_is_described_by_its_code_and_the_values_it_reads(monkeypatch):
    same = [lambda p: 1.0 - 0.9 * p,
            lambda p: 1.0 - 0.9 * p]  # another object, another line: the same schedule
    d = R.describe_schedule
    assert d(same[0]) == d(same[1]) and " at 0x" not in d(same[0]) and d(same[0]).startswith("test_a_function")
    assert d(same[0]) != d(lambda p: 1.0 - 0.8 * p)  # a constant changed
    assert d(same[0]) != d(lambda p: 1.0 + 0.9 * p)  # an operation changed
    assert d(_scaled(1.0)) == d(_scaled(1.0)) != d(_scaled(2.0))  # a closure's value
    before = d(_global_k)
    monkeypatch.setattr(__import__(__name__), "GLOBAL_K", 0.25)
    assert d(_global_k) != before  # a global it reads
    assert d(functools.partial(_scaled(1.0))) != d(functools.partial(_scaled(2.0)))
    assert d(oc.schedules.cos(1.0, 0.0)) == repr(oc.schedules.cos(1.0, 0.0))  # a schedule that names its values

    class Ramp:  # a callable object: its attributes and its class's code
        def __init__(self, top):
            self.top = top

        def __call__(self, p):
            return self.top * p

    assert d(Ramp(1.0)) == d(Ramp(1.0)) != d(Ramp(2.0))


def _top(p, k=1.0):
    return k * p


def _top_other_default(p, k=2.0):
    return k * p


_top_other_default.__qualname__ = "_top"  # the same name and code as _top: only the default differs


def _helper(p):
    return 0.5 * p


def _calls_helper(p):
    return _helper(p)


def _recursive(p, n=3):
    return p if n == 0 else _recursive(p, n - 1)


def _ramp_class(c):
    class Ramp:
        def __init__(self):
            self.top = 1.0

        def __call__(self, p):
            return self.top * p * c  # the class's code reads c: the only difference between two Ramps

    return Ramp


class _Slots:
    __slots__ = ("top",)

    def __init__(self, top):
        self.top = top

    def __call__(self, p):
        return self.top * p


class _Owner:
    def __init__(self, k):
        self.k = k
        self.again = self.lr  # a method of its own object among its attributes: a cycle

    def lr(self, p):
        return self.k * p


def test_a_schedule_description_tells_apart_everything_a_schedule_reads(monkeypatch):
    d = R.describe_schedule
    partial = functools.partial
    assert d(partial(_top, 1.0)) == d(partial(_top, 1.0)) != d(partial(_top, 2.0))  # a partial's arguments
    assert d(partial(_top, k=1.0)) == d(partial(_top, k=1.0)) != d(partial(_top, k=2.0))  # ... and keywords
    assert d(partial(_top, 1.0)) != d(partial(_helper, 1.0))  # ... and its function
    assert d(_top) != d(_top_other_default)  # a default
    assert d(_Owner(1.0).lr) == d(_Owner(1.0).lr) != d(_Owner(2.0).lr)  # a bound method's object
    before = d(_calls_helper)
    monkeypatch.setattr(__import__(__name__), "_helper", lambda p: 0.25 * p)
    assert d(_calls_helper) != before  # a function it calls, by that function's code
    assert d(_ramp_class(1.0)()) == d(_ramp_class(1.0)()) != d(_ramp_class(2.0)())  # the class's code
    assert d(_Slots(1.0)) == d(_Slots(1.0)) != d(_Slots(2.0))  # no __dict__: its slots
    assert d(_recursive) == d(_recursive) and d(_Owner(1.0).again)  # cycles end (at a depth limit)
    text = R._code_text(lambda p: math.cos(p) * torch.pi)
    assert "module math" in text and "module torch" in text and "<module" not in text  # no install path
    assert " at 0x" not in R._code_text(_Owner(1.0).lr)


NESTED = {"a": {"b": {"c": 1.0}}}
LISTED = [[[1.0]]]


def _reads_nested(p):
    return NESTED["a"]["b"]["c"] * p


def _reads_listed(p):
    return LISTED[0][0][0] * p


class _Deep:
    def __init__(self, v):
        self.inner = {"k": [v]}

    def lr(self, p):
        return self.inner["k"][0] * p


def test_a_schedule_description_reaches_values_four_levels_down(monkeypatch):
    """The description stops at a depth (values can hold themselves); up to it, every value counts."""
    d = R.describe_schedule
    module = __import__(__name__)
    for name, fn, changed in (("NESTED", _reads_nested, {"a": {"b": {"c": 2.0}}}),
                              ("LISTED", _reads_listed, [[[2.0]]])):
        before = d(fn)
        monkeypatch.setattr(module, name, changed)
        assert d(fn) != before, name
    assert d(_Deep(1.0).lr) != d(_Deep(2.0).lr)
    assert d(functools.partial(_Owner(1.0).lr)) != d(functools.partial(_Owner(2.0).lr))
    # (a partial of _Deep's method puts its list one level further down, past the limit: there it reads "...")


@pytest.mark.parametrize("changed", [lambda p: 1.0 - 0.8 * p, _scaled(0.9)])
def test_a_changed_lambda_or_closure_is_refused_unless_rescheduled(tmp_path, changed):
    """resume used to compare a schedule's repr with its address removed: every lambda read the same."""
    with pytest.raises(RuntimeError, match="crash"):
        make_learner(0, [RaiseAt(16)]).fit_sched(3, 0.1, lambda p: 1.0 - 0.9 * p, checkpoint_dir=tmp_path, every=5,
                                                 ckpt_budget=None)
    with pytest.raises(ValueError, match="cannot resume: schedules differs.*reschedule=True"):
        make_learner(0).fit_sched(3, 0.1, changed, checkpoint_dir=tmp_path, every=5, ckpt_budget=None, resume=True)
    first = FirstStep()
    learn = make_learner(0, [first])
    learn.fit_sched(3, 0.1, changed, checkpoint_dir=tmp_path, every=5, ckpt_budget=None, resume=True, reschedule=True)
    assert first.step == 15 and len(learn.recorder.losses) == STEPS


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
    with pytest.raises(NonFiniteLossError, match="epoch 1, iteration 5"):  # epochs count from 1
        learn.fit_one_cycle(3, 0.1, checkpoint_dir=tmp_path, every=2, ckpt_budget=None)  # no write skipped
    ref = make_learner(0)

    class StopAfter5(oc.Callback):
        def after_batch(self, l):
            if l.iter == 4:
                raise oc.CancelFit

    torch.manual_seed(42)
    ref.fit_one_cycle(3, 0.1, callbacks=[StopAfter5()])
    assert_same(learn.model.state_dict(), ref.model.state_dict())
    losses = learn.recorder.losses  # the history reaches the NaN, for a plot of what led to it
    assert len(losses) == 6 and losses[:5] == ref.recorder.losses and math.isnan(losses[5])
    state = safe_load(tmp_path / R.CKPT_NAME)
    assert state["position"] == {"epoch": 0, "batch": 4, "step": 4}  # the last good checkpoint stays


@pytest.mark.parametrize(("budget", "every", "expected"), [
    (None, None, [(1, 0), (2, 0), (3, 0)]),  # every epoch end
    (None, 5, [(0, 5), (0, 10), (1, 0), (1, 3), (1, 8), (2, 0), (2, 1), (2, 6), (2, 11), (3, 0)]),  # 12 steps/epoch
    (1e-9, None, [(1, 0), (3, 0)]),  # a tiny budget: only the first and the last epoch ends
    (1e-9, 5, [(1, 0), (3, 0)]),
])
def test_ckpt_budget_decides_which_scheduled_writes_happen(tmp_path, monkeypatch, budget, every, expected):
    written = []
    real_save = C.CheckpointWriter.save
    monkeypatch.setattr(C.CheckpointWriter, "save", lambda writer, state, path: (written.append(
        (state["position"]["epoch"], state["position"]["batch"])), real_save(writer, state, path))[1])
    learn = make_learner(0)
    learn.fit_one_cycle(3, 0.1, checkpoint_dir=tmp_path, every=every, ckpt_budget=budget)
    assert written == expected
    assert safe_load(tmp_path / R.CKPT_NAME)["position"]["epoch"] == 3  # the fit returns with its end on disk


def test_nan_skip_counts_and_continues():
    learn = make_learner(0)
    learn.loss_fn = _nan_at(3)
    seen = []

    class Weights(oc.Callback):  # the weights as each batch begins
        def before_batch(self, learn):
            seen.append([p.detach().clone() for p in learn.model.parameters()])

    learn.fit_one_cycle(1, 0.1, on_nan="skip", callbacks=[Weights()])
    assert learn.nan_skipped == 1 and learn.scheduler.step_count == 11
    same = [all(torch.equal(a, b) for a, b in zip(seen[i], seen[i + 1])) for i in range(len(seen) - 1)]
    assert same == [i == 2 for i in range(11)]  # the NaN batch (the 3rd) changed nothing; every other one did
    learn = make_learner(0)
    learn.loss_fn = _nan_at(3)
    seen.clear()
    learn.fit_one_cycle(1, 0.1, on_nan="off", callbacks=[Weights()])  # negative control: no guard, NaN weights
    assert learn.nan_skipped == 0 and not all(torch.isfinite(p).all() for p in learn.model.parameters())


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


# ---- what must match for a resume, and how a mismatch is reported ---------------------------------

def test_signature_holds_the_fits_shape_worked_out_by_hand(tmp_path):
    learn = make_learner(0)
    learn.accum = 5  # 12 batches: windows of 5, 5 and 2, so 3 steps an epoch (ceil, not floor)
    learn.fit_one_cycle(2, 0.1, checkpoint_dir=tmp_path)
    sig = safe_load(tmp_path / R.CKPT_NAME)["signature"]
    assert {k: sig[k] for k in ("epochs", "batches_per_epoch", "steps_per_epoch", "batch_size", "accum",
                                "peaks", "world_size")} == {
        "epochs": 2, "batches_per_epoch": 12, "steps_per_epoch": 3, "batch_size": 8, "accum": 5,
        "peaks": {"lr": [0.1]}, "world_size": 1}
    assert sig["layout"] == [[["0.weight", [16, 6]], ["0.bias", [16]], ["3.weight", [3, 16]], ["3.bias", [3]]]]
    assert set(sig["schedules"]) == {"lr", "momentum"} and "0x" not in str(sig["schedules"])
    assert learn.scheduler.step_count == 6


SIG = {"epochs": 3, "batches_per_epoch": 12, "schedules": {"lr": "cos"}, "layout": [[["w", [2]]]], "world_size": 1}


def test_check_consistent_names_the_first_difference_layout_before_the_schedule():
    R.check_consistent(SIG, dict(SIG), reschedule=False)
    now = dict(SIG, epochs=4, layout=[[["w", [3]]]])
    with pytest.raises(ValueError, match=r"layout differs: checkpoint has \[\[\['w', \[2\]\]\]\], this fit has "
                                         r"\[\[\['w', \[3\]\]\]\]$"):  # no reschedule hint: none can bridge it
        R.check_consistent(SIG, now, reschedule=True)
    with pytest.raises(ValueError, match=r"^cannot resume: epochs differs: checkpoint has 3, this fit has 4 "
                                         r"\(pass reschedule=True to continue with the new setting\)$"):
        R.check_consistent(SIG, dict(SIG, epochs=4), reschedule=False)
    R.check_consistent(SIG, dict(SIG, epochs=4, schedules={"lr": "lin"}), reschedule=True)
    with pytest.raises(ValueError, match="world_size differs: checkpoint has 1, this fit has 2$"):
        R.check_consistent(SIG, dict(SIG, world_size=2), reschedule=True)  # not reschedulable
    with pytest.raises(ValueError, match="accum differs: checkpoint has None, this fit has 2"):  # a key it lacks
        R.check_consistent(SIG, dict(SIG, accum=2), reschedule=False)


def test_load_for_resume_auto_true_and_foreign_files(tmp_path):
    assert R.load_for_resume(tmp_path, "auto") is None
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {tmp_path / R.CKPT_NAME}"):
        R.load_for_resume(tmp_path, True)
    for foreign in ({"model": {}}, {"format": "something-else"}, [1, 2]):
        C.atomic_save(foreign, tmp_path / R.CKPT_NAME)
        with pytest.raises(ValueError, match="is not a onecycle training checkpoint"):
            R.load_for_resume(tmp_path, "auto")
    C.atomic_save({"format": R.FORMAT, "x": 1}, tmp_path / R.CKPT_NAME)
    assert R.load_for_resume(tmp_path, True) == {"format": R.FORMAT, "x": 1}


# ---- a loader's own position, and what a mid-epoch resume replays ----------------------------------

class Positioned:
    """A loader that keeps its own position (``state_dict``/``load_state_dict``)."""

    def __init__(self, num_workers=0):
        self.num_workers, self.loaded = num_workers, None

    def state_dict(self):
        return {"at": 3}

    def load_state_dict(self, state):
        self.loaded = state


def test_loader_position_and_batches_to_replay():
    pending = {"loader": {"at": 3}, "partial": {"moms": [0.9] * 3}}
    dl = Positioned()
    assert R.loader_position(dl, 3) == {"at": 3} and R.loader_position(dl, 0) is None  # none at an epoch end
    assert R.batches_to_replay(dl, pending) == 0 and dl.loaded == {"at": 3}  # it resumes where it was
    workers = Positioned(num_workers=2)  # its snapshot lacks what the workers' RNGs drew: replayed
    assert R.loader_position(workers, 3) is None
    assert R.batches_to_replay(workers, pending) == 3 and workers.loaded is None
    plain = DataLoader(TensorDataset(torch.zeros(4)), batch_size=1)
    assert R.loader_position(plain, 3) is None
    assert R.batches_to_replay(plain, dict(pending, loader=None)) == 3
    half = Positioned()
    half.load_state_dict = None  # a state_dict alone is not a position it can return to
    assert R.loader_position(half, 3) is None and R.batches_to_replay(half, pending) == 3
