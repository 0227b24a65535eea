"""The LR finder: exact LR history, exact restore on every exit path, stop rules, validation
cycling, suggestions on hand-made curves, bad input, the plot."""

import copy
import itertools
import json
import math
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle import legacy
from onecycle import lr_finder as lf
from onecycle.lr_find_result import LRFindResult
from onecycle.metrics import accuracy
from onecycle.optim.groups import spread_lrs
from onecycle.rng import get_rng_state, set_rng_state
from onecycle.suggest import DEFAULT_RULE, SUGGESTERS
from test_suggest import _ema


class Net(nn.Module):
    """Two layer groups, BatchNorm and Dropout: every kind of state the finder must put back."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))

    def param_groups(self):
        return [list(self.body.parameters()), list(self.head.parameters())]


def _dl(n=64, bs=8, seed=0, shuffle=False, **kw):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=shuffle, **kw)


def _learner(opt="sgd", shuffle=True, **kw):
    torch.manual_seed(0)
    kw.setdefault("quiet", True)
    return oc.Learner(Net(), _dl(shuffle=shuffle), _dl(24, 8, 1), metrics=[accuracy], opt=opt,
                      device="cpu", **kw)


class Record(oc.Callback):
    """Counts steps and keeps the LR of every group as the optimizer is about to step."""

    def __init__(self):
        self.lrs, self.steps, self.batches = [], 0, 0

    def before_batch(self, learn):
        self.batches += 1

    def after_backward(self, learn):
        self.lrs.append([g["lr"] for g in learn.opt.param_groups])

    def after_step(self, learn):
        self.steps += 1


class Boom(oc.Callback):
    def __init__(self, at, exc):
        self.at, self.exc, self.n = at, exc, 0

    def after_step(self, learn):
        self.n += 1
        if self.n == self.at:
            raise self.exc


def _same_json(a, b):
    return json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)


# ---- LR history -------------------------------------------------------------------------------
def test_exp_history_exact_and_reaches_end_lr():
    learn, rec = _learner(), Record()
    res = learn.lr_find(1e-4, 1.0, num_it=7, with_valid=False, callbacks=[rec])
    want = [1e-4 * (1.0 / 1e-4) ** (i / 6) for i in range(7)]
    assert res.lrs == want and res.group_lrs == [want, want]
    assert [r[-1] for r in rec.lrs] == want  # what the optimizer really used
    assert math.isclose(res.lrs[-1], 1.0, rel_tol=1e-12)
    assert res.stop_reason.startswith("completed") and len(res.losses) == 7 and rec.batches == 7
    assert res.moms == [0.9] * 7  # the optimizer's momentum as it is: the finder schedules the LR only


def test_linear_history_exact():
    learn = _learner()
    res = learn.lr_find(0.01, 0.5, num_it=5, step_mode="linear", with_valid=False)
    assert res.lrs == [0.01 * (1 + i / 4 * (0.5 / 0.01 - 1)) for i in range(5)]
    assert res.lrs == pytest.approx([0.01 + i / 4 * (0.5 - 0.01) for i in range(5)], rel=1e-12)
    assert res.step_mode == "linear"


def test_two_groups_keep_their_ratio():
    learn, rec = _learner(), Record()
    res = learn.lr_find(slice(1e-5, 1e-4), slice(1e-2, 1e-1), num_it=6, with_valid=False, callbacks=[rec])
    starts = spread_lrs(slice(1e-5, 1e-4), 2)
    ratio = 1e-1 / starts[-1]
    for g in range(2):
        assert res.group_lrs[g] == [starts[g] * ratio ** (i / 5) for i in range(6)]
    assert res.lrs == res.group_lrs[-1]
    assert [list(r) for r in zip(*rec.lrs)] == res.group_lrs
    # a number on one side takes the other side's group ratios
    res2 = learn.lr_find([1e-5, 1e-4], 1e-1, num_it=6, with_valid=False)
    assert res2.group_lrs[0][-1] == pytest.approx(1e-2) and res2.group_lrs[1][-1] == pytest.approx(1e-1)
    assert learn.suggested_lr is None or isinstance(learn.suggested_lr, list)


def test_groups_to_their_own_ends_without_keep_ratios():
    """keep_ratios=False (torch-lr-finder's way): each group from its start to its end, here the one
    end_lr for both; the exact per-group geometric paths."""
    learn, rec = _learner(), Record()
    res = learn.lr_find([1e-5, 1e-3], 1e-1, num_it=5, with_valid=False, keep_ratios=False, callbacks=[rec])
    for g, start in enumerate([1e-5, 1e-3]):
        assert res.group_lrs[g] == [start * (1e-1 / start) ** (i / 4) for i in range(5)]
    assert [list(r) for r in zip(*rec.lrs)] == res.group_lrs
    with pytest.raises(ValueError, match="every group"):
        learn.lr_find([1e-5, 1.0], 1e-1, num_it=5, keep_ratios=False)


def test_val_batches_none_validates_on_the_whole_loader_at_every_step():
    learn, seen = _learner(), []
    learn.metrics = {"n": lambda preds, y: seen.append(len(y)) or 0.0}
    res = learn.lr_find(1e-4, 1e-2, num_it=4, val_batches=None)
    assert seen == [8, 8, 8] * 4 and len(res.val_losses) == 4  # the 24-sample loader, 3 batches, each step
    with pytest.raises(ValueError, match="val_batches"):
        learn.lr_find(num_it=4, val_batches=0)


class StopAtThird:
    """A stop rule that keeps state (the steps it has seen): copied for each run."""

    def __init__(self):
        self.calls = 0

    def __call__(self, history):
        self.calls += 1
        return f"my rule at {len(history.losses)} steps" if self.calls == 3 else None


def test_a_stop_rule_replaces_the_divergence_rule_and_is_fresh_in_every_run():
    learn = _learner()
    rule = StopAtThird()
    res = learn.lr_find(1e-4, 1e6, num_it=30, stop_rule=rule, runs=2, with_valid=False)
    assert res.stop_reason == "my rule at 3 steps" and len(res.losses) == 3 and rule.calls == 0
    default = learn.lr_find(1e-4, 1e6, num_it=30, with_valid=False)
    res = learn.lr_find(1e-4, 1e6, num_it=30, stop_rule=lambda h: None, with_valid=False)
    assert default.stop_reason.startswith("diverged")  # onecycle's rule; with a rule of one's own it is off:
    assert not res.stop_reason.startswith("diverged") and len(res.losses) > len(default.losses)
    with pytest.raises(TypeError, match="stop_rule"):
        learn.lr_find(stop_rule="diverge")


def test_accumulation_counts_optimizer_steps():
    learn, rec = _learner(accum=2), Record()
    res = learn.lr_find(1e-3, 1.0, num_it=5, with_valid=False, callbacks=[rec])
    assert rec.steps == 5 and rec.batches == 10 and len(res.lrs) == 5
    assert res.lrs == [1e-3 * (1.0 / 1e-3) ** (i / 4) for i in range(5)]


def test_loader_shorter_than_num_it_is_looped_and_longer_is_cut():
    learn, rec = _learner(), Record()  # 8 training batches
    assert len(learn.lr_find(num_it=20, with_valid=False, stop_div=False, callbacks=[rec]).losses) == 20
    rec2 = Record()
    learn.lr_find(num_it=3, with_valid=False, callbacks=[rec2])
    assert rec2.batches == 3


# ---- validation -------------------------------------------------------------------------------
def batch_id(pred, y):
    return y.float().mean()


class Probe(nn.Module):
    """A regression model that logs (training, grad enabled) at every forward."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.log = []

    def forward(self, x):
        self.log.append((self.training, torch.is_grad_enabled()))
        return self.lin(x).squeeze(-1)


def _probe_learner():
    torch.manual_seed(0)
    train = DataLoader(TensorDataset(torch.randn(20, 2), torch.randn(20)), batch_size=5)
    # three validation batches whose targets are their index: the metric reads which one was used
    valid = DataLoader(TensorDataset(torch.randn(12, 2), torch.arange(3).repeat_interleave(4).float()),
                       batch_size=4)
    return oc.Learner(Probe(), train, valid, F.mse_loss, metrics=[batch_id], device="cpu", quiet=True)


def test_validation_cycles_in_order_in_eval_mode():
    learn = _probe_learner()
    res = learn.lr_find(1e-4, 1e-2, num_it=7)
    assert res.metrics["batch_id"] == [0, 1, 2, 0, 1, 2, 0]
    assert len(res.val_losses) == 7 and legacy.Sched(res).rec_metrics == [[v] for v in [0, 1, 2, 0, 1, 2, 0]]


def test_validation_modes_and_val_batches():
    learn, seen = _probe_learner(), []

    class Grab(oc.Callback):
        def after_fit(self, learn):
            seen.extend(learn.model.log)

    res = learn.lr_find(1e-4, 1e-2, num_it=3, val_batches=2, callbacks=[Grab()])
    assert res.metrics["batch_id"] == [0.5, 1.0, 1.5]  # (0,1), (2,0), (1,2)
    assert seen == [(True, True), (False, False), (False, False)] * 3


def test_without_validation():
    res = _learner().lr_find(num_it=12, with_valid=False)
    assert res.val_losses == [] and res.metrics == {"accuracy": []} and res.higher_is_better == {"accuracy": True}
    assert res.suggestions["val_steep"] is None and any("val_steep" in n for n in res.notes)


# ---- restore ----------------------------------------------------------------------------------
def _fingerprint(learn):
    """Everything that must come back exactly, as values: tensors cloned, compared with torch.equal
    (``_same``), never through repr or str (a repr prints 4 decimals)."""
    m = learn.model
    out = {"tensors": [(n, t.detach().clone()) for n, t in [*m.named_parameters(), *m.named_buffers()]],
           "grads": [None if p.grad is None else p.grad.detach().clone() for p in m.parameters()],
           "modes": [mod.training for mod in m.modules()],
           "opt": None if learn.opt is None else id(learn.opt),
           "clip": learn.clip, "wd": learn.wd, "accum": learn.accum, "loop": learn.loop,
           "recorder": copy.deepcopy(learn.recorder.state_dict()),
           "attrs": sorted(set(vars(learn)) - {"suggested_lr", "no_suggestion_reason"})}
    if learn.opt is not None:
        out["opt_state"] = copy.deepcopy(learn.opt.state_dict())
    return out


def _same(a, b, path="state"):
    """Equal by value: tensors bit for bit (dtype and shape too), NaN equal to NaN, containers item by item."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


def test_same_sees_a_millionth_in_a_momentum_buffer_and_a_nan():
    opt = torch.optim.SGD([nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    opt.param_groups[0]["params"][0].grad = torch.full((3,), 0.3)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    opt.state_dict()["state"][0]["momentum_buffer"][0] += 1e-6  # repr(state_dict) does not show this
    assert repr(before) == repr(opt.state_dict())
    with pytest.raises(AssertionError, match="momentum_buffer"):
        _same(before, opt.state_dict())
    _same({"x": [float("nan")]}, {"x": [float("nan")]})
    with pytest.raises(AssertionError):
        _same({"x": [1.0]}, {"x": [1.0 + 1e-12]})


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def _assert_restored(learn, before, rng):
    """The fingerprint is back (suggested_lr aside) and the RNGs draw what they drew before."""
    after_draws = _draws()
    set_rng_state(rng)
    assert _draws() == after_draws
    _same(_fingerprint(learn), before)


@pytest.mark.parametrize("exit_path", ["normal", "diverge", "error", "ctrl_c"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("opt_before", [False, True])
def test_everything_restored(exit_path, opt, opt_before, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    learn = _learner(opt=opt, clip=1.0, wd=0.01)
    if opt_before:  # an optimizer with momentum state, leftover gradients, a mixed train/eval model
        learn.fit(0.01, 1)
        xb, yb = next(iter(learn.train_dl))
        F.cross_entropy(learn.model(xb), yb).backward()
    learn.model.train()
    learn.model.body[1].eval()
    before, rng = _fingerprint(learn), get_rng_state()
    kw = dict(num_it=30, stop_div=True)
    if exit_path == "diverge":
        kw.update(end_lr=1e6)
    if exit_path in ("error", "ctrl_c"):
        exc = RuntimeError("boom") if exit_path == "error" else KeyboardInterrupt()
        with pytest.raises(type(exc)):
            learn.lr_find(callbacks=[Boom(5, exc)], **kw)
    else:
        res = learn.lr_find(**kw)
        want = "diverged" if exit_path == "diverge" else "completed"
        assert res.stop_reason.startswith(want), res.stop_reason
    _assert_restored(learn, before, rng)
    assert os.listdir(tmp_path) == []


def _nan_at_fourth_batch(loss_fn):
    """``loss_fn`` whose 4th training call gives NaN (validation calls are left as they are)."""
    calls = []

    def wrapped(pred, y):
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 4:
                return pred.sum() * float("nan")
        return loss_fn(pred, y)

    return wrapped


def test_nan_loss_stops_before_stepping():
    learn, rec = _learner(), Record()
    learn.loss_fn = _nan_at_fourth_batch(F.cross_entropy)
    before = _fingerprint(learn)
    res = learn.lr_find(num_it=10, callbacks=[rec])
    assert len(res.losses) == 3 and len(res.val_losses) == 3 and rec.steps == 3
    assert res.stop_reason.startswith("non-finite loss nan at iteration 3")
    _same(_fingerprint(learn), before)


def test_cancel_fit_from_callback():
    class Stop(oc.Callback):
        def after_batch(self, learn):
            if learn.iter == 4:
                raise oc.CancelFit

    res = _learner().lr_find(num_it=10, callbacks=[Stop()])
    assert len(res.losses) == 4 and res.stop_reason.startswith("cancelled")


def test_twice_identical_and_fit_after_equals_fit_alone():
    learn = _learner()
    a, b = learn.lr_find(num_it=20), learn.lr_find(num_it=20)
    assert _same_json(a, b)
    learn.fit_one_cycle(2, 0.05)
    alone = _learner()
    alone.fit_one_cycle(2, 0.05)
    for p, q in zip(learn.model.state_dict().values(), alone.model.state_dict().values()):
        assert p.numpy().tobytes() == q.numpy().tobytes()
    assert learn.recorder.losses == alone.recorder.losses


def test_suggested_lr_feeds_fit_one_cycle(recwarn):
    learn = _learner()
    res = learn.lr_find(num_it=40)
    assert learn.suggested_lr == res.suggestion == res.suggestions[res.rule] and res.rule == DEFAULT_RULE
    assert learn.no_suggestion_reason is None and [str(w.message) for w in recwarn] == []  # SGD: no Prodigy warning
    learn.fit_one_cycle(1)
    assert max(learn.recorder.lrs) == pytest.approx(res.suggestion)


def test_lr_find_prints_its_summary_unless_quiet_and_shows_it_as_its_repr(capsys):
    res = _learner(quiet=False).lr_find(num_it=40, end_lr=1e4)  # up to 1e4: it diverges
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"LR finder: stopped at LR {res.lrs[-1]:.3g} (step {len(res.lrs)} of 40): the smoothed training "
                      f"loss blew up to {res.stop_reason.split('smoothed loss ')[1].split()[0]}, past its limit "
                      f"{res.stop_reason.split(' above ')[1].split()[0]}")
    rules = len(res.suggestions)
    assert [ln.split()[0] for ln in out[1:1 + rules]] == list(res.suggestions)  # one line per rule, in order
    assert out[1 + rules] == (f"  1cycle range: {res.suggestion / 25:.3g} up to the peak {res.suggestion:.3g} "
                              "(div 25), then down") and res.one_cycle_range() == (res.suggestion / 25, res.suggestion)
    chosen = next(ln for ln in out if ln.endswith("<- suggestion"))
    assert chosen.split()[:2] == [res.rule, f"{res.suggestion:.3g}"] and "lowest validation loss / 2" in chosen
    assert repr(res).startswith(f"LRFindResult(suggestion={res.suggestion:.3g} (val_min); valley=")
    assert len(repr(res)) < 300 and repr(res).endswith(f"{res.outcome})")  # not 40 numbers per curve
    _learner().lr_find(num_it=20)
    assert capsys.readouterr().out == ""  # quiet
    res = _learner(quiet=False).lr_find(num_it=20, end_lr=1e-3, rule="valley")  # no divergence: every step
    assert capsys.readouterr().out.splitlines()[0] == "LR finder: ran all 20 steps, up to LR 0.001"


class EpochLoader:
    """A loader with set_epoch, an epoch counter and its own generator."""

    def __init__(self, n=40, bs=8):
        self.x, self.y = torch.randn(n, 5), torch.randint(0, 3, (n,))
        self.bs, self.epoch, self.calls, self._gen = bs, 7, [], torch.Generator().manual_seed(3)

    def set_epoch(self, e):
        self.calls.append(e)
        self.epoch = e

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __iter__(self):
        self.epoch += 1
        perm = torch.randperm(len(self.x), generator=self._gen)
        return iter([(self.x[i], self.y[i]) for i in perm.split(self.bs)])


def test_loader_state_and_set_epoch_restored():
    torch.manual_seed(0)
    train, valid = EpochLoader(), EpochLoader(16)
    learn = oc.Learner(Net(), train, valid, device="cpu", quiet=True)
    states = [dl._gen.get_state() for dl in (train, valid)]
    learn.lr_find(num_it=12)
    assert train.calls == [0, 1, 2, 7] and valid.calls == [7]  # a pass per set_epoch, then put back
    assert all(torch.equal(dl._gen.get_state(), s) for dl, s in zip((train, valid), states))
    assert train.epoch == 7 and valid.epoch == 7


def test_runs_train_on_successive_epochs_and_take_the_median():
    torch.manual_seed(0)
    train, valid = EpochLoader(), EpochLoader(16)
    learn = oc.Learner(Net(), train, valid, metrics=[accuracy], device="cpu", quiet=True)
    one = learn.lr_find(num_it=12)
    train.calls.clear()
    three = learn.lr_find(num_it=12, runs=3)
    # 12 steps of 5 batches: 3 epochs a run; run k starts where run k - 1 stopped; put back after each
    assert train.calls == [0, 1, 2, 7, 3, 4, 5, 7, 6, 7, 8, 7] and train.epoch == 7
    assert len(three.run_suggestions) == 3 and three.run_suggestions[0] == one.suggestions
    assert one.run_suggestions == [] and not any("median" in n for n in one.notes)  # one run: nothing per run
    assert three.losses == one.losses and three.val_losses == one.val_losses  # the curves are run 0's
    for rule, value in three.suggestions.items():
        a = sorted(r[rule] for r in three.run_suggestions if r[rule] is not None)  # runs without one are skipped
        want = None if not a else a[len(a) // 2] if len(a) % 2 else math.sqrt(a[0] * a[1])  # even: geometric
        assert value == want if want is None else value == pytest.approx(want, rel=1e-12)
    assert three.suggestion == three.suggestions[three.rule] == learn.suggested_lr
    assert _same_json(three, learn.lr_find(num_it=12, runs=3))  # repeatable


def test_runs_of_a_dataloader_with_its_own_generator_see_new_orders():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    train = _dl(shuffle=True, generator=g)
    seen = []
    real_iter = type(train).__iter__

    class Spy(type(train)):
        def __iter__(self):
            it = real_iter(self)
            batch = next(it)
            seen.append(batch[1].tolist())
            return itertools.chain([batch], it)

    train.__class__ = Spy
    learn = oc.Learner(Net(), train, _dl(24, 8, 1), device="cpu", quiet=True)
    state = g.get_state()
    learn.lr_find(num_it=8, runs=3)
    assert len(seen) == 3 and len({tuple(s) for s in seen}) == 3  # one pass a run, each in its own order
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("exit_path", ["normal", "error_in_run_2"])
def test_runs_restore_everything(exit_path):
    learn = _learner(opt="sgd", clip=1.0, wd=0.01)  # a shuffling DataLoader: each run draws a new order
    learn.fit(0.01, 1)
    before, rng = _fingerprint(learn), get_rng_state()
    if exit_path == "normal":
        res = learn.lr_find(num_it=15, runs=3)
        assert len(res.run_suggestions) == 3
    else:
        with pytest.raises(RuntimeError, match="boom"):
            learn.lr_find(num_it=15, runs=3, callbacks=[Boom(20, RuntimeError("boom"))])
    _assert_restored(learn, before, rng)


def test_dataloader_generator_restored():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    learn = oc.Learner(Net(), _dl(shuffle=True, generator=g), device="cpu", quiet=True)
    state = g.get_state()
    learn.lr_find(num_it=20)
    assert torch.equal(g.get_state(), state)


def test_without_a_learner_uses_the_optimizer_as_is():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    F.cross_entropy(model(torch.randn(8, 5)), torch.randint(0, 3, (8,))).backward()
    opt.step()  # momentum state
    wds = []

    class Wd(oc.Callback):
        def after_step(self, learn):
            wds.append(learn.opt.param_groups[0]["weight_decay"])

    before = (copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in model.parameters()])
    res = oc.lr_find(model, opt, F.cross_entropy, _dl(), _dl(24, 8, 1), [accuracy], num_it=12, callbacks=[Wd()])
    assert len(res.lrs) == 12 and len(res.metrics["accuracy"]) == 12 and set(wds) == {1e-3}
    _same(opt.state_dict(), before[0])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before[1]))
    assert opt.param_groups[0]["lr"] == 0.1
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad(set_to_none=True)
    opt.step()  # no gradients: a step changes nothing, and no schedule hook is left to move the LR
    assert opt.param_groups[0]["lr"] == 0.1 and all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    with pytest.raises(TypeError, match="optimizer"):
        oc.lr_find(model, "sgd", F.cross_entropy, _dl())


def test_bf16_autocast_runs_and_restores():
    learn = _learner(amp="bf16")
    before = _fingerprint(learn)
    res = learn.lr_find(num_it=8)
    assert len(res.losses) == 8
    _same(_fingerprint(learn), before)

@pytest.mark.parametrize("exit_path", ["normal", "error_after_unscale"])
def test_a_users_grad_scaler_is_left_as_it_was(exit_path):
    """The finder steps with a copy of ``scaler=``: its scale and growth count come back, and an error
    between ``unscale_`` and ``update`` does not leave it refusing the next fit's ``unscale_``."""
    def run(find):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
        learn = _learner(scaler=scaler)
        learn.fit_one_cycle(1, 0.05)
        before = scaler.state_dict()
        if find and exit_path == "normal":
            learn.lr_find(num_it=12)
        elif find:
            class Boom(oc.Callback):
                def after_backward(self, learn):
                    if learn.iter == 2:
                        raise RuntimeError("boom")

            with pytest.raises(RuntimeError, match="boom"):
                learn.lr_find(num_it=12, callbacks=[Boom()])
        assert scaler.state_dict() == before and learn.user_scaler is scaler
        learn.fit_one_cycle(1, 0.05)
        return learn

    found, alone = run(True), run(False)
    assert all(torch.equal(a, b) for a, b in zip(found.model.state_dict().values(), alone.model.state_dict().values()))
    assert found.recorder.losses == alone.recorder.losses



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_restores():
    torch.manual_seed(0)
    learn = oc.Learner(Net(), _dl(), _dl(24, 8, 1), metrics=[accuracy], device="cuda", amp=True, quiet=True)
    before = [t.detach().cpu().clone() for t in learn.model.state_dict().values()]
    cuda_rng = torch.cuda.get_rng_state()
    res = learn.lr_find(num_it=20)
    assert len(res.losses) >= 1
    assert all(torch.equal(a, b.cpu()) for a, b in zip(before, learn.model.state_dict().values()))
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)


