"""``onecycle.compat.OneCycleLR``: torch's OneCycleLR as a drop-in.

Three kinds of check: PyTorch's own OneCycleLR tests (``test/optim/test_lrscheduler.py``), written
again here from reading them (the same scenarios, values and expectations; their names are in the
docstrings); every run cross-checked against ``torch.optim.lr_scheduler.OneCycleLR`` on a twin
optimizer, bit for bit; and what ours adds or refuses (``hold``, argument checks).
"""

import copy
import gc
import io
import math
import pickle
import textwrap
import warnings
import weakref

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import EPOCH_DEPRECATION_WARNING, LRScheduler
from torch.optim.lr_scheduler import OneCycleLR as TorchOneCycleLR

from _readme import snippet
from onecycle.compat import OneCycleLR


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))


def _sgd(net=None):
    """torch's fixture: SGD, two param groups, the second with a tensor LR (lr 0.05, momentum 0)."""
    net = net or _net()
    return torch.optim.SGD([{"params": net[0].parameters()},
                            {"params": net[1].parameters(), "lr": torch.tensor(0.5)}], lr=0.05)


def _adam(net=None):
    net = net or _net()
    return torch.optim.Adam([{"params": net[0].parameters()}, {"params": net[1].parameters(), "lr": 0.5}], lr=0.05)


def _plain(v):
    """A value as (type, float): equal only when torch's and ours agree in type and to the last bit."""
    return None if v is None else (type(v).__name__, float(v))


def _hypers(opt):
    return [(_plain(g["lr"]), _plain(g["betas"][0] if "betas" in g else g.get("momentum"))) for g in opt.param_groups]


def _trace(opt, sched, steps):
    """(lr, momentum) of every group, then ``opt.step(); sched.step()``, ``steps`` times; then once more."""
    rows = []
    for _ in range(steps):
        rows.append(_hypers(opt))
        opt.step()
        sched.step()
    return rows + [_hypers(opt)]


def _groups(opt):
    """The param groups without their params: every key a scheduler wrote."""
    return [{k: _plain(v) if isinstance(v, (float, torch.Tensor)) else v for k, v in g.items() if k != "params"}
            for g in opt.param_groups]


def _twins(make_opt, steps, **kw):
    """The same run under torch's OneCycleLR and ours, each on a fresh optimizer: (traces, groups)."""
    out = []
    for cls in (TorchOneCycleLR, OneCycleLR):
        opt = make_opt()
        out.append((_trace(opt, cls(opt, **kw), steps), _groups(opt)))
    return out


def _check_targets(rows, lr_targets, mom_targets):
    for step, row in enumerate(rows[:len(lr_targets[0])]):
        for (lr, mom), lr_t, mom_t in zip(row, lr_targets, mom_targets):
            assert lr[1] == pytest.approx(lr_t[step], abs=1e-5), (step, lr, lr_t[step])
            assert mom[1] == pytest.approx(mom_t[step], abs=1e-5), (step, mom, mom_t[step])


def _cos(start, end, pct):
    """torch's test writes the cosine out by hand: from ``start`` to ``end`` as ``pct`` goes 0 to 1."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


# ---- PyTorch's OneCycleLR tests, ported ---------------------------------------------------------------
LINEAR_LR = [1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5]  # max 25, div 25, final div 2 (min 0.5), 3 up, 7 down
LINEAR_MOM = [22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22]      # momentum 22 -> 1 -> 22: torch's tests use 1 and 22


def test_linear_annealing():
    """torch: test_onecycle_lr_linear_annealing. Both groups (one with a tensor LR) follow the same
    targets: ``max_lr`` is one number for all, so the groups' own LRs do not matter."""
    kw = dict(max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10,
              anneal_strategy="linear")
    (theirs, g_theirs), (ours, g_ours) = _twins(_sgd, 10, **kw)
    _check_targets(ours, [LINEAR_LR] * 2, [LINEAR_MOM] * 2)
    assert ours == theirs and g_ours == g_theirs


