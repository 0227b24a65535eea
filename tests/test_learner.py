"""The Learner: schedules as trained, bad input, metric weighting, wd, clip, callbacks."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle.data import TensorLoader
from onecycle.metrics import accuracy
from test_schedules import _clr_closed


class TwoGroup(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(5, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def param_groups(self):
        return [list(self.body.parameters()), list(self.head.parameters())]


def _data(n=70, bs=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=bs)


def _learner(model=None, **kw):
    torch.manual_seed(0)
    kw.setdefault("quiet", True)
    return oc.Learner(model or TwoGroup(), _data(), _data(30, 7, 1), metrics=[accuracy], device="cpu", **kw)


def _clr(t, nb, L):
    """DESIGN.md's closed form (written once, in test_schedules) scaled to a group's peak ``L``."""
    mult, mom = _clr_closed(t, nb, 10, 10, 0.95, 0.85)
    return L * mult, mom


def test_clr_beta_every_iteration_two_groups():
    learn = _learner()
    peaks = [0.01, 0.1]
    learn.fit(peaks, 2, cycle_len=3, use_clr_beta=(10, 10, 0.95, 0.85))
    rec = learn.recorder
    nb = 3 * 7  # cycle_len * len(train_dl)
    assert len(rec.losses) == 2 * nb
    for it in range(2 * nb):
        t = it % nb  # restarts every cycle
        for g, L in enumerate(peaks):
            lr, mom = _clr(t, nb, L)
            assert rec.group_lrs[g][it] == pytest.approx(lr, rel=1e-12)
        assert rec.moms[it] == pytest.approx(_clr(t, nb, 1)[1], abs=1e-12)
    # the optimizer's groups really used these values (SGD momentum key)
    assert learn.opt.param_groups[0]["momentum"] == pytest.approx(0.95)
    assert len(learn.sched.val_losses) == 6 and len(learn.sched.rec_metrics) == 6
    assert all(len(row) == 1 for row in learn.sched.rec_metrics)


def test_fit_constant_lr_seed_order():
    learn = _learner()
    learn.fit(0.05, 2)
    assert learn.recorder.lrs == [0.05] * 14
    assert learn.recorder.n_epochs == 2


def test_fit_one_cycle_matches_closed_form_and_adamw_beta1():
    learn = _learner(opt="adamw")
    learn.fit_one_cycle(2, 0.01)
    n = len(learn.recorder.lrs)

    def cos(a, b, p):  # fastai's cosine annealing from a to b at progress p of a phase
        return a + (b - a) / 2 * (1 - math.cos(math.pi * p))

    def closed(pct):  # fastai v2's 1cycle (div 25, div_final 1e5, pct_start 0.25, moms 0.95-0.85-0.95)
        if pct <= 0.25:
            return cos(0.01 / 25, 0.01, pct / 0.25), cos(0.95, 0.85, pct / 0.25)
        return cos(0.01, 0.01 / 1e5, (pct - 0.25) / 0.75), cos(0.85, 0.95, (pct - 0.25) / 0.75)

    assert n == 14
    for i in range(n):
        lr, mom = closed(i / n)
        assert learn.recorder.lrs[i] == pytest.approx(lr, rel=1e-12)
        assert learn.recorder.moms[i] == pytest.approx(mom, abs=1e-12)
    assert learn.opt.param_groups[0]["betas"][1] == 0.99


def test_training_reduces_loss_and_predict_validate():
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] + x[:, 1] > 0).long()
    dl = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True)
    valid = DataLoader(TensorDataset(x, y), batch_size=32)
    learn = oc.Learner(nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2)), dl, valid,
                       metrics=[accuracy], quiet=True, device="cpu")
    learn.fit_one_cycle(5, 0.5)
    assert learn.recorder.metrics["accuracy"][-1] > 0.9
    assert learn.recorder.val_losses[-1] < learn.recorder.val_losses[0]
    preds, targets = learn.predict(with_targets=True)
    assert preds.shape == (200, 2) and torch.equal(targets, y)
    with torch.no_grad():
        torch.testing.assert_close(preds, learn.model.eval()(x))
    learn.model.train()
    learn.model[1].eval()  # a mixed model: predict and validate put every module back as it was
    learn.predict()
    learn.validate()
    assert [m.training for m in learn.model.modules()] == [True, True, False, True]


def test_metric_weighting_uneven_last_batch():
    """Validation over batches of 7 (last batch 2) equals the metric over the whole set."""
    learn = _learner()
    x, y = learn.valid_dl.dataset.tensors
    res = learn.validate()
    with torch.no_grad():
        out = learn.model(x)
    assert res["val_loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert res["accuracy"] == pytest.approx((out.argmax(1) == y).float().mean().item(), rel=1e-6)


def test_validate_reads_a_tensor_loader_in_bigger_chunks_with_the_same_results():
    calls = []
    torch.manual_seed(0)
    model = TwoGroup()
    model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(70, 5, generator=g), torch.randint(0, 3, (70,), generator=g)
    learn = oc.Learner(model, _data(), metrics=[accuracy], quiet=True, device="cpu")
    chunked = learn.validate(TensorLoader(x, y, batch_size=10))
    assert calls == [40, 30]  # at most 4 batches a chunk
    calls.clear()
    batched = learn.validate(DataLoader(TensorDataset(x, y), batch_size=10))
    assert calls == [10] * 7
    assert chunked["accuracy"] == pytest.approx(batched["accuracy"], rel=1e-6)
    assert chunked["val_loss"] == pytest.approx(batched["val_loss"], rel=1e-6)


def test_perplexity_is_set_level():
    learn = _learner()
    learn.metrics = [oc.metrics.perplexity]
    res = learn.validate()
    assert res["perplexity"] == pytest.approx(math.exp(res["val_loss"]), rel=1e-6)


def test_torchmetrics_protocol_object():
    class Count:
        def reset(self):
            self.n = 0

        def update(self, preds, targets):
            self.n += len(targets)

        def compute(self):
            return torch.tensor(float(self.n))

    learn = _learner()
    learn.metrics = [Count()]
    assert learn.validate()["Count"] == 30


def test_decoupled_wd_sgd_closed_form():
    """One SGD step with wd: w1 = w0 * (1 - lr*wd) - lr * g (first step: buffer = g)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    x, y = torch.randn(4, 3), torch.randn(4, 1)
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    learn = oc.Learner(model, dl, loss_fn=F.mse_loss, quiet=True, device="cpu")
    w0 = model.weight.detach().clone()
    w0.requires_grad_(True)
    F.mse_loss(x @ w0.T, y).backward()
    lr, wd = 0.1, 0.5
    learn.fit(lr, 1, wd=wd)
    expected = w0.detach() * (1 - lr * wd) - lr * w0.grad
    torch.testing.assert_close(model.weight.detach(), expected)


