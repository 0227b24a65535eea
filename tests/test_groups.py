"""Tests for onecycle.optim.groups: hyper-parameters read and written under torch's own param-group
keys, layer groups (every parameter in exactly one), freezing, LR spreads against hand-computed
values, decoupled weight decay against torch's AdamW, normalized weight decay by its formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from onecycle.optim.groups import (
    DECOUPLED_WD,
    DecoupledWeightDecay,
    freeze_groups,
    get_hyper,
    layer_groups,
    momentum_key,
    named_layout,
    normalized_wd,
    normalized_wd_for,
    set_hyper,
    spread_lrs,
)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


# ---- get_hyper / set_hyper ------------------------------------------------------------------------
def test_momentum_key_prefers_betas_and_is_none_without_either():
    assert momentum_key({"betas": (0.9, 0.99), "momentum": 0.5}) == "betas"
    assert momentum_key({"momentum": 0.5}) == "momentum"
    assert momentum_key({"lr": 0.1}) is None


def test_get_hyper_reads_torchs_own_keys():
    w = [nn.Parameter(torch.zeros(2))]
    sgd = torch.optim.SGD(w, lr=0.1, momentum=0.85).param_groups[0]
    adam = torch.optim.Adam(w, lr=0.01, betas=(0.95, 0.99)).param_groups[0]
    assert get_hyper(sgd, "momentum") == 0.85 and get_hyper(sgd, "lr") == 0.1
    assert get_hyper(adam, "momentum") == 0.95 and get_hyper(adam, "eps") == 1e-8
    assert get_hyper({"betas": (0.9, 0.99, 0.999)}, "momentum") == 0.9  # any length of betas
    assert get_hyper({"lr": 0.1}, "momentum") is None and get_hyper({"lr": 0.1}, "wd") is None
    capturable = {"lr": torch.tensor(0.25), "betas": (torch.tensor(0.75), 0.9)}  # tensors read as floats
    assert type(get_hyper(capturable, "lr")) is float and get_hyper(capturable, "lr") == 0.25
    assert type(get_hyper(capturable, "momentum")) is float and get_hyper(capturable, "momentum") == 0.75


def test_set_hyper_writes_torchs_own_keys_and_fills_tensors_in_place():
    group = {"lr": 0.1, "betas": (0.9, 0.99, 0.999)}
    set_hyper(group, "momentum", 0.8)
    assert group["betas"] == (0.8, 0.99, 0.999) and type(group["betas"]) is tuple
    group = {"lr": 0.1, "betas": [0.9, 0.99]}  # a list (as a state_dict round trip may leave) becomes a tuple
    set_hyper(group, "momentum", 0.7)
    assert group["betas"] == (0.7, 0.99)
    sgd = {"lr": 0.1, "momentum": 0.9}
    set_hyper(sgd, "momentum", 0.85)
    set_hyper(sgd, "lr", 0.3)
    assert sgd == {"lr": 0.3, "momentum": 0.85}
    plain = {"lr": 0.1}  # neither key: "momentum" is written as a key of its own
    set_hyper(plain, "momentum", 0.5)
    assert plain == {"lr": 0.1, "momentum": 0.5}
    lr = torch.tensor(0.1)
    capturable = {"lr": lr, "momentum": torch.tensor(0.9)}
    set_hyper(capturable, "lr", 0.25)
    set_hyper(capturable, "momentum", 0.5)
    assert capturable["lr"] is lr and lr.item() == 0.25 and capturable["momentum"].item() == 0.5


def test_set_hyper_drives_a_real_optimizers_step():
    """The LR written is the one torch's SGD uses: one step moves w by lr * grad."""
    w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=1.0)
    set_hyper(opt.param_groups[0], "lr", 0.25)
    w.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([-0.25, 0.5], dtype=torch.float64))


# ---- layer_groups -----------------------------------------------------------------------------
def test_layer_groups_from_the_models_method_a_function_modules_or_parameter_lists():
    net = _net()
    every = list(net.parameters())
    assert layer_groups(net) == [every]  # no param_groups(): one group
    body, head = list(net[:2].parameters()), list(net[2].parameters())
    net.param_groups = lambda: [net[:2], net[2]]
    assert layer_groups(net) == [body, head]
    assert layer_groups(net, lambda m: [m[0], m[1:]]) == [list(net[0].parameters()), list(net[1:].parameters())]
    assert layer_groups(net, [body, head]) == [body, head]
    assert layer_groups(net, net) == [every]  # one module: one group
    single = nn.Linear(2, 2)
    assert layer_groups(single, [single.weight, single.bias]) == [[single.weight], [single.bias]]  # tensors