def test_linear_annealing_three_phases():
    """torch: test_onecycle_lr_linear_annealing_three_phases. Up 4 steps, down 3 to the start, then
    the start LR / 4 over the last 3; momentum mirrors the first two phases and holds at 22."""
    lr = [1, 9, 17, 25, 17, 9, 1, 0.75, 0.5, 0.25]
    mom = [22, 15, 8, 1, 8, 15, 22, 22, 22, 22]
    kw = dict(max_lr=25, div_factor=25, base_momentum=1, max_momentum=22, total_steps=10, anneal_strategy="linear",
              pct_start=0.4, final_div_factor=4, three_phase=True)
    (theirs, g_theirs), (ours, g_ours) = _twins(_sgd, 10, **kw)
    _check_targets(ours, [lr] * 2, [mom] * 2)
    assert ours == theirs and g_ours == g_theirs


COS_LR = [1, 13, 25] + [_cos(25, 0.5, k / 7) for k in range(1, 7)] + [0.5]
COS_MOM = [22, 11.5, 1] + [_cos(1, 22, k / 7) for k in range(1, 7)] + [22]


def test_cosine_annealing():
    """torch: test_onecycle_lr_cosine_annealing."""
    kw = dict(max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10)
    (theirs, g_theirs), (ours, g_ours) = _twins(_sgd, 10, **kw)
    _check_targets(ours, [COS_LR] * 2, [COS_MOM] * 2)
    assert ours == theirs and g_ours == g_theirs


def test_adam_cycles_beta1():
    """torch: test_cycle_lr_with_adam (a OneCycleLR test despite its name): beta1 takes the momentum
    targets; beta2 is left alone."""
    kw = dict(max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10,
              anneal_strategy="linear")
    (theirs, g_theirs), (ours, g_ours) = _twins(_adam, 10, **kw)
    _check_targets(ours, [LINEAR_LR] * 2, [LINEAR_MOM] * 2)
    assert ours == theirs and g_ours == g_theirs
    assert [g["betas"][1] for g in g_ours] == [0.999, 0.999]


def test_legacy_torch_state_dict_loads():
    """torch: test_onecycle_lr_legacy_state_dict: a state dict from an older torch (an ``anneal_func``
    function, no ``_anneal_func_type``) loads, and the cosine targets follow. Here the state comes
    from torch's own scheduler and goes into ours."""
    opt_t = _sgd()
    kw = dict(max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10, anneal_strategy="cos")
    state = TorchOneCycleLR(opt_t, **kw).state_dict()
    state.pop("_anneal_func_type")
    state["anneal_func"] = _cos  # old torch saved its anneal function itself
    opt = _sgd()
    ours = OneCycleLR(opt, **kw)
    ours.load_state_dict(state)
    _check_targets(_trace(opt, ours, 10), [COS_LR] * 2, [COS_MOM] * 2)


@pytest.mark.parametrize("kw,torch_error", [
    (dict(total_steps=10, anneal_strategy="CATS"), ValueError),  # torch: test_onecycle_lr_invalid_anneal_strategy
    (dict(total_steps=10, pct_start=1.1), ValueError),          # torch: test_onecycle_lr_invalid_pct_start
    (dict(), ValueError),                                        # torch: test_onecycle_lr_cannot_calculate_total_steps
])
def test_invalid_arguments_from_torchs_suite(kw, torch_error):
    opt = _sgd()
    with pytest.raises(torch_error):
        TorchOneCycleLR(opt, max_lr=1e-3, **kw)
    with pytest.raises(torch_error):
        OneCycleLR(_sgd(), max_lr=1e-3, **kw)


@pytest.mark.parametrize("weights_only", [True, False])
def test_state_dict_survives_torch_save_and_load(weights_only):
    """torch: test_lr_scheduler_state_dict_load[OneCycleLR (max_lr 0.01, 10 steps, linear)]: the state
    dict round-trips through torch.save/torch.load (weights_only too: plain types only) and loads
    into a new scheduler, whose own state dict is then the same."""
    opt = _sgd()
    make = lambda: OneCycleLR(opt, max_lr=0.01, total_steps=10, anneal_strategy="linear")  # noqa: E731
    state = make().state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=weights_only)
    assert loaded == state
    again = make()
    again.load_state_dict(loaded)
    assert again.state_dict() == state
    pickle.dumps(state)


