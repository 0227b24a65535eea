"""Tests for onecycle.data: TensorLoader parity with DataLoader, sharding, LMLoader, placing data on a device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from onecycle import data
from onecycle.data import LMLoader, TensorLoader


def _xy(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3), torch.arange(n)


def _epoch(loader) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(b) for b in loader]


def _same(a: list, b: list) -> bool:
    """Two lists of batches hold equal tensors in the same order."""
    if len(a) != len(b) or any(len(p) != len(q) for p, q in zip(a, b, strict=True)):
        return False
    return all(torch.equal(s, t) for p, q in zip(a, b, strict=True) for s, t in zip(p, q, strict=True))


def _join(per_rank: list[list[tuple]]) -> list[tuple]:
    """Concatenate the ranks' pieces of each step into one global batch."""
    steps = zip(*per_rank, strict=True)
    return [tuple(torch.cat(parts) for parts in zip(*step, strict=True)) for step in steps]


# ---------------------------------------------------------------------------------------------- TensorLoader

def test_every_sample_once_per_epoch():
    x, y = _xy(103)
    loader = TensorLoader(x, y, batch_size=10, shuffle=True, seed=1)
    for _ in range(3):
        batches = _epoch(loader)
        assert [len(b[1]) for b in batches] == [10] * 10 + [3]
        seen = torch.cat([b[1] for b in batches])
        assert torch.equal(seen.sort().values, y)
        assert torch.equal(torch.cat([b[0] for b in batches])[:, 0].long(), seen)  # rows stay aligned


def test_same_seed_same_order_and_new_order_each_epoch():
    x, y = _xy(200)
    a, b = (TensorLoader(x, y, batch_size=32, shuffle=True, seed=7) for _ in range(2))
    epochs = [_epoch(a) for _ in range(3)]
    assert all(_same(e, _epoch(b)) for e in epochs)
    orders = [torch.cat([t[1] for t in e]) for e in epochs]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    other = torch.cat([t[1] for t in TensorLoader(x, y, batch_size=32, shuffle=True, seed=8)])
    assert not torch.equal(other, orders[0])


@pytest.mark.parametrize("n", [103, 100])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_parity_with_dataloader(n, shuffle, drop_last):
    x, y = _xy(n)
    ref = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=shuffle, drop_last=drop_last,
                     generator=torch.Generator().manual_seed(5))
    loader = TensorLoader(x, y, batch_size=10, shuffle=shuffle, drop_last=drop_last, seed=5)
    assert len(loader) == len(ref)
    for _ in range(3):
        assert _same(_epoch(ref), _epoch(loader))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), bs=st.integers(1, 12), drop_last=st.booleans(), seed=st.integers(0, 2**31))
def test_parity_with_dataloader_any_size(n, bs, drop_last, seed):
    if drop_last and n < bs:
        return  # TensorLoader refuses a loader with no batches
    x, y = _xy(n)
    ref = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True, drop_last=drop_last,
                     generator=torch.Generator().manual_seed(seed))
    loader = TensorLoader(x, y, batch_size=bs, shuffle=True, drop_last=drop_last, seed=seed)
    for _ in range(2):
        assert _same(_epoch(ref), _epoch(loader))


def test_eval_batches_cover_every_row_once_in_big_chunks(monkeypatch):
    x, y = _xy(10)  # 3 floats + 1 int64 = 20 bytes a row
    monkeypatch.setattr(data, "EVAL_CHUNK_BYTES", 20 * 4)
    loader = TensorLoader(x, y, batch_size=2)
    chunks = _epoch(loader.eval_batches())
    assert [len(c[0]) for c in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat([c[0] for c in chunks]), x) and torch.equal(torch.cat([c[1] for c in chunks]), y)
    assert loader.epoch == 1  # counted as a pass
    assert loader.eval_batches is not None and TensorLoader(x, y, batch_size=5).eval_batches().__class__ \
        is TensorLoader  # 5 rows a batch already exceed the chunk: the loader itself
    for usual in (TensorLoader(x, y, batch_size=2, shuffle=True), TensorLoader(x, y, batch_size=3, drop_last=True),
                  TensorLoader(x, y, batch_size=2).shard(0, 2, drop_last=False)):
        assert usual.eval_batches() is usual


def test_set_epoch_reproduces_any_epoch():
    x, y = _xy(57)
    sequential = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3)
    expected = [_epoch(sequential) for _ in range(5)]
    assert sequential.epoch == 5
    jumping = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3)
    for e in (3, 1, 4, 0, 2, 2):
        jumping.set_epoch(e)
        assert _same(_epoch(jumping), expected[e]), e
        assert jumping.epoch == e + 1
    assert _same(_epoch(jumping), expected[3])  # without set_epoch it goes on to the next epoch


