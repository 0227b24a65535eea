"""optim/extras.py with the real packages: schedule-free SGD and AdamW (``schedulefree``) and Prodigy
(``prodigyopt``) trained by the Learner exactly as a hand-written loop around the package's own
optimizer does (``opt.train()``/``opt.eval()`` where its authors say); saved and validated weights
are the evaluation weights; resume is bit-exact mid-epoch and at epoch ends; the LR finder works and
restores; a momentum schedule is skipped where the optimizer manages its own; Prodigy takes one LR;
a missing package names the extra to install."""

import copy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle import schedules as S
from onecycle.checkpoint import safe_load
from onecycle.evaluate import optimizer_mode
from onecycle.optim import OPTIMIZERS, build_optimizer, extras

schedulefree = pytest.importorskip("schedulefree")
prodigyopt = pytest.importorskip("prodigyopt")

sys.path.insert(0, str(Path(__file__).parent))
from _resume_job import EPOCHS, FirstStep, final_state, make_learner  # noqa: E402
from test_resume import RaiseAt, assert_same  # noqa: E402

SFREE = {"sfree_sgd": (schedulefree.SGDScheduleFree, dict(momentum=0.9)),
         "sfree_adamw": (schedulefree.AdamWScheduleFree, dict(betas=(0.9, 0.999), eps=1e-8))}


def _data(n=60, bs=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=bs)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _learner(opt, model=None, **kw):
    return oc.Learner(model or _model(), _data(), _data(30, 10, 1), opt=opt, quiet=True, device="cpu",
                      metrics=[oc.metrics.accuracy], **kw)


def _hand_loss(model, dl):
    with torch.no_grad():
        return sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in dl) / sum(len(y) for _, y in dl)