def test_decoupled_wd_skips_biases_and_normalization_weights():
    """w1 = w0 * (1 - lr*wd) - lr * g for the 2-D weight only; the bias and LayerNorm's weight and
    bias take the plain step p0 - lr * g."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    ref = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    ref.load_state_dict(model.state_dict())
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    F.mse_loss(ref(x), y).backward()
    learn = oc.Learner(model, DataLoader(TensorDataset(x, y), batch_size=4), loss_fn=F.mse_loss, quiet=True,
                       device="cpu")
    lr, wd = 0.1, 0.5
    learn.fit(lr, 1, wd=wd)
    got, want = dict(model.named_parameters()), dict(ref.named_parameters())
    for name, p0 in want.items():
        decay = 1 - lr * wd if p0.ndim >= 2 else 1.0
        torch.testing.assert_close(got[name].detach(), p0.detach() * decay - lr * p0.grad, msg=name)
    assert [n for n, p in want.items() if p.ndim >= 2] == ["0.weight"]


def test_adamw_learner_equals_torch_adamw():
    torch.manual_seed(0)
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    dl = DataLoader(TensorDataset(x, y), batch_size=10)
    m1 = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Tanh(), nn.Linear(4, 3, bias=False))
    m2 = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Tanh(), nn.Linear(4, 3, bias=False))
    m2.load_state_dict(m1.state_dict())
    learn = oc.Learner(m1, dl, opt="adamw", quiet=True, device="cpu")
    learn.fit(0.01, 2, wd=0.1)
    opt = torch.optim.AdamW(m2.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.1)
    for _ in range(2):
        for xb, yb in dl:
            F.cross_entropy(m2(xb), yb).backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b)


def test_clip_limits_global_norm():
    """The gradient norm the optimizer sees is at most ``clip``."""
    seen = []
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    learn = oc.Learner(model, _data(), quiet=True, device="cpu")
    learn.clip = 1e-3

    def spy(opt, args, kwargs):  # runs inside opt.step(), before the update
        seen.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())

    learn.create_opt().register_step_pre_hook(spy)
    learn.fit(0.1, 1)
    assert seen and max(seen) <= 1e-3 * (1 + 1e-5)


def test_clip_under_fp16_amp_sees_unscaled_gradients():
    """With a GradScaler (scale 2**16) the optimizer must see gradients unscaled, then clipped: a
    clip of the scaled ones would leave norms near 1e-3 / 65536."""
    seen, raw = [], []
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    learn = oc.Learner(model, _data(), quiet=True, device="cpu", amp="fp16")
    learn.clip = 1e-3

    def spy(opt, args, kwargs):
        seen.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())

    class Raw(oc.Callback):  # after unscale_, before clipping
        def after_backward(self, learn):
            raw.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())

    learn.create_opt().register_step_pre_hook(spy)
    learn.fit(0.1, 1, callbacks=[Raw()])
    assert learn.scaler is not None and learn.scaler.get_scale() > 1
    assert seen and all(n == pytest.approx(1e-3, rel=1e-3) for n in seen)  # every raw norm is far above 1e-3
    assert min(raw) > 0.01


def test_callbacks_order_cancel_and_after_fit_always():
    calls = []

    class Rec(oc.Callback):
        def before_fit(self, learn):
            calls.append("before_fit")

        def after_batch(self, learn):
            calls.append(("batch", learn.epoch, learn.iter))
            if learn.epoch == 1 and learn.iter == 2:
                raise oc.CancelFit

        def after_fit(self, learn):
            calls.append("after_fit")

    learn = _learner()
    learn.fit(0.1, 3, callbacks=[Rec()])
    assert calls[0] == "before_fit" and calls[-1] == "after_fit"
    assert ("batch", 1, 2) in calls and ("batch", 1, 3) not in calls

    class Boom(oc.Callback):
        def after_batch(self, learn):
            raise RuntimeError("boom")

        def after_fit(self, learn):
            calls.append("after_fit_on_error")

    with pytest.raises(RuntimeError, match="boom"):
        learn.fit(0.1, 1, callbacks=[Boom()])
    assert calls[-1] == "after_fit_on_error"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_epoch_keeps_its_iterations_in_the_history(error):
    """What ran before an error or a Ctrl-C is in the recorder, as for a CancelFit: the loss curve
    up to the failure is there to plot."""
    class Fail(oc.Callback):
        def after_batch(self, learn):
            if learn.epoch == 1 and learn.iter == 2:
                raise error

    learn = _learner()
    with pytest.raises(type(error)):
        learn.fit(0.1, 3, callbacks=[Fail()])
    per_epoch = learn.recorder.epoch_iters[0]
    assert len(learn.recorder.losses) == len(learn.recorder.lrs) == per_epoch + 3
    assert learn.recorder.n_epochs == 1 and all(math.isfinite(x) for x in learn.recorder.losses)


@pytest.mark.parametrize("hook", ["after_step", "before_batch"])
def test_a_cancelled_fit_leaves_no_gradient_for_the_next(hook):
    """CancelFit in after_step comes before zero_grad, and in before_batch may come inside an
    accumulation window: either way the next fit must not start with those gradients."""
    class Stop(oc.Callback):
        def _stop(self, learn):
            if learn.iter == 3:
                raise oc.CancelFit

    setattr(Stop, hook, Stop._stop)
    learn = _learner(accum=2)
    learn.fit_one_cycle(2, 0.05, callbacks=[Stop()])
    assert len(learn.recorder.losses) == (4 if hook == "after_step" else 3)
    assert all(p.grad is None for p in learn.model.parameters())


def test_a_callback_class_or_function_is_refused_not_skipped():
    class Stop(oc.Callback):
        def after_batch(self, learn):
            raise oc.CancelFit

    learn = _learner()
    for bad, match in [([Stop], r"class Stop, not an instance: pass Stop\(\)"), ([print], "Callback instances"),
                       (Stop(), "a list of Callback instances")]:
        with pytest.raises(TypeError, match=match):
            learn.fit(0.1, 1, callbacks=bad)
        with pytest.raises(TypeError, match=match):
            learn.lr_find(num_it=5, callbacks=bad)
        with pytest.raises(TypeError, match=match):
            _learner(callbacks=bad)
    assert learn.opt is None and learn.recorder.losses == []  # refused before anything changed
    learn.fit(0.1, 1, callbacks=[Stop()])
    assert len(learn.recorder.losses) == 1


def test_hooks_dispatched_only_to_overriders():
    class OnlyEpoch(oc.Callback):
        def after_epoch(self, learn):
            pass

    hooks = oc.callbacks.hooks_of([OnlyEpoch()])
    assert len(hooks["after_epoch"]) == 1 and hooks["after_batch"] == [] and hooks["before_batch"] == []


def test_opt_fn_resets_optimizer_and_factory():
    learn = _learner()
    learn.fit(0.1, 1)
    assert isinstance(learn.opt, torch.optim.SGD)
    learn.opt_fn = lambda params, lr: torch.optim.RMSprop(params, lr=lr, momentum=0.5)
    assert learn.opt is None
    learn.fit(0.01, 1)
    assert isinstance(learn.opt, torch.optim.RMSprop)


def test_accumulation_steps_schedule_per_optimizer_step():
    learn = _learner(accum=2)
    learn.fit(0.1, 1, cycle_len=2, use_clr_beta=(10, 10))
    # 7 batches per epoch -> 4 optimizer steps per epoch (last window of 1); LR constant inside a window
    lrs = learn.recorder.lrs
    assert lrs[0] == lrs[1] and lrs[2] == lrs[3] and lrs[0] != lrs[2]
    assert learn.scheduler.step_count == 8


def test_amp_bf16_on_cpu_runs():
    learn = _learner(amp=True)
    dtypes = []
    learn.model.head.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    learn.fit_one_cycle(1, 0.05)
    ref = _learner()
    ref.fit_one_cycle(1, 0.05)
    assert learn.amp_dtype == torch.bfloat16 and learn.scaler is None
    assert set(dtypes) == {torch.bfloat16} and len(dtypes) == 7 + 5  # 7 training batches, 5 validation
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())  # weights stay fp32
    # bf16 forward passes: losses near the fp32 run's, not equal to them
    assert learn.recorder.losses != ref.recorder.losses
    assert learn.recorder.losses == pytest.approx(ref.recorder.losses, rel=0.05)


def test_progress_table_and_quiet(capsys):
    learn = _learner(quiet=False)
    learn.fit(0.1, 2)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["epoch", "train_loss", "val_loss", "accuracy", "time"]
    assert len(out) == 3 and out[1].split()[0] == "1" and out[2].split()[0] == "2"  # epochs from 1
    learn.quiet = True
    learn.fit(0.1, 1)
    assert capsys.readouterr().out == ""


def test_recorder_holds_python_floats():
    learn = _learner()
    learn.fit_one_cycle(2, 0.1, callbacks=[oc.callbacks.GradStats()])
    rec = learn.recorder
    for seq in (rec.losses, rec.smooth_losses, rec.moms, rec.train_losses, rec.val_losses, *rec.group_lrs):
        assert all(type(v) is float for v in seq)
    # every value anywhere in the history: floats (ints for iteration counts, strings for names)
    leaves = []

    def walk(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
        else:
            leaves.append(obj)

    walk(rec.state_dict())
    assert rec.metrics["accuracy"] and rec.series and rec.times and rec.epoch_iters
    assert {type(v) for v in leaves} <= {float, int, str, bool}  # bool: a metric's direction
    assert all(type(v) is float for v in [*rec.times, *rec.metrics["accuracy"], *sum(rec.series.values(), [])])


# ---- bad input: every case raises before any state changes --------------------------------
BAD_FIT = [
    (lambda l: l.fit(0.1, 0), ValueError, "n_cycle"),
    (lambda l: l.fit(0.1, 1.5), TypeError, "n_cycle"),
    (lambda l: l.fit(float("nan"), 1), ValueError, "lr"),
    (lambda l: l.fit(float("inf"), 1), ValueError, "lr"),
    (lambda l: l.fit(0.0, 1), ValueError, "lr"),
    (lambda l: l.fit(-0.1, 1), ValueError, "lr"),
    (lambda l: l.fit([0.1, 0.2, 0.3], 1), ValueError, "lr"),
    (lambda l: l.fit(0.1, 1, use_clr_beta=(10, 10)), ValueError, "cycle_len"),
    (lambda l: l.fit(0.1, 1, cycle_len=0, use_clr_beta=(10, 10)), ValueError, "cycle_len"),
    (lambda l: l.fit(0.1, 1, cycle_len=2, use_clr_beta=(10, 10, 0.95)), ValueError, "use_clr_beta"),
    (lambda l: l.fit(0.1, 1, cycle_len=2, use_clr_beta=(0, 10)), ValueError, "div"),
    (lambda l: l.fit(0.1, 1, cycle_len=2, use_clr_beta=(-2, 10)), ValueError, "div"),
    (lambda l: l.fit(0.1, 1, cycle_len=2, use_clr_beta=(10, 120)), ValueError, "pct"),
    (lambda l: l.fit(0.1, 1, cycle_len=2, use_clr_beta=(10, 10, 1.2, 0.85)), ValueError, "mom_max"),
    (lambda l: l.fit(0.1, 1, cycle_len=2, use_clr_beta=(10, 10, 0.95, -0.1)), ValueError, "mom_min"),
    (lambda l: l.fit_one_cycle(0, 0.1), ValueError, "epochs"),
    (lambda l: l.fit_one_cycle(1, 0.1, moms=(0.95, 1.0, 0.95)), ValueError, "moms"),
    (lambda l: l.fit_one_cycle(1, 0.1, div=0), ValueError, "div"),
    (lambda l: l.fit_one_cycle(1, 0.1, pct_start=2), ValueError, "pct_start"),
    (lambda l: l.fit_one_cycle(1), ValueError, "lr_max"),
    (lambda l: l.fit_one_cycle(1, 0.1, wd=-1), ValueError, "wd"),
    (lambda l: l.fit(slice(1e-3, 1e-1), 1, wd=[0.1]), ValueError, "wd"),
    (lambda l: l.fit_sched(1, 0.1, oc.schedules.const(1.0), lambda p: 1.5), ValueError, "momentum schedule gives 1.5"),
    (lambda l: l.fit_sched(1, 0.1, oc.schedules.const(1.0), lambda p: 0.9 if p < 0.5 else float("nan")),
     ValueError, "momentum schedule gives nan at progress 0.5"),
]


@pytest.mark.parametrize("call,exc,arg", BAD_FIT)
def test_bad_fit_input_raises_before_state_changes(call, exc, arg):
    learn = _learner()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(exc, match=arg):
        call(learn)
    assert learn.opt is None and learn.recorder.n_epochs == 0
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("make,exc,arg", [
    (lambda: oc.Learner("model", _data()), TypeError, "model"),
    (lambda: oc.Learner(nn.Linear(5, 3), _data(), loss_fn=3), TypeError, "loss_fn"),
    (lambda: oc.Learner(nn.Linear(5, 3), _data(), opt="adagrad-x"), ValueError, "opt"),
    (lambda: oc.Learner(nn.Linear(5, 3), _data(), clip=-1), ValueError, "clip"),
    (lambda: oc.Learner(nn.Linear(5, 3), _data(), wd=float("nan")), ValueError, "wd"),
    (lambda: oc.Learner(nn.Linear(5, 3), _data(), accum=0), ValueError, "accum"),
    (lambda: oc.Learner(nn.Linear(5, 3), _data(), amp="fp8"), ValueError, "amp"),
    (lambda: oc.Learner(nn.Linear(5, 3), _data(), metrics=[3]), TypeError, "metrics"),
])
def test_bad_learner_input(make, exc, arg):
    with pytest.raises(exc, match=arg):
        make()


def test_empty_train_loader():
    with pytest.raises(ValueError, match="train_dl is empty"):
        oc.Learner(nn.Linear(5, 3), DataLoader(TensorDataset(torch.zeros(0, 5), torch.zeros(0))),
                   quiet=True, device="cpu")


def test_clip_setter_validates():
    learn = _learner()
    learn.clip = 0.25
    assert learn.clip == 0.25
    with pytest.raises(ValueError, match="clip"):
        learn.clip = float("inf")
    assert learn.clip == 0.25


def test_no_host_reads_per_batch_in_a_quiet_fit(monkeypatch):
    """Count every way a value can leave the device: per batch there is none (apart from the NaN
    guard's one read per step, which on_nan="off" removes); per epoch a bounded number."""
    from onecycle.data import TensorLoader
    counts = {"item": 0, "tolist": 0, "__float__": 0, "__bool__": 0, "cpu": 0}
    for name in counts:
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            counts[_name] += 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    torch.manual_seed(0)
    x, y = torch.randn(640, 5), torch.randint(0, 3, (640,))
    dl = TensorLoader(x, y, batch_size=10, shuffle=True)  # 64 batches per epoch
    for on_nan, per_step in (("off", 0), ("raise", 1)):
        learn = oc.Learner(TwoGroup(), dl, quiet=True, device="cpu", callbacks=[oc.GradStats()])
        for k in counts:
            counts[k] = 0
        learn.fit_one_cycle(2, 0.1, on_nan=on_nan)
        assert sum(counts.values()) <= per_step * 128 + 2 * 4  # the guard's read per step, a few per epoch
    # and at the dispatcher, where every scalar read lands however it is spelled (int(t), t.numpy()...)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Reads.n += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    monkeypatch.undo()
    for on_nan, per_step in (("off", 0), ("raise", 1)):
        learn = oc.Learner(TwoGroup(), dl, quiet=True, device="cpu", callbacks=[oc.GradStats()])
        Reads.n = 0
        with Reads():
            learn.fit_one_cycle(2, 0.1, on_nan=on_nan)
        assert per_step * 128 <= Reads.n <= per_step * 128 + 2 * 4


def test_channels_last_and_compile_flags():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    learn = oc.Learner(model, dl, quiet=True, device="cpu", channels_last=True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    learn.fit(0.1, 1)
    assert seen == [True, True]  # every training batch reached the model in NHWC
    assert oc.Learner(model, dl, quiet=True, device="cpu").channels_last is False  # automatic: CUDA only


@pytest.mark.slow
def test_compile_trains_like_eager():
    """torch.compile on CPU (needs a C++ compiler; ~1 minute of compilation, hence slow)."""
    results = []
    for compile_ in (False, True):
        learn = _learner(compile=compile_)
        learn.fit(0.05, 1)
        results.append(learn.model.state_dict())
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-5)


def test_validate_and_predict_restore_each_modules_mode():
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))
    learn = _learner(model)
    model.train()
    model[1].eval()  # as bn_freeze leaves a frozen BatchNorm while the rest trains
    before = [m.training for m in model.modules()]
    seen = []
    model[2].register_forward_hook(lambda m, i, o: seen.append(m.training))
    learn.validate()
    learn.predict()
    assert [m.training for m in model.modules()] == before == [True, True, False, True, True]
    assert seen and not any(seen)  # in eval inside