def test_tensor_arguments_are_copied():
    """torch: test_constant_initial_params_onecyclelr: 0-d tensors for max_lr and the momenta; the
    caller changing them in place afterwards does not move the keys in the group, nor do steps
    (here the deprecated ``step(epoch)``, as that test steps)."""
    lr, base, top = torch.as_tensor(0.1), torch.as_tensor(0.85), torch.as_tensor(0.95)
    opt = torch.optim.SGD([nn.Parameter(torch.randn(1))], lr=lr)
    sched = OneCycleLR(opt, max_lr=lr, total_steps=10, base_momentum=base, max_momentum=top)
    before = copy.deepcopy(opt.param_groups)
    for i in range(2):
        lr.mul_(0.5)
        base.mul_(0.5)
        top.mul_(0.5)
        opt.step()
        with pytest.warns(UserWarning) as caught:
            sched.step(i)
        assert [str(w.message) for w in caught] == [EPOCH_DEPRECATION_WARNING]
        for g, g0 in zip(opt.param_groups, before):
            for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
                assert torch.equal(g[key], g0[key]), key
            assert float(g["max_momentum"]) == pytest.approx(0.95) and float(g["base_momentum"]) == pytest.approx(0.85)
    assert float(opt.param_groups[0]["initial_lr"]) == pytest.approx(0.1 / 25)


def test_resume_from_optimizer_state_with_last_epoch():
    """torch: test_lr_scheduler_checkpoint[OneCycleLR (max_lr 0.01, 10 steps)]: AdamW, one step; a
    second optimizer loads the first's state and a scheduler made with ``last_epoch=0`` has the LR
    the first one reached."""
    model = nn.Linear(3, 3)
    opt = torch.optim.AdamW(model.parameters())
    sched = OneCycleLR(opt, max_lr=0.01, total_steps=10)
    opt.step()
    sched.step()
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(opt.state_dict())
    sched2 = OneCycleLR(opt2, max_lr=0.01, total_steps=10, last_epoch=0)
    assert sched2.get_last_lr()[0] == opt.param_groups[0]["lr"]
    assert opt2.param_groups[0]["betas"] == opt.param_groups[0]["betas"]
    # and by hand: step 1 of 10, phase 1 is steps 0..2 (pct_start 0.3): halfway up the cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(_cos(0.01 / 25, 0.01, 0.5), rel=1e-12)


def test_state_dict_loads_into_a_scheduler_made_otherwise():
    """torch's _check_scheduler_state_dict (run there on StepLR, CosineAnnealingLR, ...), on OneCycleLR:
    10 steps, then a scheduler made with other arguments loads the state: every attribute equal,
    the same last LR."""
    opt = _sgd()
    first = OneCycleLR(opt, max_lr=0.1, total_steps=40, pct_start=0.25)
    for _ in range(10):
        opt.step()
        first.step()
    copy_ = OneCycleLR(_sgd(), max_lr=[0.3, 0.6], total_steps=12, anneal_strategy="linear", three_phase=True,
                       hold=True)
    copy_.load_state_dict(first.state_dict())
    for key, value in vars(first).items():
        if key != "optimizer":
            assert vars(copy_)[key] == value, key
    assert copy_.get_last_lr() == first.get_last_lr()


def test_continue_with_last_epoch_zero():
    """torch's test_cos_anneal_lr_continue, on OneCycleLR: one step, then a new scheduler with
    ``last_epoch=0`` on the same optimizer gives the same LRs."""
    opt = _sgd()
    sched = OneCycleLR(opt, max_lr=[0.1, 0.5], total_steps=10)
    opt.step()
    sched.step()
    again = OneCycleLR(opt, max_lr=[0.1, 0.5], total_steps=10, last_epoch=0)
    assert [float(v) for v in again.get_last_lr()] == [float(v) for v in sched.get_last_lr()]


def test_last_epoch_without_initial_lr_is_torchs_key_error():
    """torch: test_raise_error_when_last_epoch_is_greater_than_0_and_initial_lr_is_not_specified."""
    opt = torch.optim.SGD([nn.Parameter(torch.randn(2, 2))], 0.1)
    match = r"param 'initial_lr' is not specified in param_groups\[0\] when resuming scheduler with last_epoch >= 0"
    with pytest.raises(KeyError, match=match):
        OneCycleLR(opt, max_lr=0.1, total_steps=10, last_epoch=1)
    assert "initial_lr" not in opt.param_groups[0]


