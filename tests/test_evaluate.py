"""evaluate.py: train/eval modes of a model and of an optimizer with modes (schedule-free), put back
exactly; validate against the loss and metric over the whole set (each batch weighted by its
targets), predict against the model called directly, concat's joins by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from onecycle.evaluate import (
    concat,
    eval_batches,
    evaluating,
    optimizer_mode,
    predict,
    restore_modes,
    set_optimizer_mode,
    validate,
)


def test_restore_modes_puts_back_mixed_train_and_eval_modes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(), torch.nn.BatchNorm1d(2)))
    model.train()
    model[1][1].eval()  # a frozen BatchNorm inside a training model
    model[0].eval()
    modes = [(m, m.training) for m in model.modules()]
    expected = [training for _, training in modes]
    assert expected == [True, False, True, True, False]
    model.eval()
    restore_modes(modes)
    assert [m.training for m in model.modules()] == expected
    model.train()  # now the children that should be in eval mode are in train mode
    restore_modes(modes)
    assert [m.training for m in model.modules()] == expected


def test_restore_modes_fixes_children_after_a_parent_reset_them():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Dropout()))
    model.eval()
    model[1][0].train()
    modes = [(m, m.training) for m in model.modules()]
    assert [t for _, t in modes] == [False, False, False, True, False]
    model.train()  # the parent's train() flips every child too; restoring eval() on it resets them all
    restore_modes(modes)
    assert [m.training for m in model.modules()] == [False, False, False, True, False]
    restore_modes([])  # nothing to do
    assert [m.training for m in model.modules()] == [False, False, False, True, False]


class Modal(torch.optim.SGD):
    """An optimizer with train/eval modes, as schedule-free ones have: each switch counted."""

    def __init__(self, params):
        super().__init__(params, lr=0.1)
        self.param_groups[0]["train_mode"] = False
        self.switches = []

    def train(self):
        self.switches.append("train")
        self.param_groups[0]["train_mode"] = True

    def eval(self):
        self.switches.append("eval")
        self.param_groups[0]["train_mode"] = False


def test_evaluating_puts_a_modal_optimizer_in_eval_mode_and_back():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    opt = Modal(model.parameters())
    assert optimizer_mode(opt) is False and optimizer_mode(torch.optim.SGD(model.parameters(), lr=1)) is None
    assert optimizer_mode(None) is None
    set_optimizer_mode(opt, True)
    set_optimizer_mode(opt, True)  # already in train mode: nothing called
    assert opt.switches == ["train"]
    model.train()
    with evaluating(model, opt):
        assert not model.training and optimizer_mode(opt) is False
    assert model.training and optimizer_mode(opt) is True and opt.switches == ["train", "eval", "train"]
    set_optimizer_mode(opt, False)
    with evaluating(None, opt):  # in eval mode already: left there, nothing switched
        pass
    assert opt.switches == ["train", "eval", "train", "eval"]
    with pytest.raises(RuntimeError), evaluating(model, opt):
        raise RuntimeError  # the modes come back on an error too
    assert model.training and opt.switches[-1] == "eval"


# ---- validate / predict / concat -----------------------------------------------------------------
def _learner(valid=None, model=None, metrics=()):
    import onecycle as oc
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 1, 0, 1])
    torch.manual_seed(0)
    model = model or torch.nn.Linear(3, 2)
    dl = DataLoader(TensorDataset(x, y), batch_size=2)  # batches of 2, 2 and 1
    return oc.Learner(model, dl, valid if valid is not None else dl, metrics=metrics, quiet=True, device="cpu"), x, y


def test_validate_weighs_each_batch_by_its_targets_as_the_whole_set_would():
    """Batches of 2, 2 and 1: the mean over batches would weigh the last sample double."""
    from onecycle.metrics import accuracy
    learn, x, y = _learner(metrics=[accuracy])
    res = validate(learn, learn.valid_dl)
    with torch.no_grad():
        out = learn.model(x)
    assert set(res) == {"val_loss", "accuracy"}
    assert res["val_loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert res["accuracy"] == pytest.approx((out.argmax(1) == y).float().mean().item(), rel=1e-6)
    per_batch = [F.cross_entropy(out[i:i + 2], y[i:i + 2]).item() for i in (0, 2, 4)]
    assert abs(sum(per_batch) / 3 - res["val_loss"]) > 1e-3  # the control: an unweighted mean differs


class Counting(torch.nn.Module):
    """Dropout in train mode (so eval mode is visible in the outputs) and a ``reset()`` as
    recurrent models have, counted."""

    def __init__(self):
        super().__init__()
        self.lin, self.drop, self.resets, self.modes = torch.nn.Linear(3, 2), torch.nn.Dropout(0.9), 0, []

    def reset(self):
        self.resets += 1

    def forward(self, x):
        self.modes.append(self.training)
        return self.drop(self.lin(x))


def test_validate_and_predict_run_the_model_in_eval_mode_and_put_it_back():
    model = Counting()
    learn, x, y = _learner(model=model)
    model.train()
    res = validate(learn, learn.valid_dl)
    assert model.resets == 1 and model.modes == [False] * 3 and model.training  # reset once, before the batches
    with torch.no_grad():
        out = model.lin(x)  # no dropout: eval mode
    assert res["val_loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    model.modes.clear()
    preds, targets = predict(learn, learn.valid_dl, with_targets=True)
    assert model.modes == [False] * 3 and model.training and model.resets == 1  # predict does not reset
    assert torch.equal(preds, out) and torch.equal(targets, y)
    assert torch.equal(predict(learn, learn.valid_dl), out)


def test_validate_and_predict_name_a_missing_loader_and_a_batch_without_target():
    learn, x, _ = _learner()
    with pytest.raises(ValueError, match=r"^validate needs a loader: valid_dl is None$"):
        validate(learn, None)
    with pytest.raises(ValueError, match=r"^predict needs a loader: valid_dl is None$"):
        predict(learn, None)
    unlabelled = DataLoader(TensorDataset(x), batch_size=2)
    with pytest.raises(ValueError, match=r"^validation needs a target in every batch \(or a model that returns "
                                         r"its .loss\), and a batch of the validation loader has none; predict\(\) "
                                         r"takes batches without targets$"):
        validate(learn, unlabelled)
    preds, targets = predict(learn, unlabelled, with_targets=True)
    assert preds.shape == (5, 2) and targets is None
    with pytest.raises(TypeError, match=r"^dl is a Tensor of shape \(5, 3\), not a loader"):
        predict(learn, x)


def test_a_loader_with_eval_batches_is_read_through_them():
    learn, x, y = _learner()

    class Chunked:
        def __init__(self):
            self.calls = 0

        def __iter__(self):  # training batches: never read here
            raise AssertionError("read through __iter__")

        def __len__(self):
            return 3

        def eval_batches(self):
            self.calls += 1
            return iter([(x[:4], y[:4]), (x[4:], y[4:])])

    dl = Chunked()
    assert eval_batches(dl) is not dl and dl.calls == 1
    res = validate(learn, dl)
    with torch.no_grad():
        assert res["val_loss"] == pytest.approx(F.cross_entropy(learn.model(x), y).item(), rel=1e-6)
    assert torch.equal(predict(learn, dl), learn.model(x).detach())
    plain = [(x, y)]
    assert eval_batches(plain) is plain


def test_concat_joins_batches_on_the_cpu_keeping_their_structure():
    a, b = torch.arange(4.0, dtype=torch.float64).view(2, 2), torch.arange(4.0, 6.0, dtype=torch.float64).view(1, 2)
    out = concat([a, b])
    assert out.dtype == torch.float32 and torch.equal(out, torch.arange(6.0).view(3, 2))  # floats as float32
    ids = concat([torch.tensor([1, 2]), torch.tensor([3])])
    assert ids.dtype == torch.int64 and torch.equal(ids, torch.tensor([1, 2, 3]))  # integers kept
    half = concat([torch.ones(1, dtype=torch.float16)])
    assert half.dtype == torch.float32
    d = concat([{"logits": a, "ids": torch.tensor([0, 1])}, {"logits": b, "ids": torch.tensor([2])}])
    assert set(d) == {"logits", "ids"} and torch.equal(d["ids"], torch.tensor([0, 1, 2]))
    assert torch.equal(d["logits"], out)
    t = concat([(a, torch.tensor([0, 1])), (b, torch.tensor([2]))])  # several outputs: each joined
    assert type(t) is tuple and len(t) == 2 and t[0].shape == (3, 2) and torch.equal(t[1], torch.tensor([0, 1, 2]))
    nested = concat([({"h": a},), ({"h": b},)])
    assert type(nested) is tuple and nested[0]["h"].shape == (3, 2)
    assert concat([("x", "y"), ("z",)]) == ["x", "y", "z"]  # a tuple of ids (strings): flattened
    assert concat([["x"], ["y", "z"]]) == ["x", "y", "z"]
    with pytest.raises(ValueError, match=r"^dl yielded no batch$"):
        concat([])
    grad = torch.ones(2, requires_grad=True) * 2
    assert not concat([grad]).requires_grad  # detached


def test_optimizer_mode_needs_both_train_and_eval_and_reads_train_without_the_key():
    w = [torch.nn.Parameter(torch.zeros(2))]

    class TrainOnly(torch.optim.SGD):
        def train(self):
            pass

    class EvalOnly(torch.optim.SGD):
        def eval(self):
            pass

    class NoKey(TrainOnly, EvalOnly):  # modes, but its groups say nothing: taken as in train mode
        pass

    assert optimizer_mode(TrainOnly(w, lr=0.1)) is None and optimizer_mode(EvalOnly(w, lr=0.1)) is None
    assert optimizer_mode(NoKey(w, lr=0.1)) is True
