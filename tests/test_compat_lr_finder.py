"""Tests for onecycle.compat.torch_lr_finder: torch-lr-finder's ``LRFinder`` as a drop-in.

torch-lr-finder's own suite (``tests/test_lr_finder.py`` of davidtvs/pytorch-lr-finder, v0.2.2) has 48
cases; each is written again here, on tasks of our own with the same shapes (``PEER`` marks them),
except the two that need NVIDIA apex (``amp_backend="apex"`` is refused here: a test says so) and with
the two CUDA mixed-precision cases run on the CPU (bf16 autocast; an fp16 ``GradScaler`` whose scale
is seen to act). A reference loop written from reading the peer's ``range_test`` checks the history
to the last bit; the deliberate differences (the module's docstring, numbered) each have a test.
"""

from __future__ import annotations

import copy
import random

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import onecycle as oc  # noqa: E402
from onecycle.compat import DataLoaderIter, LRFinder, TrainDataLoaderIter, ValDataLoaderIter  # noqa: E402
from onecycle.compat.torch_lr_finder import peer_smooth  # noqa: E402
from onecycle.rng import get_rng_state, set_rng_state  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models on one torch thread


# ---- the peer's tasks, made again: XOR (8 bits -> parity), with extra values, two LR groups, a POS tagger ----
class XOR(Dataset):
    def __init__(self, n, extra=0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 2, (n, 8), generator=g).float()
        self.y = (self.x.sum(1) % 2).unsqueeze(1)
        self.extra = torch.randint(0, 2, (n, extra), generator=g)

    def __getitem__(self, i):
        return [self.x[i], self.y[i], *self.extra[i]] if self.extra.shape[1] else (self.x[i], self.y[i])

    def __len__(self):
        return len(self.x)


def mlp():
    return nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 1))


class Task:
    """model, optimizer, criterion and loaders (90/10 split when validating), as the peer's tasks."""

    def __init__(self, kind="xor", batch_size=8, steps=100, validate=False, seed=0):
        torch.manual_seed(seed)
        n = batch_size * steps
        if kind == "pos":
            ds, collate = POS(), pos_collate
            n, batch_size = len(ds), 2
        else:
            ds, collate = XOR(n, extra=2 if kind == "extra" else 0, seed=seed), None
        cut = int(n * 0.9) if validate else n
        self.train_loader = DataLoader(Subset(ds, range(cut)), batch_size=batch_size, collate_fn=collate)
        self.val_loader = DataLoader(Subset(ds, range(cut, n)), batch_size=batch_size,
                                     collate_fn=collate) if validate else None
        if kind == "pos":
            self.model = Tagger(ds.vocab, len(ds.tags))
            self.criterion = nn.NLLLoss()
        else:
            self.model, self.criterion = mlp(), nn.MSELoss()
        if kind == "groups":
            self.optimizer = torch.optim.SGD([{"params": self.model[0].parameters(), "lr": 1e-3},
                                              {"params": self.model[1].parameters(), "lr": 1e-5}],
                                             lr=1e-5, momentum=0.5)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-5)

    def finder(self, **kw):
        return LRFinder(self.model, self.optimizer, self.criterion, **kw)


class POS(Dataset):
    """Sentences (lists of words: not tensors) and their tags."""
    sentences = ["the dog ate the apple", "everybody read that book",
                 "the quick brown fox jumps over the lazy dog", "he always wore his sunglasses at night"]
    tagged = [[0, 1, 2, 0, 1], [1, 2, 0, 1], [0, 3, 3, 1, 2, 4, 0, 3, 1], [1, 5, 2, 3, 1, 4, 1]]

    def __init__(self):
        self.data = [s.split() for s in self.sentences]
        self.vocab = {w: i for i, w in enumerate(sorted({w for s in self.data for w in s}))}
        self.tags = range(6)

    def __getitem__(self, i):
        return self.data[i], torch.tensor(self.tagged[i])

    def __len__(self):
        return len(self.data)


def pos_collate(batch):
    """Inputs: a list of words (each sentence's first); labels: their tags."""
    return [words[0] for words, _ in batch], torch.stack([tags[0] for _, tags in batch])


