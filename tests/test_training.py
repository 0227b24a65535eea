"""Training techniques from the thread: fine-tuning, discriminative LRs, normalized wd, gradient
statistics, accumulation, mixed precision."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle.optim.groups import normalized_wd


class Net(nn.Module):
    def __init__(self, bn=False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8) if bn else nn.Identity(), nn.ReLU())
        self.mid = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.mid(self.body(x))))

    def param_groups(self):
        return [list(self.body.parameters()), list(self.mid.parameters()), list(self.head.parameters())]


def _dl(n=64, bs=16, seed=0, shuffle=False):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=shuffle)


def _learn(model=None, **kw):
    torch.manual_seed(0)
    return oc.Learner(model or Net(), _dl(), _dl(32, 16, 1), quiet=True, device="cpu", **kw)


def test_slice_spreads_lrs_geometrically():
    learn = _learn()
    learn.fit(slice(1e-3, 1e-1), 1)
    assert [g["lr"] for g in learn.opt.param_groups] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert learn.recorder.group_lrs[0][0] == pytest.approx(1e-3)


class Plain(nn.Module):
    """Net without a param_groups() method: groups must come from the Learner's ``groups``."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("groups", [
    lambda m: [m.a, m.b],  # a split function
    "modules",  # a list of modules
    "params",  # a list of parameter lists
])
def test_groups_from_modules_split_function_or_parameter_lists(groups):
    model = Plain()
    if groups == "modules":
        groups = [model.a, model.b]
    elif groups == "params":
        groups = [list(model.a.parameters()), list(model.b.parameters())]
    learn = oc.Learner(model, _dl(), quiet=True, device="cpu", groups=groups)
    learn.fit(slice(1e-3, 1e-1), 1)
    assert [[id(p) for p in g["params"]] for g in learn.opt.param_groups] == \
        [[id(p) for p in model.a.parameters()], [id(p) for p in model.b.parameters()]]
    assert [g["lr"] for g in learn.opt.param_groups] == pytest.approx([1e-3, 1e-1])
    learn.freeze()
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]


def test_groups_must_hold_every_parameter_of_the_model_and_only_those():
    model = Plain()
    for groups, err, match in [
        ([model.a], ValueError, r"leave out 2 of the model's parameters \(b.weight, b.bias\)"),  # b would never train
        ([model.a, model.b, Plain().a], ValueError, "2 parameters that are not the model's"),
        (5, TypeError, "groups must be a list"),
    ]:
        learn = oc.Learner(model, _dl(), quiet=True, device="cpu", groups=groups)
        with pytest.raises(err, match=match):
            learn.fit(0.1, 1)
        assert learn.opt is None


def test_freeze_unfreeze_requires_grad_exactly():
    learn = _learn()
    m = learn.model
    learn.freeze()
    assert [p.requires_grad for p in m.parameters()] == [False, False, False, False, True, True]
    learn.freeze_to(1)
    assert [p.requires_grad for p in m.parameters()] == [False, False, True, True, True, True]
    learn.unfreeze()
    assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError, match="freeze_to"):
        learn.freeze_to(4)


def test_frozen_groups_do_not_move_and_bn_freeze():
    learn = _learn(Net(bn=True))
    learn.freeze(bn_freeze=True)
    body = {k: v.clone() for k, v in learn.model.body.state_dict().items()}
    head = learn.model.head.weight.detach().clone()
    learn.fit(0.1, 1)
    for k, v in learn.model.body.state_dict().items():
        assert torch.equal(v, body[k]), k  # weights and BatchNorm running stats unchanged
    assert not torch.equal(learn.model.head.weight, head)
    learn.freeze(bn_freeze=False)
    learn.fit(0.1, 1)
    assert not torch.equal(learn.model.body[1].running_mean, body["1.running_mean"])


def test_fine_tune_runs_both_phases():
    trainable = []

    class Record(oc.Callback):
        def before_fit(self, learn):
            trainable.append([p.requires_grad for p in learn.model.parameters()])

    learn = _learn()
    learn.fine_tune(2, base_lr=0.02, freeze_epochs=1, callbacks=[Record()])
    assert trainable == [[False] * 4 + [True] * 2, [True] * 6]  # the head alone, then everything
    assert learn.head_history.n_epochs == 1 and learn.recorder.n_epochs == 2
    assert learn.scheduler.base["lr"] == pytest.approx([0.01 / 100, 0.001, 0.01], rel=1e-9)
    assert [g[0] for g in learn.recorder.group_lrs] == pytest.approx([1e-4 / 5, 1e-3 / 5, 1e-2 / 5])
    assert all(p.requires_grad for p in learn.model.parameters())
    one_group = oc.Learner(nn.Linear(6, 3), _dl(), quiet=True)
    with pytest.raises(ValueError, match="several layer groups.*groups="):
        one_group.fine_tune(1)
    assert all(p.requires_grad for p in one_group.model.parameters()) and one_group.opt is None