@pytest.mark.parametrize("groups, error, message", [
    ("body", TypeError, r"^groups must be a list of modules or of parameter lists, or a function of the model, "
                        r"got 'body'$"),
    (3, TypeError, r"^groups must be a list of modules or of parameter lists, or a function of the model, got 3$"),
    (lambda m: [[], list(m.parameters())], ValueError, r"^param group 0 is empty$"),
    (lambda m: [list(m.parameters()), [3]], TypeError, r"^param group 1 holds a int, not a tensor$"),
    (lambda m: [list(m.parameters()), [m[2].weight]], ValueError,
     r"^a parameter of shape \(2, 4\) appears in two param groups$"),
    (lambda m: [m[0]], ValueError, r"^the layer groups leave out 4 of the model's parameters \(1.weight, 1.bias, "
                                   r"2.weight, 2.bias\): every parameter must be in exactly one group$"),
    (lambda m: [list(m.parameters()), [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]], ValueError,
     r"^the layer groups hold 2 parameters that are not the model's$"),
])
def test_layer_groups_refuses_groups_that_are_not_a_partition(groups, error, message):
    with pytest.raises(error, match=message):
        layer_groups(_net(), groups)


def test_layer_groups_names_at_most_five_parameters_left_out():
    net = nn.Sequential(*[nn.Linear(1, 1) for _ in range(4)])
    with pytest.raises(ValueError, match=r"leave out 6 of the model's parameters \(1.weight, 1.bias, 2.weight, "
                                         r"2.bias, 3.weight, \.\.\.\)"):
        layer_groups(net, [net[0]])
    with pytest.raises(ValueError, match=r"leave out 5 of the model's parameters \(0.bias, 1.weight, 1.bias, "
                                         r"2.weight, 2.bias\): every"):
        layer_groups(net, [[net[0].weight], net[3]])


# ---- freeze_groups ------------------------------------------------------------------------------
def test_freeze_groups_freezes_the_first_n_and_unfreezes_the_rest():
    net = _net()
    groups = layer_groups(net, [net[0], net[1], net[2]])
    assert freeze_groups(net, groups, 2) == []  # without bn_freeze: no BatchNorm layers to hold
    assert [p.requires_grad for p in net.parameters()] == [False] * 4 + [True] * 2
    assert freeze_groups(net, groups, 2, bn_freeze=True) == [net[1]]  # frozen BatchNorm layers
    assert freeze_groups(net, groups, 1, bn_freeze=True) == []  # the BatchNorm group is trainable
    assert [p.requires_grad for p in net.parameters()] == [False] * 2 + [True] * 4
    freeze_groups(net, groups, -1)  # all but the last
    assert [p.requires_grad for p in net.parameters()] == [False] * 4 + [True] * 2
    freeze_groups(net, groups, 0)  # unfreeze all
    assert all(p.requires_grad for p in net.parameters())
    freeze_groups(net, groups, 3)
    assert not any(p.requires_grad for p in net.parameters())
    freeze_groups(net, groups, -3)  # groups[:-3]: none frozen
    assert all(p.requires_grad for p in net.parameters())


def test_freeze_groups_refuses_what_cannot_be_frozen():
    net = _net()
    one = layer_groups(net)
    assert freeze_groups(net, one, 0) == [] and all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match=r"^freeze_to\(1\) needs several layer groups, but the model has 1: define "
                                         r"them with Learner\(groups=\[params_of_body, params_of_head\]\) or a "
                                         r"model.param_groups\(\) method$"):
        freeze_groups(net, one, 1)
    groups = layer_groups(net, [net[:2], net[2]])
    with pytest.raises(ValueError, match=r"^freeze_to n must be an int in \[-2, 2\] for 2 param groups, got 3$"):
        freeze_groups(net, groups, 3)
    with pytest.raises(ValueError, match=r"^freeze_to n must be an int in \[-2, 2\] for 2 param groups, got -3$"):
        freeze_groups(net, groups, -3)
    with pytest.raises(TypeError, match=r"^freeze_to n must be an int, got 1.0$"):
        freeze_groups(net, groups, 1.0)
    assert all(p.requires_grad for p in net.parameters())  # nothing changed on refusal