def test_validate_restores_modes_through_each_modules_own_train():
    class Noisy(nn.Module):  # keeps side state in step with its mode through train()
        def __init__(self):
            super().__init__()
            self.lin, self.noise_on = nn.Linear(5, 3), True

        def train(self, mode=True):
            super().train(mode)
            self.noise_on = mode
            return self

        def forward(self, x):
            return self.lin(x)

    model = nn.Sequential(nn.Identity(), Noisy())
    learn = _learner(model)
    model.train()
    model[1].eval()
    learn.validate()
    learn.predict()
    assert [m.training for m in model.modules()] == [True, True, False, False]
    assert model[1].noise_on is False


# ---- Core v2: fixes found in trials ------------------------------------------------------------
def _weights(learn):
    return [p.detach().clone() for p in learn.model.parameters()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_zero_d_tensors_and_arrays_are_numbers_wherever_an_lr_is_taken():
    import numpy as np

    ref = _learner()
    ref.fit_one_cycle(2, 0.05)
    for lr in (torch.tensor(0.05, dtype=torch.float64), np.array(0.05), np.float64(0.05)):
        learn = _learner()
        learn.fit_one_cycle(2, lr)
        assert _same(_weights(learn), _weights(ref))
    learn, ref32 = _learner(), _learner()  # a float32 tensor is the float32 number it holds
    learn.fit_one_cycle(2, torch.tensor(0.05))
    ref32.fit_one_cycle(2, float(torch.tensor(0.05)))
    assert _same(_weights(learn), _weights(ref32)) and not _same(_weights(learn), _weights(ref))
    a, b = _learner().lr_find(num_it=12), _learner().lr_find(torch.tensor(1e-7, dtype=torch.float64), np.array(10.0),
                                                       num_it=12)
    assert a.lrs == b.lrs and a.losses == b.losses
    assert oc.optim.spread_lrs(torch.tensor(0.1, dtype=torch.float64), 2) == [0.1, 0.1]
    with pytest.raises(TypeError, match="lr"):
        oc.optim.spread_lrs(torch.tensor([0.1, 0.2, 0.3]).reshape(3, 1), 3)  # not numbers: 1-element rows


def test_duplicate_metric_names_are_refused_and_names_can_be_given():
    from functools import partial

    from onecycle.metrics import top_k_accuracy

    top1, top2 = partial(top_k_accuracy, k=1), partial(top_k_accuracy, k=2)
    def learner(metrics):
        torch.manual_seed(0)
        return oc.Learner(TwoGroup(), _data(), _data(30, 7, 1), metrics=metrics, device="cpu", quiet=True)

    with pytest.raises(ValueError, match="top_k_accuracy"):
        learner([top1, top2])
    learn = learner({"top1": top1, "top2": top2})
    learn.fit_one_cycle(1, 0.05)
    x = torch.cat([b[0] for b in learn.valid_dl])
    y = torch.cat([b[1] for b in learn.valid_dl])
    with torch.no_grad():
        logits = learn.model.eval()(x)
    top = logits.topk(2, dim=1).indices
    want1 = (top[:, 0] == y).float().mean().item()
    want2 = (top == y[:, None]).any(1).float().mean().item()
    assert learn.recorder.metrics["top1"] == [pytest.approx(want1)] and learn.recorder.metrics["top2"] == [
        pytest.approx(want2)] and want1 < want2


def test_a_metric_collection_records_one_column_per_key():
    torchmetrics = pytest.importorskip("torchmetrics")
    coll = torchmetrics.MetricCollection({"acc": torchmetrics.classification.MulticlassAccuracy(3, average="micro"),
                                          "f1": torchmetrics.classification.MulticlassF1Score(3, average="macro")})
    torch.manual_seed(0)
    learn = oc.Learner(TwoGroup(), _data(), _data(30, 7, 1), metrics=[coll], device="cpu", quiet=True)
    learn.fit_one_cycle(2, 0.05)
    assert set(learn.recorder.metrics) == {"acc", "f1"} and len(learn.recorder.metrics["acc"]) == 2
    x = torch.cat([b[0] for b in learn.valid_dl])
    y = torch.cat([b[1] for b in learn.valid_dl])
    with torch.no_grad():
        pred = learn.model.eval()(x).argmax(1)
    assert learn.recorder.metrics["acc"][-1] == pytest.approx((pred == y).float().mean().item())


def test_an_empty_validation_loader_is_refused_when_assigned_and_at_fit_start():
    learn = _learner()
    given = learn.valid_dl
    with pytest.raises(ValueError, match="valid_dl is empty"):
        learn.valid_dl = DataLoader(TensorDataset(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)), batch_size=4)
    assert learn.valid_dl is given
    ds = TensorDataset(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    learn.valid_dl = DataLoader(ds, batch_size=4)
    ds.tensors = (torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))  # emptied after it was given
    before = _weights(learn)
    with pytest.raises(ValueError, match="valid_dl is empty"):
        learn.fit_one_cycle(1, 0.05)
    assert _same(_weights(learn), before) and learn.opt is None and learn.recorder.n_epochs == 0