def test_batches_are_views_of_one_gather():
    x, y = _xy(50)
    plain = TensorLoader(x, y, batch_size=16)
    assert all(b[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for b in plain)
    shuffled = _epoch(TensorLoader(x, y, batch_size=16, shuffle=True))
    assert len({b[0].untyped_storage().data_ptr() for b in shuffled}) == 1


def test_numpy_input():
    xn, yn = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32), np.arange(30)
    from_np = TensorLoader(xn, yn, batch_size=7, shuffle=True, seed=2)
    from_torch = TensorLoader(torch.from_numpy(xn), torch.from_numpy(yn), batch_size=7, shuffle=True, seed=2)
    got = _epoch(from_np)
    assert got[0][0].dtype == torch.float32 and got[0][1].dtype == torch.int64
    assert _same(got, _epoch(from_torch))


def test_device_placement():
    x, y = _xy(10)
    batches = _epoch(TensorLoader(x, y, batch_size=4, shuffle=True, device="cpu"))
    assert all(b[0].device.type == "cpu" for b in batches)
    assert len(batches) == 3 and batches[-1][0].shape == (2, 3)


@pytest.mark.parametrize("world", [2, 3])
def test_shard_pieces_make_the_global_batches(world):
    x, y = _xy(101)
    single = TensorLoader(x, y, batch_size=4 * world, shuffle=True, drop_last=True, seed=9)
    base = TensorLoader(x, y, batch_size=4, shuffle=True, seed=9)
    shards = [base.shard(r, world) for r in range(world)]
    assert all(s.drop_last and len(s) == len(single) == 101 // (4 * world) for s in shards)
    for _ in range(2):
        per_rank = [_epoch(s) for s in shards]
        joined = _join(per_rank)
        assert all(b[0].shape[0] == 4 for rank in per_rank for b in rank)
        assert _same(joined, _epoch(single))


def test_shard_without_drop_last_splits_the_last_batch_evenly():
    x, y = _xy(23)
    single = _epoch(TensorLoader(x, y, batch_size=8, shuffle=True))
    shards = [TensorLoader(x, y, batch_size=4, shuffle=True).shard(r, 2, drop_last=False) for r in range(2)]
    per_rank = [_epoch(s) for s in shards]
    assert [len(r) for r in per_rank] == [3, 3]
    assert [b[1].shape[0] for b in per_rank[0]] == [4, 4, 4] and per_rank[1][-1][1].shape[0] == 3
    joined = _join(per_rank)
    assert _same(joined, single)
    uneven = [TensorLoader(x[:10], y[:10], batch_size=2).shard(r, 3, drop_last=False) for r in range(3)]
    assert [[b[1].numel() for b in t] for t in uneven] == [[2, 2], [2, 1], [2, 1]]
    tiny = [TensorLoader(x[:2], y[:2], batch_size=4).shard(r, 3, drop_last=False) for r in range(3)]
    assert [[b[1].numel() for b in t] for t in tiny] == [[1], [1], [0]]  # an empty piece is still yielded


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": -1}, "batch_size"),
    ({"batch_size": 2.0}, "batch_size"),
    ({"batch_size": True}, "batch_size"), ({"shuffle": 1}, "shuffle"), ({"seed": "a"}, "seed"),
    ({"batch_size": 20, "drop_last": True}, "drop_last"),
])
def test_bad_arguments(kwargs, match):
    x, y = _xy(10)
    with pytest.raises((ValueError, TypeError), match=match):
        TensorLoader(x, y, **kwargs)


def test_bad_data():
    x, y = _xy(10)
    with pytest.raises(ValueError, match=r"tensors\[1\]"):
        TensorLoader(x, y[:9])
    with pytest.raises(ValueError, match="0"):
        TensorLoader(x[:0], y[:0])
    with pytest.raises(ValueError, match="at least one tensor"):
        TensorLoader()
    with pytest.raises(TypeError, match=r"tensors\[0\]"):
        TensorLoader([1, 2, 3])
    with pytest.raises(ValueError, match="tensors"):
        TensorLoader(torch.tensor(3.0))
    loader = TensorLoader(x, y, batch_size=2)
    with pytest.raises(ValueError, match="rank"):
        loader.shard(2, 2)
    with pytest.raises(ValueError, match="world_size"):
        loader.shard(0, 0)
    with pytest.raises(ValueError, match="epoch"):
        loader.set_epoch(-1)