def test_normalized_wd_formula():
    assert normalized_wd(0.05, 128, 4000, 20) == pytest.approx(0.05 * math.sqrt(128 / (4000 * 20)))
    learn = _learn()
    learn.fit_one_cycle(2, 0.01, wd_norm=0.1)
    expected = 0.1 * math.sqrt(16 / (64 * 2))
    assert learn.opt.param_groups[0]["decoupled_wd"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="wd_norm"):
        learn.fit_one_cycle(1, 0.01, wd_norm=-1.0)
    with pytest.raises(ValueError, match="wd_norm"):
        learn.fit_one_cycle(1, 0.01, wd=0.1, wd_norm=0.1)


def test_wd_schedule_multiplies_wd():
    learn = _learn()
    learn.fit_one_cycle(1, 0.01, wd=0.2, wd_sched=oc.schedules.lin(1.0, 0.0))
    assert learn.opt.param_groups[0]["decoupled_wd"] == pytest.approx(0.0)


def test_grad_stats_equal_direct_computation():
    """Recorded per-group mean |g| and L2 norm equal a direct computation on the same batch."""
    learn = _learn(callbacks=[oc.GradStats()])
    learn.clip = 1e-4  # stats are taken before clipping
    ref = Net()
    ref.load_state_dict(learn.model.state_dict())
    xb, yb = next(iter(learn.train_dl))
    F.cross_entropy(ref(xb), yb).backward()
    learn.fit(0.1, 1)
    for g, params in enumerate(ref.param_groups()):
        grads = [p.grad for p in params]
        mean_abs = sum(gr.abs().sum() for gr in grads) / sum(gr.numel() for gr in grads)
        norm = torch.sqrt(sum((gr ** 2).sum() for gr in grads))
        assert learn.recorder.series[f"grad_mean_abs/{g}"][0] == pytest.approx(mean_abs.item(), rel=1e-5)
        assert learn.recorder.series[f"grad_norm/{g}"][0] == pytest.approx(norm.item(), rel=1e-5)
    assert len(learn.recorder.series["grad_norm/0"]) == 4  # one per optimizer step


def test_accumulation_equals_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    m1, m2 = Net(), Net()
    m2.load_state_dict(m1.state_dict())
    small = oc.Learner(m1, DataLoader(TensorDataset(x, y), batch_size=4), quiet=True, accum=4, device="cpu")
    big = oc.Learner(m2, DataLoader(TensorDataset(x, y), batch_size=16), quiet=True, device="cpu")
    small.fit_one_cycle(2, 0.05)
    big.fit_one_cycle(2, 0.05)
    assert small.scheduler.step_count == big.scheduler.step_count == 8
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_skipped_amp_step_does_not_advance_schedule():
    """fp16 with a GradScaler: an overflowing step is skipped and the schedule does not move."""
    calls = {"n": 0}

    def loss_fn(pred, y):
        calls["n"] += 1
        loss = F.cross_entropy(pred.float(), y)
        return loss * 1e30 if calls["n"] == 2 else loss  # finite loss, fp16 gradients overflow

    learn = oc.Learner(Net(), _dl(), loss_fn=loss_fn, amp="fp16", quiet=True, device="cpu")
    learn.fit_one_cycle(1, 0.01)
    assert learn.scaler is not None
    assert learn.scheduler.step_count == 3  # 4 batches, one skipped
    lrs = learn.recorder.lrs
    assert lrs[1] == lrs[2]  # the LR after the skipped step is the one it had


def test_lr_list_length_and_bad_slice():
    learn = oc.Learner(nn.Linear(6, 3), _dl(), quiet=True)
    with pytest.raises(ValueError, match="slice"):
        learn.fit(slice(1e-3, 1e-1), 1)
    with pytest.raises(ValueError, match="lr"):
        learn.fit([0.1, 0.2], 1)


def test_lars_trust_ratios_recorded_and_momentum_cycled():
    learn = _learn(opt="lars")
    learn.fit_one_cycle(2, 1.0)
    rec, steps = learn.recorder, 8
    for g in range(3):
        mean, lo, hi = (rec.series[f"trust_{k}/{g}"] for k in ("mean", "min", "max"))
        assert len(mean) == steps
        assert all(a <= b + 1e-7 and b <= c + 1e-7 for a, b, c in zip(lo, mean, hi))
    last = [s.tolist() for s in learn.opt.last_trust_stats]
    assert [rec.series[f"trust_mean/{g}"][-1] for g in range(3)] == pytest.approx([s[0] for s in last])
    assert min(rec.moms) == pytest.approx(0.85, abs=0.01) and rec.moms[0] == pytest.approx(0.95)
    assert learn.opt.param_groups[0]["momentum"] == pytest.approx(rec.moms[-1], abs=0.01)