def test_no_warning_in_the_right_order_and_torchs_warning_in_the_old_one():
    """torch: test_new_pattern_no_warning / test_old_pattern_warning (run there on StepLR): being a
    real LRScheduler, ours says nothing when ``optimizer.step()`` comes first, and gives torch's
    warning when ``scheduler.step()`` does."""
    opt = _sgd()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched = OneCycleLR(opt, max_lr=0.1, total_steps=40)
        for _ in range(35):
            opt.step()
            sched.step()
    assert caught == []
    opt = _sgd()
    sched = OneCycleLR(opt, max_lr=0.1, total_steps=40)
    with pytest.warns(UserWarning, match="how-to-adjust-learning-rate"):
        for _ in range(35):
            sched.step()
            opt.step()
    assert isinstance(sched, LRScheduler)


def test_the_same_epoch_gives_the_same_lr():
    """torch's _test_lr_is_constant_for_constant_epoch (run there on StepLR and others), on
    OneCycleLR: ``step(2)`` ten times, the deprecation warning each time, one LR."""
    opt = _sgd()
    sched = OneCycleLR(opt, max_lr=25, total_steps=10, final_div_factor=2)
    lrs = []
    for _ in range(10):
        opt.step()
        with pytest.warns(UserWarning) as caught:
            sched.step(2)
        assert [str(w.message) for w in caught] == [EPOCH_DEPRECATION_WARNING]
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [25.0] * 10  # step 2 is the peak (pct_start 0.3 of 10 steps: the rise ends at step 2)


def test_freed_without_the_garbage_collector():
    """torch: test_no_cyclic_references_in_step / test_cycle_lr_removed_after_out_of_scope: no
    reference cycle, so the scheduler goes as soon as its last reference does."""
    def run():
        param = torch.empty(10, requires_grad=True)
        opt = torch.optim.SGD([param], lr=0.5, momentum=0.9)
        sched = OneCycleLR(opt, max_lr=0.5, total_steps=10)
        param.sum().backward()
        opt.step()
        sched.step()
        return weakref.ref(sched)

    gc.disable()
    try:
        assert run()() is None
    finally:
        gc.enable()


def test_momentum_needs_momentum_or_betas():
    """torch: test_cycle_lr_cycle_momentum_fail_with_momentumless_optimizer (CyclicLR there; the same
    check in OneCycleLR): Rprop has neither; Adam has betas; without cycling, Adam's betas stay."""
    net = _net()
    for cls in (TorchOneCycleLR, OneCycleLR):
        opt = torch.optim.Rprop(net.parameters())
        with pytest.raises(ValueError, match="optimizer must support momentum or beta1 with `cycle_momentum` "
                                             "option enabled"):
            cls(opt, max_lr=1.0, total_steps=10)
        # torch's has written the LR keys before it checks; ours checks first
        assert ("max_lr" in opt.param_groups[0]) == (cls is TorchOneCycleLR)
    OneCycleLR(torch.optim.Adam(net.parameters()), max_lr=5, total_steps=10)  # torch: ..._with_beta1_optimizer
    (theirs, _), (ours, _) = _twins(_adam, 10, max_lr=5, total_steps=10, cycle_momentum=False)
    assert ours == theirs and {mom for row in ours for _, mom in row} == {("float", 0.9)}


def test_get_last_lr_is_each_steps_lr():
    """torch's _test_get_last_lr (run there on StepLR and others), on OneCycleLR: ``get_last_lr()``
    before each step is the targets' value, a copy that does not alias the group's tensor LR."""
    opt = _sgd()
    sched = OneCycleLR(opt, max_lr=[25, 50], total_steps=10, final_div_factor=2, anneal_strategy="linear")
    for step in range(10):
        last = sched.get_last_lr()
        assert [float(v) for v in last] == pytest.approx([LINEAR_LR[step], 2 * LINEAR_LR[step]])
        assert last[1] is not opt.param_groups[1]["lr"]
        opt.step()
        sched.step()