class Tagger(nn.Module):
    def __init__(self, vocab, n_tags):
        super().__init__()
        self.vocab = vocab
        self.emb, self.lstm, self.out = nn.Embedding(len(vocab), 6), nn.LSTM(6, 6), nn.Linear(6, n_tags)

    def forward(self, words):
        h, _ = self.lstm(self.emb(torch.tensor([self.vocab[w] for w in words])).view(len(words), 1, -1))
        return torch.log_softmax(self.out(h.view(len(words), -1)), dim=1)


def lrs_of(opt):
    return [g["lr"] for g in opt.param_groups]


def reference(model, opt, criterion, train_loader, val_loader=None, start_lr=None, end_lr=10, num_iter=100,
              step_mode="exp", smooth_f=0.05, diverge_th=5, accumulation_steps=1):
    """torch-lr-finder v0.2.2's range_test, written again from reading it, as a plain loop."""
    if start_lr is not None:
        for g in opt.param_groups:
            g["lr"] = start_lr
    bases, history, best = lrs_of(opt), {"lr": [], "loss": []}, None
    it = iter(train_loader)
    for i in range(num_iter):
        r = i / (num_iter - 1)
        lrs = [b * (end_lr / b) ** r if step_mode == "exp" else b + r * (end_lr - b) for b in bases]
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr
        model.train()
        opt.zero_grad()
        total = None
        for _ in range(accumulation_steps):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(train_loader)
                batch = next(it)
            loss = criterion(model(batch[0]), batch[1]) / accumulation_steps
            loss.backward()
            total = loss if total is None else total + loss
        opt.step()
        loss = total.item()
        if val_loader is not None:
            model.eval()
            with torch.no_grad():
                loss = sum(criterion(model(x), y).item() * len(y) for x, y in val_loader) / len(val_loader.dataset)
        history["lr"].append(lrs[0])
        if i == 0:
            best = loss
        else:
            if smooth_f > 0:
                loss = smooth_f * loss + (1 - smooth_f) * history["loss"][-1]
            best = min(best, loss)
        history["loss"].append(loss)
        if loss > diverge_th * best:
            break
    return history


def snapshot(model, opt):
    return ([t.detach().clone() for t in model.state_dict().values()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            copy.deepcopy(opt.state_dict()), [m.training for m in model.modules()])


def assert_same(a, b):
    (wa, ga, oa, ma), (wb, gb, ob, mb) = a, b
    assert all(torch.equal(x, y) for x, y in zip(wa, wb)) and ma == mb
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(ga, gb))
    assert repr(oa["param_groups"]) == repr(ob["param_groups"])
    for k in oa["state"]:
        for name, v in oa["state"][k].items():
            assert torch.equal(v, ob["state"][k][name]), (k, name)


KINDS = ["xor", "extra", "groups", "pos"]


# ---- PEER: TestRangeTest (10 cases) --------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("validate", [False, True])
def test_run(kind, validate):
    """PEER test_run, test_run_with_val_loader (4 tasks each), and for the POS tagger (inputs: lists of
    words) test_run_non_tensor_dataset(_with_val_loader): the LR rises from the optimizer's."""
    task = Task(kind, validate=validate)
    init = lrs_of(task.optimizer)
    finder = task.finder()
    finder.range_test(task.train_loader, val_loader=task.val_loader, end_lr=0.1, num_iter=20 if kind == "pos" else 100)
    assert max(finder.history["lr"]) >= init[0] and finder.history["lr"][0] == init[0]
    assert len(finder.history["lr"]) == len(finder.history["loss"]) >= 2


@pytest.mark.parametrize("validate", [False, True])
def test_history_is_the_peers_to_the_last_bit(validate):
    """The reference loop and the drop-in, on twin models and optimizers: the same LRs and smoothed
    losses (bit for bit without validation; to rounding with it: the mean is summed otherwise)."""
    a, b = Task(validate=validate), Task(validate=validate)
    b.model.load_state_dict(a.model.state_dict())
    want = reference(a.model, a.optimizer, a.criterion, a.train_loader, a.val_loader, end_lr=10, num_iter=60)
    finder = b.finder()
    finder.range_test(b.train_loader, b.val_loader, end_lr=10, num_iter=60)
    assert finder.history["lr"] == want["lr"]
    if validate:
        np.testing.assert_allclose(finder.history["loss"], want["loss"], rtol=1e-6)
    else:
        assert finder.history["loss"] == want["loss"]
    assert finder.best_loss == min(finder.history["loss"])