def _hand_fit(opt, model, epochs, train, valid):
    """The loop the package's README asks for: train() before training, eval() before evaluating;
    the Learner validates at each epoch end and leaves the optimizer in eval mode."""
    val_losses = []
    for _ in range(epochs):
        opt.train()
        for x, y in train:
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        opt.eval()
        val_losses.append(_hand_loss(model, valid))
        opt.train()
    opt.eval()
    return val_losses


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("name", list(SFREE))
def test_a_schedule_free_fit_is_the_hand_written_loop_and_ends_on_the_evaluation_weights(name, wd, tmp_path):
    learn = _learner(name, wd=wd)
    learn.fit_sched(3, 0.05, S.const(1.0))
    cls, kw = SFREE[name]
    model = _model()
    opt = cls(model.parameters(), lr=0.05, weight_decay=wd, **kw)  # its own weight decay, as the Learner gives it
    val_losses = _hand_fit(opt, model, 3, _data(), _data(30, 10, 1))
    for (k, a), b in zip(learn.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert learn._wd_hook is None and learn.opt.param_groups[0]["weight_decay"] == wd
    assert optimizer_mode(learn.opt) is False  # left in eval mode: learn.model holds x
    assert learn.recorder.val_losses == pytest.approx(val_losses, rel=1e-6)  # validated on x at every epoch end
    learn.save(tmp_path / "w.pt")  # already in eval mode: x is saved, and the mode stays
    saved = torch.load(tmp_path / "w.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert optimizer_mode(learn.opt) is False
    opt.train()  # negative control: the train point differs from what was saved
    assert not all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


class SaveMidEpoch(oc.Callback):
    """Saves the weights after batch 3 of epoch 2 (train mode), keeping y and z as they were then."""

    def __init__(self, path):
        self.path, self.seen, self.y, self.z, self.mode_after = path, 0, None, None, None

    def after_batch(self, learn):
        self.seen += 1
        if self.seen == 9:
            assert optimizer_mode(learn.opt) is True
            self.y = [p.detach().clone() for p in learn.model.parameters()]
            self.z = [learn.opt.state[p]["z"].clone() for p in learn.model.parameters()]
            learn.save(self.path)
            self.mode_after = optimizer_mode(learn.opt)


@pytest.mark.parametrize("name", list(SFREE))
def test_a_save_inside_a_fit_writes_the_evaluation_weights_and_training_goes_on(name, tmp_path):
    cb = SaveMidEpoch(tmp_path / "mid.pt")
    learn = _learner(name)
    learn.fit_sched(2, 0.05, S.const(1.0), callbacks=[cb])
    beta = 0.9
    saved = list(torch.load(tmp_path / "mid.pt", weights_only=True).values())
    for s, y, z in zip(saved, cb.y, cb.z):  # y = (1 - beta) z + beta x, so x = (y - (1 - beta) z) / beta
        x = (y - (1 - beta) * z) / beta
        torch.testing.assert_close(s, x, rtol=1e-5, atol=1e-6)
    assert not all(torch.allclose(s, y, atol=1e-6) for s, y in zip(saved, cb.y))  # negative control: not y
    assert cb.mode_after is True  # back in train mode for the steps that follow


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_a_prodigy_fit_is_the_hand_written_loop(wd):
    learn = _learner("prodigy", wd=wd)
    learn.fit_sched(3, 0.7, S.const(1.0))
    model = _model()
    opt = prodigyopt.Prodigy(model.parameters(), lr=0.7, safeguard_warmup=True, weight_decay=wd)
    for _ in range(3):
        for x, y in _data():
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (k, a), b in zip(learn.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert learn.opt.param_groups[0]["d"] == opt.param_groups[0]["d"] > 1e-6  # d grew from d0, the same way


# ---- resume: bit-exact at epoch ends and mid-epoch -------------------------------------------------------
FITS = {"sfree_sgd": (0.05, S.wsd(0.1, 0.0), None), "sfree_adamw": (0.01, S.wsd(0.1, 0.0), None),
        "prodigy": (1.0, *S.cos_one_cycle().__dict__.values())}  # prodigy with 1cycle: its beta1 cycled too


def _fit(tmp, name, callbacks=(), resume=False):
    learn = make_learner(0, callbacks)
    learn.opt_func = name
    lr, sched, mom = FITS[name]
    torch.manual_seed(42)
    learn.fit_sched(EPOCHS, lr, sched, mom, checkpoint_dir=tmp, every=5, ckpt_budget=None, resume=resume)
    return learn


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The final state of an uninterrupted fit, per optimizer (computed once each)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = final_state(_fit(tmp_path_factory.mktemp(f"ref-{name}"), name))
        return cache[name]
    return get


# The checkpoint a crash after batch k leaves: 13 -> epoch 1's end (step 12), 17 -> mid-epoch 2 (step 15);
# 12 -> mid-epoch 1 (step 10), 29 -> mid-epoch 3 (step 25).
SLOW = pytest.mark.slow


@pytest.mark.parametrize("k", [13, 17, pytest.param(12, marks=SLOW), pytest.param(29, marks=SLOW)])
@pytest.mark.parametrize("name", list(FITS))
def test_resume_is_bit_identical(tmp_path, reference, name, k):
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path / "run", name, [RaiseAt(k)])
    ckpt = safe_load(tmp_path / "run" / "last.ckpt")
    if name in SFREE:  # written in train mode, with the flag: resume continues from y itself
        assert ckpt["opt"]["param_groups"][0]["train_mode"] is True
    first = FirstStep()
    resumed = final_state(_fit(tmp_path / "run", name, [first], resume=True))
    assert first.step == ckpt["position"]["step"] > 0
    assert_same(resumed, reference(name))


# ---- the LR finder ------------------------------------------------------------------------------------
class ModeSeen(oc.Callback):
    def __init__(self):
        self.modes = set()

    def after_batch(self, learn):
        self.modes.add(optimizer_mode(learn.opt))


@pytest.mark.parametrize("name", ["sfree_sgd", "sfree_adamw", "prodigy"])
def test_lr_find_works_and_restores_a_fresh_and_a_trained_learner(name):
    learn = _learner(name)
    before = copy.deepcopy(learn.model.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = learn.lr_find(num_it=30, end_lr=10)
    assert res.suggestion is not None and learn.suggested_lr == res.suggestion
    # Prodigy's suggestion is a scale on a d that barely grew over the test: said, for it only
    said = [str(w.message) for w in caught if "no LR to train at" in str(w.message)]
    assert said == ([f"Prodigy's LR multiplies the step size d it estimates, which starts tiny (d0) and grows only "
                     f"as the weights move: over a range test the loss barely moves, so this suggestion "
                     f"({res.suggestion:.3g}) is no LR to train at. Train it at lr=1 (its authors' default)"]
                    if name == "prodigy" else [])
    assert learn.opt is None and all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    learn.fit_sched(1, 0.01 if name != "prodigy" else 1.0, S.const(1.0))
    model, opt = copy.deepcopy(learn.model.state_dict()), copy.deepcopy(learn.opt.state_dict())
    seen = ModeSeen()
    learn.lr_find(num_it=20, callbacks=[seen])
    assert_same(learn.model.state_dict(), model)
    assert_same(learn.opt.state_dict(), opt)
    if name in SFREE:  # it trained in train mode, and is back in eval mode with x in the model
        assert seen.modes == {True} and optimizer_mode(learn.opt) is False


# ---- momentum, LR and weight decay: what each optimizer takes ------------------------------------------
def test_a_momentum_schedule_is_skipped_for_schedule_free_with_a_warning_and_kept_for_prodigy():
    learn = _learner("sfree_sgd")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learn.fit_one_cycle(2, 0.05)
    said = [str(w.message) for w in caught]
    assert ("SGDScheduleFree manages its own momentum (with train/eval modes, its momentum interpolates between the "
            "point gradients are taken at and the average it evaluates; changing it between the two would move the "
            "weights): the momentum schedule is skipped") in said, said
    assert any(m.startswith("SGDScheduleFree is schedule-free: it averages its iterates") and
               "decays (x1 at 25% of training, x1e-05 at 100%)" in m and
               m.endswith("; applied as given. schedules.wsd(warmup_pct, 0) is a warmup then constant")
               for m in said), said
    assert set(learn.recorder.moms) == {0.9}
    learn = _learner("prodigy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fit_one_cycle(2, 1.0)
    mom = S.cos_one_cycle().mom
    n = len(learn.recorder.moms)
    assert learn.recorder.moms == pytest.approx([mom(i / n) for i in range(n)])  # beta1 cycled like AdamW's


def test_a_warmup_then_constant_lr_on_schedule_free_raises_no_warning():
    learn = _learner("sfree_adamw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fit_sched(1, 0.01, S.wsd(0.2, 0.0))
    lrs = learn.recorder.lrs
    assert lrs[0] == 0.0 and lrs[-1] == pytest.approx(0.01)


class TwoGroup(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def param_groups(self):
        return [list(self.body.parameters()), list(self.head.parameters())]


def test_the_checks_by_hand_a_zero_lr_and_the_default_name():
    p = [nn.Parameter(torch.zeros(2))]
    sfree, prodigy = OPTIMIZERS["sfree_sgd"]([{"params": p}], 0.1), OPTIMIZERS["prodigy"]([{"params": p}], 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extras.check_schedule_free_lr(sfree, S.const(0.0))  # a zero LR does not decay
        extras.check_schedule_free_lr(sfree, S.const(1.0))
        extras.check_lrs(prodigy, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"^lr: Prodigy takes one LR for every param group"):
        extras.check_lrs(prodigy, [0.5, 1.0])


def test_a_package_whose_spec_cannot_be_read_counts_as_missing(monkeypatch):
    import types
    broken = types.ModuleType("prodigyopt")
    broken.__spec__ = None  # find_spec raises ValueError for such a module
    monkeypatch.setitem(sys.modules, "prodigyopt", broken)
    assert extras.missing("prodigy") == extras.install_hint("prodigy")
    assert extras.missing("sgd") is None


def test_prodigy_takes_one_lr_for_every_group_and_refuses_several_before_training():
    torch.manual_seed(0)
    learn = _learner("prodigy", model=TwoGroup())
    before = copy.deepcopy(learn.model.state_dict())
    with pytest.raises(ValueError, match=r"Prodigy takes one LR for every param group .* \[0\.5, 1\.0\]"):
        learn.fit_sched(1, [0.5, 1.0], S.const(1.0))
    with pytest.raises(ValueError, match="start_lr: Prodigy takes one LR"):
        learn.lr_find(start_lr=slice(1e-6, 1e-5), end_lr=slice(1e-1, 1.0), num_it=10)
    assert_same(learn.model.state_dict(), before)
    assert not learn.recorder.losses
    learn.fit_sched(1, 1.0, S.const(1.0))  # one LR: it trains (negative control)
    assert learn.recorder.losses


def test_the_factories_take_the_lr_given_and_the_documented_settings():
    """Each factory builds its package's optimizer at the LR it is given (a fit sets the LR anyway, so
    only this sees one dropped), with the settings the module doc names."""
    p = [nn.Parameter(torch.zeros(2))]
    kinds = {"sfree_sgd": schedulefree.SGDScheduleFree, "sfree_adamw": schedulefree.AdamWScheduleFree,
             "prodigy": prodigyopt.Prodigy}
    for name, kind in kinds.items():
        opt = OPTIMIZERS[name]([{"params": p}], 0.37)
        assert type(opt) is kind and opt.defaults["lr"] == 0.37 and opt.param_groups[0]["lr"] == 0.37, name
    for name, (_, settings) in SFREE.items():
        group = OPTIMIZERS[name]([{"params": p}], 0.1).param_groups[0]
        assert {k: group[k] for k in settings} == settings, name
    assert OPTIMIZERS["prodigy"]([{"params": p}], 1.0).param_groups[0]["safeguard_warmup"] is True


def test_owns_weight_decay_and_modes_by_kind():
    p = [nn.Parameter(torch.zeros(2))]
    for name in ("sfree_sgd", "sfree_adamw", "prodigy", "lars", "lamb"):
        assert extras.owns_weight_decay(OPTIMIZERS[name]([{"params": p}], 0.1)), name
    for name in ("sgd", "adamw"):
        assert not extras.owns_weight_decay(OPTIMIZERS[name]([{"params": p}], 0.1)), name
    assert extras.has_modes(OPTIMIZERS["sfree_sgd"]([{"params": p}], 0.1))
    assert not extras.has_modes(OPTIMIZERS["prodigy"]([{"params": p}], 0.1))
    assert extras.single_lr(OPTIMIZERS["prodigy"]([{"params": p}], 0.1))
    assert not extras.single_lr(OPTIMIZERS["adamw"]([{"params": p}], 0.1))


class _OnlyTrain:
    def train(self):
        pass


class _OnlyEval:
    def eval(self):
        pass


def test_modes_need_both_train_and_eval():
    assert not extras.has_modes(_OnlyTrain()) and not extras.has_modes(_OnlyEval()) and not extras.has_modes(None)
    both = type("Both", (_OnlyTrain, _OnlyEval), {})()
    assert extras.has_modes(both)  # the control


# ---- a missing package -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,module,extra", [("sfree_sgd", "schedulefree", "schedulefree"),
                                               ("sfree_adamw", "schedulefree", "schedulefree"),
                                               ("prodigy", "prodigyopt", "prodigyopt")])
def test_a_missing_package_names_the_extra_to_install(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    hint = f"pip install 'onecycle\\[{extra}\\]'"
    with pytest.raises(ImportError, match=hint):
        _learner(name)
    with pytest.raises(ImportError, match=hint):
        build_optimizer(name, [[nn.Parameter(torch.zeros(1))]])
    assert extras.missing(name) is not None and extras.missing("sgd") is None
    _learner("sgd").fit_sched(1, 0.1, S.const(1.0))  # negative control: the others are unaffected


def test_importing_onecycle_and_training_with_sgd_imports_neither_package():
    code = ("import sys, onecycle as oc, torch\n"
            "oc.optim.build_optimizer('sgd', [[torch.nn.Parameter(torch.zeros(1))]])\n"
            "print(sorted(m for m in ('schedulefree', 'prodigyopt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"