# ---- cross-checks against torch's OneCycleLR beyond its suite ------------------------------------------
@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("make_opt", [_sgd, _adam])
@pytest.mark.parametrize("total,pct_start", [(37, 0.3), (7, 0.25), (2, 0.3), (1, 0.3), (10, 0.0), (20, 0.5)])
def test_bit_for_bit_with_torch(anneal, three_phase, make_opt, total, pct_start):
    """LR and momentum of every group at every step (the last ``step()`` of a full run included), and
    every key left in the groups: the same types and the same bits as torch's."""
    kw = dict(max_lr=[0.1, 0.03], total_steps=total, pct_start=pct_start, anneal_strategy=anneal,
              three_phase=three_phase, base_momentum=[0.8, 1], max_momentum=[0.9, 22], div_factor=10.0,
              final_div_factor=100.0)
    (theirs, g_theirs), (ours, g_ours) = _twins(make_opt, total, **kw)
    assert ours == theirs and g_ours == g_theirs


def test_the_cross_check_sees_a_small_difference():
    """Negative control for the bit-for-bit comparisons: pct_start 0.3 against 0.31 differs."""
    (theirs, _), _ = _twins(_sgd, 37, max_lr=0.1, total_steps=37)
    ours = _trace(opt := _sgd(), OneCycleLR(opt, max_lr=0.1, total_steps=37, pct_start=0.31), 37)
    assert ours != theirs
    assert sum(a != b for a, b in zip(ours, theirs)) >= 30


def test_tensor_max_lr_and_momenta_as_torch():
    """0-d tensors (float32 and float64) give tensor values, computed as torch computes them."""
    kw = dict(max_lr=torch.tensor(0.2), base_momentum=torch.tensor(0.8, dtype=torch.float64),
              max_momentum=[torch.tensor(0.9), 0.95], total_steps=12)
    (theirs, g_theirs), (ours, g_ours) = _twins(_sgd, 12, **kw)
    assert ours == theirs and g_ours == g_theirs
    assert ours[3][0][0][0] == "Tensor" and ours[3][0][1][0] == "Tensor"


def test_epochs_and_steps_per_epoch():
    (theirs, _), (ours, _) = _twins(_sgd, 12, max_lr=0.1, epochs=3, steps_per_epoch=4)
    assert ours == theirs
    opt = _sgd()
    assert OneCycleLR(opt, max_lr=0.1, epochs=3, steps_per_epoch=4).total_steps == 12
    assert OneCycleLR(opt, max_lr=0.1, total_steps=5, epochs=3, steps_per_epoch=4).total_steps == 5  # torch's order


def test_any_number_of_betas():
    """beta1 is replaced and every other beta kept, whatever their number (torch's rule too)."""
    class ThreeBetas(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1, "betas": (0.9, 0.99, 0.999)})

        def step(self, closure=None):
            return None

    for cls in (TorchOneCycleLR, OneCycleLR):
        opt = ThreeBetas([nn.Parameter(torch.zeros(1))])
        cls(opt, max_lr=0.1, total_steps=10)
        assert opt.param_groups[0]["betas"] == (0.95, 0.99, 0.999)


def _mid_run(cls, steps, total=20, opt=None):
    opt = opt or _sgd()
    sched = cls(opt, max_lr=[0.1, 0.4], total_steps=total)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt, sched


@pytest.mark.parametrize("saver,loader", [(TorchOneCycleLR, OneCycleLR), (OneCycleLR, TorchOneCycleLR),
                                          (OneCycleLR, OneCycleLR)])
def test_resume_mid_run_across_the_two(saver, loader):
    """Stop at step 8 of 20, save optimizer and scheduler; resume in a fresh process's way (new
    optimizer and scheduler, then both ``load_state_dict``), with the other implementation too: the
    rest of the run is torch's uninterrupted run, bit for bit."""
    opt, sched = _mid_run(saver, 8)
    saved = copy.deepcopy((opt.state_dict(), sched.state_dict()))
    opt2 = _sgd()
    sched2 = loader(opt2, max_lr=[0.1, 0.4], total_steps=20)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    ref_opt, ref = _mid_run(TorchOneCycleLR, 8)
    assert _trace(opt2, sched2, 12) == _trace(ref_opt, ref, 12)