def test_divergence_stops_after_the_first_step_above_diverge_th_times_the_best():
    """The rule, by hand: the smoothed curve of the recorded losses, the best from the first point,
    the last point the only one above diverge_th x best; the reference loop stops at the same step."""
    a, b = Task(), Task()
    b.model.load_state_dict(a.model.state_dict())
    want = reference(a.model, a.optimizer, a.criterion, a.train_loader, end_lr=1e4, num_iter=100, diverge_th=3)
    finder = b.finder()
    finder.range_test(b.train_loader, end_lr=1e4, num_iter=100, diverge_th=3)
    h = finder.history
    assert h == want and len(h["loss"]) < 100
    assert h["loss"] == peer_smooth(finder.result.losses, 0.05)
    bests = np.minimum.accumulate(h["loss"])
    assert h["loss"][-1] > 3 * bests[-2] and all(h["loss"][i] <= 3 * bests[i] for i in range(len(h["loss"]) - 1))
    assert finder.result.stop_reason.startswith("diverged")


def test_smooth_f_zero_is_the_raw_loss():
    task = Task()
    finder = task.finder()
    finder.range_test(task.train_loader, end_lr=0.1, num_iter=10, smooth_f=0)
    assert finder.history["loss"] == finder.result.losses
    assert peer_smooth([1.0, 3.0, 2.0], 0.5) == [1.0, 2.0, 2.0]  # by hand: .5*3+.5*1, .5*2+.5*2


# ---- PEER: TestReset (2), TestLRHistory (2) ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["xor", "groups"])
def test_reset(kind):
    """PEER test_reset: after range_test and reset() the optimizer's LRs are back; here range_test
    itself restores everything, and reset() changes nothing."""
    task = Task(kind, validate=True)
    init = lrs_of(task.optimizer)
    finder = task.finder()
    finder.range_test(task.train_loader, val_loader=task.val_loader, end_lr=0.1, num_iter=20)
    assert lrs_of(task.optimizer) == init
    before = snapshot(task.model, task.optimizer)
    finder.reset()
    assert_same(snapshot(task.model, task.optimizer), before)


def test_linear_lr_history():
    """PEER test_linear_lr_history."""
    task = Task()
    finder = task.finder()
    finder.range_test(task.train_loader, num_iter=5, step_mode="linear", end_lr=5e-5)
    assert finder.history["lr"] == pytest.approx([1e-5, 2e-5, 3e-5, 4e-5, 5e-5])


def test_exponential_lr_history():
    """PEER test_exponential_lr_history; here exact: 1e-5 * 1e4 ** (i/4)."""
    task = Task()
    finder = task.finder()
    finder.range_test(task.train_loader, num_iter=5, step_mode="EXP", end_lr=0.1)
    assert finder.history["lr"] == [1e-5 * (0.1 / 1e-5) ** (i / 4) for i in range(5)]
    assert finder.history["lr"] == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2, 0.1])


def test_every_group_goes_from_its_start_to_end_lr():
    """The peer's per-group rule: each group from its own LR to the one end_lr (their ratio is not
    kept); history["lr"] is the first group's."""
    task = Task("groups")
    seen = []

    class Spy(nn.MSELoss):
        def forward(self, out, y):
            seen.append(lrs_of(task.optimizer))
            return super().forward(out, y)

    finder = LRFinder(task.model, task.optimizer, Spy())
    finder.range_test(task.train_loader, num_iter=3, end_lr=0.1)
    assert seen == [[1e-3, 1e-5], [1e-3 * 100 ** 0.5, 1e-5 * 1e4 ** 0.5], [0.1, 0.1]]
    assert finder.history["lr"] == [s[0] for s in seen]
    finder.range_test(task.train_loader, num_iter=2, end_lr=0.1, start_lr=[1e-4, 1e-6])
    assert seen[-2:] == [[1e-4, 1e-6], [0.1, 0.1]]


# ---- PEER: TestGradientAccumulation (3), TestMixedPrecision (2) -------------------------------------------
class Counting(nn.MSELoss):
    calls = 0

    def forward(self, out, y):
        Counting.calls += 1
        return super().forward(out, y)