def test_freeze_on_one_group_says_how_to_define_groups():
    learn = oc.Learner(nn.Linear(5, 3), _data(), quiet=True, device="cpu")
    with pytest.raises(ValueError, match=r"groups=.*param_groups\(\)"):
        learn.freeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    learn.unfreeze()  # nothing to unfreeze: fine
    two = oc.Learner(nn.Sequential(nn.Linear(5, 8), nn.Linear(8, 3)), _data(), quiet=True, device="cpu",
                     groups=lambda m: [list(m[0].parameters()), list(m[1].parameters())])
    two.freeze()
    assert [p.requires_grad for p in two.model.parameters()] == [False, False, True, True]


def test_a_users_grad_scaler_is_used():
    calls = []

    class Scaler(torch.amp.GradScaler):
        def scale(self, outputs):
            calls.append("scale")
            return super().scale(outputs)

        def step(self, optimizer, *args, **kwargs):
            calls.append("step")
            return super().step(optimizer, *args, **kwargs)

    learn = _learner(scaler=Scaler("cpu", init_scale=2.0**10))
    learn.fit_one_cycle(1, 0.05)
    ref = _learner()
    ref.fit_one_cycle(1, 0.05)
    # a power-of-two scale unscales exactly in fp32: the same training, and the scaler ran every step
    assert _same(_weights(learn), _weights(ref)) and calls == ["scale", "step"] * 7
    with pytest.raises(TypeError, match="scaler"):
        _learner(scaler="fp16")