# ---- spread_lrs ---------------------------------------------------------------------------------
def test_spread_lrs_by_hand():
    assert spread_lrs(0.1, 3) == [0.1, 0.1, 0.1]
    assert spread_lrs([0.1, 0.2], 2) == [0.1, 0.2] and spread_lrs(torch.tensor([0.1, 0.2]), 2) == pytest.approx(
        [0.1, 0.2])
    assert spread_lrs(slice(1e-2), 3) == pytest.approx([1e-3, 1e-3, 1e-2], rel=1e-15)  # slice(hi): hi/10 below
    assert spread_lrs(slice(1e-4, 1e-2), 3) == pytest.approx([1e-4, 1e-3, 1e-2], rel=1e-12)  # geometric
    assert spread_lrs(slice(1e-3, 8e-3), 4) == pytest.approx([1e-3, 2e-3, 4e-3, 8e-3], rel=1e-12)
    assert spread_lrs(slice(0.1, 0.1), 2) == [0.1, 0.1]  # low == high is allowed


@pytest.mark.parametrize("lr, n, error, message", [
    ("0.1", 2, TypeError, r"^lr must be a number, a sequence of numbers \(one per param group\) or a slice, "
                          r"got '0.1'$"),
    (b"1", 2, TypeError, r"^lr must be a number, a sequence"),
    (slice(1e-3, 1e-2, 2), 2, ValueError, r"^lr slice takes no step, got slice\(0.001, 0.01, 2\)$"),
    (slice(1e-3, 1e-2), 1, ValueError, r"^lr=slice\(0.001, 0.01, None\): a slice needs a model with several param "
                                       r"groups, got 1$"),
    (slice(1e-2, 1e-3), 2, ValueError, r"^lr slice must go from low to high, got slice\(0.01, 0.001, None\)$"),
    (slice(0, 1e-3), 2, ValueError, r"^lr.start must be > 0, got 0$"),
    (slice(1e-3, 0), 2, ValueError, r"^lr.stop must be > 0, got 0$"),
    (slice(None), 2, TypeError, r"^lr.stop must be a number, got None$"),
    ([0.1, 0], 2, ValueError, r"^lr\[1\] must be > 0, got 0$"),
    ([0.1, 0.2, 0.3], 2, ValueError, r"^lr has 3 values but there are 2 param groups$"),
    (0.0, 2, ValueError, r"^lr must be > 0, got 0.0$"),
])
def test_spread_lrs_refuses_by_name(lr, n, error, message):
    with pytest.raises(error, match=message):
        spread_lrs(lr, n)


def test_spread_lrs_names_the_argument_it_is_given():
    with pytest.raises(ValueError, match=r"^lr_max\[0\] must be > 0"):
        spread_lrs([-1.0], 1, "lr_max")
    with pytest.raises(ValueError, match=r"^lr_max slice takes no step"):
        spread_lrs(slice(1, 2, 3), 2, name="lr_max")


# ---- DecoupledWeightDecay -----------------------------------------------------------------------
def _pair(seed=0):
    torch.manual_seed(seed)
    w = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    b = nn.Parameter(torch.randn(4, dtype=torch.float64))
    return w, b


@pytest.mark.parametrize("lr, wd", [(1e-2, 0.1), (3e-3, 0.5)])
def test_decoupled_decay_on_adam_is_torchs_adamw_bit_for_bit(lr, wd):
    """Adam + the hook against torch's AdamW (decay on matrices only: AdamW with a second group at 0)."""
    w, b = _pair()
    w2, b2 = nn.Parameter(w.detach().clone()), nn.Parameter(b.detach().clone())
    adam = torch.optim.Adam([w, b], lr=lr, weight_decay=0.0, foreach=False)
    DecoupledWeightDecay(adam, wd)
    adamw = torch.optim.AdamW([{"params": [w2], "weight_decay": wd}, {"params": [b2], "weight_decay": 0.0}],
                              lr=lr, foreach=False)
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        w.grad, b.grad = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(4, generator=g,
                                                                                              dtype=torch.float64)
        w2.grad, b2.grad = w.grad.clone(), b.grad.clone()
        adam.step()
        adamw.step()
    assert torch.equal(w, w2) and torch.equal(b, b2)