def test_gradient_accumulation():
    """PEER test_gradient_accumulation: a batch of 32 as 4 of 8, the criterion called 4 x num_iter
    times; the loss is the window's mean (the reference's, to rounding)."""
    a, b = Task(batch_size=8), Task(batch_size=8)
    b.model.load_state_dict(a.model.state_dict())
    Counting.calls = 0
    finder = LRFinder(b.model, b.optimizer, Counting())
    finder.range_test(b.train_loader, num_iter=10, accumulation_steps=4)
    assert Counting.calls == 40
    want = reference(a.model, a.optimizer, a.criterion, a.train_loader, num_iter=10, accumulation_steps=4)
    assert finder.history["lr"] == want["lr"]
    np.testing.assert_allclose(finder.history["loss"], want["loss"], rtol=1e-6)


def test_apex_is_refused():
    """PEER test_gradient_accumulation_with_apex_amp, test_mixed_precision_apex: apex is not supported."""
    task = Task()
    with pytest.raises(ValueError, match="apex"):
        task.finder(amp_backend="apex")
    with pytest.raises(ValueError, match="amp_backend"):
        task.finder(amp_backend="cuda")


@pytest.mark.parametrize("accum", [1, 4])
def test_mixed_precision_torch(accum):
    """PEER test_mixed_precision_torch, test_gradient_accumulation_with_torch_amp (CUDA fp16 there; here
    the CPU): the forward runs under autocast in amp_config's dtype, and the criterion (under the
    peer's grad_scaler.scale spy) is called accum x num_iter times."""
    task = Task(batch_size=8)
    dtypes = []

    class Probe(nn.MSELoss):
        def forward(self, out, y):
            dtypes.append(out.dtype)
            return super().forward(out.float(), y)

    finder = LRFinder(task.model, task.optimizer, Probe(), amp_backend="torch",
                      amp_config={"device_type": "cpu", "dtype": torch.bfloat16})
    finder.range_test(task.train_loader, num_iter=10, accumulation_steps=accum)
    assert dtypes == [torch.bfloat16] * (10 * accum)
    dtypes.clear()
    task.finder().range_test(task.train_loader, num_iter=3)  # the default: no autocast
    with pytest.raises(ValueError, match="device_type"):
        task.finder(amp_config={"device_type": "cuda", "dtype": torch.float16})
    with pytest.raises(ValueError, match="dtype"):
        task.finder(amp_config={"device_type": "cpu", "dtype": torch.float64})
    with pytest.raises(ValueError, match="keys"):
        task.finder(amp_config={"device_type": "cpu", "fast": True})


def test_a_grad_scalers_skipped_steps_keep_their_lr_and_the_scaler_is_left_as_it_was():
    """Difference 3: a GradScaler whose scale overflows fp16 skips steps; the schedule counts steps
    taken, so those LRs repeat (the peer's would move on). The scaler given is used through a copy."""
    task = Task(batch_size=8)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)
    state = scaler.state_dict()
    finder = task.finder(amp_config={"device_type": "cpu", "dtype": torch.float16}, grad_scaler=scaler)
    finder.range_test(task.train_loader, num_iter=8, end_lr=0.1)
    lrs = finder.history["lr"]
    assert len(lrs) == 8 and lrs[0] == lrs[1] == 1e-5 and lrs[-1] < 0.1  # overflows at first: repeats
    assert scaler.state_dict() == state
    with pytest.raises(TypeError, match="grad_scaler"):
        task.finder(grad_scaler="yes")


# ---- PEER: TestDataLoaderIter (6) --------------------------------------------------------------------
def run_loader_iter(it, runs=None):
    """The peer's helper: whether ``next(it)`` gives ``runs`` batches (default: the loader's length)."""
    assert isinstance(it, DataLoaderIter)
    runs = len(it.data_loader) if runs is None else runs
    try:
        for _ in range(runs):
            next(it)
    except StopIteration:
        return False
    return True


def random_loader():
    return DataLoader(TensorDataset(torch.rand(256, 4), torch.rand(256, 1)), batch_size=32)


