"""Tests for onecycle.integrations.lightning: lr_find on a LightningModule (its own steps and
optimizer) and the OneCycle callback, on a tiny module on the CPU."""

from __future__ import annotations

import copy
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

import onecycle as oc  # noqa: E402
from onecycle.integrations.lightning import OneCycle, lr_find  # noqa: E402
from onecycle.rng import get_rng_state  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models on one torch thread


def data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


class Tiny(pl.LightningModule):
    """BatchNorm and Dropout (state and RNG to restore); the validation loss returned or only logged."""

    def __init__(self, returns_val_loss=True, opt="sgd"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        self.returns_val_loss, self.opt = returns_val_loss, opt

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        loss = F.cross_entropy(out, y)
        self.log("val_loss", loss)
        self.log("val_acc", (out.argmax(1) == y).float().mean())
        return loss if self.returns_val_loss else None

    def configure_optimizers(self):
        if self.opt == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.0)
        return {"optimizer": torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)}

    def train_dataloader(self):
        return DataLoader(data(), batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(data(48, 1), batch_size=16)


def trainer(**kw):
    kw = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False, "enable_checkpointing": False,
          "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0, **kw}
    return pl.Trainer(**kw)


def state(model):
    return ([t.detach().clone() for t in model.state_dict().values()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [m.training for m in model.modules()])


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and a[2] == b[2] and \
        all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a[1], b[1]))


@pytest.mark.parametrize("returns_val_loss", [True, False])
def test_lr_find_drives_the_modules_own_steps_and_restores_it(returns_val_loss):
    """The curves are those of onecycle's compat.lr_find on the same module as a plain nn.Module, with
    its optimizer and loss: the training loss from training_step, the validation loss (returned, or
    logged as val_loss) and the logged val_acc (onecycle's accuracy) at every step. The module comes
    back bit for bit, with its RNGs, and without the Fabric that carried its logs."""
    torch.manual_seed(0)
    model = Tiny(returns_val_loss)
    twin = copy.deepcopy(model)
    model.net[1].eval()  # a mixed train/eval model
    twin.net[1].eval()
    before, rng = state(model), get_rng_state()
    res = lr_find(trainer(), model, num_it=15, end_lr=1.0)
    assert same(state(model), before) and model.fabric is None
    now = get_rng_state()
    assert torch.equal(now["torch"], rng["torch"])
    torch.set_rng_state(rng["torch"])
    want = oc.compat.lr_find(twin, torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9), F.cross_entropy,
                             model.train_dataloader(), model.val_dataloader(), [oc.metrics.accuracy], num_it=15,
                             end_lr=1.0)
    assert res.lrs == want.lrs and res.losses == want.losses and res.val_losses == want.val_losses
    assert list(res.metrics) == ["val_acc"]
    torch.testing.assert_close(res.metrics["val_acc"], want.metrics["accuracy"])
    assert res.suggestion == want.suggestion


def test_loaders_from_arguments_and_a_datamodule():
    calls = []

    class DM(pl.LightningDataModule):
        def prepare_data(self):
            calls.append("prepare")

        def setup(self, stage):
            calls.append(stage)

        def train_dataloader(self):
            return DataLoader(data(), batch_size=8)

    torch.manual_seed(0)
    model = Tiny()
    res = lr_find(trainer(), model, datamodule=DM(), num_it=5)
    assert calls == ["prepare", "fit"] and len(res.lrs) == 5 and res.val_losses == []  # the datamodule has no val
    res = lr_find(trainer(), model, train_dataloaders=DataLoader(data(), batch_size=8),
                  val_dataloaders=DataLoader(data(16, 2), batch_size=16), num_it=5)
    assert len(res.val_losses) == 5


def test_lr_find_refusals():
    model = Tiny()
    with pytest.raises(TypeError, match="num_iter"):
        lr_find(trainer(), model, num_iter=5)
    with pytest.raises(TypeError, match="model"):
        lr_find(trainer(), nn.Linear(2, 2))
    model.automatic_optimization = False
    with pytest.raises(ValueError, match="automatic_optimization"):
        lr_find(trainer(), model)

    class Silent(Tiny):
        def validation_step(self, batch, batch_idx):
            self(batch[0])

    with pytest.raises(ValueError, match="no validation loss"):
        lr_find(trainer(), Silent(), num_it=5)

    class Two(Tiny):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.SGD(self.parameters(), lr=0.1)]

    with pytest.raises(ValueError, match="2 optimizers"):
        lr_find(trainer(), Two(), num_it=5)