# ---- seed spelling, JSON, plot --------------------------------------------------------------------
def test_lr_find2_seed_spelling(tmp_path):
    learn = _learner()
    res = learn.lr_find2(num_it=20, stop_dv=False)
    assert learn.sched.history is res and res.lrs[0] == 1e-5 and res.lrs[-1] == pytest.approx(10.0)
    assert len(learn.sched.val_losses) == 20 and len(learn.sched.rec_metrics) == 20
    assert len(learn.sched.rec_metrics[0]) == 1
    assert len(learn.sched.plot(n_skip=2, n_skip_end=1, smoothed=False).axes) == 3
    learn.sched.plot_lr()
    lin = learn.lr_find2(1e-3, 1.0, num_it=5, linear=True, wds=0.0)
    assert lin.step_mode == "linear"
    path = lin.save_json(tmp_path / "f.json")
    assert _same_json(LRFindResult.load_json(path), lin)


def test_plot_panels_log_axis_and_png(tmp_path):
    res = _learner().lr_find(num_it=30, stop_div=False)
    fig = res.plot(save=tmp_path / "finder.png", n_skip=3, n_skip_end=2)
    assert len(fig.axes) == 2 + len(res.metrics)
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert len(fig.axes[0].lines[1].get_xdata()) == 30 - 3 - 2
    assert (tmp_path / "finder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lin = _learner().lr_find(0.01, 0.1, num_it=12, step_mode="linear", with_valid=False)
    fig = lin.plot()
    assert fig.axes[0].get_xscale() == "linear" and len(fig.axes) == 3


def test_curves_shorter_than_the_skip_windows():
    learn = _learner()
    res = learn.lr_find(num_it=5)
    assert res.suggestion is None and learn.suggested_lr is None and res.notes
    assert len(res.notes) == len(SUGGESTERS) + 1  # every rule says why, then that none could answer
    assert res.notes[-1] == f"the {DEFAULT_RULE!r} rule gave no suggestion; no rule could suggest an LR"
    reasons = learn.no_suggestion_reason.split("; ")  # why, for the next fit: the stop, then each note
    assert reasons[0] == "completed num_it=5 iterations" and reasons[1].startswith("valley needs at least 2")
    assert len(reasons) == len(SUGGESTERS) + 3  # the last note holds a "; " of its own
    res.plot()  # nothing left after the skips: an empty figure, no crash
    with pytest.raises(ValueError, match="no lr_find suggestion.*gave none: completed num_it=5"):
        learn.fit_one_cycle(1)  # the next fit says why there is no suggestion


def test_suggestions_skip_the_first_tenth_and_last_five():
    values = [0.01] * 4 + [5.0 - 0.05 * i for i in range(36)]  # smoothed minimum in the first tenth
    res = _scripted_learner(values).lr_find(num_it=40, with_valid=False)
    lrs = [1e-7 * (10 / 1e-7) ** (i / 39) for i in range(40)]
    assert res.lrs == pytest.approx(lrs, rel=1e-12)
    smooth = _ema([float(torch.tensor(v)) for v in values], 1 - 10 / 40)  # float32 losses; beta 1 - 10/num_it
    assert res.smooth_losses == pytest.approx(smooth, rel=1e-12)
    low = 4 + int(np.argmin(smooth[4:-5]))  # the skip window: the first 40 // 10 and the last 5 points
    assert int(np.argmin(smooth)) < 4 and res.suggestions["minimum"] == pytest.approx(lrs[low] / 10, rel=1e-12)


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, name", [
    (dict(num_it=1), "num_it"), (dict(num_it=2.5), "num_it"),
    (dict(start_lr=1.0, end_lr=0.1), "start_lr"), (dict(start_lr=0.1, end_lr=0.1), "start_lr"),
    (dict(start_lr=-1.0), "start_lr"), (dict(end_lr=math.nan), "end_lr"), (dict(end_lr=math.inf), "end_lr"),
    (dict(start_lr=0.0), "start_lr"), (dict(div_th=1.0), "div_th"), (dict(div_th=0.5), "div_th"),
    (dict(start_lr=[1e-5, 1e-4, 1e-3]), "start_lr"), (dict(end_lr=[1.0]), "end_lr"),
    (dict(start_lr=[1e-5, 1e-4], end_lr=[1.0, 1.0]),
     r"^start_lr=\[1e-05, 0\.0001\] and end_lr=\[1\.0, 1\.0\] must have the same end/start ratio in every "
     r"group \(the finder keeps the groups' LR ratios\)$"),
    (dict(step_mode="cos"), "step_mode"),
    (dict(val_batches=0), "val_batches"), (dict(wd=-1.0), "wd"), (dict(wd=[0.1]), "wd"),
    (dict(rule="best"), "rule"), (dict(runs=0), "runs"), (dict(runs=1.5), "runs"),
    # each way of giving the two ends: per group on both sides, on one side, keep_ratios=False
    (dict(start_lr=[1e-5, 1e-4], end_lr=[1.0]), "end_lr"), (dict(start_lr=[1e-5, 1e-4], end_lr=0.0), "end_lr"),
    (dict(start_lr=[1e-5, 1e-4], end_lr=-1.0), "end_lr"), (dict(start_lr=0.0, end_lr=[1e-2, 1e-1]), "start_lr"),
    (dict(start_lr=-1.0, end_lr=[1e-2, 1e-1]), "start_lr"), (dict(end_lr=0.0), "end_lr"),
    (dict(end_lr=-1.0), "end_lr"), (dict(start_lr=[1e-5, 1e-4, 1e-3], keep_ratios=False), "start_lr"),
    (dict(end_lr=[1.0], keep_ratios=False), "end_lr"),
    (dict(start_lr=[1e-5, 0.1], end_lr=0.1, keep_ratios=False), "start_lr"),
    (dict(keep_ratios="no"), "keep_ratios"), (dict(stop_rule="diverge"), "stop_rule"),
])
def test_bad_input_changes_nothing(kw, name):
    learn = _learner()
    before, rng = _fingerprint(learn), torch.get_rng_state()
    # the message starts with the argument's name (or is the one given in full)
    with pytest.raises((ValueError, TypeError), match=name if name.startswith("^") else rf"^{name}\b"):
        learn.lr_find(**kw)
    _same(_fingerprint(learn), before)
    assert learn.opt is None and torch.equal(torch.get_rng_state(), rng)
    assert learn.suggested_lr is None