def test_resume_with_last_epoch_from_the_optimizer_state():
    """torch's other resume: the optimizer's state first (the schedule's keys live in its groups),
    then ``last_epoch`` = steps taken - 1 (the constructor takes one step); the keys are not rewritten."""
    opt, _ = _mid_run(OneCycleLR, 8)
    opt2 = _sgd()
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    sched2 = OneCycleLR(opt2, max_lr=123.0, total_steps=20, last_epoch=7)  # max_lr unused when resuming, as torch's
    assert float(opt2.param_groups[1]["max_lr"]) == 0.4
    ref_opt, ref = _mid_run(TorchOneCycleLR, 8)
    assert _trace(opt2, sched2, 12) == _trace(ref_opt, ref, 12)


def test_resuming_needs_every_key_the_schedule_reads():
    opt = _sgd()
    for g in opt.param_groups:
        g["initial_lr"] = 0.01  # another scheduler's: no max_lr, min_lr, momenta
    with pytest.raises(KeyError, match=r"param 'max_lr' is not specified in param_groups\[0\] when resuming "
                                       r"scheduler with last_epoch >= 0 \(last_epoch=3\)"):
        OneCycleLR(opt, max_lr=0.1, total_steps=10, last_epoch=3)
    with pytest.raises(KeyError, match="max_lr"):  # torch's fails too, at its first step
        TorchOneCycleLR(opt, max_lr=0.1, total_steps=10, last_epoch=3)


# ---- the end of the schedule: torch's error, or hold ----------------------------------------------------
def test_stepping_past_the_end_is_torchs_error_and_moves_nothing():
    """The last ``step()`` of a 10-step run gives torch's extrapolated value (here a negative LR:
    linear annealing, one step past its end); one more is torch's error, raised before anything
    moves, and again on a retry."""
    kw = dict(max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10,
              anneal_strategy="linear")
    (theirs, _), (ours, _) = _twins(_sgd, 10, **kw)
    assert ours[-1] == theirs[-1]
    assert ours[-1][0][0] == ("float", 25 - 8 / 7 * 24.5)  # step 10 on the line from 25 (step 2) to 0.5 (step 9)
    msg = "Tried to step 11 times. The specified number of total steps is 10"
    for cls in (TorchOneCycleLR, OneCycleLR):
        opt = _sgd()
        sched = cls(opt, **kw)
        for _ in range(10):
            opt.step()
            sched.step()
        before = (sched.last_epoch, _groups(opt))
        with pytest.raises(ValueError, match=msg):
            sched.step()
        if cls is OneCycleLR:
            assert (sched.last_epoch, _groups(opt)) == before
            with pytest.raises(ValueError, match=msg + r" \(pass hold=True to hold the final values past the end\)"):
                sched.step()
        else:
            assert sched.last_epoch == 11  # torch's counted the step it refused


def test_hold_keeps_the_final_values_past_the_end():
    kw = dict(max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10,
              anneal_strategy="linear")
    opt = _sgd()
    sched = OneCycleLR(opt, **kw, hold=True)
    with pytest.warns(UserWarning) as caught:
        rows = _trace(opt, sched, 15)
    # one warning, at the first step past the end (step 11 of 10), not one per step held
    assert [str(w.message) for w in caught] == [
        "OneCycleLR: stepped past total_steps=10: holding the final LR and momentum from here on (hold=True); "
        "the loop takes more steps than the schedule was laid out for"]
    _check_targets(rows, [LINEAR_LR] * 2, [LINEAR_MOM] * 2)  # the first 10: torch's targets
    assert {row[0] for row in rows[9:]} == {(("float", 0.5), ("float", 22.0))}  # min_lr and max_momentum, held
    assert sched.last_epoch == 15 and sched.get_last_lr()[0] == 0.5
    (theirs, _), _ = _twins(_sgd, 10, **kw)
    assert rows[:10] == theirs[:10]  # the same as torch's up to its last real step
    resumed = OneCycleLR(opt, **kw, last_epoch=14, hold=True)  # resuming past the end is fine with hold
    assert resumed.last_epoch == 15 and opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="Tried to step 16 times"):
        OneCycleLR(opt, **kw, last_epoch=15)


