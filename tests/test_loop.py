"""The loop and its state (``loop.Loop``): one object per fit, what ``state_dict`` holds, and an LR
range test started from inside a running fit, which must leave that fit exactly as it would have
been without it."""

import collections
import contextlib
import math

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


# ---- one batch, by hand ------------------------------------------------------------------------
# A linear model and plain SGD at a constant LR, against the same steps written out by hand: what the
# loop does to the weights, batch by batch, window by window, with nothing of its own in the way.
def _plain_sgd(groups, lr):
    return torch.optim.SGD(groups, lr=lr)


def _xy(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def _linear(x, y, accum=1, valid=False, **kw):
    torch.manual_seed(0)
    dl = DataLoader(TensorDataset(x, y), batch_size=2)  # no shuffle: batches in order
    return oc.Learner(nn.Linear(3, 2), dl, dl if valid else None, opt=_plain_sgd, accum=accum, device="cpu",
                      quiet=True, **kw)


def _by_hand(model, x, y, lr, accum, epochs=1, clip=None, skip=()):
    """SGD over batches of 2, one step per window of ``accum`` batches (the last may be shorter), each
    batch's loss scaled by 1/window; windows holding a batch in ``skip`` apply nothing."""
    batches = [(x[i:i + 2], y[i:i + 2]) for i in range(0, len(x), 2)]
    windows = [batches[i:i + accum] for i in range(0, len(batches), accum)]
    starts = list(range(0, len(batches), accum))
    for _ in range(epochs):
        for start, window in zip(starts, windows):
            model.zero_grad(set_to_none=True)
            if any(start + j in skip for j in range(len(window))):
                continue
            for bx, by in window:
                (F.cross_entropy(model(bx), by) / len(window)).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip)
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
    return model


