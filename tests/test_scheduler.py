"""The Scheduler driving plain torch optimizers in a hand-written loop."""

import pytest
import torch

from onecycle import schedules as S
from onecycle.optim.groups import get_hyper, set_hyper, spread_lrs
from onecycle.optim.scheduler import Scheduler


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
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    sched = Scheduler(opt, 4, lr=S.lin(1.0, 0.0))
    assert opt.param_groups[0]["lr"] == 1.0
    for _ in range(3):  # accumulation: backward without a step does not advance
        p.grad = torch.ones(2)
    assert sched.step_count == 0
    for k in range(1, 7):
        opt.step()
        assert sched.step_count == k
        assert opt.param_groups[0]["lr"] == pytest.approx(max(1 - k / 4, 0.0))
    assert sched.pct == 1.0  # past the end: holds, never raises


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
    with pytest.warns(UserWarning, match="momentum is not scheduled"):
        sched = Scheduler(opt, 10, lr=S.const(1.0), momentum=S.const(0.9))
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
    s1.remove()
    opt2 = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    s2 = Scheduler(opt2, 10, lr=S.lin(1.0, 0.0))
    s2.load_state_dict(state)
    assert s2.step_count == 3 and opt2.param_groups[0]["lr"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="total_steps"):
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
    (lambda o: Scheduler(o, 0), "total_steps"),
    (lambda o: Scheduler(o, 2.5), "total_steps"),
    (lambda o: Scheduler("nope", 5), "optimizer"),
    (lambda o: Scheduler(o, 5, lr=3.0), "lr"),
    (lambda o: Scheduler(o, 5, momentum=lambda p: 1.0), "momentum schedule gives 1.0 at progress 0"),
    (lambda o: Scheduler(o, 5, momentum=lambda p: 0.9 if p < 0.5 else -0.1),
     "momentum schedule gives -0.1 at progress 0.5"),
])
def test_scheduler_bad_input(bad, arg):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises((ValueError, TypeError), match=arg):
        bad(opt)
