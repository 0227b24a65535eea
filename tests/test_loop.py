"""The loop and its state (``loop.Loop``): one object per fit, what ``state_dict`` holds, and an LR
range test started from inside a running fit, which must leave that fit exactly as it would have
been without it."""

import collections

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle.callbacks import HOOKS
from onecycle.checkpoint import safe_load
from onecycle.data import TensorLoader
from onecycle.loop import Loop, batches_per_epoch, steps_for
from onecycle.resume import unpack_floats


class Net(nn.Module):
    """BatchNorm and Dropout: the finder must put back running statistics and draw no RNG for the fit."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))

    def param_groups(self):
        return [list(self.body.parameters()), list(self.head.parameters())]


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _loaders(kind):
    x, y = _data()
    vx, vy = _data(16, 1)
    if kind == "dataloader":  # the shuffle draws from the global RNG
        return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True), DataLoader(TensorDataset(vx, vy), 8)
    return TensorLoader(x, y, batch_size=8, shuffle=True, seed=3), TensorLoader(vx, vy, batch_size=8)


class Count(oc.Callback):
    """Every hook call, with the epoch and batch it came at."""

    def __init__(self):
        self.calls = collections.Counter()
        self.trace = []


def _counting(name):
    def hook(self, learn):
        self.calls[name] += 1
        self.trace.append((name, learn.epoch, learn.iter))
    return hook


for _hook in HOOKS:
    setattr(Count, _hook, _counting(_hook))

_BATCH_HOOKS = ("before_batch", "after_backward", "after_step", "after_batch")


def find_inside(hook, **find_kw):
    """A callback that runs an LR range test once, from ``hook``: at the fit's start or end, in epoch 1
    (of 0..2), or at its batch 2 for a batch hook."""

    class FindInside(oc.Callback):
        result = None

        def find(self, learn):
            fit_level = hook in ("before_fit", "after_fit")
            if self.result is None and (fit_level or learn.epoch == 1 and (hook not in _BATCH_HOOKS
                                                                             or learn.iter >= 2)):
                self.result = learn.lr_find(num_it=9, **find_kw)

    setattr(FindInside, hook, FindInside.find)
    return FindInside()


def _fit(kind, hook=None, opt="sgd", tmp_path=None, accum=1, **find_kw):
    torch.manual_seed(0)
    train, valid = _loaders(kind)
    count = Count()
    callbacks = [count] + ([find_inside(hook, **find_kw)] if hook else [])
    learn = oc.Learner(Net(), train, valid, opt=opt, metrics=[oc.metrics.accuracy], device="cpu", quiet=True,
                       wd=0.01, clip=1.0, accum=accum, callbacks=callbacks)
    ckpt = {} if tmp_path is None else {"checkpoint_dir": tmp_path / (hook or "none"), "every": 2, "ckpt_budget": None}
    learn.fit_one_cycle(3, 0.05, **ckpt)
    after = torch.randn(4)  # the global RNG after the fit: the test inside must not have moved it
    return learn, count, callbacks[-1], after


def _same_fit(a, b):
    (la, ca, _, ra), (lb, cb, _, rb) = a, b
    sa, sb = la.model.state_dict(), lb.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    history_a, history_b = la.recorder.state_dict(), lb.recorder.state_dict()
    assert len(history_a.pop("times")) == len(history_b.pop("times")) == 3  # wall time differs: all else exact
    assert history_a == history_b
    oa, ob = la.opt.state_dict(), lb.opt.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    assert all(torch.equal(oa["state"][i][k], ob["state"][i][k]) for i in oa["state"] for k in oa["state"][i])
    assert ca.calls == cb.calls and ca.trace == cb.trace
    assert la.scheduler.step_count == lb.scheduler.step_count == la.scheduler.total_steps
    assert torch.equal(ra, rb)


@pytest.mark.parametrize("hook", HOOKS)
def test_lr_find_from_any_hook_leaves_the_running_fit_bit_identical(hook, tmp_path):
    reference = _fit("dataloader")
    found = _fit("dataloader", hook)
    assert found[2].result is not None and len(found[2].result.losses) == 9  # the test ran, all its steps
    _same_fit(found, reference)


@pytest.mark.parametrize("hook", ["before_batch", "after_backward", "after_step", "after_epoch"])
@pytest.mark.parametrize("kind,opt,accum", [("tensor", "adamw", 1), ("dataloader", "sgd", 2)])
def test_lr_find_inside_a_checkpointing_fit(hook, kind, opt, accum, tmp_path):
    """With a TensorLoader (its own generator and epoch), AdamW, accumulation windows, and a fit that
    writes checkpoints every 2 steps: the checkpoint left is the same too."""
    reference = _fit(kind, opt=opt, tmp_path=tmp_path, accum=accum)
    found = _fit(kind, hook, opt=opt, tmp_path=tmp_path, accum=accum, runs=2)
    assert found[2].result is not None
    _same_fit(found, reference)
    a = safe_load(tmp_path / hook / "last.ckpt")
    b = safe_load(tmp_path / "none" / "last.ckpt")
    ra, rb = unpack_floats(a["recorder"]), unpack_floats(b["recorder"])
    assert a["position"] == b["position"] and ra.pop("times") != rb.pop("times") and ra == rb
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_the_learners_callbacks_stay_out_of_lr_find():
    count = Count()
    torch.manual_seed(0)
    train, valid = _loaders("dataloader")
    learn = oc.Learner(Net(), train, valid, device="cpu", quiet=True, callbacks=[count])
    learn.lr_find(num_it=12)
    assert count.calls == {}
    given = Count()
    learn.lr_find(num_it=12, callbacks=[given])  # those given to lr_find run
    assert given.calls["after_step"] == 12 and given.calls["before_fit"] == given.calls["after_fit"] == 1
    assert given.calls["after_epoch"] == 1  # 6 batches an epoch: the 12th step ends the test inside its second
    assert count.calls == {} and learn.loop is None  # no fit has run: the finder's loop is not left behind


def test_each_fit_runs_a_loop_of_its_own_and_learn_reads_the_last():
    torch.manual_seed(0)
    train, valid = _loaders("tensor")
    learn = oc.Learner(Net(), train, valid, device="cpu", quiet=True, accum=4)
    assert learn.loop is None and learn.epoch is None and learn.scheduler is None
    learn.fit_one_cycle(2, 0.05)
    first = learn.loop
    assert isinstance(first, Loop) and (learn.epoch, learn.n_epochs, learn.batches) == (1, 2, 6)
    assert learn.scheduler is first.scheduler and first.scheduler.step_count == 2 * 2  # 6 batches, accum 4: 2 steps
    learn.fit_one_cycle(1, 0.05)
    assert learn.loop is not first and learn.scheduler.step_count == 2 and first.scheduler.step_count == 4
    with pytest.raises(AttributeError):
        learn.epoch = 3  # the loop's state is read through the Learner, never written there


def test_state_dict_holds_the_position_and_the_epoch_so_far():
    torch.manual_seed(0)
    train, valid = _loaders("tensor")
    learn = oc.Learner(Net(), train, valid, device="cpu", quiet=True)
    seen = {}

    class Grab(oc.Callback):
        def after_batch(self, learn):
            if learn.epoch == 1 and learn.iter == 2:
                seen.update(learn.loop.state_dict())

    learn.fit_one_cycle(2, 0.05, callbacks=[Grab()])
    assert (seen["epoch"], seen["iter"], seen["nan_skipped"]) == (1, 2, 0)
    part = seen["partial"]
    assert len(part["losses"]) == len(part["lrs"]) == len(part["moms"]) == 3  # batches 0, 1 and 2 of epoch 1
    assert part["losses"] == learn.recorder.losses[6:9] and part["lrs"] == [list(r) for r in zip(
        *[g[6:9] for g in learn.recorder.group_lrs])]


@pytest.mark.parametrize("batches,accum,steps", [(12, 1, 12), (12, 5, 3), (10, 5, 2), (1, 3, 1), (7, 7, 1)])
def test_steps_for_counts_a_shorter_last_window(batches, accum, steps):
    assert steps_for(batches, accum) == steps


def test_batches_per_epoch():
    dl = DataLoader(TensorDataset(*_data(40)), batch_size=8)  # 5 batches
    assert batches_per_epoch(dl, 1) == 5 and batches_per_epoch(dl, 2, steps_per_epoch=2) == 4
    assert batches_per_epoch(dl, 2, steps_per_epoch=3) == 5  # the loader's last batch closes a shorter window
    with pytest.raises(ValueError, match="steps_per_epoch=4 is more than train_dl's 5 batches give"):
        batches_per_epoch(dl, 2, steps_per_epoch=4)
    stream = (b for b in dl)
    assert batches_per_epoch(stream, 3, steps_per_epoch=2) == 6
    with pytest.raises(TypeError, match="no len"):
        batches_per_epoch(stream, 1)


def test_loss_and_predictions_of_the_last_batch_are_the_loops():
    torch.manual_seed(0)
    train, valid = _loaders("tensor")
    learn = oc.Learner(Net(), train, valid, device="cpu", quiet=True)
    got = []

    class Grab(oc.Callback):
        def after_batch(self, learn):
            got.append((learn.loss, learn.pred, learn.target, learn.stepped))

    learn.fit_one_cycle(1, 0.05, callbacks=[Grab()])
    loss, pred, target, stepped = got[-1]
    assert stepped and pred.shape == (8, 3) and target.shape == (8,)
    assert torch.equal(loss, F.cross_entropy(pred, target).detach())