def test_traindataloaderiter():
    """PEER test_traindataloaderiter: it starts the loader again by itself."""
    it = TrainDataLoaderIter(random_loader())
    assert run_loader_iter(it) and run_loader_iter(it, len(it.data_loader) + 1)
    once = TrainDataLoaderIter(random_loader(), auto_reset=False)
    assert run_loader_iter(once) and not run_loader_iter(once, 1)
    assert it.dataset is it.data_loader.dataset


def test_valdataloaderiter():
    """PEER test_valdataloaderiter: one pass, then iter() starts another; never more than len(loader)."""
    dl = random_loader()
    it = ValDataLoaderIter(dl)
    assert run_loader_iter(it)
    assert not run_loader_iter(it)
    it = iter(it)
    assert run_loader_iter(it)
    assert not run_loader_iter(ValDataLoaderIter(dl), len(dl) + 1)
    assert len([x for x, _ in ValDataLoaderIter(dl)]) == len(dl)


class Unpack(TrainDataLoaderIter):
    """Batches as dicts, unpacked by an override (the peer's documented way)."""
    calls = 0

    def inputs_labels_from_batch(self, batch):
        type(self).calls += 1
        return batch["x"], batch["y"]


class ValUnpack(ValDataLoaderIter):
    calls = 0

    def inputs_labels_from_batch(self, batch):
        type(self).calls += 1
        return batch["x"], batch["y"]


def dict_loader(task, val=False):
    src = task.val_loader if val else task.train_loader
    return DataLoader(src.dataset, batch_size=8, collate_fn=lambda b: {"x": torch.stack([s[0] for s in b]),
                                                                          "y": torch.stack([s[1] for s in b])})


def test_run_range_test_with_traindataloaderiter():
    """PEER: inputs_labels_from_batch is called once per training batch; a dict batch without the
    override is refused with the peer's message."""
    task = Task()
    Unpack.calls = 0
    finder = task.finder()
    finder.range_test(Unpack(dict_loader(task)), num_iter=5)
    assert Unpack.calls == 5 and len(finder.history["lr"]) == 5
    with pytest.raises(ValueError, match="Please inherit from `TrainDataLoaderIter`"):
        finder.range_test(dict_loader(task), num_iter=5)


def test_run_range_test_with_valdataloaderiter():
    """PEER: the training override num_iter times, the validation one num_iter x len(val_loader)."""
    task = Task(validate=True)
    Unpack.calls = ValUnpack.calls = 0
    val = dict_loader(task, val=True)
    task.finder().range_test(Unpack(dict_loader(task)), val_loader=ValUnpack(val), num_iter=5)
    assert Unpack.calls == 5 and ValUnpack.calls == 5 * len(val)