class _Stream(torch.utils.data.IterableDataset):
    """A stream of batches without a length."""

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(1000):
            yield torch.randn(10, 5, generator=g), torch.randint(0, 3, (10,), generator=g)


def test_steps_per_epoch_for_a_loader_without_len():
    stream = DataLoader(_Stream(), batch_size=None)
    learn = oc.Learner(TwoGroup(), stream, quiet=True, device="cpu")
    with pytest.raises(TypeError, match="steps_per_epoch"):
        learn.fit_one_cycle(2, 0.05)
    learn.fit_one_cycle(2, 0.05, steps_per_epoch=4)
    rec = learn.recorder
    assert len(rec.losses) == 8 and rec.epoch_iters == [4, 8] and learn.scheduler.step_count == 8
    assert rec.lrs[0] == pytest.approx(0.05 / 25) and rec.lrs[-1] < rec.lrs[2]  # the 1cycle over 8 steps
    learn = oc.Learner(TwoGroup(), stream, quiet=True, device="cpu", accum=2)
    learn.fit_one_cycle(1, 0.05, steps_per_epoch=3)
    assert len(learn.recorder.losses) == 6 and learn.scheduler.step_count == 3


class _Short(torch.utils.data.IterableDataset):
    """``n`` batches without a length, the same ones on every pass."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(self.n):
            yield torch.randn(10, 5, generator=g), torch.randint(0, 3, (10,), generator=g)


def test_a_stream_shorter_than_steps_per_epoch_warns_and_carries_no_gradient_over():
    """7 batches an epoch where 3 steps of 3 were promised: two steps, then one batch inside a
    window. It is dropped (no gradient reaches the next epoch's first step, which would then add up
    4 batches), so training equals that on the 6 batches that make whole windows."""
    def train(n, steps, **kw):
        torch.manual_seed(0)
        learn = oc.Learner(TwoGroup(), DataLoader(_Short(n), batch_size=None), quiet=True, device="cpu", accum=3)
        learn.fit_sched(2, 0.05, oc.schedules.const(1.0), steps_per_epoch=steps, **kw)
        return learn

    with pytest.warns(UserWarning, match=r"train_dl ended before the 9 batches an epoch was given, in 2 epochs "
                                         r"\(epoch 1: 7\), so the schedule did not reach its end \(step 4 of 6\); "
                                         r"pass the steps_per_epoch the loader gives. 2 batches that ended inside an "
                                         r"accumulation window were dropped") as seen:
        short = train(7, 3)
    assert seen[0].filename == __file__  # the user's line, not the library's
    assert short.recorder.epoch_iters == [7, 14] and short.scheduler.step_count == 4
    assert all(p.grad is None for p in short.model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = train(6, 2)
    assert _same(_weights(short), _weights(whole))
    with pytest.warns(UserWarning, match=r"\(step 4 of 6\); pass the steps_per_epoch the loader gives$"):
        train(6, 3)  # ends between windows: nothing dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short.lr_find(num_it=5)  # the finder runs a stream to its end by design: no warning


def test_a_bad_device_is_named():
    for bad in ("gpu", 3.5):
        with pytest.raises(ValueError, match=f"device must be a torch.device .*got {bad!r}"):
            oc.Learner(TwoGroup(), _data(), device=bad)


def test_a_schedule_that_is_not_a_function_is_named_before_anything_changes():
    learn = _learner()
    for kw, name in [(dict(lr_sched="cos"), "lr_sched"), (dict(mom_sched=0.9), "mom_sched"),
                     (dict(wd_sched=0.1), "wd_sched"), (dict(extra_scheds={"eps": 1e-8}), r"extra_scheds\['eps'\]")]:
        kw.setdefault("lr_sched", oc.schedules.const(1.0))
        with pytest.raises(TypeError, match=f"^{name} must be a schedule"):
            learn.fit_sched(1, 0.1, **kw)
    assert learn.opt is None  # not made, so not set
    learn.fit_sched(1, 0.1, oc.schedules.const(1.0))
    with pytest.raises(TypeError, match="lr_sched"):
        learn.fit_sched(1, 0.5, None)
    assert [g["lr"] for g in learn.opt.param_groups] == [0.1, 0.1]


def test_a_schedule_key_the_optimizer_lacks_names_both_before_anything_changes():
    learn = _learner(opt="adamw")
    learn.fit_sched(1, 0.1, oc.schedules.const(1.0))
    weights, n = copy.deepcopy(learn.model.state_dict()), len(learn.recorder.losses)
    with pytest.raises(ValueError, match="^AdamW: param group has no 'momentum_dampening' to schedule"):
        learn.fit_sched(1, 0.5, oc.schedules.const(1.0), extra_scheds={"momentum_dampening": oc.schedules.const(0.1)})
    assert all(k != "momentum_dampening" for g in learn.opt.param_groups for k in g)  # no group value written
    assert all(torch.equal(weights[k], v) for k, v in learn.model.state_dict().items())
    assert len(learn.recorder.losses) == n and [g["lr"] for g in learn.opt.param_groups] == [0.1, 0.1]


def test_steps_per_epoch_on_a_sized_loader():
    """At most what the loader gives: the last window of an epoch is closed by the loader's last batch
    (no gradient left over, the whole schedule run), and more steps than it gives is refused."""
    learn = oc.Learner(TwoGroup(), _data(80, 8), quiet=True, device="cpu", accum=3)  # 10 batches: 4 steps
    learn.fit_one_cycle(2, 0.05, steps_per_epoch=4)
    assert learn.scheduler.step_count == learn.scheduler.total_steps == 8
    assert all(p.grad is None for p in learn.model.parameters())
    learn.fit_one_cycle(1, 0.05, steps_per_epoch=2)  # shorter epochs
    assert len(learn.recorder.losses) == 6 and learn.scheduler.step_count == 2
    with pytest.raises(ValueError, match="steps_per_epoch=5 is more than train_dl's 10 batches give"):
        learn.fit_one_cycle(1, 0.05, steps_per_epoch=5)


def test_an_error_inside_fit_shuts_down_the_loader_workers():
    import multiprocessing

    ds = TensorDataset(torch.randn(64, 5), torch.randint(0, 3, (64,)))
    learn = oc.Learner(TwoGroup(), DataLoader(ds, batch_size=8, num_workers=2), quiet=True, device="cpu")

    class Boom(oc.Callback):
        def after_batch(self, learn):
            if learn.iter == 2:
                raise RuntimeError("boom")

    assert multiprocessing.active_children() == []
    with pytest.raises(RuntimeError, match="boom") as info:
        learn.fit_one_cycle(1, 0.05, callbacks=[Boom()])
    assert info.value is not None  # the traceback is still held here
    assert multiprocessing.active_children() == []


def test_a_nan_in_the_finders_first_batch_says_why_there_is_no_suggestion():
    learn = _learner()
    learn.loss_fn = lambda pred, y: F.cross_entropy(pred, y) * float("nan")
    res = learn.lr_find(num_it=20)
    assert res.suggestion is None and res.losses == []
    assert res.stop_reason.startswith("non-finite loss nan at iteration 0")
    with pytest.raises(ValueError, match="lr_find gave none: non-finite loss nan at iteration 0"):
        learn.fit_one_cycle(1)


def test_a_model_whose_len_raises_trains():
    """torch.compile's wrapper raises on len(): the loop must never take a module's truth value."""
    class NoLen(TwoGroup):
        def __len__(self):
            raise TypeError("NoLen does not support len()")

    torch.manual_seed(0)
    learn = oc.Learner(NoLen(), _data(), _data(30, 7, 1), metrics=[accuracy], device="cpu", quiet=True)
    learn.fit_one_cycle(1, 0.05)
    assert len(learn.recorder.losses) == 7 and learn.recorder.n_epochs == 1
    assert learn.predict().shape == (30, 3)


def test_a_fit_after_a_fit_takes_new_bases_for_every_relative_key_without_a_warning():
    """Each fit sets its own bases (peak LR, weight decay, a relative key scheduled through extra_scheds):
    the Scheduler's warning about a base left in the groups is for bases a user's code left, not ours."""
    learn = _learner()
    learn.create_opt().param_groups[0]["weight_decay"] = 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for peak in (0.05, 0.02):
            learn.fit_sched(1, peak, oc.schedules.const(1.0), extra_scheds={"weight_decay": oc.schedules.lin(1.0, 0.5)})
            assert learn.opt.param_groups[0]["initial_lr"] == peak
            # every fit goes from the same base down to half of it, not from where the last one ended
            assert learn.opt.param_groups[0]["weight_decay"] == pytest.approx(0.5e-3, rel=1e-12)


def test_readme_coming_from_fastai_snippet_runs(capsys):
    """README "From fastai": run as written; fit_one_cycle(5) peaks at the finder's suggestion."""
    from _readme import snippet
    torch.manual_seed(0)
    scope = {"model": TwoGroup(), "train_dl": _data(), "valid_dl": _data(30, 7, 1), "F": F}
    exec(snippet("fastai"), scope)
    learn, res = scope["learn"], scope["res"]
    assert res.suggestion is not None and len(learn.recorder.val_losses) == 5
    assert max(learn.recorder.lrs) == pytest.approx(res.suggestion, rel=1e-2)  # the peak step is near pct_start
    assert "<- suggestion" in capsys.readouterr().out