class Record(pl.Callback):
    def __init__(self):
        self.seen, self.at = [], {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        g = optimizer.param_groups[0]
        self.seen.append((g["lr"], g["betas"][0] if "betas" in g else g["momentum"], g["weight_decay"]))
        self.at[trainer.global_step] = self.seen[-1]


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_one_cycle_is_fit_one_cycle_on_the_same_optimizer(opt):
    """At every optimizer step the LR, the momentum (beta1 for AdamW) and the weight decay are those
    Learner.fit_one_cycle sets on the same optimizer, to the last bit, and the weights end the same."""
    torch.manual_seed(0)
    model = Tiny(opt=opt)
    twin = copy.deepcopy(model)
    dl = DataLoader(data(), batch_size=16)
    rec = Record()
    torch.manual_seed(1)  # the same dropout draws in both fits
    trainer(max_epochs=2, callbacks=[OneCycle(lr_max=0.05, wd=1e-4), rec], limit_val_batches=0).fit(model, dl)
    twin_opt = twin.configure_optimizers()
    twin_opt = twin_opt["optimizer"] if isinstance(twin_opt, dict) else twin_opt
    learn = oc.Learner(twin, dl, loss_fn=F.cross_entropy, quiet=True, device="cpu")
    learn.use_opt(twin_opt)
    torch.manual_seed(1)
    learn.fit_one_cycle(2, 0.05, wd=1e-4)
    moms = learn.recorder.moms
    assert [(lr, m) for lr, m, _ in rec.seen] == list(zip(learn.recorder.lrs, moms)) and len(rec.seen) == 12
    assert {w for _, _, w in rec.seen} == {1e-4}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    assert max(m for _, m, _ in rec.seen) == pytest.approx(0.95) and min(m for _, m, _ in rec.seen) < 0.9


def test_one_cycle_takes_the_last_suggestion_and_says_when_there_is_none():
    torch.manual_seed(0)
    model = Tiny()
    with pytest.raises(ValueError, match="run lr_find first"):
        trainer(callbacks=[OneCycle()], limit_val_batches=0).fit(model)
    res = lr_find(trainer(), model, num_it=20)
    rec = Record()
    trainer(callbacks=[OneCycle(div=10), rec], limit_val_batches=0).fit(model)
    assert res.suggestion is not None and rec.seen[0][0] == pytest.approx(res.suggestion / 10)
    assert max(lr for lr, _, _ in rec.seen) == pytest.approx(res.suggestion, rel=0.05)


class SaveAt(pl.Callback):
    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_one_cycle_resumes_from_a_lightning_checkpoint(tmp_path):
    """Its position is in the Trainer's checkpoint: a fit resumed there goes on with the cycle as a
    fit that never stopped."""
    torch.manual_seed(0)
    dl = DataLoader(data(), batch_size=16)
    rec, whole = Record(), Record()
    trainer(max_steps=8, callbacks=[OneCycle(lr_max=0.05), whole, SaveAt(3, tmp_path / "a.ckpt")],
            limit_val_batches=0).fit(Tiny(), dl)
    trainer(max_steps=8, callbacks=[OneCycle(lr_max=0.05), rec], limit_val_batches=0).fit(
        Tiny(), dl, ckpt_path=tmp_path / "a.ckpt")
    assert set(rec.at) == {3, 4, 5} and len(whole.at) == 6  # one epoch of 6 steps; resumed after step 3
    assert all(rec.at[step] == whole.at[step] for step in rec.at)

    class WithSched(Tiny):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    with pytest.raises(ValueError, match="scheduler"):
        trainer(callbacks=[OneCycle(lr_max=0.1)], limit_val_batches=0).fit(WithSched(), dl)


def test_a_missing_extra_is_named(monkeypatch):
    for name in ("lightning", "lightning.pytorch"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"onecycle\[lightning\]"):
        lr_find(object(), object())
    with pytest.raises(ImportError, match=r"onecycle\[lightning\]"):
        OneCycle(lr_max=0.1)


def test_readme_coming_from_lightning_snippet_runs():
    """README "From Lightning's Tuner": run as written on the tiny module."""
    from _readme import snippet
    torch.manual_seed(0)
    quiet = types.SimpleNamespace(Trainer=lambda **kw: trainer(**kw))  # `L`: Trainers quiet and without a log folder
    scope = {"model": Tiny(), "L": quiet}
    exec(snippet("lightning"), scope)
    res = scope["res"]
    assert len(res.val_losses) == len(res.lrs) and "val_acc" in res.metrics and scope["trainer"].global_step == 12