def test_a_phase_of_no_width_is_complete_where_torch_divides_by_zero():
    """pct_start * total_steps == 1: the rise ends at step 0, so step 0 is the peak; torch's divides by
    zero there. pct_start=1.0: the fall has no width, and the last step gives min_lr."""
    with pytest.raises(ZeroDivisionError):
        TorchOneCycleLR(_sgd(), max_lr=1.0, total_steps=10, pct_start=0.1)
    opt = _sgd()
    OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.1)
    assert opt.param_groups[0]["lr"] == 1.0 and opt.param_groups[0]["momentum"] == 0.85
    opt = _sgd()
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=1.0, final_div_factor=4)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1 / 25 / 4


def test_get_lr_has_no_side_effect():
    opt = _sgd()
    sched = OneCycleLR(opt, max_lr=25, total_steps=10, base_momentum=1, max_momentum=22, final_div_factor=2)
    before = _groups(opt)
    sched.last_epoch = 5  # what get_lr reads
    assert [float(v) for v in sched.get_lr()] == [COS_LR[5]] * 2
    assert _groups(opt) == before  # torch's would have written the momentum


# ---- bad input: refused before anything changes ---------------------------------------------------------
def _opt_adagrad():
    return torch.optim.Adagrad([nn.Parameter(torch.zeros(1))], lr=0.1)


BAD = [
    # (arguments, exception, message; torch's exception for the same call, or None where torch accepts it)
    (dict(total_steps=0), ValueError, r"^Expected positive integer total_steps, but got 0$", ValueError),
    (dict(total_steps=2.5), ValueError, r"^Expected positive integer total_steps, but got 2.5$", ValueError),
    (dict(total_steps="10"), TypeError, r"^Expected positive integer total_steps, but got '10'$", TypeError),
    (dict(total_steps=True), TypeError, r"^Expected positive integer total_steps, but got True$", None),
    (dict(epochs=0, steps_per_epoch=5), ValueError, r"^Expected positive integer epochs, but got 0$", ValueError),
    (dict(epochs=2, steps_per_epoch=-1), ValueError, r"^Expected positive integer steps_per_epoch, but got -1$",
     ValueError),
    (dict(epochs=2), ValueError, r"^You must define either total_steps OR \(epochs AND steps_per_epoch\)$",
     ValueError),
    (dict(total_steps=10, pct_start=-0.1), ValueError, r"^Expected float between 0 and 1 pct_start, but got -0.1$",
     ValueError),
    (dict(total_steps=10, pct_start=float("nan")), ValueError, r"^pct_start must be finite, got nan$", None),
    # torch's is a ValueError by accident: "0.3" * total_steps repeats the string, which float() then refuses
    (dict(total_steps=10, pct_start="0.3"), TypeError, r"^pct_start must be a number, got '0.3'$", ValueError),
    (dict(total_steps=10, anneal_strategy="COS"), ValueError,
     r"^anneal_strategy must be one of 'cos' or 'linear', instead got 'COS'$", ValueError),
    (dict(total_steps=10, max_lr=[0.1]), ValueError,
     r"^max_lr must have the same length as optimizer.param_groups. max_lr has 1 values, param_groups has 2.$",
     ValueError),
    (dict(total_steps=10, max_lr=-0.1), ValueError, r"^max_lr must be >= 0, got -0.1$", None),
    (dict(total_steps=10, max_lr=[0.1, float("inf")]), ValueError, r"^max_lr\[1\] must be finite, got inf$", None),
    (dict(total_steps=10, max_lr="0.1"), TypeError, r"^max_lr must be a number, got '0.1'$", TypeError),
    # torch's takes it for every group's max_lr, and fails at filling the second group's tensor LR with it
    (dict(total_steps=10, max_lr=torch.tensor([0.1, 0.2])), TypeError, r"^max_lr must be a number, got tensor",
     RuntimeError),
    (dict(total_steps=10, base_momentum=[0.8, 0.8, 0.8]), ValueError, r"base_momentum has 3 values", ValueError),
    (dict(total_steps=10, max_momentum=-0.5), ValueError, r"^max_momentum must be >= 0, got -0.5$", None),
    (dict(total_steps=10, div_factor=0), ValueError, r"^div_factor must be > 0, got 0$", ZeroDivisionError),
    (dict(total_steps=10, final_div_factor=0.0), ValueError, r"^final_div_factor must be > 0, got 0.0$",
     ZeroDivisionError),
    (dict(total_steps=10, cycle_momentum=1), TypeError, r"^cycle_momentum must be a bool, got 1$", None),
    (dict(total_steps=10, three_phase="yes"), TypeError, r"^three_phase must be a bool, got 'yes'$", None),
    (dict(total_steps=10, hold=1), TypeError, r"^hold must be a bool, got 1$", "no hold"),
    (dict(total_steps=10, last_epoch=-2), ValueError, r"^last_epoch must be an int >= -1, got -2$", KeyError),
    (dict(total_steps=10, last_epoch=1.5), TypeError, r"^last_epoch must be an int >= -1, got 1.5$", KeyError),
    (dict(total_steps=10, optimizer=_opt_adagrad), ValueError,
     r"^optimizer must support momentum or beta1 with `cycle_momentum` option enabled \(Adagrad has neither "
     r"'momentum' nor 'betas'; pass cycle_momentum=False\)$", ValueError),
    (dict(total_steps=10, optimizer=lambda: "sgd"), TypeError,
     r"^optimizer must be a torch.optim.Optimizer: str is not an Optimizer$", TypeError),
]