@pytest.mark.parametrize("accum", [1, 2, 3])
def test_accumulation_windows_by_hand(accum):
    """5 batches: windows of accum (the last one shorter), the loss scaled by 1/window, one step each."""
    x, y = _xy()
    learn = _linear(x, y, accum=accum)
    ref = _by_hand(_linear(x, y).model, x, y, 0.1, accum, epochs=2)
    count = Count()
    learn.fit_sched(2, 0.1, lambda p: 1.0, callbacks=[count])
    for p, q in zip(learn.model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    steps = -(-5 // accum)
    assert learn.scheduler.step_count == 2 * steps and count.calls["after_step"] == 2 * steps
    assert count.calls["after_backward"] == 2 * steps
    assert count.calls["before_batch"] == count.calls["after_batch"] == 10
    ends = [i for name, e, i in count.trace if name == "after_step" and e == 0]
    assert ends == [i for i in range(5) if (i + 1) % accum == 0 or i == 4]  # each window's last batch


def test_recorded_losses_are_the_unscaled_batch_losses_and_their_epoch_mean():
    x, y = _xy()
    learn = _linear(x, y, accum=2)
    with torch.no_grad():
        first = [F.cross_entropy(learn.model(x[i:i + 2]), y[i:i + 2]).item() for i in (0, 2)]  # before any step
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    rec = learn.recorder
    assert len(rec.losses) == 5 and rec.losses[:2] == pytest.approx(first, rel=1e-6)  # not halved by the window
    assert rec.train_losses == pytest.approx([sum(rec.losses) / 5], rel=1e-12)
    assert rec.group_lrs == [[0.1] * 5] and rec.moms == [0] * 5  # SGD's momentum: 0


def test_the_momentum_recorded_is_sgds_or_beta1_or_none():
    x, y = _xy()
    for opt, want in [("sgd", 0.9), ("adamw", 0.9),
                      (lambda groups, lr: torch.optim.Adagrad(groups, lr=lr), None)]:
        learn = _linear(x, y)
        learn.opt_func = opt
        learn.fit_sched(1, 0.01, lambda p: 1.0)  # no momentum schedule: the optimizer's own
        assert learn.recorder.moms == [want] * 5


def test_clip_is_applied_to_the_global_norm_before_the_step():
    x, y = _xy()
    learn = _linear(x, y, clip=0.05)
    learn.fit_sched(1, 0.5, lambda p: 1.0)
    ref = _by_hand(_linear(x, y).model, x, y, 0.5, 1, clip=0.05)
    unclipped = _by_hand(_linear(x, y).model, x, y, 0.5, 1)
    for p, q, r in zip(learn.model.parameters(), ref.parameters(), unclipped.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        assert (p - r).abs().max() > 1e-3  # the control: the clip changed the steps


# ---- non-finite losses -------------------------------------------------------------------------
def _with_nan(batch=2):
    x, y = _xy()
    x[2 * batch:2 * batch + 2] = float("nan")
    return x, y


def test_a_nan_loss_raises_before_any_update_with_it():
    x, y = _with_nan()
    learn = _linear(x, y)
    seen = []

    class Grab(oc.Callback):
        def after_batch(self, learn):
            if learn.iter == 1:
                seen.extend(p.detach().clone() for p in learn.model.parameters())

    with pytest.raises(oc.loop.NonFiniteLossError, match=r"^non-finite loss \(nan\) at epoch 1, iteration 2: no "
                                                         r"update was applied with it \(on_nan='skip' skips such "
                                                         r"batches\)$"):
        learn.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[Grab()])
    assert all(torch.equal(p, q) for p, q in zip(learn.model.parameters(), seen))  # as after batch 1
    assert all(p.grad is None for p in learn.model.parameters())  # the bad gradient dropped
    assert len(learn.recorder.losses) == 3 and math.isnan(learn.recorder.losses[2])  # the history up to it


@pytest.mark.parametrize("accum", [1, 2])
def test_on_nan_skip_drops_the_whole_window_and_counts_it(accum):
    x, y = _with_nan()
    learn = _linear(x, y, accum=accum)
    learn.fit_sched(2, 0.1, lambda p: 1.0, on_nan="skip")
    ref = _by_hand(_linear(x, y).model, x, y, 0.1, accum, epochs=2, skip={2})
    for p, q in zip(learn.model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert learn.loop.nan_skipped == 2 and learn.loop.state_dict()["nan_skipped"] == 2
    assert learn.scheduler.step_count == 2 * (-(-5 // accum) - 1)  # a skipped step does not move the schedule


def test_on_nan_off_applies_the_nan():
    x, y = _with_nan()
    learn = _linear(x, y)
    learn.fit_sched(1, 0.1, lambda p: 1.0, on_nan="off")
    assert all(torch.isnan(p).all() for p in learn.model.parameters())
    assert learn.loop.nan_skipped == 0


def test_an_infinite_loss_is_non_finite_too():
    x, y = _xy()
    learn = _linear(x, y)
    learn.loss_fn = lambda out, target: out.sum() * float("inf")
    with pytest.raises(oc.loop.NonFiniteLossError, match=r"^non-finite loss \(-?inf\) at epoch 1, iteration 0"):
        learn.fit_sched(1, 0.1, lambda p: 1.0)


# ---- a GradScaler ------------------------------------------------------------------------------
def test_a_grad_scaler_unscales_before_the_hooks_and_steps_like_no_scaler():
    """A power-of-two scale is exact: the weights equal the unscaled fit's; after_backward sees the
    unscaled gradients; the scaler's update runs at every step (its scale grows every 2 steps)."""
    x, y = _xy()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    learn = _linear(x, y, scaler=scaler)
    plain = _linear(x, y)
    grads = {}

    class Grads(oc.Callback):
        def __init__(self, key):
            self.key = key

        def after_backward(self, learn):
            grads.setdefault(self.key, []).append(learn.model.weight.grad.clone())

    learn.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[Grads("scaled")])
    plain.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[Grads("plain")])
    assert all(torch.equal(a, b) for a, b in zip(grads["scaled"], grads["plain"])) and len(grads["plain"]) == 5
    assert all(torch.equal(p, q) for p, q in zip(learn.model.parameters(), plain.model.parameters()))
    assert scaler.get_scale() == 2.0 ** 12  # 5 steps: grown after the 2nd and the 4th


# ---- the epoch's edges -------------------------------------------------------------------------
class Epochs(DataLoader):
    """A DataLoader that records ``set_epoch`` calls (as a DistributedSampler's loader is told)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


class Resettable(nn.Linear):
    """A model with ``reset()`` (a recurrent model's hidden state), counted, and its mode at each call."""

    def __init__(self):
        super().__init__(3, 2)
        self.resets = []

    def reset(self):
        self.resets.append(self.training)


def test_each_epoch_tells_the_loader_its_number_and_resets_the_model_in_train_mode():
    x, y = _xy()
    torch.manual_seed(0)
    model = Resettable()
    learn = oc.Learner(model, Epochs(TensorDataset(x, y), batch_size=2), None, device="cpu", quiet=True)
    model.eval()
    learn.fit_sched(3, 0.1, lambda p: 1.0)
    assert learn.train_dl.epochs == [0, 1, 2] and model.resets == [True, True, True]


def test_validation_at_each_epoch_end_between_its_hooks():
    x, y = _xy()
    learn = _linear(x, y, valid=True, metrics=[oc.metrics.accuracy])
    count = Count()
    learn.fit_sched(2, 0.1, lambda p: 1.0, callbacks=[count])
    names = [n for n, _, _ in count.trace if n in ("after_epoch", "before_validate", "after_validate", "before_epoch")]
    assert names == ["before_epoch", "before_validate", "after_validate", "after_epoch"] * 2
    assert len(learn.recorder.val_losses) == 2 and learn.loop.val_result == learn.validate()
    assert learn.recorder.val_losses[-1] == pytest.approx(learn.validate()["val_loss"], rel=1e-6)
    quiet = _linear(x, y)  # no valid_dl: no validation
    count = Count()
    quiet.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[count])
    assert count.calls["before_validate"] == 0 and quiet.loop.val_result is None
    assert len(quiet.recorder.val_losses) == 1 and math.isnan(quiet.recorder.val_losses[0])  # none: NaN


def test_the_progress_table_prints_unless_quiet(capsys):
    x, y = _xy()
    learn = _linear(x, y, valid=True)
    learn.quiet = False
    learn.fit_sched(2, 0.1, lambda p: 1.0)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split()[:3] == ["epoch", "train_loss", "val_loss"] and [r.split()[0] for r in out[1:]] == ["1", "2"]
    assert float(out[2].split()[1]) == pytest.approx(learn.recorder.train_losses[1], abs=1e-4)
    learn.quiet = True
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    assert capsys.readouterr().out == ""


class Empty:
    """A loader that says it has 2 batches and yields none."""

    def __len__(self):
        return 2

    def __iter__(self):
        return iter(())


def test_a_loader_that_yields_nothing_is_named():
    learn = _linear(*_xy())
    learn.train_dl = Empty()
    with pytest.raises(ValueError, match=r"^train_dl yielded no batch$"):
        learn.fit_sched(1, 0.1, lambda p: 1.0)


@pytest.mark.parametrize("accum, steps, dropped", [
    (1, "step 6 of 8", ""),  # 3 of 4 steps an epoch
    (2, "step 2 of 4", ". 2 batches that ended inside an accumulation window were dropped (no optimizer step)"),
])
def test_a_loader_shorter_than_its_epochs_says_so_once(accum, steps, dropped):
    """A stream of 3 batches an epoch, told 4 batches (4 steps, or 2 windows of 2): one warning after
    the fit; with accum 2 the third batch opens a window the stream never closes, in each epoch."""
    x, y = _xy()
    learn = _linear(x, y, accum=accum)

    class Short:
        def __iter__(self):
            return iter([(x[i:i + 2], y[i:i + 2]) for i in (0, 2, 4)])

    learn.train_dl = Short()
    with pytest.warns(UserWarning) as record:
        learn.fit_sched(2, 0.1, lambda p: 1.0, steps_per_epoch=4 // accum)
    assert [str(w.message) for w in record if "train_dl ended" in str(w.message)] == [
        f"train_dl ended before the 4 batches an epoch was given, in 2 epochs (epoch 1: 3), so the schedule did "
        f"not reach its end ({steps}); pass the steps_per_epoch the loader gives{dropped}"]
    assert all(p.grad is None for p in learn.model.parameters())  # the unfinished window carried nothing over
    assert len(learn.recorder.losses) == 6 and len(learn.recorder.train_losses) == 2


def test_a_loader_short_in_one_epoch_only_is_named_in_the_singular():
    x, y = _xy()
    learn = _linear(x, y)

    class ShortOnce:
        def __init__(self):
            self.calls = 0

        def __iter__(self):
            self.calls += 1
            n = 2 if self.calls == 2 else 3
            return iter([(x[i:i + 2], y[i:i + 2]) for i in range(0, 2 * n, 2)])

    learn.train_dl = ShortOnce()
    with pytest.warns(UserWarning, match=r"^train_dl ended before the 3 batches an epoch was given, in 1 epoch "
                                         r"\(epoch 2: 2\), so the schedule did not reach its end \(step 8 of 9\); "
                                         r"pass the steps_per_epoch the loader gives$"):
        learn.fit_sched(3, 0.1, lambda p: 1.0, steps_per_epoch=3)


# ---- state ---------------------------------------------------------------------------------------
def test_state_dict_before_any_batch_and_load_state_dict():
    x, y = _xy()
    learn = _linear(x, y)
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    loop = learn.loop
    loop.epoch_moms, loop.epoch_lrs, loop.epoch_losses = [], [], []
    assert loop.state_dict() == {"epoch": 0, "iter": 4, "nan_skipped": 0, "partial": None}
    loop.load_state_dict({"epoch": 2, "iter": 7, "nan_skipped": 1}, pending={"p": 1})
    assert (loop.epoch, loop.iter, loop.nan_skipped, loop.pending) == (2, 7, 1, {"p": 1})
    assert loop.steps_per_epoch == 5
    learn.accum = 2
    assert Loop(learn, 1, 5, learn.scheduler).steps_per_epoch == 3


def test_a_tensor_lr_is_recorded_as_a_float():
    x, y = _xy()
    learn = _linear(x, y)
    learn.opt_func = lambda groups, lr: torch.optim.Adam(groups, lr=torch.tensor(lr), foreach=False)
    learn.fit_sched(1, 0.5, lambda p: 1.0)
    rec = learn.recorder
    assert all(type(v) is float for v in rec.group_lrs[0]) and rec.group_lrs[0] == [0.5] * 5
    assert all(type(m) is float for m in rec.moms) and rec.moms == [0.9] * 5



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recorded_losses_are_float32_whether_the_nan_guard_reads_them_or_not(dtype):
    # With the guard on, each loss is read on the host as it comes (the guard's read); with it off, the
    # losses stay tensors until the epoch ends. Both record the same float32 values.
    x, y = _xy()
    fits = {}
    for on_nan in ("raise", "off"):
        learn = _linear(x.to(dtype), y)
        learn.model.to(dtype)
        seen = []
        learn.fit_sched(2, 0.1, lambda p: 1.0, callbacks=[_LossSeen(seen)], on_nan=on_nan)
        assert learn.loop.read_losses == (on_nan != "off")
        fits[on_nan] = learn.recorder.losses
        assert all(type(v) is float for v in fits[on_nan]) and len(fits[on_nan]) == 10
        assert fits[on_nan] == [float(torch.tensor(v, dtype=torch.float32)) for v in seen]  # float32-rounded
        assert learn.recorder.train_losses == pytest.approx([sum(fits[on_nan][:5]) / 5, sum(fits[on_nan][5:]) / 5])
    assert fits["raise"] == fits["off"]


class _LossSeen(oc.Callback):
    """Keeps ``learn.loss`` (detached, as read by a callback) of every batch."""

    def __init__(self, seen):
        self.seen = seen

    def after_batch(self, learn):
        assert not learn.loss.requires_grad and learn.loss.grad_fn is None
        self.seen.append(learn.loss.item())


def test_learn_loss_is_the_last_batch_loss_detached():
    x, y = _xy()
    learn = _linear(x, y)
    assert learn.loss is None  # before any fit
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    before_last = _by_hand(_linear(x, y).model, x[:8], y[:8], 0.1, 1)  # after the first 4 of 5 steps
    last = F.cross_entropy(before_last(x[8:10]), y[8:10])
    assert not learn.loss.requires_grad and learn.loss.item() == pytest.approx(last.item(), rel=1e-6)
    assert learn.loss.item() == learn.recorder.losses[-1]

# ---- batches_per_epoch's messages --------------------------------------------------------------
def test_batches_per_epoch_messages_and_limits():
    dl = DataLoader(TensorDataset(*_data(40)), batch_size=8)  # 5 batches
    assert batches_per_epoch(dl, 2, steps_per_epoch=1) == 2 and batches_per_epoch(dl, 1, steps_per_epoch=5) == 5
    with pytest.raises(ValueError, match=r"^steps_per_epoch=4 is more than train_dl's 5 batches give \(3 steps with "
                                         r"accum=2\)$"):
        batches_per_epoch(dl, 2, steps_per_epoch=4)
    with pytest.raises(ValueError, match=r"^steps_per_epoch must be an int >= 1, got 0$"):
        batches_per_epoch(dl, 1, steps_per_epoch=0)
    with pytest.raises(TypeError, match=r"^train_dl \(generator\) has no len\(\): pass steps_per_epoch= \(the "
                                        r"schedule is defined on progress\)$"):
        batches_per_epoch((b for b in dl), 1)
    with pytest.raises(ValueError, match=r"^train_dl is empty \(len 0\)$"):
        batches_per_epoch([], 1)
    assert batches_per_epoch([1], 3) == 1


# ---- cudnn.benchmark ---------------------------------------------------------------------------
def test_cudnn_benchmark_is_set_for_cuda_fits_and_put_back_after_the_last(monkeypatch):
    """Only flags: a CUDA device object needs no GPU. Nested fits: the latest has its way; the
    setting found before the first comes back when the last ends."""
    from onecycle.cudnn import cudnn_benchmark
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", False)
    monkeypatch.setattr(cudnn, "deterministic", False)
    cuda = torch.device("cuda")
    with cudnn_benchmark(torch.device("cpu"), True):
        assert cudnn.benchmark is False  # not CUDA: untouched
    with cudnn_benchmark(cuda):
        assert cudnn.benchmark is True  # None: on
        with cudnn_benchmark("cuda:0", False):
            assert cudnn.benchmark is False
        assert cudnn.benchmark is True  # the outer fit's setting back
    assert cudnn.benchmark is False
    monkeypatch.setattr(cudnn, "deterministic", True)
    with cudnn_benchmark(cuda):
        assert cudnn.benchmark is False  # determinism asked for: off
    monkeypatch.setattr(cudnn, "deterministic", False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    torch.use_deterministic_algorithms(True)
    try:
        with cudnn_benchmark(cuda):
            assert cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(False)
    assert cudnn.benchmark is True
    with pytest.raises(RuntimeError), cudnn_benchmark(cuda, False):
        raise RuntimeError  # put back on an error too
    assert cudnn.benchmark is True


def test_flush_series_flushes_the_after_epoch_callbacks_that_can():
    """Before a checkpoint captures the recorder, every callback with an ``after_epoch`` and a
    ``flush`` is flushed with the Learner; one without ``flush``, or without ``after_epoch``, is not."""
    flushed = []

    class Series(oc.Callback):
        def after_epoch(self, learn):
            pass

        def flush(self, learn):
            flushed.append((self, learn))

    class NoFlush(oc.Callback):
        def after_epoch(self, learn):
            pass

    class NotPerEpoch(oc.Callback):
        def flush(self, learn):
            flushed.append((self, learn))

    class Static(oc.Callback):  # a hook that is no bound method: it has no owner to flush
        after_epoch = staticmethod(lambda learn: None)

    x, y = _xy()
    learn = _linear(x, y)
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    a, b = Series(), Series()
    loop = Loop(learn, 1, 5, learn.scheduler, callbacks=[a, NoFlush(), NotPerEpoch(), Static(), b])
    assert flushed == []
    loop.flush_series()
    assert flushed == [(a, learn), (b, learn)]


def test_finite_on_every_rank_in_one_process():
    """The data-parallel NaN guard (the all-reduce is the identity in one process): any non-finite
    element makes the loss non-finite."""
    x, y = _xy()
    learn = _linear(x, y)
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    check = learn.loop._finite_on_every_rank
    assert check(torch.tensor(1.5)) is True and check(torch.tensor([1.0, -2.0])) is True
    assert check(torch.tensor(math.nan)) is False and check(torch.tensor([1.0, math.inf])) is False


class _FakeDDP(nn.Module):
    """Stands in for DistributedDataParallel in one process: the model's forward, and a ``no_sync``
    that notes which batches ran inside it (gradients not all-reduced)."""

    def __init__(self, module):
        super().__init__()
        self.module, self.synced, self._sync = module, [], True

    def forward(self, x):
        self.synced.append(self._sync)
        return self.module(x)

    @contextlib.contextmanager
    def no_sync(self):
        self._sync = False
        try:
            yield
        finally:
            self._sync = True


@pytest.mark.parametrize("accum,scaled", [(1, False), (2, False), (3, False), (3, True)])
def test_data_parallel_windows_sync_only_at_their_step(accum, scaled):
    """Under data-parallel, the batches inside an accumulation window run under ``no_sync`` and the
    window's last batch (the step) does not; the update is the same as without it, by hand (with a
    GradScaler too: a power-of-two scale is exact)."""
    class Wrap(oc.Callback):
        def before_fit(self, learn):
            learn.loop.ddp = learn.loop.model = fake = _FakeDDP(learn.model)
            self.fake = fake

    x, y = _xy()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) if scaled else None
    learn = _linear(x, y, accum=accum, scaler=scaler)
    ref = _by_hand(_linear(x, y).model, x, y, 0.1, accum)
    wrap = Wrap()
    learn.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[wrap])
    assert wrap.fake.synced == [(i + 1) % accum == 0 or i == 4 for i in range(5)]
    for p, q in zip(learn.model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("accum", [1, 2])
def test_the_device_side_nan_guard_skips_the_same_windows(accum):
    """Under data-parallel the losses stay on the device and the guard is a collective
    (``read_losses`` off): in one process it skips the same windows as the host read does."""
    class OnDevice(oc.Callback):
        def before_fit(self, learn):
            learn.loop.read_losses = False

    x, y = _with_nan()
    learn = _linear(x, y, accum=accum)
    learn.fit_sched(2, 0.1, lambda p: 1.0, on_nan="skip", callbacks=[OnDevice()])
    ref = _by_hand(_linear(x, y).model, x, y, 0.1, accum, epochs=2, skip={2})
    for p, q in zip(learn.model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert learn.loop.nan_skipped == 2 and not learn.loop.bad_window
    assert math.isnan(learn.recorder.losses[2]) and math.isfinite(learn.recorder.losses[3])  # recorded as read


# ---- mutation-testing additions: the mean over ranks, a Loop made directly, failed batches, resume ----------
def test_every_rank_records_the_mean_loss_over_ranks_and_checkpoints_its_own(monkeypatch):
    """Two data-parallel ranks stood in for in one process: the other rank's losses are 1.0 each (the
    all-reduce adds them; the NaN guard's and the signal check's counts are 0 on both)."""
    from onecycle import distributed as D

    x, y = _xy()
    ref = _linear(x, y)
    ref.fit_sched(1, 0.1, lambda p: 1.0)

    def two_ranks(t):
        return t * 2 if t.ndim == 0 else t + 1.0

    partial = []

    class Mid(oc.Callback):
        def after_batch(self, learn):
            if learn.loop.iter == 2:
                partial.append(learn.loop.state_dict()["partial"]["losses"])  # no collective: this rank's own

    monkeypatch.setattr(D, "all_reduce_sum", two_ranks)
    learn = _linear(x, y)
    learn.world_size = 2
    learn.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[Mid()])
    own = ref.recorder.losses
    assert learn.recorder.losses == pytest.approx([(v + 1.0) / 2 for v in own], rel=1e-6)
    assert partial == [pytest.approx(own[:3], rel=1e-6)]


def test_a_loop_made_directly_takes_the_learners_settings_unless_given():
    x, y = _xy()
    learn = _linear(x, y)
    assert learn.opt is None
    loop = Loop(learn, 1, 5, None)
    assert loop.opt is learn.opt is not None  # made for it
    assert loop.quiet is True and Loop(learn, 1, 5, None, quiet=False).quiet is False
    assert loop.on_nan == "raise" and loop.read_losses and loop.scaler is None
    assert not loop.progress.bar(5, 0, 1).shown  # nothing shown before run() makes the fit's display
    mine = torch.amp.GradScaler("cpu")
    assert Loop(learn, 1, 5, None, scaler=mine).scaler is mine
    learn.user_scaler = theirs = torch.amp.GradScaler("cpu")
    assert Loop(learn, 1, 5, None).scaler is theirs and Loop(learn, 1, 5, None, scaler=mine).scaler is mine
    learn.user_scaler = None
    fp16 = _linear(x, y, amp="fp16")
    made = Loop(fp16, 1, 5, None).scaler
    assert isinstance(made, torch.amp.GradScaler) and made.is_enabled()
    assert isinstance(_linear(x, y, amp="bf16").amp_dtype, torch.dtype) and Loop(_linear(x, y, amp="bf16"), 1, 5,
                                                                                    None).scaler is None
    before = [p.detach().clone() for p in learn.model.parameters()]
    loop.one_batch((x[:2], y[:2]))  # by default one whole window: the optimizer steps on the unscaled loss
    ref = _by_hand(_linear(x, y).model, x[:2], y[:2], learn.opt.param_groups[0]["lr"], 1)
    for p, q, b in zip(learn.model.parameters(), ref.parameters(), before):
        assert not torch.equal(p, b)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert loop.stepped and loop.epoch_losses == [pytest.approx(F.cross_entropy(_linear(x, y).model(x[:2]),
                                                                                  y[:2]).item())]


def test_trust_ratios_are_recorded_for_an_optimizer_that_has_them():
    x, y = _xy()
    lars = _linear(x, y)
    lars.opt_func = "lars"
    lars.fit_sched(1, 0.1, lambda p: 1.0)
    assert sorted(lars.recorder.series) == ["trust_max/0", "trust_mean/0", "trust_min/0"]
    assert len(lars.recorder.series["trust_mean/0"]) == 5
    sgd = _linear(x, y)
    sgd.fit_sched(1, 0.1, lambda p: 1.0)
    assert sgd.recorder.series == {}


@pytest.mark.parametrize("on_nan", ["raise", "off"])
@pytest.mark.parametrize("at", [0, 2])
def test_a_batch_that_fails_leaves_a_history_with_as_many_lrs_as_losses(on_nan, at):
    x, y = _xy()
    learn = _linear(x, y)
    calls = []

    def loss_fn(pred, target):
        calls.append(1)
        if len(calls) == at + 1:
            raise RuntimeError("boom")
        return F.cross_entropy(pred, target)

    learn.loss_fn = loss_fn
    with pytest.raises(RuntimeError, match="boom"):
        learn.fit_sched(1, 0.1, lambda p: 1.0, on_nan=on_nan)
    rec = learn.recorder
    assert len(rec.losses) == len(rec.group_lrs[0] if rec.group_lrs else []) == len(rec.moms) == at


def test_plain_turns_tensor_lrs_and_momenta_into_floats():
    from onecycle.loop import _plain

    lrs, moms = _plain([[torch.tensor(0.5), 0.25]], [torch.tensor(0.75), None])
    assert lrs == [[0.5, 0.25]] and moms == [0.75, None]
    assert [type(v) for v in lrs[0]] == [float, float] and type(moms[0]) is float
    rows = [[0.1], [0.2]]
    same = _plain(rows, [0.9, None])
    assert same == (rows, [0.9, None]) and same[0] is not rows  # floats already: copies


def test_a_fit_resumes_from_its_checkpoint_epoch(tmp_path):
    x, y = _xy()
    _linear(x, y).fit_sched(2, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path)
    count = Count()
    learn = _linear(x, y)
    learn.fit_sched(3, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path, resume=True, reschedule=True, callbacks=[count])
    assert count.calls["before_epoch"] == 1 and len(learn.recorder.train_losses) == 3  # epoch 3 only, then history


class _ModedSGD(torch.optim.SGD):
    """An optimizer with train/eval modes (as schedule-free's), noting each switch."""

    def __init__(self, groups, lr):
        super().__init__(groups, lr=lr)
        self.switches = []
        for g in self.param_groups:
            g["train_mode"] = False

    def train(self):
        self.switches.append("train")
        for g in self.param_groups:
            g["train_mode"] = True

    def eval(self):
        self.switches.append("eval")
        for g in self.param_groups:
            g["train_mode"] = False


def _shuffled(x, y, own_generator=False):
    """Batches shuffled by the global RNG, or by the loader's own generator."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(7) if own_generator else None
    dl = DataLoader(TensorDataset(x, y), batch_size=2, shuffle=True, generator=generator)
    return oc.Learner(nn.Linear(3, 2), dl, opt=_plain_sgd, device="cpu", quiet=True)


@pytest.mark.parametrize("own_generator,on_nan", [(False, "raise"), (True, "raise"), (False, "off")])
def test_a_fit_stopped_mid_epoch_resumes_there_bit_exactly(tmp_path, own_generator, on_nan):
    """(``on_nan="off"``: the epoch's losses so far come back as tensors, as the loop keeps them then.)"""
    x, y = _xy()

    def sched(p):
        return 1.0 - 0.5 * p

    ref = _shuffled(x, y, own_generator)
    ref.fit_sched(2, 0.1, sched, on_nan=on_nan)

    class Stop(oc.Callback):
        def after_batch(self, learn):
            if learn.epoch == 1 and learn.loop.iter == 2:
                raise oc.CancelFit

    _shuffled(x, y, own_generator).fit_sched(2, 0.1, sched, checkpoint_dir=tmp_path, every=2, ckpt_budget=None,
                                             callbacks=[Stop()], on_nan=on_nan)
    count = Count()
    learn = _shuffled(x, y, own_generator)
    torch.manual_seed(123)  # whatever the RNG now: the checkpoint's is restored
    learn.fit_sched(2, 0.1, sched, checkpoint_dir=tmp_path, every=2, ckpt_budget=None, resume=True, callbacks=[count],
                    on_nan=on_nan)
    # epoch 2's batches 3 and 4 (0-based); the checkpoint was the step after batch 2, where it stopped
    assert [(e, i) for hook, e, i in count.trace if hook == "before_batch"] == [(1, 3), (1, 4)]
    for p, q in zip(learn.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)
    assert learn.recorder.losses == ref.recorder.losses and learn.recorder.lrs == ref.recorder.lrs


def test_the_fits_own_settings_reach_the_history_and_the_display():
    from onecycle.smoothing import smoothing_beta

    x, y = _xy()
    learn = _linear(x, y)
    learn.fit_sched(4, 0.1, lambda p: 1.0)
    assert learn.recorder.smoother.beta == smoothing_beta(4 * 5) == 0.5  # the floor: a 20-point curve
    long = _linear(x, y)
    long.fit_sched(10, 0.1, lambda p: 1.0)
    assert long.recorder.smoother.beta == smoothing_beta(10 * 5) == 0.8  # 1 - 10/50
    learn.fit_sched(2, 0.1, lambda p: 1.0)
    assert learn.loop.progress.total == 2 * 5
    assert all(0 < s < 60 for s in learn.recorder.times) and len(learn.recorder.times) == 2


def test_the_table_shows_each_epochs_validation_loss(capsys):
    x, y = _xy()
    learn = _linear(x, y, valid=True)
    learn.quiet = False
    learn.fit_sched(2, 0.1, lambda p: 1.0)
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert [float(r.split()[2]) for r in rows] == pytest.approx(learn.recorder.val_losses, abs=1e-4)


def test_an_optimizer_with_modes_trains_in_train_mode_and_ends_in_eval():
    x, y = _xy()
    learn = _linear(x, y)
    learn.opt_func = _ModedSGD
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    assert learn.opt.switches[0] == "train" and learn.opt.switches[-1] == "eval"
    assert learn.opt.param_groups[0]["train_mode"] is False


def test_a_data_parallel_failure_names_the_rank():
    x, y = _xy()
    learn = _linear(x, y)
    learn.world_size, learn.rank = 2, 1

    class Boom(oc.Callback):
        def after_batch(self, learn):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as info:
        learn.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[Boom()])
    assert "onecycle: raised on rank 1 of 2" in getattr(info.value, "__notes__", [])


def test_a_fit_cancelled_after_a_step_leaves_no_gradient_and_a_one_batch_epoch_trains():
    x, y = _xy()
    learn = _linear(x, y)

    class Cancel(oc.Callback):
        def after_step(self, learn):
            raise oc.CancelFit

    learn.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[Cancel()])
    assert all(p.grad is None for p in learn.model.parameters())
    one = _linear(x[:2], y[:2])
    one.fit_sched(2, 0.1, lambda p: 1.0)
    assert len(one.recorder.losses) == 2


def test_a_failed_last_checkpoint_is_raised_or_noted_on_the_error_under_way(tmp_path, monkeypatch):
    from onecycle import checkpoint as ckpt

    def failing_write(*args):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "atomic_write", failing_write)
    x, y = _xy()
    with pytest.raises(OSError, match="disk full"):  # the fit itself went well: the write's error is raised
        _linear(x, y).fit_sched(1, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path)

    class Boom(oc.Callback):
        def after_epoch(self, learn):
            if learn.epoch == 1:  # after the first epoch end's write (which failed), before the second's
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as info:  # the fit's own error wins; the write's is noted
        _linear(x, y).fit_sched(2, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path, callbacks=[Boom()])
    assert info.value.__notes__ == ["onecycle: writing the last checkpoint also failed: OSError: disk full"]


class _Bars:
    """Stands in for the fit's display: notes each bar asked for and each update it was given."""

    def __init__(self):
        self.bars, self.updates = [], []
        self.shown = True

    def bar(self, n, epoch, n_epochs):
        self.bars.append((n, epoch, n_epochs))
        return self

    def update(self, i, losses):
        self.updates.append((i, list(losses)))

    def close(self):
        pass

    def epoch_row(self, *args):
        pass


def test_each_epochs_bar_gets_its_length_and_every_batchs_losses_so_far():
    bars = _Bars()

    class Display(oc.Callback):
        def before_fit(self, learn):
            learn.loop.progress = bars

    x, y = _xy()
    learn = _linear(x, y)
    learn.fit_sched(2, 0.1, lambda p: 1.0, callbacks=[Display()])
    assert bars.bars == [(5, 0, 2), (5, 1, 2)]
    losses = learn.recorder.losses
    want = [(i, pytest.approx(losses[5 * e:5 * e + i + 1], rel=1e-6)) for e in range(2) for i in range(5)]
    assert bars.updates == want


class _OneBatchStream(torch.utils.data.IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        yield torch.randn(2, 3, generator=g), torch.randint(0, 2, (2,), generator=g)


def test_an_epoch_that_ends_inside_its_first_window_carries_no_gradient_over():
    learn = oc.Learner(nn.Linear(3, 2), DataLoader(_OneBatchStream(), batch_size=None), opt=_plain_sgd, accum=2,
                       device="cpu", quiet=True)
    before = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.warns(UserWarning, match="ended before"):
        learn.fit_sched(2, 0.1, lambda p: 1.0, steps_per_epoch=1)
    assert all(p.grad is None for p in learn.model.parameters())  # each epoch's lone batch dropped
    assert all(torch.equal(p, b) for p, b in zip(learn.model.parameters(), before))  # no window ever completed


class _Positioned:
    """A loader that keeps its own position (``state_dict``/``load_state_dict``): batches in order,
    counting every one drawn."""

    def __init__(self, x, y):
        self.x, self.y, self.start, self.drawn, self.loaded = x, y, 0, 0, []

    def __len__(self):
        return len(self.x) // 2

    def __iter__(self):
        start, self.start = self.start, 0
        for i in range(start, len(self)):
            self.drawn += 1
            self.position = i + 1
            yield self.x[2 * i:2 * i + 2], self.y[2 * i:2 * i + 2]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.loaded.append(state)
        self.start = state["position"]


def test_a_loader_that_keeps_its_position_resumes_from_it_without_drawing_again(tmp_path):
    x, y = _xy()

    def make(dl):
        torch.manual_seed(0)
        return oc.Learner(nn.Linear(3, 2), dl, opt=_plain_sgd, device="cpu", quiet=True)

    ref = make(_Positioned(x, y))
    ref.fit_sched(2, 0.1, lambda p: 1.0)

    class Stop(oc.Callback):
        def after_batch(self, learn):
            if learn.epoch == 1 and learn.loop.iter == 2:
                raise oc.CancelFit

    make(_Positioned(x, y)).fit_sched(2, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path, every=1, ckpt_budget=None,
                                      callbacks=[Stop()])
    dl = _Positioned(x, y)
    learn = make(dl)
    learn.fit_sched(2, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path, every=1, ckpt_budget=None, resume=True)
    assert dl.loaded == [{"position": 3}] and dl.drawn == 2  # the epoch's last two batches, none drawn to drop
    assert all(torch.equal(p, q) for p, q in zip(learn.model.parameters(), ref.model.parameters()))
