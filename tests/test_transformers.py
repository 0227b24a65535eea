"""Tests for onecycle.integrations.transformers (lr_find on a Hugging Face Trainer) and for
compat.OneCycleLR inside a Trainer, on a tiny BERT made from a config (random weights, no download)."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import onecycle as oc  # noqa: E402
from onecycle.integrations.transformers import lr_find  # noqa: E402
from onecycle.rng import get_rng_state  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models on one torch thread


class Pairs(torch.utils.data.Dataset):
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def make_trainer(tmp_path, seed=0, trainer_cls=Trainer, **kw):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (96, 8), generator=g)
    labels = (ids[:, 0] > 20).long()
    kw = {"num_train_epochs": 1, **kw}
    args = TrainingArguments(output_dir=str(tmp_path / f"out{seed}"), per_device_train_batch_size=8,
                             per_device_eval_batch_size=8, report_to=[], use_cpu=True, seed=seed,
                             save_strategy="no", disable_tqdm=True, **kw)
    return trainer_cls(model=model, args=args, train_dataset=Pairs(ids[:64], labels[:64]),
                       eval_dataset=Pairs(ids[64:], labels[64:]))


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lr_find_on_a_trainer_leaves_it_as_it_was(tmp_path):
    """The eval loss at every step; the model bit for bit, the Trainer's optimizer slot and every RNG as
    before, so train() afterwards gives the very weights train() gives alone; the accelerate loaders it
    made are no longer registered as being iterated."""
    from accelerate.state import GradientState
    trainer = make_trainer(tmp_path)
    model = trainer.model
    model.train()
    before, rng = weights(model), get_rng_state()
    res = lr_find(trainer, num_it=12, end_lr=1.0, metrics=[oc.metrics.accuracy])
    assert len(res.lrs) == 12 and len(res.val_losses) == 12 and len(res.metrics["accuracy"]) == 12
    assert res.lrs[0] == pytest.approx(1e-7) and res.lrs[-1] == pytest.approx(1.0)
    assert same(weights(model), before) and trainer.optimizer is None and model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(ref is None for ref in GradientState().dataloader_references)
    now = get_rng_state()  # compared without drawing: train() below must start from the same RNG
    assert torch.equal(now["torch"], rng["torch"]) and torch.equal(now["numpy"]["key"], rng["numpy"]["key"])
    trainer.train()
    alone = make_trainer(tmp_path)
    alone.train()
    assert same(weights(trainer.model), weights(alone.model))
    assert not same(weights(trainer.model), before)  # negative control: training moved the weights


def test_lr_find_uses_the_trainers_compute_loss_and_its_own_optimizer(tmp_path):
    """A subclass's compute_loss is the loss (here the model's, doubled: seen in the recorded losses);
    an optimizer given to the Trainer is used as it is (its groups, weight decay) and restored."""
    calls = []

    class Doubled(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            calls.append(model.training)
            loss, out = super().compute_loss(model, inputs, return_outputs=True)
            return (2 * loss, out) if return_outputs else 2 * loss

    plain, doubled = make_trainer(tmp_path), make_trainer(tmp_path, trainer_cls=Doubled)
    a = lr_find(plain, num_it=6, end_lr=1e-3, val_batches=None)
    b = lr_find(doubled, num_it=6, end_lr=1e-3, val_batches=None)
    assert calls == [True, *[False] * 4] * 6  # a training batch, then the 4 evaluation batches, per step
    torch.testing.assert_close(torch.tensor(b.losses), 2 * torch.tensor(a.losses))
    torch.testing.assert_close(torch.tensor(b.val_losses), 2 * torch.tensor(a.val_losses))
    model = plain.model
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    plain.optimizer = opt
    state = copy.deepcopy(opt.state_dict())
    lr_find(plain, num_it=5)
    assert plain.optimizer is opt and repr(opt.state_dict()) == repr(state)
    with pytest.raises(TypeError, match="num_iter"):
        lr_find(plain, num_iter=5)
    with pytest.raises(TypeError, match="use_wd"):
        lr_find(plain, use_wd=True)


def test_compat_lr_find_on_the_trainers_own_loader(tmp_path):
    """The issue's report: compat.lr_find on trainer.get_train_dataloader() (an accelerate
    DataLoaderShard, whose sampler makes its generator at its first iteration) failed restoring the
    generators. It runs, and the loader's epoch and sampler come back as they were."""
    trainer = make_trainer(tmp_path)
    dl = trainer.get_train_dataloader()
    assert type(dl).__name__ == "DataLoaderShard"
    model = trainer.model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = weights(model)
    first = [b["input_ids"] for b in dl]  # this loader's first epoch order
    res = oc.compat.lr_find(model, opt, None, dl, num_it=20)  # 20 steps: more than one epoch of 8 batches
    assert len(res.lrs) == 20 and same(weights(model), before)
    second = [b["input_ids"] for b in dl]
    fresh = trainer.get_train_dataloader()
    list(fresh)
    assert all(torch.equal(x, y) for x, y in zip(second, [b["input_ids"] for b in fresh]))  # its epoch 2
    assert not all(torch.equal(x, y) for x, y in zip(first, second))


