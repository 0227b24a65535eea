"""Tests for onecycle.models: shapes, gradients, parameter groups, the AWD-LSTM's state and parts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle.models import AWDLSTM, MODELS, CifarResNet, LockedDropout, WeightDropLSTM, create_model

CASES = {  # name: (in_shape, batch shape, n_out)
    "mlp": ((64,), (8, 64), 10),
    "cnn": ((1, 40), (8, 1, 40), 10),
    "resnet1d": ((1, 40), (8, 1, 40), 10),
    "resnet20": ((3, 32, 32), (2, 3, 32, 32), 10),
    "resnet56": ((3, 32, 32), (2, 3, 32, 32), 10),
    "lstm": ((16,), (4, 16), 50),
}


def _batch(name: str) -> torch.Tensor:
    shape, n_out = CASES[name][1], CASES[name][2]
    return torch.randint(0, n_out, shape) if name == "lstm" else torch.randn(shape)


def test_every_model_is_tested():
    assert set(CASES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward(name):
    torch.manual_seed(0)
    in_shape, batch_shape, n_out = CASES[name]
    model = create_model(name, in_shape, n_out).train()
    out = model(_batch(name))
    expected = (*batch_shape, n_out) if name == "lstm" else (batch_shape[0], n_out)
    assert out.shape == expected and torch.isfinite(out).all()
    targets = torch.randint(0, n_out, expected[:-1])
    F.cross_entropy(out.reshape(-1, n_out), targets.reshape(-1)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(CASES))
def test_param_groups_cover_every_parameter_once(name):
    in_shape, _, n_out = CASES[name]
    model = create_model(name, in_shape, n_out)
    groups = model.param_groups()
    assert len(groups) >= 2 and all(groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet1d", "lstm"])
def test_param_groups_run_in_an_optimizer(name):
    """The groups go into torch's SGD as they are: each parameter in exactly one optimizer group, and
    a step moves each group by its own LR (torch.add(p, grad, alpha=-lr), torch's own update), the
    group at LR 0 not at all, whichever group that is."""
    in_shape, _, n_out = CASES[name]
    torch.manual_seed(0)
    model = create_model(name, in_shape, n_out).train()
    n_groups = len(model.param_groups())
    for frozen in range(n_groups):
        lrs = [0.0 if i == frozen else 0.05 * (i + 1) for i in range(n_groups)]
        opt = torch.optim.SGD([{"params": g, "lr": lr} for g, lr in zip(model.param_groups(), lrs)], lr=1.0)
        owner = [i for i, g in enumerate(opt.param_groups) for _ in g["params"]]
        ids = [id(p) for g in opt.param_groups for p in g["params"]]
        assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
        torch.manual_seed(1)
        out = model(_batch(name))
        F.cross_entropy(out.reshape(-1, n_out), torch.randint(0, n_out, out.shape[:-1]).reshape(-1)).backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        expected = [torch.add(p.detach(), p.grad, alpha=-lrs[i]) for p, i in zip(params, owner)]
        before = [p.detach().clone() for p in params]
        opt.step()
        opt.zero_grad()
        for p, want, old, i in zip(params, expected, before, owner):
            assert torch.equal(p, want)
            if i == frozen:
                assert torch.equal(p, old)
        moved = {i for p, old, i in zip(params, before, owner) if not torch.equal(p, old)}
        assert moved == set(range(n_groups)) - {frozen}


def test_cnn_matches_the_mnist1d_reference_sizes():
    model = create_model("cnn", (1, 40), 10)
    assert model.head.in_features == 125  # 25 channels x length 5
    assert sum(p.numel() for p in model.parameters()) == 5210
    x = torch.randn(3, 1, 40)
    assert torch.equal(model(x), model(x.squeeze(1)))  # (B, L) input works too


def test_cifar_resnet_sizes_and_shortcuts():
    count = {n: sum(p.numel() for p in create_model(n, (3, 32, 32), 10).parameters())
             for n in ("resnet20", "resnet56")}
    assert count == {"resnet20": 269_722, "resnet56": 853_018}  # the paper's 0.27M and 0.85M
    b = create_model("resnet20", (3, 32, 32), 10, shortcut="B")
    assert sum(p.numel() for p in b.parameters()) > count["resnet20"]
    assert create_model("resnet20", (1, 28, 28), 10)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("args, kwargs, error", [
    (("nope", (64,), 10), {}, ValueError),
    (("mlp", (0,), 10), {}, ValueError),
    (("mlp", (64,), 0), {}, ValueError),
    (("mlp", "abc", 10), {}, TypeError),
    (("cnn", (1, 2), 10), {}, ValueError),
    (("cnn", (3, 32, 32), 10), {}, ValueError),
    (("resnet20", (64,), 10), {}, ValueError),
    (("resnet20", (3, 32, 32), 10), {"shortcut": "C"}, ValueError),
    (("mlp", (64,), 10), {"dropout": 1.5}, ValueError),
    (("lstm", (16,), 10), {"weight_p": -0.1}, ValueError),
    (("mlp", (64,), 10), {"dropout": "0.1"}, TypeError),
    (("lstm", (16,), 10), {"embed_p": 1.0}, ValueError),
    (("resnet20", (3, 32, 32), 10), {"depth": 20.0}, TypeError),
])
def test_bad_arguments(args, kwargs, error):
    with pytest.raises(error, match=r"name|in_shape|n_out|short|channels|depth|shortcut|dropout|_p"):
        create_model(*args, **kwargs)


def test_mlp_hidden_takes_an_int_for_one_layer_and_names_a_string():
    """``--model-opts hidden=64`` (the natural spelling) failed with "'int' object is not iterable",
    and ``hidden=abc`` was read letter by letter."""
    model = create_model("mlp", (64,), 10, hidden=32)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [32, 10]
    assert [m.out_features for m in create_model("mlp", (64,), 10, hidden=[8, 4]).modules()
            if isinstance(m, nn.Linear)] == [8, 4, 10]
    with pytest.raises(TypeError, match=r"^hidden must be an int or a list of ints \(layer widths\), got 'abc'$"):
        create_model("mlp", (64,), 10, hidden="abc")


def test_cifar_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="depth"):
        CifarResNet((3, 32, 32), 10, depth=21)


def test_weight_drop_lstm_matches_nn_lstm_without_dropout():
    torch.manual_seed(0)
    ours, ref = WeightDropLSTM(5, 7, weight_p=0.0), nn.LSTM(5, 7, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ours, name).copy_(getattr(ref, f"{name}_l0"))
    x, state = torch.randn(3, 4, 5), (torch.randn(1, 3, 7), torch.randn(1, 3, 7))
    out, (h, c) = ours(x, state)
    out_ref, (h_ref, c_ref) = ref(x, state)
    assert torch.allclose(out, out_ref, atol=1e-6) and torch.allclose(h, h_ref, atol=1e-6)
    assert torch.allclose(c, c_ref, atol=1e-6)


def test_weight_drop_is_random_in_training_only():
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_p=0.5)
    x, state = torch.randn(3, 4, 5), (torch.zeros(1, 3, 7), torch.zeros(1, 3, 7))
    assert not torch.equal(layer(x, state)[0], layer(x, state)[0])
    layer.eval()
    assert torch.equal(layer(x, state)[0], layer(x, state)[0])
    layer.train()
    layer(x, state)[0].sum().backward()
    assert layer.weight_hh.grad is not None and (layer.weight_hh.grad == 0).any()  # dropped entries


def test_locked_dropout_shares_the_mask_over_time():
    torch.manual_seed(0)
    drop = LockedDropout(0.5)
    out = drop(torch.ones(4, 10, 6))
    assert torch.equal(out, out[:, :1].expand_as(out)) and (out == 0).any() and (out == 2).any()
    assert torch.equal(drop.eval()(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))


def test_lstm_ties_weights_and_keeps_then_resets_state():
    torch.manual_seed(0)
    model = create_model("lstm", (16,), 50).eval()
    assert isinstance(model, AWDLSTM)
    assert model.decoder.weight is model.encoder.weight
    assert model.decoder.weight.data_ptr() == model.encoder.weight.data_ptr()
    x = torch.randint(0, 50, (4, 16))
    first, second = model(x), model(x)
    assert not torch.allclose(first, second)  # the carried state changed the output
    assert all(not h.requires_grad and not c.requires_grad for h, c in model._state)
    model.reset()
    assert torch.equal(model(x), first)
    assert model(torch.randint(0, 50, (3, 16))).shape == (3, 16, 50)  # new batch size: fresh state
    assert [h.shape for h, _ in model._state] == [(1, 3, 256), (1, 3, 64)]


def test_lstm_trains_across_batches_with_truncated_bptt():
    torch.manual_seed(0)
    model = create_model("lstm", (8,), 20, emb_size=16, hidden_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # a second backward would fail if the state kept its graph
        x = torch.randint(0, 20, (2, 8))
        loss = F.cross_entropy(model(x).reshape(-1, 20), x.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.decoder.weight is model.encoder.weight
    untied = create_model("lstm", (8,), 20, tie_weights=False, hidden_size=32)
    assert untied.decoder.weight is not untied.encoder.weight and untied(x).shape == (2, 8, 20)


def test_mlp_learns_digits(monkeypatch, tmp_path):
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path))
    from onecycle.tasks import load_task

    torch.manual_seed(0)
    task = load_task("digits")
    model = create_model(task.default_model, task.in_shape, task.n_out)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for xb, yb in task.train_dl:
            loss = task.loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accs = [task.metrics[0](model(xb), yb) for xb, yb in task.valid_dl]
    assert sum(accs) / len(accs) > 0.85