@pytest.mark.parametrize("kw,error,match,torch_error", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_refused_before_anything_changes(kw, error, match, torch_error):
    kw = dict(kw)
    make_opt = kw.pop("optimizer", _sgd)
    kw.setdefault("max_lr", 0.1)
    opt = make_opt()
    before = _groups(opt) if isinstance(opt, torch.optim.Optimizer) else None
    with pytest.raises(error, match=match):
        OneCycleLR(opt, **kw)
    if before is not None:
        assert _groups(opt) == before
    if torch_error == "no hold":
        return
    if torch_error is None:  # torch accepts it: one of ours' deliberate refusals
        TorchOneCycleLR(make_opt(), **kw)
    else:
        with pytest.raises(torch_error):
            TorchOneCycleLR(make_opt(), **kw)


# ---- the README's "Coming from torch's OneCycleLR", run as written --------------------------------------
SETUP = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
dl = torch.utils.data.DataLoader(data, batch_size=8)
loss_fn = torch.nn.functional.cross_entropy
epochs = 3
"""

SNIPPET_TORCH = snippet("torch-onecyclelr")
SNIPPET_COMPAT = snippet("compat-onecyclelr")
SNIPPET_SCHEDULER = snippet("scheduler-onecyclelr")


def _run_snippet(snippet):
    scope = {}
    exec(textwrap.dedent(SETUP) + textwrap.dedent(snippet), scope)
    return [p.detach().clone() for p in scope["model"].parameters()], scope.get("opt")


def test_readme_snippets_train_the_same():
    """One import changes, and the run is torch's to the last bit; onecycle's own Scheduler trains
    the same to rounding (its schedule multiplies the peak where torch's interpolates LRs)."""
    assert SNIPPET_COMPAT != SNIPPET_TORCH and SNIPPET_COMPAT.count("onecycle") == 1
    one_import = SNIPPET_TORCH.replace("from torch.optim.lr_scheduler import", "from onecycle.compat import")
    assert one_import == SNIPPET_COMPAT
    torch_w, torch_opt = _run_snippet(SNIPPET_TORCH)
    compat_w, compat_opt = _run_snippet(SNIPPET_COMPAT)
    sched_w, sched_opt = _run_snippet(SNIPPET_SCHEDULER)
    assert all(torch.equal(a, b) for a, b in zip(torch_w, compat_w))
    assert _groups(compat_opt) == _groups(torch_opt)
    for a, b in zip(torch_w, sched_w):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    start = _run_snippet("")[0]  # negative control: the snippets did train
    assert not any(torch.equal(a, b) for a, b in zip(start, torch_w))