class CustomLoaderIter:
    """Not a DataLoaderIter: an iterable class over a loader (the peer's test refuses it)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)


@pytest.mark.parametrize("which", ["train", "val"])
def test_range_test_with_a_custom_iterable(which):
    """PEER test_run_range_test_with_{train,val}loaderiter_without_subclassing expects a ValueError.
    Difference 5: any re-iterable loader of batches is taken, and trains as the DataLoader it wraps
    does; a one-shot iterator or a non-iterable is refused, naming the argument."""
    a, b = Task(validate=True), Task(validate=True)
    b.model.load_state_dict(a.model.state_dict())
    fa, fb = a.finder(), b.finder()
    fa.range_test(a.train_loader, a.val_loader, num_iter=5)
    if which == "train":
        fb.range_test(CustomLoaderIter(b.train_loader), b.val_loader, num_iter=5)
    else:
        fb.range_test(b.train_loader, CustomLoaderIter(b.val_loader), num_iter=5)
    assert fa.history == fb.history
    with pytest.raises(TypeError, match=f"{which}_loader is an iterator"):
        fb.range_test(*([iter(b.train_loader)] if which == "train" else [b.train_loader, iter(b.val_loader)]))
    with pytest.raises(TypeError, match=f"{which}_loader"):
        fb.range_test(*([3] if which == "train" else [b.train_loader, 3]))


# ---- PEER: test_scheduler_and_num_iter (4) ---------------------------------------------------------------
@pytest.mark.parametrize("num_iter", [0, 1])
@pytest.mark.parametrize("step_mode", ["exp", "linear"])
def test_scheduler_and_num_iter(num_iter, step_mode):
    task = Task()
    before = snapshot(task.model, task.optimizer)
    with pytest.raises(ValueError, match="num_iter"):
        task.finder().range_test(task.train_loader, num_iter=num_iter, step_mode=step_mode, end_lr=5e-5)
    assert_same(snapshot(task.model, task.optimizer), before)


# ---- PEER: test_plot_with_skip_and_suggest_lr (18), test_suggest_lr (1) ------------------------------------
@pytest.fixture(scope="module")
def eleven():
    """One range test of 11 iterations, shared by the 18 plot cases."""
    task = Task()
    finder = task.finder()
    finder.range_test(task.train_loader, num_iter=11, step_mode="exp", end_lr=0.1)
    return finder


@pytest.mark.parametrize("suggest_lr", [False, True])
@pytest.mark.parametrize("skip_start", [0, 5, 10])
@pytest.mark.parametrize("skip_end", [0, 5, 10])
def test_plot_with_skip_and_suggest_lr(eleven, suggest_lr, skip_start, skip_end, capsys):
    fig, ax = plt.subplots()
    try:
        if suggest_lr and 11 < skip_start + skip_end + 2:
            with pytest.raises(RuntimeError, match="Need at least"):
                eleven.plot(skip_start=skip_start, skip_end=skip_end, suggest_lr=suggest_lr, ax=ax)
            return
        results = eleven.plot(skip_start=skip_start, skip_end=skip_end, suggest_lr=suggest_lr, ax=ax)
        assert len(ax.lines) == 1
        if suggest_lr:
            ret_ax, lr = results
            assert ret_ax is ax and len(ax.collections) == 1 and "Suggested LR" in capsys.readouterr().out
            assert lr in eleven.history["lr"]
        else:
            assert results is ax and len(ax.collections) == 0
        cut = slice(skip_start, -skip_end if skip_end else None)
        x, y = ax.lines[0].get_data()
        assert np.array_equal(x, eleven.history["lr"][cut]) and np.array_equal(y, eleven.history["loss"][cut])
    finally:
        plt.close(fig)


def test_suggest_lr():
    """PEER test_suggest_lr: the steepest descent (np.gradient's minimum) of the plotted losses, at the
    start and at the end of the history too."""
    finder = Task().finder()
    for losses, want in [([10, 8, 4, 1, 4, 16], 2), ([1, 0, 1, 2, 3, 4], 0), ([0, 1, 2, 3, 4, 3], 5)]:
        finder.history = {"lr": list(range(len(losses))), "loss": losses}
        fig, ax = plt.subplots()
        ax, lr = finder.plot(skip_start=0, skip_end=0, suggest_lr=True, ax=ax)
        assert lr == want
        plt.close(fig)


def test_plot_without_an_axes_shows_a_pyplot_figure_and_marks_show_lr(eleven, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))
    ax = eleven.plot(skip_start=0, skip_end=0, suggest_lr=False, show_lr=0.01, log_lr=False)
    assert shown == [ax.figure] and ax.get_xscale() == "linear" and len(ax.lines) == 2  # the curve, show_lr
    plt.close(ax.figure)
    for kw, err in [({"skip_start": -1}, ValueError), ({"skip_end": 1.5}, TypeError), ({"show_lr": "a"}, TypeError)]:
        with pytest.raises(err):
            eleven.plot(**kw)


# ---- the deliberate differences ------------------------------------------------------------------------
class Noisy(nn.Module):
    """Dropout (draws from the global RNG) and BatchNorm (running statistics): state to restore."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


@pytest.mark.parametrize("exit_path", ["completed", "diverged", "error"])
def test_everything_is_restored_on_every_exit(exit_path):
    """Difference 1: weights, buffers, gradients, modes, the optimizer (momentum state, groups with an
    initial_lr left by a scheduler: the peer refuses those), every RNG and the shuffling loader's
    generator are as before, however the test ends."""
    torch.manual_seed(0)
    model = Noisy()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = oc.compat.OneCycleLR(opt, max_lr=0.1, total_steps=50)
    g = torch.Generator().manual_seed(5)
    ds = XOR(400)
    train = DataLoader(ds, batch_size=16, shuffle=True, generator=g)
    for xb, yb in list(train)[:3]:  # momentum buffers, a scheduler's keys, leftover gradients
        opt.zero_grad()
        nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
        sched.step()
    model.net[1].eval()
    before, rng, gen = snapshot(model, opt), get_rng_state(), g.get_state()
    criterion = nn.MSELoss()
    finder = LRFinder(model, opt, criterion if exit_path != "error" else Boom())
    if exit_path == "error":
        with pytest.raises(RuntimeError, match="boom"):
            finder.range_test(train, DataLoader(ds, batch_size=50), num_iter=20)
    else:
        finder.range_test(train, DataLoader(ds, batch_size=50), num_iter=30, end_lr=0.1 if exit_path == "completed"
                          else 1e5)
        assert finder.result.stop_reason.startswith(exit_path), finder.result.stop_reason
    assert_same(snapshot(model, opt), before)
    assert torch.equal(g.get_state(), gen)
    after = draws()
    set_rng_state(rng)
    assert draws() == after


class Boom(nn.MSELoss):
    n = 0

    def forward(self, out, y):
        Boom.n += 1
        if Boom.n == 7:
            raise RuntimeError("boom")
        return super().forward(out, y)


def test_a_stale_gradient_does_not_leak_into_the_first_step():
    """The peer zeroes gradients before each step; so does this (and puts the user's back after)."""
    a, b = Task(), Task()
    b.model.load_state_dict(a.model.state_dict())
    for p in b.model.parameters():
        p.grad = torch.full_like(p, 100.0)
    fa, fb = a.finder(), b.finder()
    fa.range_test(a.train_loader, num_iter=5)
    fb.range_test(b.train_loader, num_iter=5)
    assert fa.history == fb.history
    assert all(torch.equal(p.grad, torch.full_like(p, 100.0)) for p in b.model.parameters())


def test_a_nan_loss_stops_before_the_step():
    """Difference 2: the peer records NaN and trains on; here the step is not taken nor recorded."""
    task = Task()

    class NanAt(nn.MSELoss):
        n = 0

        def forward(self, out, y):
            NanAt.n += 1
            loss = super().forward(out, y)
            return loss * float("nan") if NanAt.n == 6 else loss

    finder = LRFinder(task.model, task.optimizer, NanAt())
    finder.range_test(task.train_loader, num_iter=20)
    assert len(finder.history["loss"]) == 5 and all(np.isfinite(finder.history["loss"]))
    assert finder.result.stop_reason.startswith("non-finite")


def test_rotating_validation_batches_and_metrics():
    """The extras: val_batches=k reads the next k batches of a rotating iterator at each step, and
    metrics are recorded at every step in finder.result; history["loss"] follows the validation loss."""
    task = Task(validate=True)
    seen = []

    def mae(preds, y):
        seen.append(len(y))
        return (preds - y).abs().mean().item()

    finder = task.finder()
    finder.range_test(task.train_loader, task.val_loader, num_iter=6, val_batches=2, metrics=[mae])
    assert seen == [8] * 12 and len(finder.result.metrics["mae"]) == 6
    assert finder.history["loss"] == peer_smooth(finder.result.val_losses, 0.05)
    assert len(finder.result.losses) == 6  # the training loss is kept too


def test_a_dataloaderiter_is_read_from_its_loaders_start_and_left_where_it_was():
    """Difference 6: the test reads the loader afresh; the user's iterator is not advanced (and made
    no iterator at construction)."""
    a, b = Task(), Task()
    b.model.load_state_dict(a.model.state_dict())
    it = TrainDataLoaderIter(b.train_loader)
    assert it._iterator is None
    first = next(it)
    fa, fb = a.finder(), b.finder()
    fa.range_test(a.train_loader, num_iter=4)
    fb.range_test(it, num_iter=4)
    assert fa.history == fb.history
    second = next(it)  # the user's iterator goes on from where it was: the loader's second batch
    assert torch.equal(first[0], list(b.train_loader)[0][0]) and torch.equal(second[0], list(b.train_loader)[1][0])


def test_validation_weighs_batches_by_their_targets():
    """Difference 7: the validation loss is the mean over every target, an uneven last batch counted
    for what it holds (by hand); the peer divides by len(dataset) (the same here: no drop_last)."""
    task = Task(validate=True)
    val = DataLoader(task.val_loader.dataset, batch_size=7)  # 80 = 11 x 7 + 3
    finder = task.finder()
    finder.range_test(task.train_loader, val, num_iter=2, smooth_f=0)
    model = copy.deepcopy(task.model)
    assert len(finder.result.val_losses) == 2
    # the first point: the model after one step at the start LR, validated on every target
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    xb, yb = next(iter(task.train_loader))
    nn.functional.mse_loss(model(xb), yb).backward()
    opt.step()
    with torch.no_grad():
        x = torch.stack([s[0] for s in val.dataset])
        y = torch.stack([s[1] for s in val.dataset])
        want = nn.functional.mse_loss(model(x), y).item()
    assert finder.history["loss"][0] == pytest.approx(want, rel=1e-6)


def test_bad_arguments_change_nothing():
    """Difference 5: each refused before the model, the optimizer or an RNG changes."""
    task = Task(validate=True)
    finder = task.finder()
    before, rng = snapshot(task.model, task.optimizer), torch.get_rng_state()
    cases = [({"start_lr": 1.0, "end_lr": 0.1}, ValueError, "start_lr must be below"),
             ({"start_lr": 0}, ValueError, "start_lr"), ({"start_lr": [1e-5, 1e-5]}, ValueError, "param groups"),
             ({"end_lr": "10"}, TypeError, "end_lr"), ({"step_mode": "cos"}, ValueError, "exp, linear"),
             ({"smooth_f": 1.0}, ValueError, "smooth_f"), ({"diverge_th": 0}, ValueError, "diverge_th"),
             ({"accumulation_steps": 0}, ValueError, "accumulation_steps"), ({"num_iter": 2.0}, ValueError, "num_iter"),
             ({"val_batches": 0}, ValueError, "val_batches"), ({"non_blocking_transfer": "no"}, TypeError, "non_block")]
    for kw, err, match in cases:
        with pytest.raises(err, match=match):
            finder.range_test(task.train_loader, task.val_loader, **kw)
        assert_same(snapshot(task.model, task.optimizer), before)
        assert torch.equal(torch.get_rng_state(), rng)
    for args, err, match in [((task.model, "sgd", nn.MSELoss()), TypeError, "optimizer"),
                             ((task.model, task.optimizer, nn.MSELoss), TypeError, "criterion"),
                             ((task.model, task.optimizer, nn.MSELoss(), None, True, "/nowhere"), ValueError,
                              "cache_dir")]:
        with pytest.raises(err, match=match):
            LRFinder(*args)


def test_device_and_cache_arguments(tmp_path):
    """Difference 8: cache_dir is checked and the snapshot stays in memory; device='cpu' runs there."""
    task = Task()
    finder = task.finder(device="cpu", memory_cache=False, cache_dir=tmp_path)
    finder.range_test(task.train_loader, num_iter=3)
    assert len(finder.history["lr"]) == 3 and list(tmp_path.iterdir()) == []


def test_onecycle_exports_the_drop_in():
    assert oc.LRFinder is LRFinder and oc.compat.LRFinder is LRFinder
    assert not hasattr(oc, "RangeTest")


def test_readme_snippet_runs_and_changes_one_import(capsys):
    """README "From torch-lr-finder": the peer's snippet with one import changed, run as written."""
    from _readme import snippet
    before, after = snippet("torch-lr-finder"), snippet("onecycle-lr-finder")
    assert before.replace("from torch_lr_finder import LRFinder", "from onecycle import LRFinder") == after != before
    task = Task(validate=True)
    fig, ax = plt.subplots()
    scope = {"model": task.model, "optimizer": task.optimizer, "criterion": task.criterion,
             "trainloader": task.train_loader, "valloader": task.val_loader, "ax": ax}
    exec(after, scope)
    h = scope["lr_finder"].history
    assert h["lr"][:3] == pytest.approx([1e-5, 1e-5 + (1 - 1e-5) / 99, 1e-5 + 2 * (1 - 1e-5) / 99])
    assert len(ax.lines) == 1 and "Suggested LR" in capsys.readouterr().out
    plt.close(fig)