def test_decoupled_decay_by_hand_per_group_and_only_on_matrices_with_gradients():
    w, b = _pair()
    frozen = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))  # no gradient: not decayed
    other = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = torch.optim.SGD([{"params": [w, b, frozen]}, {"params": [other]}], lr=0.5)
    decay = DecoupledWeightDecay(opt, [0.2, 0.0])
    assert [g[DECOUPLED_WD] for g in opt.param_groups] == [0.2, 0.0]
    for p in (w, b, other):
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(w.detach(), w0 * (1 - 0.5 * 0.2))  # w *= 1 - lr * wd
    assert torch.equal(b.detach(), b0)  # 1-D: a bias is left alone
    assert torch.equal(frozen.detach(), torch.ones(2, 2, dtype=torch.float64))
    assert torch.equal(other.detach(), torch.ones(2, 2, dtype=torch.float64))  # wd 0 in its group
    decay.set_active(False)  # off: a step is SGD's own
    w1 = w.detach().clone()
    opt.step()
    assert torch.equal(w.detach(), w1)
    decay.set_active(False)  # twice off, then on twice: one hook
    decay.set_active(True)
    decay.set_active(True)
    opt.step()
    assert torch.equal(w.detach(), w1 * 0.9)
    decay.remove()
    opt.step()
    assert torch.equal(w.detach(), w1 * 0.9)


def test_decoupled_decay_defaults_to_none():
    w, _ = _pair()
    w0 = w.detach().clone()
    opt = torch.optim.SGD([w], lr=0.1)
    DecoupledWeightDecay(opt)
    assert opt.param_groups[0][DECOUPLED_WD] == 0.0
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(w.detach(), w0)


def test_decoupled_decay_reads_the_lr_and_wd_of_each_step():
    w, _ = _pair()
    w0 = w.detach().clone()
    opt = torch.optim.SGD([w], lr=0.1)
    DecoupledWeightDecay(opt, 0.5)
    w.grad = torch.zeros_like(w)
    opt.param_groups[0]["lr"] = torch.tensor(0.5)  # a tensor LR (capturable optimizers) as a float
    opt.param_groups[0][DECOUPLED_WD] = 0.25
    opt.step()
    assert torch.equal(w.detach(), w0 * (1 - 0.5 * 0.25))


def test_decoupled_decay_skips_a_step_the_scaler_skips():
    w, _ = _pair()
    w0 = w.detach().clone()
    opt = torch.optim.SGD([w], lr=0.1)
    DecoupledWeightDecay(opt, 0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale((w * float("inf")).sum()).backward()  # an overflow: the scaler skips the step and its hooks
    scaler.step(opt)
    scaler.update()
    assert torch.equal(w.detach(), w0)
    opt.zero_grad()
    scaler.scale((w * 0.0).sum()).backward()  # the control: a finite step decays
    scaler.step(opt)
    assert torch.equal(w.detach(), w0 * (1 - 0.1 * 0.5))


# ---- normalized weight decay -------------------------------------------------------------------
def test_normalized_wd_is_the_papers_formula():
    # Loshchilov & Hutter (2019), eq. 6: wd = wd_norm * sqrt(b / (B * T))
    assert normalized_wd(0.05, 32, 1000, 10) == pytest.approx(0.05 * math.sqrt(32 / 10000), rel=1e-15)
    assert normalized_wd(0.05, 32, 1000, 10) == pytest.approx(0.0028284271247461905, rel=1e-15)
    assert normalized_wd(0.0, 32, 1000, 10) == 0.0
    with pytest.raises(ValueError, match=r"^wd_norm must be >= 0, got -0.1$"):
        normalized_wd(-0.1, 32, 1000, 10)


def test_normalized_wd_for_reads_the_loader():
    dl = DataLoader(TensorDataset(torch.zeros(200, 1)), batch_size=8)
    assert normalized_wd_for(0.1, dl, 5) == pytest.approx(0.1 * math.sqrt(8 / (200 * 5)), rel=1e-15)

    class Loader:  # an ``n`` of its own, no dataset (onecycle's TensorLoader)
        batch_size, n = 4, 100

    assert normalized_wd_for(0.1, Loader(), 1) == pytest.approx(0.1 * math.sqrt(4 / 100), rel=1e-15)
    for bad in (DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=None), [1, 2]):
        with pytest.raises(ValueError, match=r"^wd_norm needs train_dl.batch_size and the number of training "
                                             r"samples$"):
            normalized_wd_for(0.1, bad, 1)


def test_named_layout_names_and_shapes_per_group():
    net = _net()
    stray = nn.Parameter(torch.zeros(5))
    assert named_layout(net, [list(net[0].parameters()), [net[2].bias, stray]]) == [
        [("0.weight", (4, 3)), ("0.bias", (4,))], [("2.bias", (2,)), ("?", (5,))]]