def test_integer_arguments_are_checked_by_type_then_range():
    x, y = _xy(10)
    loader = TensorLoader(x, y, batch_size=2)
    for call, error, message in (
            (lambda: loader.shard(True, 2), TypeError, r"^rank must be an int in \[0, 1\], got True$"),
            (lambda: loader.shard(-1, 2), ValueError, r"^rank must be an int in \[0, 1\], got -1$"),
            (lambda: loader.set_epoch(1.0), TypeError, r"^epoch must be an int >= 0, got 1.0$"),
            (lambda: LMLoader(torch.arange(100), 4, 8).set_epoch(False), TypeError, r"^epoch must be an int >= 0"),
            (lambda: TensorLoader(x, y, seed=1.5), TypeError, r"^seed must be an int, got 1.5$")):
        with pytest.raises(error, match=message):
            call()
    assert loader.shard(1, 2).rank == 1  # the top of the range is allowed


# ---------------------------------------------------------------------------------------------- LMLoader

def test_lm_loader_windows_shift_by_one():
    stream = torch.arange(1000) % 97
    loader = LMLoader(stream, batch_size=4, bptt=16)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-(250 - 1) // 16)
    assert batches[-1][0].shape == (4, (250 - 1) % 16)
    xs, ys = torch.cat([b[0] for b in batches], 1), torch.cat([b[1] for b in batches], 1)
    rows = stream.view(4, 250)
    assert torch.equal(xs, rows[:, :-1]) and torch.equal(ys, rows[:, 1:])
    loader.set_epoch(5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(loader, batches, strict=True))
    assert loader.epoch == 6


def test_lm_loader_bad_input():
    with pytest.raises(ValueError, match="ids"):
        LMLoader(torch.rand(100))
    with pytest.raises(ValueError, match="ids"):
        LMLoader(torch.arange(10), batch_size=8)
    with pytest.raises(ValueError, match="bptt"):
        LMLoader(torch.arange(100), bptt=0)


# ---- placing in-memory data on the device ----------------------------------------------------------
def test_place_on_device_moves_in_memory_loaders_when_they_fit(monkeypatch):
    meta = torch.device("meta")
    x, y = torch.randn(100, 4), torch.randint(0, 3, (100,))
    nbytes = x.numel() * 4 + y.numel() * 8
    free = {"bytes": None}
    monkeypatch.setattr(data, "_free_bytes", lambda device: free["bytes"])
    dl = TensorLoader(x, y, batch_size=10, shuffle=True)
    assert not data.place_on_device(dl, meta) and dl.tensors[0].device.type == "cpu"  # free memory unknown
    free["bytes"] = 4 * nbytes - 2  # a shuffling loader needs twice its bytes, within half the free memory
    assert not data.place_on_device(dl, meta) and dl.tensors[0].device.type == "cpu"
    free["bytes"] = 4 * nbytes
    assert data.place_on_device(dl, meta) and {t.device for t in dl.tensors} == {meta}
    assert data.place_on_device(dl, meta)  # already there
    plain = TensorLoader(x, y, batch_size=10)  # no shuffled copy: its own bytes are enough
    free["bytes"] = 2 * nbytes
    assert data.place_on_device(plain, meta) and plain.tensors[1].device == meta
    lm = LMLoader(torch.arange(200), batch_size=4, bptt=5)
    assert data.place_on_device(lm, meta) and lm.data.device == meta
    other = DataLoader(TensorDataset(x, y), batch_size=10)
    assert not data.place_on_device(other, meta) and other.dataset.tensors[0].device.type == "cpu"


def test_learner_places_tensor_loaders_on_its_device_before_training(monkeypatch):
    import onecycle as oc

    monkeypatch.setattr(data, "_free_bytes", lambda device: 10**9)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    train, valid = TensorLoader(x, y, batch_size=10, shuffle=True), TensorLoader(x, y, batch_size=10)
    learn = oc.Learner(torch.nn.Linear(4, 3), train, valid, quiet=True, device="meta")
    assert train.tensors[0].device.type == "cpu"  # nothing moves until a fit (or lr_find) starts
    learn.place_data()  # what every fit and lr_find does first
    assert {t.device.type for t in (*train.tensors, *valid.tensors)} == {"meta"}
    cpu = TensorLoader(x, y, batch_size=10)
    oc.Learner(torch.nn.Linear(4, 3), cpu, quiet=True, device="cpu").place_data()
    assert cpu.tensors[0].device.type == "cpu"


def _benchmark_inside(want=None):
    from onecycle.cudnn import cudnn_benchmark

    with cudnn_benchmark(torch.device("cuda"), want):  # sets the flag only: no GPU needed
        return torch.backends.cudnn.benchmark