def test_compat_one_cycle_lr_in_a_trainer_cycles_adamws_beta1(tmp_path):
    """Trainer(optimizers=(opt, compat.OneCycleLR(...))): at every optimizer step the LR and AdamW's
    beta1 are torch's OneCycleLR's on a twin optimizer, to the last bit."""
    seen = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **kw):
            seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"][0]))

    trainer = make_trainer(tmp_path, num_train_epochs=2)
    opt = torch.optim.AdamW(trainer.model.parameters(), lr=1e-3)
    sched = oc.compat.OneCycleLR(opt, max_lr=1e-3, total_steps=16)
    trainer = Trainer(model=trainer.model, args=trainer.args, train_dataset=trainer.train_dataset,
                      optimizers=(opt, sched), callbacks=[Watch()])
    trainer.train()
    twin = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(twin, max_lr=1e-3, total_steps=16)
    want = []
    for _ in range(16):
        twin.step()
        ref.step()
        want.append((twin.param_groups[0]["lr"], twin.param_groups[0]["betas"][0]))
    assert seen == want
    assert seen[0][1] < 0.95 and min(b for _, b in seen) == pytest.approx(0.85, abs=0.01)  # beta1 moved


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"onecycle\[transformers\]"):
        lr_find(object())


def test_readme_coming_from_the_trainer_snippet_runs(tmp_path):
    """README "From the Hugging Face Trainer": run as written; the LR peaks at the suggestion."""
    import math

    from _readme import snippet
    base = make_trainer(tmp_path, num_train_epochs=2)
    scope = {"model": base.model, "args": base.args, "train_ds": base.train_dataset, "eval_ds": base.eval_dataset,
             "Trainer": Trainer, "torch": torch, "math": math}
    exec(snippet("transformers"), scope)
    res, sched = scope["res"], scope["sched"]
    assert scope["steps"] == 16 and sched.last_epoch == 16 and res.suggestion is not None
    assert sched.optimizer.param_groups[0]["max_lr"] == res.suggestion


@pytest.mark.parametrize("kw", [dict(num_train_epochs=1.5, gradient_accumulation_steps=3),
                                dict(num_train_epochs=1, max_steps=5), dict(num_train_epochs=2)])
def test_total_steps_is_the_trainers_own_count(tmp_path, kw):
    """What a newcomer's formula got wrong: fractional epochs (64 samples / 8 = 8 batches, windows of 3:
    3 steps an epoch, 1.5 epochs: 5 steps) and max_steps. The reference is the Trainer itself: the
    optimizer steps train() takes, counted by a step hook."""
    from onecycle.integrations.transformers import total_steps
    trainer = make_trainer(tmp_path, **kw)
    steps = total_steps(trainer)
    trainer.create_optimizer()
    count = []
    trainer.optimizer.register_step_post_hook(lambda *a: count.append(1))
    trainer.train()
    assert steps == len(count) == {1.5: 5, 1: 5, 2: 16}[kw["num_train_epochs"]]
    with pytest.raises(TypeError, match="trainer"):
        total_steps(object())


def test_lr_find_prints_its_suggestions_as_the_learners_does_unless_quiet(tmp_path, capsys):
    trainer = make_trainer(tmp_path)
    lr_find(trainer, num_it=5, quiet=True)
    assert capsys.readouterr().out == ""
    res = lr_find(trainer, num_it=5)
    assert res.summary() in capsys.readouterr().out
    with pytest.raises(TypeError, match="quiet"):
        lr_find(trainer, quiet="no")
