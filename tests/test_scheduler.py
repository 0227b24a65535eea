"""The Scheduler driving plain torch optimizers in a hand-written loop."""

import os
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle import schedules as S
from onecycle.compat import OneCycleLR, lr_find
from onecycle.optim import scheduler as sched_module
from onecycle.optim.groups import get_hyper, set_hyper, spread_lrs
from onecycle.optim.scheduler import Scheduler, check_momentum_schedule


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_hand_written_loop_matches_onecycle_lr():
    """A plain loop with our Scheduler trains exactly like the same loop with OneCycleLR."""
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    results = []
    for ours in (True, False):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        if ours:
            pol = S.torch_one_cycle(16)
            Scheduler(opt, 16, lr=pol.lr, momentum=pol.mom)
        else:
            ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=16)
        for i in range(16):
            xb, yb = x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4]
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            opt.zero_grad()
            if not ours:
                ref.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_counts_only_real_steps_and_holds_past_end():
    """Gradient accumulation (a step every 2 batches, real backward passes) and a step that torch's
    GradScaler skips on an inf gradient: only the steps that really happened advance the schedule,
    and past ``total_steps`` the LR holds at the schedule's end."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = Scheduler(opt, 4, lr=S.lin(1.0, 0.5))
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    x, y = torch.randn(12, 2, 3), torch.randn(12, 2, 1)
    x[5, 0, 0] = float("inf")  # batch 5 closes the third accumulation window: that step is skipped
    counts, lrs, skipped_ok = [], [], None
    for i in range(12):
        scaler.scale(torch.nn.functional.mse_loss(model(x[i]), y[i])).backward()
        if i % 2 == 1:
            before = [p.detach().clone() for p in model.parameters()]
            scaler.step(opt)
            scaler.update()
            changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
            if i == 5:
                skipped_ok = not any(changed) and scaler.get_scale() == 4.0  # skipped, scale backed off
            else:
                assert all(changed)  # a real step
            opt.zero_grad()
        else:
            assert model.weight.grad is not None  # a backward without a step
        counts.append(sched.step_count)
        lrs.append(opt.param_groups[0]["lr"])
    assert skipped_ok
    # hand-computed: steps after batches 1, 3, 7, 9, 11 (5 is skipped); lr = 1 - count/8, held at 0.5
    assert counts == [0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 5]
    assert lrs == [1.0, 0.875, 0.875, 0.75, 0.75, 0.75, 0.75, 0.625, 0.625, 0.5, 0.5, 0.5]
    assert sched.pct == 1.0


def _two_groups(lr0=0.1, lr1=0.02):
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [a], "lr": lr0, "weight_decay": 0.01},
                            {"params": [b], "lr": lr1, "weight_decay": 0.04}], lr=0.5, momentum=0.9)


def _trace(opt, steps):
    """(lr, weight_decay) of every group after construction and after each of ``steps`` steps."""
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    out = [[(g["lr"], g["weight_decay"]) for g in opt.param_groups]]
    for _ in range(steps):
        opt.step()
        out.append([(g["lr"], g["weight_decay"]) for g in opt.param_groups])
    return out


def test_created_twice_does_not_compound_and_matches_lambdalr():
    """A second Scheduler on the same optimizer (a notebook cell run again) reads the base LR the
    first kept in ``initial_lr``, as two torch LambdaLR in a row do: same LRs as one scheduler."""
    shape, wd_shape, total = S.lin(0.25, 1.0), S.lin(1.0, 0.5), 4

    def make(opt):
        return Scheduler(opt, total, lr=shape, weight_decay=wd_shape)

    once = _two_groups()
    make(once)
    twice = _two_groups()
    make(twice)
    # told which base it keeps: the first one's, not the start value the first one wrote (the weight
    # decay's start value is its base: nothing to tell)
    with pytest.warns(UserWarning, match=r"\(group 0: initial_lr=0.1, lr=0.025; group 1: initial_lr=0.02, lr=0.005\), "
                      r"set by hand or left by an earlier scheduler on this optimizer. As torch's schedulers do, the "
                      r"schedules multiply that base \(initial_lr\)") as caught:
        make(twice)
    assert len(caught) == 1
    assert [g["initial_lr"] for g in twice.param_groups] == [0.1, 0.02]
    assert [g["initial_weight_decay"] for g in twice.param_groups] == [0.01, 0.04]
    got_once, got_twice = _trace(once, 6), _trace(twice, 6)
    assert got_twice == got_once
    # torch's own answer: two LambdaLR in a row on one optimizer, stepped by the second
    ref = _two_groups()
    lam = lambda k: shape(min(k / total, 1.0))  # noqa: E731
    torch.optim.lr_scheduler.LambdaLR(ref, lam)
    second = torch.optim.lr_scheduler.LambdaLR(ref, lam)
    ref_lrs = [[g["lr"] for g in ref.param_groups]]
    for p in (q for g in ref.param_groups for q in g["params"]):
        p.grad = torch.ones_like(p)
    for _ in range(6):
        ref.step()
        second.step()
        ref_lrs.append([g["lr"] for g in ref.param_groups])
    assert [[lr for lr, _ in row] for row in got_twice] == ref_lrs
    # and by hand: base * (0.25 + 0.75 * min(k/4, 1)); weight decay base * (1 - 0.5 * min(k/4, 1))
    for k, row in enumerate(got_twice):
        q = min(k / 4, 1.0)
        flat = [v for pair in row for v in pair]
        assert flat == pytest.approx([0.1 * (0.25 + 0.75 * q), 0.01 * (1 - 0.5 * q),
                                      0.02 * (0.25 + 0.75 * q), 0.04 * (1 - 0.5 * q)])


def test_initial_lr_set_by_the_caller_is_the_base():
    """Whoever wants a new base (the Learner, each fit) sets ``lr`` and ``initial_lr`` before making
    one: no warning. ``initial_lr`` alone is the base too, and the warning says so."""
    opt = _two_groups()
    Scheduler(opt, 4, lr=S.const(0.5)).remove()
    for g, peak in zip(opt.param_groups, (0.3, 0.06)):
        g["lr"] = g["initial_lr"] = peak
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scheduler(opt, 4, lr=S.const(0.5)).remove()
    assert [g["lr"] for g in opt.param_groups] == [0.15, 0.03]
    for g, peak in zip(opt.param_groups, (0.2, 0.04)):
        g["initial_lr"] = peak
    with pytest.warns(UserWarning, match=r"\(group 0: initial_lr=0.2, lr=0.15; group 1: initial_lr=0.04, lr=0.03\)"):
        Scheduler(opt, 4, lr=S.const(0.5))
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.02]


def test_momentum_of_adam_family_and_three_betas():
    class ThreeBetas(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1, "betas": (0.9, 0.99, 0.999)})

        def step(self, closure=None):
            return None

    for opt in (torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]),
                torch.optim.NAdam([torch.nn.Parameter(torch.zeros(1))]),
                torch.optim.RAdam([torch.nn.Parameter(torch.zeros(1))]),
                ThreeBetas([torch.nn.Parameter(torch.zeros(1))])):
        n_betas = len(opt.param_groups[0]["betas"])
        sched = Scheduler(opt, 10, lr=S.const(1.0), momentum=S.lin(0.95, 0.85))
        assert opt.param_groups[0]["betas"][0] == pytest.approx(0.95)
        opt.step()
        assert opt.param_groups[0]["betas"][0] == pytest.approx(0.94)
        assert len(opt.param_groups[0]["betas"]) == n_betas
        sched.remove()


def test_warns_once_without_momentum():
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.warns(UserWarning, match=r"^Adagrad has neither 'momentum' nor 'betas': momentum is not scheduled$") \
            as caught:
        sched = Scheduler(opt, 10, lr=S.const(1.0), momentum=S.const(0.9))
    # attributed to the caller, not to the scheduler module (not compared with __file__: mutmut's
    # trampoline adds a frame between the two)
    assert len(caught) == 1 and caught[0].filename != sched_module.__file__
    assert "momentum" not in sched.scheds


def test_discriminative_lr_and_other_keys():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 0.01, "weight_decay": 0.1},
                             {"params": [b], "lr": 0.1, "weight_decay": 0.2}])
    Scheduler(opt, 2, lr=S.lin(1.0, 0.5), weight_decay=S.lin(1.0, 0.0), eps=S.const(1e-6))
    for a_ in (a, b):
        a_.grad = torch.zeros(1)
    opt.step()
    g0, g1 = opt.param_groups
    assert (g0["lr"], g1["lr"]) == pytest.approx((0.0075, 0.075))
    assert (g0["weight_decay"], g1["weight_decay"]) == pytest.approx((0.05, 0.1))
    assert g0["eps"] == 1e-6


def test_state_dict_round_trip():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    s1 = Scheduler(opt, 10, lr=S.lin(1.0, 0.0))
    p.grad = torch.zeros(1)
    for _ in range(3):
        opt.step()
    state = s1.state_dict()
    assert state == {"step_count": 3, "total_steps": 10, "base": {"lr": [1.0]},
                     "scheds": {"lr": "Lin(start=1.0, end=0.0)"}}
    s1.remove()
    opt2 = torch.optim.SGD([p], lr=0.3, momentum=0.9)  # another base before the load
    s2 = Scheduler(opt2, 10, lr=S.lin(1.0, 0.0))
    assert opt2.param_groups[0]["initial_lr"] == 0.3
    s2.load_state_dict(state)
    assert s2.step_count == 3 and opt2.param_groups[0]["lr"] == pytest.approx(0.7)
    assert opt2.param_groups[0]["initial_lr"] == 1.0  # the group's copy of the base agrees with the load
    opt2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.6)
    with pytest.warns(UserWarning, match=r"initial_lr=1, lr=0.6"), pytest.raises(ValueError, match="total_steps"):
        Scheduler(opt2, 11, lr=S.lin(1.0, 0.0)).load_state_dict(state)


def test_hyper_helpers_and_spread():
    g = {"betas": (0.9, 0.99), "lr": 0.1}
    set_hyper(g, "momentum", 0.8)
    assert get_hyper(g, "momentum") == 0.8 and g["betas"] == (0.8, 0.99)
    assert spread_lrs(slice(1e-3, 1e-1), 3) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert spread_lrs(slice(1e-1), 3) == pytest.approx([1e-2, 1e-2, 1e-1])
    with pytest.raises(ValueError, match="slice"):
        spread_lrs(slice(1e-3, 1e-1), 1)


@pytest.mark.parametrize("bad,arg", [
    (lambda o: Scheduler(o, 0), "total_steps must be an int >= 1, got 0"),
    (lambda o: Scheduler(o, 2.5), "total_steps must be an int >= 1, got 2.5"),
    (lambda o: Scheduler(o, True), "total_steps must be an int >= 1, got True"),
    (lambda o: Scheduler(o, 5, lr=S.const(1.0), rebase=1), "rebase must be a bool, got 1"),
    (lambda o: Scheduler("nope", 5), "optimizer must be a torch.optim.Optimizer, got str"),
    (lambda o: Scheduler(o, 5, lr=3.0), "lr"),
    (lambda o: Scheduler(o, 5, momentum=lambda p: 1.0),
     r"momentum schedule gives 1.0 at progress 0: momentum \(or beta1\) must be a number in \[0, 1\)$"),
    (lambda o: Scheduler(o, 5, momentum=lambda p: 0.9 if p < 0.5 else -0.1),
     "momentum schedule gives -0.1 at progress 0.5"),
    (lambda o: Scheduler(o, 5, momentum=lambda p: False), "momentum schedule gives False at progress 0"),
    (lambda o: Scheduler(o, 5, momentum=lambda p: "0.9"), "momentum schedule gives '0.9' at progress 0"),
    (lambda o: Scheduler(o, 5, decoupled_wd=S.const(1.0)), "param group has no 'decoupled_wd' to schedule"),
    # an absolute key the optimizer lacks would be written and never read: refused, naming both
    (lambda o: Scheduler(o, 5, beta3=S.const(0.5)),
     r"^SGD: param group has no 'beta3' to schedule \(group 0 has dampening, .*momentum, .*weight_decay\)$"),
])
def test_scheduler_bad_input(bad, arg):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises((ValueError, TypeError), match=arg):
        bad(opt)


def test_momentum_check_reads_21_evenly_spaced_points_and_accepts_zero():
    seen = []
    check_momentum_schedule(lambda p: seen.append(p) or 0.0)  # 0 is a valid momentum
    assert seen == [i / 20 for i in range(21)]
    seen.clear()
    check_momentum_schedule(lambda p: seen.append(p) or 0.5, points=5)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    Scheduler(opt, 5, momentum=S.const(0.0))
    assert opt.param_groups[0]["momentum"] == 0.0


def test_a_single_step_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4)
    sched = Scheduler(opt, 1, lr=S.lin(1.0, 0.25))
    assert opt.param_groups[0]["lr"] == 0.4
    p.grad = torch.ones(1)
    opt.step()
    assert sched.pct == 1.0 and opt.param_groups[0]["lr"] == 0.1


# ---- a base left in the groups by an earlier scheduler: kept (torch's rule), and said ---------------
def _train_torch_style(opt, sched, steps):
    for _ in range(steps):
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad = torch.ones_like(p)
        opt.step()
        sched.step()


@pytest.mark.parametrize("make_first", ["torch", "compat"])
def test_after_a_onecyclelr_it_warns_and_says_how_to_peak_at_max_lr(make_first):
    """Made after a OneCycleLR ran on the same optimizer (a notebook: the torch cell, then ours),
    the Scheduler keeps the ``initial_lr = max_lr / 25`` that one left; the warning names both values
    and max_lr, points at the caller's line, and following its advice gives torch's own trajectory."""
    first = {"torch": torch.optim.lr_scheduler.OneCycleLR, "compat": OneCycleLR}[make_first]
    opt = _two_groups()
    _train_torch_style(opt, first(opt, max_lr=[0.1, 0.02], total_steps=8), 8)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1 / 25, 0.02 / 25]
    last = [g["lr"] for g in opt.param_groups]
    policy = S.torch_one_cycle(8)
    with pytest.warns(UserWarning) as caught:
        sched = Scheduler(opt, 8, lr=policy.lr, momentum=policy.mom)
    assert len(caught) == 1
    msg = str(caught[0].message)
    # the fix first: the max_lr that OneCycleLR left, and what the schedule would peak at
    assert msg.startswith("Scheduler: group 0 holds max_lr=0.1 from torch's OneCycleLR or CyclicLR, which set "
                          "initial_lr = max_lr / div_factor (0.004), so the LR schedule would peak at 0.004: to peak "
                          "at max_lr, set group['lr'] = group['initial_lr'] = group['max_lr']. The param groups "
                          "already hold a base that differs from their current value "
                          f"(group 0: initial_lr=0.004, lr={last[0]:.6g}; "
                          f"group 1: initial_lr=0.0008, lr={last[1]:.6g})")
    assert msg.endswith("(as the Learner does).")
    # the warning is the caller's: not inside the package (mutmut's trampoline frame is not the test file)
    package = os.path.dirname(os.path.dirname(os.path.abspath(sched_module.__file__))) + os.sep
    assert not os.path.abspath(caught[0].filename).startswith(package)
    assert sched.base == {"lr": [0.004, 0.0008]}  # the kept base: the peak is max_lr / 25
    sched.remove()
    # the advice, silently, gives torch's own run step for step
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] = g["max_lr"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scheduler(opt, 8, lr=policy.lr, momentum=policy.mom)
    twin = _two_groups()
    ref = torch.optim.lr_scheduler.OneCycleLR(twin, max_lr=[0.1, 0.02], total_steps=8)
    for step in range(8):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in twin.param_groups], rel=1e-12)
        assert [g["momentum"] for g in opt.param_groups] == pytest.approx([g["momentum"] for g in twin.param_groups])
        for o in (opt, twin):
            for g in o.param_groups:
                g["params"][0].grad = torch.ones(2)
            o.step()
        if step < 7:
            ref.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 25 / 1e4)  # the schedule's end: min_lr


def test_rebase_takes_the_current_values_without_a_warning():
    opt = _two_groups()
    Scheduler(opt, 4, lr=S.const(0.5)).remove()  # leaves initial_lr 0.1/0.02, lr 0.05/0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = Scheduler(opt, 4, lr=S.const(0.5), rebase=True)
    assert sched.base == {"lr": [0.05, 0.01]} and [g["initial_lr"] for g in opt.param_groups] == [0.05, 0.01]
    assert [g["lr"] for g in opt.param_groups] == [0.025, 0.005]


def test_a_missing_key_changes_no_group():
    opt = _two_groups()
    with pytest.raises(ValueError, match="param group has no 'decoupled_wd' to schedule"):
        Scheduler(opt, 4, lr=S.const(0.5), decoupled_wd=S.const(1.0))
    assert all("initial_lr" not in g for g in opt.param_groups) and [g["lr"] for g in opt.param_groups] == [0.1, 0.02]
    adam = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="^AdamW: param group has no 'beta2' to schedule"):
        Scheduler(adam, 4, lr=S.const(0.5), beta2=S.const(0.99))
    assert adam.param_groups[0]["lr"] == 0.1 and "beta2" not in adam.param_groups[0]
    Scheduler(adam, 4, lr=S.const(0.5), eps=S.const(1e-6))  # a key it has: scheduled (negative control)
    assert adam.param_groups[0]["eps"] == 1e-6


def test_the_learner_never_warns_about_a_kept_base():
    """The Learner sets ``lr`` and ``initial_lr`` itself before each Scheduler: fits in a row, the
    finder, the stand-alone finder on an optimizer a torch OneCycleLR drove, raise no such warning."""
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)),
                    batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learn = oc.Learner(_model(), dl, dl, torch.nn.functional.cross_entropy, quiet=True, device="cpu")
        learn.fit_one_cycle(1, 0.1)
        learn.fit_one_cycle(2, 0.05)
        learn.lr_find(num_it=5, with_valid=False)
        learn.fit_one_cycle(1, 0.05)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        _train_torch_style(opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4), 4)
        lr_find(model, opt, torch.nn.functional.cross_entropy, dl, num_it=5)
    assert [str(w.message) for w in caught if "already hold a base" in str(w.message)] == []
    assert learn.recorder.lrs  # it trained


def test_a_schedule_may_give_one_value_per_group():
    """A schedule returning a list sets each group from its own entry (times its base, for the LR)."""
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 0.1}, {"params": [p2], "lr": 1.0}], lr=0.1, momentum=0.9)
    Scheduler(opt, 4, lr=lambda pct: [1 - pct, 1 + pct], momentum=lambda pct: 0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    for _ in range(2):
        opt.step()
    assert [g["lr"] for g in opt.param_groups] == [0.1 * 0.5, 1.0 * 1.5]


# ---- a fit's schedules and its Scheduler (check_fit_schedules, fit_scheduler) ----------------------
_WANT = r"must be a schedule \(a function of progress in \[0, 1\]\)"


def test_check_fit_schedules_names_the_schedule_that_is_no_function():
    from onecycle.optim.scheduler import check_fit_schedules
    check_fit_schedules(S.const(1.0))  # momentum and weight decay may be left out
    check_fit_schedules(S.const(1.0), None, None, {"eps": S.const(1.0)})
    for kw, message in [(dict(lr_sched=None), rf"^lr_sched {_WANT}, got None$"),
                        (dict(mom_sched=3), rf"^mom_sched {_WANT} or None, got 3$"),
                        (dict(wd_sched="x"), rf"^wd_sched {_WANT} or None, got 'x'$"),
                        (dict(extra_scheds={"eps": None}), rf"^extra_scheds\['eps'\] {_WANT}, got None$")]:
        with pytest.raises(TypeError, match=message):
            check_fit_schedules(**{"lr_sched": S.const(1.0), **kw})
    with pytest.raises(ValueError, match=r"^momentum schedule gives 1.5 at progress 0: "):
        check_fit_schedules(S.const(1.0), lambda p: 1.5)


def test_fit_scheduler_starts_from_the_peaks_and_bases_given_and_refuses_a_key_before_writing():
    from onecycle.optim.scheduler import fit_scheduler
    opt = _two_groups()
    for g in opt.param_groups:  # what an earlier fit left: moved values and their bases
        g["initial_weight_decay"], g["weight_decay"] = 0.5, 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the values given are the bases: nothing kept to warn about
        sched = fit_scheduler(opt, 10, [0.1, 0.2], {"weight_decay": [0.01, 0.02]},
                              {"lr": S.const(0.5), "weight_decay": S.const(2.0), "betas": None})
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.1]
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.2]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.02, 0.04]
    assert [g["initial_weight_decay"] for g in opt.param_groups] == [0.01, 0.02]
    sched.remove()
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"^SGD: param group has no 'eps' to schedule"):
        fit_scheduler(opt, 10, [9.0, 9.0], {"weight_decay": [9.0, 9.0]}, {"lr": S.const(1.0), "eps": S.const(1.0)})
    with pytest.raises(ValueError, match=r"^SGD: param group has no 'eps' to schedule"):
        fit_scheduler(opt, 10, [9.0, 9.0], {"eps": [1.0, 1.0]}, {"lr": S.const(1.0)})
    assert [dict(g) for g in opt.param_groups] == before  # refused before anything was written


def test_fit_scheduler_restarts_a_relative_key_from_its_base_without_a_warning():
    """A weight decay scheduled without a base given, that an earlier fit moved (initial_weight_decay
    0.01, now 0.003): this fit multiplies the base, and says nothing (it is no hand-set value)."""
    from onecycle.optim.scheduler import fit_scheduler
    opt = _two_groups()
    for g in opt.param_groups:
        g["initial_weight_decay"], g["weight_decay"] = 0.01, 0.003
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_scheduler(opt, 10, [0.1, 0.2], {}, {"lr": S.const(1.0), "weight_decay": S.const(0.5)})
    assert [g["weight_decay"] for g in opt.param_groups] == [0.005, 0.005]
    assert [g["initial_weight_decay"] for g in opt.param_groups] == [0.01, 0.01]


@pytest.mark.parametrize("n", [4, 5])
def test_the_kept_base_warning_shows_four_pairs_and_values_that_look_different(n):
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(n)], lr=0.1)
    for g in opt.param_groups:
        g["initial_lr"] = 0.1000001  # 0.1 at 6 digits, as lr is: shown in full
    with pytest.warns(UserWarning) as caught:
        Scheduler(opt, 10, lr=S.const(1.0))
    text = str(caught[0].message)
    shown = "; ".join(f"group {i}: initial_lr=0.1000001, lr=0.1" for i in range(4))
    assert f"({shown}{'; ...' if n > 4 else ''}), set by hand" in text and "group 4" not in text
    assert "(initial_lr)" in text
    assert text.endswith("set group['lr'] = group['initial_lr'] = base first (as the Learner does).")


def test_the_kept_base_warning_names_each_key_once_and_the_first_one_in_its_advice():
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(2)], lr=0.1,
                          weight_decay=0.01)
    for g in opt.param_groups:
        g["initial_lr"], g["initial_weight_decay"] = 0.2, 0.02
    with pytest.warns(UserWarning) as caught:
        Scheduler(opt, 10, lr=S.const(1.0), weight_decay=S.const(1.0))
    text = str(caught[0].message)
    assert ("(group 0: initial_lr=0.2, lr=0.1; group 1: initial_lr=0.2, lr=0.1; group 0: initial_weight_decay=0.02, "
            "weight_decay=0.01; group 1: initial_weight_decay=0.02, weight_decay=0.01), set by hand") in text
    assert "schedules multiply that base (initial_lr and initial_weight_decay)." in text
    assert text.endswith("set group['lr'] = group['initial_lr'] = base first (as the Learner does).")


def test_a_copied_scheduler_detaches_from_its_copied_optimizer():
    """A deep copy (or an unpickled one) holds an optimizer no Scheduler registered: remove() still
    detaches it, and leaves the original attached."""
    import copy
    import pickle
    opt = _two_groups()
    sched = Scheduler(opt, 4, lr=S.lin(1.0, 0.0))
    for other in (copy.deepcopy(sched), pickle.loads(pickle.dumps(sched))):
        assert other.optimizer is not opt
        other.remove()
    p = next(q for g in opt.param_groups for q in g["params"])
    p.grad = torch.ones_like(p)
    opt.step()
    assert sched.step_count == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.75)


def test_every_key_is_checked_after_momentum_and_the_message_lists_the_groups_keys_only():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"^SGD: param group has no 'beta3' to schedule \(group 0 has ") as err:
        Scheduler(opt, 5, momentum=S.const(0.5), beta3=S.const(0.5))
    assert "params" not in str(err.value) and "lr, " in str(err.value)
    assert opt.param_groups[0]["momentum"] == 0.9 and "beta3" not in opt.param_groups[0]  # nothing written


def test_a_relative_key_holding_none_is_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    opt.param_groups[0]["weight_decay"] = None
    with pytest.raises(ValueError, match=r"^param group has no 'weight_decay' to schedule$"):
        Scheduler(opt, 5, weight_decay=S.const(1.0))
