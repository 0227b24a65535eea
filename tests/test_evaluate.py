"""evaluate.py: train/eval modes of a model and of an optimizer with modes (schedule-free), put back
exactly; validate and predict (their numbers are tested in test_learner and test_batches)."""

import pytest
import torch

from onecycle.evaluate import evaluating, optimizer_mode, restore_modes, set_optimizer_mode


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