def test_bad_loaders():
    empty = DataLoader(TensorDataset(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="train_dl is empty"):
        oc.Learner(Net(), empty, device="cpu", quiet=True)
    learn = oc.Learner(Net(), _dl(), None, device="cpu", quiet=True)
    with pytest.raises(ValueError, match="^valid_dl is None: with_valid=True needs a validation loader$"):
        learn.lr_find(with_valid=True)
    assert learn.opt is None
    with pytest.raises(ValueError, match="valid_dl is empty"):
        oc.Learner(Net(), _dl(), empty, device="cpu", quiet=True)
    with pytest.raises(ValueError, match="valid_dl is empty"):
        learn.valid_dl = empty  # refused when assigned too
    assert learn.valid_dl is None
    later = _dl(8, 4)
    learn.valid_dl = later
    later.dataset.tensors = tuple(t[:0] for t in later.dataset.tensors)  # emptied after it was given
    with pytest.raises(ValueError, match="valid_dl is empty"):  # the finder checks before anything changes
        learn.lr_find(with_valid=True)
    assert learn.opt is None
    learn.valid_dl = None
    assert len(learn.lr_find(num_it=3, with_valid=False).losses) == 3
    learn.train_dl.dataset.tensors = tuple(t[:0] for t in learn.train_dl.dataset.tensors)
    with pytest.raises(ValueError, match=r"^train_dl is empty \(len 0\)$"):
        learn.lr_find(num_it=3, with_valid=False)
    assert learn.opt is None


# ---- audit additions: the stop rule, fastai's slide, the skip window, frozen BatchNorm -------------
def _scripted_learner(values, **kw):
    """A Learner whose training loss at batch ``b`` is ``values[b]`` (validation: cross-entropy)."""
    calls = []

    def loss_fn(pred, y):
        if torch.is_grad_enabled():
            calls.append(1)
            return (pred * 0).sum() + values[len(calls) - 1]
        return F.cross_entropy(pred, y)

    learn = _learner(**kw)
    learn.loss_fn = loss_fn
    return learn


def _reference_stop(values, div_th):
    """The documented rule: bias-corrected EMA (beta 1 - 10/num_it); best from iteration 10 on; stop when
    the smoothed loss exceeds the best plus (div_th - 1) times the larger of its fall from the first
    smoothed value and its own size. Returns the number of recorded points."""
    smooth, best = _ema(values, 1 - 10 / len(values)), math.inf
    for i, s in enumerate(smooth):
        if i >= 10:
            best = min(best, s)
        if s > best + (div_th - 1) * max(smooth[0] - best, abs(best)):
            return i + 1
    return len(values)


@pytest.mark.parametrize("div_th", [4.0, 2.0, 1.5])
def test_stop_div_rule_uses_div_th_and_best_from_iteration_10(div_th):
    values = [10 - 0.5 * i for i in range(16)] + [2 + 3 * k for k in range(1, 100)]
    res = _scripted_learner(values).lr_find(num_it=80, div_th=div_th)
    n = _reference_stop(values[:80], div_th)
    assert n < 80 and len(res.losses) == n and res.stop_reason.startswith(f"diverged at iteration {n - 1}")
    assert res.smooth_losses == pytest.approx(_ema(res.losses, 1 - 10 / 80), rel=1e-12)  # beta 1 - 10/num_it
    # a spike before iteration 10 does not stop the test: no best is tracked yet
    spike = [1.0] * 5 + [1000.0] + [1.0] * 30
    assert len(_scripted_learner(spike).lr_find(num_it=30, div_th=div_th).losses) == 30
    assert len(_scripted_learner(values).lr_find(num_it=80, div_th=div_th, stop_div=False).losses) == 80
    # a ratio div_th x best would stop at iteration 10 on these negative losses
    negative = [-1.0 - 0.2 * i for i in range(20)] + [-5.0 + 0.5 * k for k in range(1, 100)]
    res = _scripted_learner(negative).lr_find(num_it=80, div_th=div_th)
    n = _reference_stop(negative[:80], div_th)
    assert 20 < n < 80 and len(res.losses) == n and res.stop_reason.startswith(f"diverged at iteration {n - 1}")


def test_frozen_batchnorm_stays_in_eval_mode_as_in_fit():
    seen = []

    class Modes(oc.Callback):
        def before_batch(self, learn):
            seen.append(learn.model.body[1].training)

    learn = _learner()
    learn.freeze(bn_freeze=True)
    learn.callbacks.append(Modes())
    learn.fit(0.01, 1)
    assert seen and not any(seen)
    seen.clear()
    learn.lr_find(num_it=5)  # the Learner's own callbacks do not run inside the test
    assert seen == []
    learn.lr_find(num_it=5, callbacks=[Modes()])  # with validation at every step: validate() restores the modes
    assert seen == [False] * 5


def test_plot_marks_every_suggestion_in_every_panel():
    res = _learner().lr_find(num_it=60, stop_div=False)
    marks = sorted(v for v in res.suggestions.values() if v is not None)
    fig = res.plot()
    for ax in fig.axes:
        vlines = sorted(line.get_xdata()[0] for line in ax.lines
                        if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
        assert marks and vlines == marks


def test_negative_control_the_restore_check_sees_a_missing_restore(monkeypatch):
    """The fingerprint and RNG checks above fail when the finder's restore is broken: without the RNG
    restore, and without the weights' restore."""
    learn = _learner()
    before, rng = _fingerprint(learn), get_rng_state()
    monkeypatch.setattr(lf, "set_rng_state", lambda state, loaders=(), same_loaders=False: None)
    learn.lr_find(num_it=10)
    with pytest.raises(AssertionError):
        _assert_restored(learn, before, rng)
    monkeypatch.undo()
    learn = _learner()
    before, rng = _fingerprint(learn), get_rng_state()
    monkeypatch.setattr(torch.nn.Module, "load_state_dict", lambda self, state, strict=True: None)
    learn.lr_find(num_it=10)
    monkeypatch.undo()
    with pytest.raises(AssertionError):
        _assert_restored(learn, before, rng)


def test_without_validation_res_rule_names_the_rule_that_answered():
    res = _learner().lr_find(num_it=30, with_valid=False)  # val_min cannot answer: a training-loss rule does
    assert res.suggestions["val_min"] is None and res.suggestion is not None
    assert res.rule != "val_min" and res.suggestions[res.rule] == res.suggestion  # its value is res.suggestion's
    assert res.rule == next(k for k, v in res.suggestions.items() if v is not None)  # the first that answered
    assert any(n.startswith("the 'val_min' rule gave no suggestion; using ") for n in res.notes)
    assert f"{res.rule:<10}" in next(ln for ln in res.summary().splitlines() if ln.endswith("<- suggestion"))


# ---- mutation-testing additions: the NaN stop's words, an empty validation loader, runs=2, the val
# curve's smoothing after an early stop ----------------------------------------------------------------
def test_nan_stop_reason_names_the_iteration_and_the_lr_it_would_have_stepped_at():
    learn = _probe_learner()  # one param group, 4 batches an epoch
    learn.loss_fn = _nan_at_fourth_batch(F.mse_loss)
    res = learn.lr_find(1e-4, 1e-2, num_it=10)
    lr3 = 1e-4 * (1e-2 / 1e-4) ** (3 / 9)  # the 4th batch's: iteration 3 of 10
    assert res.stop_reason == f"non-finite loss nan at iteration 3 (lr {lr3:.3g}): stopped before stepping"
    assert res.lrs == pytest.approx([1e-4 * 100 ** (i / 9) for i in range(3)], rel=1e-12)


class NoBatches:
    """A loader without a length that yields nothing (a stream that has run dry)."""

    def __iter__(self):
        return iter(())


def test_a_validation_loader_that_yields_nothing_is_named():
    learn = _learner()
    learn.valid_dl = NoBatches()  # no length: accepted when assigned, found empty when cycled
    before, rng = _fingerprint(learn), get_rng_state()
    with pytest.raises(ValueError, match="^valid_dl yielded no batch$"):
        learn.lr_find(num_it=5)
    _assert_restored(learn, before, rng)


def test_two_runs_take_the_geometric_mean_of_their_suggestions():
    torch.manual_seed(0)
    train, valid = EpochLoader(), EpochLoader(16)
    learn = oc.Learner(Net(), train, valid, metrics=[accuracy], device="cpu", quiet=True)
    two = learn.lr_find(num_it=12, runs=2)
    r0, r1 = two.run_suggestions
    both = [rule for rule in r0 if r0[rule] is not None and r1[rule] is not None]
    assert any(r0[rule] != r1[rule] for rule in both)  # the runs differ: the first run's value is not the answer
    for rule in both:
        assert two.suggestions[rule] == pytest.approx(math.sqrt(r0[rule] * r1[rule]), rel=1e-12)
    assert "suggestions: the median over 2 runs with different data orders" in two.notes


def test_the_validation_curve_is_smoothed_with_the_beta_of_num_it_after_an_early_stop():
    """Stopped at 20 of 100 steps: the suggestion rules smooth the validation losses with the beta of
    100 steps (0.9, the training curve's), not of the 20 recorded (0.5). A dip at step 11 is the
    minimum of the 0.5 curve, not of the 0.9 one."""
    val = [10 - 0.1 * i - (3.0 if i == 11 else 0.0) for i in range(20)]
    learn = _learner()
    train_loss, seen = learn.loss_fn, []

    def loss_fn(pred, y):
        if torch.is_grad_enabled():
            return train_loss(pred, y)
        seen.append(1)
        return (pred * 0).sum() + val[len(seen) - 1]

    learn.loss_fn = loss_fn
    res = learn.lr_find(1e-4, 1e-2, num_it=100, stop_rule=lambda h: "stop" if len(h.losses) == 20 else None)
    assert res.val_losses == pytest.approx(val, rel=1e-6) and res.smooth_losses == pytest.approx(
        _ema(res.losses, 0.9), rel=1e-9)
    window = slice(10, 15)  # the first 100 // 10 points and the last 5 skipped
    low = {b: 10 + int(np.argmin(_ema(res.val_losses, b)[window])) for b in (0.9, 0.5)}
    assert low == {0.9: 14, 0.5: 11}
    assert res.suggestions["val_min"] == pytest.approx(res.lrs[low[0.9]] / 2, rel=1e-12)


class Remember:
    """A stop rule whose state is a list: a shallow copy would share it between runs."""

    def __init__(self):
        self.seen = []

    def __call__(self, history):
        self.seen.append(len(history.losses))
        return f"stopped after {self.seen}" if len(self.seen) == 4 else None


def test_each_run_has_its_own_deep_copy_of_the_stop_rule():
    rule = Remember()
    res = _learner().lr_find(num_it=20, runs=2, with_valid=False, stop_rule=rule)
    assert res.stop_reason == "stopped after [1, 2, 3, 4]" and len(res.losses) == 4
    assert rule.seen == [] and len(res.run_suggestions) == 2  # the second run stopped at 4 steps too


def test_the_bar_names_the_run(monkeypatch):
    """Not quiet: one bar per run, "lr_find run k/n" when there are several, closed at the steps recorded."""
    import io

    from onecycle import progress
    bars, real = [], progress.finder_bar

    def spy(n, quiet=False, desc="lr_find", **kw):
        bars.append((n, quiet, desc, io.StringIO()))
        return real(n, quiet, desc=desc, file=bars[-1][3], interval=0.0)

    monkeypatch.setattr(progress, "finder_bar", spy)
    learn = _learner(quiet=False)
    learn.lr_find(num_it=12, runs=2, with_valid=False, stop_div=False)
    res = learn.lr_find(num_it=6, with_valid=False, stop_div=False)
    _learner().lr_find(num_it=5, with_valid=False)  # a quiet Learner: a quiet bar (none shows)
    assert [b[:3] for b in bars] == [(12, False, "lr_find run 1/2"), (12, False, "lr_find run 2/2"),
                                     (6, False, "lr_find"), (5, True, "lr_find")]
    assert bars.pop()[3].getvalue() == ""
    for n, _, desc, out in bars:
        assert f"{desc}: 100%" in out.getvalue() and f"{n}/{n}" in out.getvalue()
    # the postfix: the best smoothed loss so far and the step's LR; closed, the bar is wiped (leave=False)
    *_, last, wiped, end = bars[-1][3].getvalue().split("\r")
    assert last.startswith("lr_find: 100%") and " 6/6 [" in last
    assert last.rstrip().endswith(f"step/s, best={min(res.smooth_losses):.4g}, lr={res.lrs[-1]:.3g}]")
    assert wiped.strip() == "" and end == ""


def test_an_error_in_a_callbacks_before_fit_comes_out_as_it_is():
    """A user's callback (order 0) that fails in before_fit, before the finder's (order 50) has made its
    bar: the finder's after_fit closes no bar, and the error is the user's."""
    class Fail(oc.Callback):
        def before_fit(self, learn):
            raise RuntimeError("boom")

    learn = _learner()
    before, rng = _fingerprint(learn), get_rng_state()
    with pytest.raises(RuntimeError, match="^boom$"):
        learn.lr_find(num_it=5, callbacks=[Fail()])
    _assert_restored(learn, before, rng)


def test_with_accumulation_a_step_records_the_mean_loss_of_its_batches():
    values = [1.0, 3.0, 2.0, 6.0, 0.5, 0.25, 4.0, 4.0]  # two batches a step
    res = _scripted_learner(values, accum=2).lr_find(num_it=4, with_valid=False)
    assert res.losses == [2.0, 4.0, 0.375, 4.0]


def test_the_best_is_tracked_from_iteration_10_itself():
    """A dip to 0 at iteration 10 sets the best there: the climb back to 1 is then above 0 + 0.5 x (its
    fall from the start) at 21 points; tracked only from iteration 11 on, the test would run all 30."""
    values = [1.0] * 10 + [0.0] + [1.0] * 19
    res = _scripted_learner(values).lr_find(num_it=30, div_th=1.5, with_valid=False)
    assert len(res.losses) == _reference_stop(values, 1.5) == 21 and res.stop_reason.startswith("diverged")


def test_a_loss_of_zero_throughout_is_no_divergence():
    """Best, start and smoothed loss all 0: the bound is 0 too, and a loss equal to it has not risen above it."""
    res = _scripted_learner([0.0] * 30).lr_find(num_it=30, with_valid=False)
    assert len(res.losses) == 30 and res.stop_reason == "completed num_it=30 iterations"


def test_the_divergence_stop_reason_in_full():
    values = [10 - 0.5 * i for i in range(16)] + [2 + 3 * k for k in range(1, 100)]
    calls = []

    def loss_fn(pred, y):
        calls.append(1)
        return (pred * 0).sum() + values[len(calls) - 1]

    learn = _probe_learner()  # one param group
    learn.loss_fn = loss_fn
    res = learn.lr_find(1e-4, 1e-2, num_it=80, with_valid=False)
    n = _reference_stop(values[:80], 4.0)
    i, smooth = n - 1, _ema(values[:80], 1 - 10 / 80)
    best = min(smooth[10:n])
    bound = best + 3 * max(smooth[0] - best, abs(best))
    lr = 1e-4 * 100 ** (i / 79)
    assert res.stop_reason == (f"diverged at iteration {i} (lr {lr:.3g}): smoothed loss {smooth[i]:.4g} above "
                               f"{bound:.4g} (best {best:.4g}, start {smooth[0]:.4g}, div_th 4)")


def test_a_sampler_that_makes_its_generator_lazily_gets_none_back():
    """accelerate's SeedableRandomSampler makes its generator at its first iteration: the finder (the
    very loader it captured) puts the None back, where a resume would refuse the other layout."""
    from test_rng import _LazySampler
    ds = _dl().dataset
    train = DataLoader(ds, batch_size=8, sampler=_LazySampler(ds))
    torch.manual_seed(0)
    learn = oc.Learner(Net(), train, device="cpu", quiet=True)
    assert train.sampler.generator is None
    learn.lr_find(num_it=10)
    assert train.sampler.generator is None


class IterationLoader(EpochLoader):
    """accelerate's DataLoaderShard: set_epoch, and its epoch counted as ``iteration``."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.iteration = self.__dict__.pop("epoch")

    def set_epoch(self, e):
        self.calls.append(e)
        self.iteration = e

    def __iter__(self):
        self.iteration += 1
        perm = torch.randperm(len(self.x), generator=self._gen)
        return iter([(self.x[i], self.y[i]) for i in perm.split(self.bs)])


def test_a_loader_that_counts_its_epochs_as_iteration_gets_its_epoch_back():
    torch.manual_seed(0)
    train = IterationLoader()
    learn = oc.Learner(Net(), train, device="cpu", quiet=True)
    learn.lr_find(num_it=12)
    assert train.calls == [0, 1, 2, 7] and train.iteration == 7 and not hasattr(train, "epoch")


def test_a_number_on_the_start_side_takes_the_end_sides_group_ratios():
    learn = _learner()
    res = learn.lr_find(1e-5, [1e-2, 1e-1], num_it=6, with_valid=False)  # the head group starts at 1e-5
    for g, start in enumerate([1e-6, 1e-5]):
        assert res.group_lrs[g] == pytest.approx([start * 1e4 ** (i / 5) for i in range(6)], rel=1e-12)


class Net3(Net):
    """Three layer groups: the head group is the last, not the second."""

    def param_groups(self):
        return [list(self.body[0].parameters()), list(self.body[1].parameters()), list(self.head.parameters())]


def test_three_groups_keep_their_ratios_from_the_head_group():
    torch.manual_seed(0)
    learn = oc.Learner(Net3(), _dl(), device="cpu", quiet=True)
    res = learn.lr_find([1e-6, 1e-5, 1e-4], [1e-3, 1e-2, 1e-1], num_it=4)
    for g, start in enumerate([1e-6, 1e-5, 1e-4]):
        assert res.group_lrs[g] == pytest.approx([start * 1e3 ** (i / 3) for i in range(4)], rel=1e-12)
    with pytest.raises(ValueError, match="same end/start ratio"):
        learn.lr_find([1e-6, 1e-5, 1e-4], [1e-3, 1e-2, 1.0], num_it=4)
    res = learn.lr_find(1e-4, [1e-3, 1e-2, 1e-1], num_it=4)  # one start: the head group's
    for g, start in enumerate([1e-6, 1e-5, 1e-4]):
        assert res.group_lrs[g] == pytest.approx([start * 1e3 ** (i / 3) for i in range(4)], rel=1e-12)


def test_an_epoch_that_cannot_be_read_as_an_int_leaves_set_epoch_alone():
    torch.manual_seed(0)
    train = EpochLoader()
    train.epoch = 7.0  # not an int: the finder could not put it back as it was
    learn = oc.Learner(Net(), train, device="cpu", quiet=True)
    learn.lr_find(num_it=12)
    assert train.calls == [0, 1, 2]  # the loop's set_epoch per pass, and no restore


def test_the_test_starts_from_no_gradient():
    learn = _learner()
    xb, yb = next(iter(learn.train_dl))
    F.cross_entropy(learn.model(xb), yb).backward()  # leftover gradients, put back afterwards
    seen = []

    class Grads(oc.Callback):
        def before_batch(self, learn):
            seen.append([p.grad is None for p in learn.model.parameters()])

    learn.lr_find(num_it=3, with_valid=False, callbacks=[Grads()])
    assert seen[0] == [True] * len(seen[0]) and all(p.grad is not None for p in learn.model.parameters())


def test_prodigy_refuses_per_group_start_lrs_by_name():
    pytest.importorskip("prodigyopt")
    learn = _learner(opt="prodigy")
    with pytest.raises(ValueError, match=r"^start_lr: Prodigy takes one LR for every param group"):
        learn.lr_find([1e-5, 1e-4], 1e-1, num_it=5)
    assert learn.opt is None


class Stream:
    """A loader without a length: four batches a pass."""

    def __init__(self):
        self.batches = list(_dl(32, 8))

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize("accum", [1, 2])
def test_a_loader_without_a_length_is_looped_over_without_a_warning(accum, recwarn):
    torch.manual_seed(0)
    learn = oc.Learner(Net(), Stream(), device="cpu", quiet=True, accum=accum)
    rec = Record()
    res = learn.lr_find(1e-4, 1e-1, num_it=7, callbacks=[rec])
    assert len(res.losses) == 7 and rec.steps == 7 and rec.batches == 7 * accum
    assert res.lrs == pytest.approx([1e-4 * 1e3 ** (i / 6) for i in range(7)], rel=1e-12)
    assert [str(w.message) for w in recwarn] == []  # each pass ends with the loader: no "short epoch" warning


class OddStream(Stream):
    """A loader without a length: three batches a pass."""

    def __init__(self):
        self.batches = list(_dl(24, 8))


def test_without_a_length_a_pass_ending_inside_a_window_drops_it(recwarn):
    """3 batches a pass at accum=2: a step of 2 batches, then the third is dropped (the stream's end is
    seen only after its backward), so 4 steps read 11 batches (3 passes, then 2 of the 4th), each step a
    full window; a sized loader of 3 batches steps on the third alone (the test above)."""
    torch.manual_seed(0)
    learn, rec = oc.Learner(Net(), OddStream(), device="cpu", quiet=True, accum=2), Record()
    res = learn.lr_find(1e-4, 1e-1, num_it=4, with_valid=False, callbacks=[rec])
    assert len(res.losses) == rec.steps == 4 and rec.batches == 11
    assert res.lrs == pytest.approx([1e-4 * 1e3 ** (i / 3) for i in range(4)], rel=1e-12)
    assert [str(w.message) for w in recwarn] == []
    assert all(p.grad is None for p in learn.model.parameters())  # the dropped window left no gradient


def test_every_run_counts_its_epochs_from_0_without_set_epoch():
    epochs = []

    class Epochs(oc.Callback):
        def before_epoch(self, learn):
            epochs.append(learn.loop.epoch)

    _learner().lr_find(num_it=12, runs=2, with_valid=False, callbacks=[Epochs()])  # 8 batches: 2 epochs a run
    assert epochs == [0, 1, 0, 1]


def test_no_validation_at_epoch_ends_only_the_finders_own():
    learn = _probe_learner()  # 4 training batches: 8 steps end 2 epochs
    learn.lr_find(1e-4, 1e-2, num_it=8)
    assert learn.model.log == [(True, True), (False, False)] * 8


def test_the_defaults_of_find_and_of_learner_lr_find():
    """1e-7 to 10 over 100 steps (Learner.lr_find spells the same defaults), div_th 4."""
    res = lf.find(_learner(), stop_div=False, with_valid=False)
    assert res.num_it == 100 and res.lrs == pytest.approx([1e-7 * 1e8 ** (i / 99) for i in range(100)], rel=1e-12)
    values = [10 - 0.5 * i for i in range(16)] + [2 + 3 * k for k in range(1, 100)]
    res = _scripted_learner(values).lr_find(with_valid=False)
    assert len(res.losses) == _reference_stop(values[:100], 4.0) == 29 != _reference_stop(values[:100], 5.0)


def test_two_steps_are_the_start_and_the_end():
    res = _learner().lr_find(1e-3, 1e-1, num_it=2, with_valid=False)
    assert res.lrs == pytest.approx([1e-3, 1e-1], rel=1e-12) and res.stop_reason == "completed num_it=2 iterations"


def test_the_groups_are_the_optimizers_when_there_is_one():
    """compat's lr_find runs the user's one-group optimizer over Net (two layer groups): the groups are
    the optimizer's, so two start LRs are one too many."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^start_lr has 2 values but there are 1 param groups"):
        oc.lr_find(model, opt, F.cross_entropy, _dl(), start_lr=[1e-5, 1e-4], num_it=5)
    assert len(oc.lr_find(model, opt, F.cross_entropy, _dl(), start_lr=[1e-5], num_it=5).group_lrs) == 1


def test_the_learners_weight_decay_per_group_during_the_test():
    seen = []

    class Wd(oc.Callback):
        def after_step(self, learn):
            seen.append([g[learn.wd_key] for g in learn.opt.param_groups])

    learn = _learner(wd=0.05)
    learn.lr_find(num_it=3, with_valid=False, callbacks=[Wd()])
    learn.lr_find(num_it=3, with_valid=False, wd=[0.01, 0.02], callbacks=[Wd()])
    assert seen == [[0.05, 0.05]] * 3 + [[0.01, 0.02]] * 3


def test_inside_a_fit_the_fits_schedule_holds_still():
    """lr_find from a callback in the middle of a fit: the fit's LRs are those of the same fit without it."""
    class FindAt3(oc.Callback):
        def after_batch(self, learn):
            if learn.loop.iter == 3:
                learn.lr_find(num_it=5, with_valid=False)

    def fit(cbs):
        learn = _learner()
        learn.fit_one_cycle(1, 0.05, callbacks=cbs)
        return learn

    found, alone = fit([FindAt3()]), fit([])
    assert found.recorder.lrs == alone.recorder.lrs and found.recorder.losses == alone.recorder.losses


def test_prodigy_warns_that_its_suggestion_is_no_lr_to_train_at():
    pytest.importorskip("prodigyopt")
    with pytest.warns(UserWarning) as caught:
        res = _learner(opt="prodigy").lr_find(num_it=20)
    assert res.suggestion is not None
    assert [str(w.message) for w in caught] == [
        "Prodigy's LR multiplies the step size d it estimates, which starts tiny (d0) and grows only as the weights "
        f"move: over a range test the loss barely moves, so this suggestion ({res.suggestion:.3g}) is no LR to train "
        "at. Train it at lr=1 (its authors' default)"]


def test_per_group_suggested_lr_keeps_the_groups_ratios():
    learn = _learner()
    res = learn.lr_find([1e-6, 1e-5], [1e-1, 1.0], num_it=40)
    assert res.suggestion is not None
    assert learn.suggested_lr == pytest.approx([res.suggestion / 10, res.suggestion], rel=1e-12)


def test_with_accumulation_the_last_batch_of_a_pass_closes_a_shorter_window():
    """A 3-batch loader at accum=2: steps of 2 and 1 batches a pass (as fit does), so 7 steps take 11 batches."""
    torch.manual_seed(0)
    learn, rec = oc.Learner(Net(), _dl(24, 8), device="cpu", quiet=True, accum=2), Record()
    res = learn.lr_find(1e-4, 1e-1, num_it=7, with_valid=False, callbacks=[rec])
    assert len(res.losses) == rec.steps == 7 and rec.batches == 11