class _BNTwoGroup(TwoGroup):
    """Two layer groups with a BatchNorm in the body (whose statistics a frozen body still updates)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8))


def test_fine_tune_is_a_frozen_then_an_unfrozen_one_cycle():
    """``fine_tune(epochs)`` with its defaults, against the steps its doc gives, written out: the head
    alone for 1 epoch (1cycle at ``base_lr=2e-3``, ``pct_start=0.99``, BatchNorm not frozen), then
    everything for ``epochs`` (1cycle over ``slice(base_lr/2/100, base_lr/2)``, ``pct_start=0.3``,
    ``div=5``): the same weights, buffers and recorded LRs, bit for bit."""
    torch.manual_seed(0)
    learn = _learner(_BNTwoGroup())
    learn.fine_tune(2)
    torch.manual_seed(0)
    ref = _learner(_BNTwoGroup())
    ref.freeze()
    ref.fit_one_cycle(1, 2e-3, pct_start=0.99)
    head = ref.recorder.state_dict()
    ref.unfreeze()
    ref.fit_one_cycle(2, slice(1e-3 / 100, 1e-3), pct_start=0.3, div=5.0)
    a, b = learn.model.state_dict(), ref.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert learn.recorder.group_lrs == ref.recorder.group_lrs and learn.recorder.moms == ref.recorder.moms
    assert learn.head_history.group_lrs == head["group_lrs"] and learn.head_history.n_epochs == 1
    for kw, message in [
        (dict(epochs=0), r"^epochs must be an int >= 1, got 0$"),
        (dict(epochs=1, freeze_epochs=0), r"^freeze_epochs must be an int >= 1, got 0$"),
        (dict(epochs=1, base_lr=0), r"^base_lr must be > 0, got 0$"),
        (dict(epochs=1, lr_mult=0.5), r"^lr_mult must be >= 1, got 0.5$"),
        (dict(epochs=1, lr_max=0.1), r"^fine_tune\(\) got an unexpected keyword argument 'lr_max'; did you mean "
                                     r"'base_lr'\?$"),
    ]:
        before = {k: v.clone() for k, v in learn.model.state_dict().items()}
        with pytest.raises((TypeError, ValueError), match=message):
            learn.fine_tune(**kw)
        # refused before anything changed: no phase trained, nothing left frozen
        assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())
        assert all(p.requires_grad for p in learn.model.parameters())


def test_use_opt_trains_with_that_optimizer_as_it_is():
    learn = _learner()
    model = learn.model
    with pytest.raises(TypeError, match="optimizer"):
        learn.use_opt(torch.optim.SGD)  # the class, not an optimizer
    assert learn.opt is None  # refused before anything changed
    opt = torch.optim.SGD([{"params": model.body.parameters(), "weight_decay": 0.1},
                           {"params": model.head.parameters(), "weight_decay": 0.2}], lr=1.0, momentum=0.9)
    learn.use_opt(opt)
    assert learn.opt is opt and learn.wd_key == "weight_decay"  # its own decay, not the decoupled key
    assert not opt._optimizer_step_pre_hooks  # no decoupled weight-decay hook given to it
    learn.fit_sched(1, [0.01, 0.1], lambda p: 1.0, wd=[0.0, 0.05])
    assert learn.opt is opt  # trained with it: not replaced
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.05]  # the fit's wd went to its own key
    assert all("momentum_buffer" in opt.state[p] for p in model.parameters())  # its state is what stepped


def test_drop_opt_forgets_the_optimizer_and_takes_its_weight_decay_hook_off():
    learn = _learner(wd=0.1)
    opt = learn.create_opt()
    assert len(opt._optimizer_step_pre_hooks) == 1 and learn.wd_key == "decoupled_wd"
    learn.drop_opt()
    assert learn.opt is None and not opt._optimizer_step_pre_hooks
    learn.drop_opt()  # nothing to drop: no error
    learn.use_opt(opt)
    learn.drop_opt()  # an optimizer given with use_opt has no hook of ours to take off
    assert learn.opt is None
    learn.fit_sched(1, 0.1, lambda p: 1.0)  # a new optimizer, with a hook of its own
    assert learn.opt is not opt and len(learn.opt._optimizer_step_pre_hooks) == 1


# ---- mutation-testing additions: the loop's state as read through the Learner, fit_one_cycle's and lr_find's
# defaults and messages, freeze's default, the default device ------------------------------------------------
_LOOP_STATE = ("epoch", "iter", "n_epochs", "batches", "loss", "pred", "target", "stepped", "val_result", "scheduler",
               "scaler", "checkpointer", "nan_skipped")


def test_the_loops_state_reads_through_the_learner_none_before_a_fit():
    learn = _learner()
    assert learn.loop is None and all(getattr(learn, name) is None for name in _LOOP_STATE)
    for name in _LOOP_STATE:
        assert getattr(oc.Learner, name).__doc__ == f"learn.loop.{name} (see loop.Loop)"
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    loop = learn.loop
    assert (learn.epoch, learn.iter, learn.n_epochs, learn.batches, learn.nan_skipped) == (0, 6, 1, 7, 0)
    assert learn.scheduler is loop.scheduler and learn.checkpointer is loop.checkpointer and learn.stepped is True
    assert torch.equal(learn.pred, loop.pred) and torch.equal(learn.target, loop.target)
    assert learn.val_result == loop.val_result and learn.loss.item() == loop.loss.item()
    with pytest.raises(AttributeError):
        learn.epoch = 3  # read-only


def test_fit_one_cycle_ends_at_lr_max_over_div_final_and_names_what_is_missing():
    learn = _learner()
    learn.fit_one_cycle(1, [0.01, 0.1])
    ends = [g["lr"] for g in learn.opt.param_groups]  # where the schedule ends, after the last step
    assert ends == pytest.approx([0.01 / 1e5, 0.1 / 1e5], rel=1e-9)
    with pytest.raises(ValueError) as info:
        learn.fit_one_cycle(0, 0.1)
    assert str(info.value) == "epochs must be an int >= 1, got 0"
    fresh = _learner()
    with pytest.raises(ValueError) as info:
        fresh.fit_one_cycle(1)
    assert str(info.value) == "lr_max is None and no lr_find suggestion is available: pass lr_max"


def test_the_finders_defaults_are_fastais():
    learn = _learner()
    res = learn.lr_find(stop_div=False, with_valid=False)
    assert len(res.lrs) == 100 and res.lrs[0] == pytest.approx(1e-7, rel=1e-12)
    assert res.lrs[-1] == pytest.approx(10.0, rel=1e-12)


def test_freeze_leaves_batchnorm_training_unless_asked():
    learn = _learner(_BNTwoGroup())
    learn.freeze()
    assert learn.frozen_bn == []
    learn.freeze_to(1)
    assert learn.frozen_bn == []


def test_the_default_device_is_cuda_when_there_is_one(monkeypatch):
    assert oc.default_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert oc.default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert oc.default_device() == torch.device("cpu")


def test_save_and_load_round_trip_the_weights_and_the_optimizer(tmp_path):
    learn = _learner()
    with pytest.raises(ValueError) as info:
        learn.save(tmp_path / "w.pt", with_opt=True)
    assert str(info.value) == "with_opt=True but there is no optimizer yet (fit or create_opt first)"
    assert not (tmp_path / "w.pt").exists()
    learn.fit_sched(1, 0.1, lambda p: 1.0)
    path = learn.save(tmp_path / "w.pt")
    assert path == tmp_path / "w.pt"
    plain = torch.load(path, weights_only=True)
    assert plain.keys() == learn.model.state_dict().keys()
    assert all(torch.equal(plain[k], v) for k, v in learn.model.state_dict().items())
    both = torch.load(learn.save(tmp_path / "wo.pt", with_opt=True), weights_only=True)
    assert set(both) == {"model", "opt"} and both["opt"]["param_groups"][0]["lr"] == learn.opt.param_groups[0]["lr"]

    other = _learner()
    assert other.opt is None
    other.load(tmp_path / "wo.pt", with_opt=True)  # an optimizer is made for the state to go into
    for p, q in zip(other.model.parameters(), learn.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(other.model.parameters(), learn.model.parameters()):
        assert torch.equal(other.opt.state[p]["momentum_buffer"], learn.opt.state[q]["momentum_buffer"])
    third = _learner()
    third.load(tmp_path / "w.pt")
    assert third.opt is None and all(torch.equal(p, q) for p, q in zip(third.model.parameters(),
                                                                        learn.model.parameters()))
    partial = {k: v for k, v in plain.items() if not k.startswith("head.")}
    torch.save(partial, tmp_path / "body.pt")
    with pytest.raises(RuntimeError, match="head"):
        third.load(tmp_path / "body.pt")
    fourth = _learner()
    fourth.load(tmp_path / "body.pt", strict=False)  # the head keeps its own init
    assert torch.equal(fourth.model.body.weight, learn.model.body.weight)
    assert not torch.equal(fourth.model.head.weight, learn.model.head.weight)
    pytest.importorskip("safetensors")
    learn.save(tmp_path / "w.safetensors")
    fifth = _learner()
    fifth.load(tmp_path / "w.safetensors")
    assert torch.equal(fifth.model.head.weight, learn.model.head.weight)


def test_create_opt_gives_the_decoupled_hook_only_to_optimizers_that_do_not_decay_themselves():
    learn = _learner()
    opt = learn.create_opt()
    assert learn.wd_key == "decoupled_wd" and len(opt._optimizer_step_pre_hooks) == 1
    assert [g["decoupled_wd"] for g in opt.param_groups] == [0.0, 0.0]  # the fit sets the decay
    lars = _learner(opt="lars")
    opt = lars.create_opt()
    assert lars.wd_key == "weight_decay" and not opt._optimizer_step_pre_hooks
    body, head = list(learn.model.body.parameters()), list(learn.model.head.parameters())
    mine = learn.create_opt([head, body])  # the groups given, in that order
    assert [g["params"] for g in mine.param_groups] == [head, body]


def test_fit_sched_names_its_bad_arguments():
    learn = _learner()
    with pytest.raises(ValueError) as info:
        learn.fit_sched(0, 0.1, lambda p: 1.0)
    assert str(info.value) == "epochs must be an int >= 1, got 0"
    with pytest.raises(ValueError) as info:
        learn.fit_sched(1, 0.1, lambda p: 1.0, on_nan="ignore")
    assert str(info.value) == "on_nan must be one of 'raise', 'skip', 'off', got 'ignore'"
    with pytest.raises(TypeError) as info:
        learn.use_opt(torch.optim.SGD)
    assert str(info.value) == "optimizer must be a Optimizer, got type"
    assert learn.opt is None
    learn.fit_sched(1, 0.1, lambda p: 1.0, on_nan="off")  # each choice is taken
    learn.use_opt(torch.optim.SGD(learn.model.parameters(), lr=0.1))  # one group for the whole model
    with pytest.raises(ValueError, match=r"a slice needs a model with several param groups, got 1"):
        learn.fit_sched(1, slice(0.01, 0.1), lambda p: 1.0)  # the optimizer's groups count, not the model's


def test_fit_sched_passes_its_checkpoint_settings_on(tmp_path, monkeypatch):
    from onecycle import checkpoint

    writes = []
    real = checkpoint.CheckpointWriter.save
    monkeypatch.setattr(checkpoint.CheckpointWriter, "save",
                        lambda writer, obj, path: (writes.append(1), real(writer, obj, path)))
    learn = _learner()
    learn.fit_sched(2, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path / "a", every=1, ckpt_budget=None)
    assert len(writes) == 2 * 7  # every step (the last of each epoch is its epoch end's)
    writes.clear()
    _learner().fit_sched(2, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path / "b", every=1, ckpt_budget=1e-9)
    assert len(writes) == 2  # a budget that skips every step's write: the first and last epoch ends only
    with pytest.raises(ValueError, match=r"reschedule=True"):  # a longer fit is another schedule
        _learner().fit_sched(3, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path / "a", resume=True)
    again = _learner()
    again.fit_sched(3, 0.1, lambda p: 1.0, checkpoint_dir=tmp_path / "a", resume=True, reschedule=True)
    assert len(again.recorder.train_losses) == 3


def test_scale_lr_multiplies_the_peaks_by_the_world_size():
    learn = _learner(scale_lr=True)
    learn.world_size = 2  # two data-parallel processes, stood in for (the all-reduces are the identity here)
    seen = []

    class Peek(oc.Callback):
        def before_batch(self, learn):
            seen.append([g["lr"] for g in learn.opt.param_groups])

    learn.fit_sched(1, [0.01, 0.1], lambda p: 1.0, callbacks=[Peek()])
    assert seen[0] == pytest.approx([0.02, 0.2], rel=1e-12)


@pytest.mark.parametrize("kw,active", [({}, False), ({"wd": 0.1}, True), ({"wd_sched": lambda p: 1 - p}, True),
                                       ({"extra_scheds": {"decoupled_wd": lambda p: 0.0}}, True)])
def test_the_decay_hook_runs_only_in_a_fit_that_decays(kw, active):
    learn = _learner()
    hooks = []

    class Peek(oc.Callback):
        def before_batch(self, learn):
            hooks.append(len(learn.opt._optimizer_step_pre_hooks))

    learn.fit_sched(1, 0.1, lambda p: 1.0, callbacks=[Peek()], **kw)
    assert set(hooks) == {int(active)}
    assert len(learn.opt._optimizer_step_pre_hooks) == 1  # put back after the fit


def test_train_mode_puts_an_optimizer_with_modes_in_train_mode():
    from test_loop import _ModedSGD

    learn = _learner()
    learn.opt_func = _ModedSGD
    learn.create_opt()
    learn.train_mode()
    assert learn.opt.switches == ["train"] and learn.opt.param_groups[0]["train_mode"] is True


def test_a_batch_without_a_loss_is_named_and_predict_needs_none():
    learn = oc.Learner(nn.Linear(5, 3), [(torch.randn(4, 5),)], device="cpu", quiet=True)  # no targets
    with pytest.raises(ValueError) as info:
        learn.fit_sched(1, 0.1, lambda p: 1.0)
    assert str(info.value) == ("no loss for this batch: it has no target and the model returned no .loss (give "
                               "batches a target, or use a model that computes its loss with loss_fn=None)")
    assert learn.predict([(torch.randn(4, 5),)]).shape == (4, 3)


@pytest.mark.parametrize("kw,exc,message", [
    ({"model": 5}, TypeError, "model must be a Module, got int"),
    ({"loss_fn": 5}, TypeError, "loss_fn must be callable (None: the model's own .loss) or None, got 5"),
    ({"batch_fn": 5}, TypeError, "batch_fn must be callable or None, got 5"),
    ({"scaler": 5}, TypeError, "scaler must be a GradScaler, got int"),
    ({"compile": 2}, ValueError, "compile must be one of True, False, got 2"),
    ({"scale_lr": 2}, ValueError, "scale_lr must be one of True, False, got 2"),
    ({"cudnn_benchmark": 2}, ValueError, "cudnn_benchmark must be one of True, False, None, got 2"),
])
def test_the_learners_arguments_are_refused_with_their_names_in_full(kw, exc, message):
    args = {"model": nn.Linear(5, 3), "train_dl": _data(), "device": "cpu", **kw}
    with pytest.raises(exc) as info:
        oc.Learner(**args)
    assert str(info.value) == message


def test_the_learners_defaults():
    learn = oc.Learner(nn.Linear(5, 3), _data(), device="cpu")
    assert learn.quiet is False and learn.scale_lr is False and learn.opt_func == "sgd" and learn.compile is False
    assert learn.loss_fn is F.cross_entropy and learn.batch_fn is None and learn.cudnn_benchmark is None


def test_the_learner_takes_quiet_channels_last_and_the_metrics_directions_as_given():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    batches = [(torch.randn(2, 3, 5, 5), torch.tensor([0, 1]))]
    learn = oc.Learner(conv, batches, device="cpu", channels_last=True, quiet=True)
    assert learn.quiet is True and learn.channels_last is True  # on the CPU too, when asked
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert oc.Learner(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), batches, device="cpu").channels_last is False

    def goodness(preds, targets):
        return 0.0

    goodness.higher_is_better = False  # against its name: the recorder keeps what the metric says
    plain = oc.Learner(nn.Linear(5, 3), _data(), device="cpu", metrics={"goodness": goodness, "acc": accuracy})
    assert plain.recorder.metric_names == ["goodness", "acc"]
    assert plain.recorder.higher_is_better == {"goodness": False, "acc": True}
    assert plain.wd_key == "decoupled_wd"  # before any optimizer: the default SGD's decay