def _hooked_fit(opt_fn, n_epochs=1):
    """A fit with step hooks of every kind; returns the order they ran in (one record per hook call)."""
    seen = []
    learn = _learn(opt=opt_fn)
    learn.create_opt()
    opt = learn.opt
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: seen.append("global pre")),
        opt.register_step_pre_hook(lambda o, a, k: seen.append("pre")),
        opt.register_step_post_hook(lambda o, a, k: seen.append("post")),
        register_optimizer_step_post_hook(lambda o, a, k: seen.append("global post")),
    ]
    try:
        learn.fit_one_cycle(n_epochs, 0.01)
    finally:
        for h in handles:
            h.remove()
    return learn, seen


@pytest.mark.parametrize("opt_fn", ["sgd", "adamw"])
def test_step_hooks_run_in_torchs_order_once_per_step(opt_fn):
    # The loop calls torch's own opt.step(): every hook runs as torch runs it, once per step.
    learn, seen = _hooked_fit(opt_fn)
    assert learn.scheduler.step_count == 4  # 64 samples, batch 16; the Scheduler is a post hook too
    assert seen == ["global pre", "pre", "post", "global post"] * 4


def test_step_pre_hook_can_replace_the_arguments():
    calls = []
    learn = _learn()
    learn.create_opt()
    learn.opt.register_step_pre_hook(lambda o, a, k: (a, {"closure": lambda: calls.append(1) or 0.0}))
    learn.fit_one_cycle(1, 0.01)
    assert len(calls) == 4


def test_profiler_sees_every_optimizer_step_and_torch_lr_schedulers_count_steps():
    from torch.profiler import ProfilerActivity, profile

    learn = _learn()
    learn.create_opt()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learn.fit_one_cycle(1, 0.01)
    names = [e.name for e in prof.events()]
    assert names.count(f"Optimizer.step#{type(learn.opt).__name__}.step") == 4
    # torch's LR schedulers replace step on the instance to count calls: that step must be the one
    # called, or the scheduler's own step warns that it came before any optimizer step
    import warnings

    learn = _learn()
    learn.create_opt()
    sched = torch.optim.lr_scheduler.LambdaLR(learn.opt, lambda i: 1.0)
    learn.fit_one_cycle(1, 0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched.step()
    assert not [w for w in caught if "before `optimizer.step()`" in str(w.message)]
    bare = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # negative control: never stepped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.optim.lr_scheduler.LambdaLR(bare, lambda i: 1.0).step()
    assert [w for w in caught if "before `optimizer.step()`" in str(w.message)]


def test_gradients_are_dropped_after_each_step_and_own_zero_grad_is_called():
    learn = _learn(opt="adamw")
    seen = []
    learn.fit_one_cycle(1, 0.01, callbacks=[_GradsAtBatchStart(seen)])
    assert seen == [True] * 4 and all(p.grad is None for p in learn.model.parameters())

    calls = []

    class Counting(torch.optim.AdamW):
        def zero_grad(self, set_to_none=True):
            calls.append(set_to_none)
            super().zero_grad(set_to_none)

    learn = _learn(opt=Counting)
    learn.fit_one_cycle(1, 0.01)
    assert calls == [True] * 4


def test_a_step_decorated_on_the_class_after_torch_hooked_it_is_called():
    """functools.wraps copies torch's ``hooked`` mark onto a decorator put on the class later: the
    loop must call that decorator (as ``opt.step()`` does), and run each hook once per step."""
    import functools

    class Decorated(torch.optim.AdamW):
        pass

    Decorated([nn.Parameter(torch.zeros(1))])  # torch wraps Decorated.step in its hook wrapper
    inner, calls = Decorated.step, []

    @functools.wraps(inner)
    def step(self, *args, **kwargs):
        calls.append(1)
        return inner(self, *args, **kwargs)

    Decorated.step = step
    learn, seen = _hooked_fit(Decorated)
    assert len(calls) == 4 and seen == ["global pre", "pre", "post", "global post"] * 4


def test_zero_grad_replaced_on_the_instance_is_called():
    learn = _learn(opt="adamw")
    learn.create_opt()
    opt, calls = learn.opt, []
    opt.zero_grad = lambda set_to_none=True: (calls.append(set_to_none), type(opt).zero_grad(opt, set_to_none))[1]
    learn.fit_one_cycle(1, 0.01)
    assert calls == [True] * 4


class _GradsAtBatchStart(oc.callbacks.Callback):
    def __init__(self, seen):
        self.seen = seen

    def before_batch(self, learn):
        self.seen.append(all(p.grad is None for p in learn.model.parameters()))


def test_profiler_sees_every_zero_grad():
    from torch.profiler import ProfilerActivity, profile

    learn = _learn(opt="adamw")
    learn.create_opt()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learn.fit_one_cycle(1, 0.01)
    names = [e.name for e in prof.events()]
    assert names.count(f"Optimizer.zero_grad#{type(learn.opt).__name__}.zero_grad") == 4