def test_cudnn_benchmark_is_on_unless_determinism_is_asked_for():
    cudnn = torch.backends.cudnn
    old = cudnn.deterministic, torch.are_deterministic_algorithms_enabled(), cudnn.benchmark
    try:
        torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(False)
        assert _benchmark_inside() is True and _benchmark_inside(False) is False
        torch.backends.cudnn.deterministic = True
        assert _benchmark_inside() is False and _benchmark_inside(True) is True
        torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(True)
        assert _benchmark_inside() is False
        from onecycle.cudnn import cudnn_benchmark
        with cudnn_benchmark(torch.device("cpu"), True):  # off CUDA it changes nothing
            assert torch.backends.cudnn.benchmark is old[2]
    finally:
        torch.backends.cudnn.deterministic = old[0]
        torch.use_deterministic_algorithms(old[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_tensor_loaders_become_gpu_resident_and_cudnn_setting_is_restored():
    import onecycle as oc

    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    train = TensorLoader(x, y, batch_size=16, shuffle=True)
    seen = []

    class Probe(oc.Callback):
        def before_batch(self, learn):
            seen.append((learn.train_dl.tensors[0].device.type, torch.backends.cudnn.benchmark))

    old = torch.backends.cudnn.benchmark
    learn = oc.Learner(torch.nn.Linear(4, 3), train, quiet=True, device="cuda", callbacks=[Probe()])
    learn.fit_one_cycle(1, 0.01)
    assert seen == [("cuda", True)] * 4 and torch.backends.cudnn.benchmark == old


def test_learner_places_train_and_valid_data_within_one_budget(monkeypatch):
    # Each loader alone fits in half the free memory, both together (with the shuffled copy) do not:
    # the valid data must stay on the host rather than leave the model 1/8 of the free memory.
    import onecycle as oc

    free, used = 8 * 2**20, {"bytes": 0}
    monkeypatch.setattr(data, "_free_bytes", lambda device: free - used["bytes"])
    orig_to = TensorLoader.to

    def to(self, device):
        used["bytes"] += sum(t.numel() * t.element_size() for t in self.tensors)
        return orig_to(self, device)

    monkeypatch.setattr(TensorLoader, "to", to)
    mib = 2**20 // 4
    train = TensorLoader(torch.zeros(2 * mib, 1), torch.zeros(2 * mib, 0), batch_size=64, shuffle=True)  # 2 MiB, x2
    valid = TensorLoader(torch.zeros(3 * mib, 1), torch.zeros(3 * mib, 0), batch_size=64)  # 3 MiB
    oc.Learner(torch.nn.Linear(1, 1), train, valid, quiet=True, device="meta").place_data()
    assert train.tensors[0].device.type == "meta" and valid.tensors[0].device.type == "cpu"


def test_cudnn_benchmark_is_restored_when_fits_overlap_and_end_out_of_order():
    import threading

    from onecycle.cudnn import cudnn_benchmark

    cuda = torch.device("cuda")  # the context sets the flag only: no GPU needed
    old = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_benchmark(cuda):
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is False
        a_in, b_in, a_out, seen = threading.Event(), threading.Event(), threading.Event(), []

        def first():
            with cudnn_benchmark(cuda):
                a_in.set()
                assert b_in.wait(timeout=60)
            a_out.set()

        def second():
            assert a_in.wait(timeout=60)
            with cudnn_benchmark(cuda):
                b_in.set()
                assert a_out.wait(timeout=60)
                seen.append(torch.backends.cudnn.benchmark)  # the first fit has ended, this one runs on

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads) and seen == [True] and torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = old


def test_same_device_reads_a_bare_cuda_as_the_current_device(monkeypatch):
    dev = torch.device
    for current in (0, 1):
        monkeypatch.setattr(torch.cuda, "current_device", lambda current=current: current)
        assert data.same_device(dev("cuda:0"), dev("cuda")) is (current == 0)
        assert data.same_device(dev("cuda"), dev("cuda:1")) is (current == 1)
    assert not data.same_device(dev("cuda:0"), dev("cuda:1")) and not data.same_device(dev("cpu"), dev("cuda"))


def test_lr_find_places_the_data_once_and_leaves_it_placed(monkeypatch):
    import onecycle as oc

    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    train, valid = TensorLoader(x, y, batch_size=16, shuffle=True), TensorLoader(x, y, batch_size=16)
    learn = oc.Learner(torch.nn.Linear(4, 3), train, valid, quiet=True, device="cpu")
    placed = []

    def place():  # stands in for the move to a GPU: new tensor objects with the same values
        if not placed:
            train.tensors = tuple(t.clone() for t in train.tensors)
        placed.append(train.tensors)

    monkeypatch.setattr(learn, "place_data", place)
    learn.lr_find(num_it=6, runs=2)
    assert placed and all(t is placed[0] for t in placed)  # moved once, not again for the second run
    assert train.tensors is placed[0]  # the snapshot taken after the move keeps it
