"""Tests for onecycle.rng: capture and restore of the global RNGs and of the generators loaders draw
from, directly and through a checkpoint file."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from onecycle.checkpoint import atomic_save, safe_load
from onecycle.rng import get_rng_state, loader_generators, set_rng_state


def _draws():
    return (
        torch.rand(5).tolist(),
        torch.randn(3).tolist(),
        np.random.rand(5).tolist(),
        np.random.standard_normal(3).tolist(),
        [random.random() for _ in range(5)],
        [random.gauss(0, 1) for _ in range(3)],
    )


def test_rng_round_trip_through_checkpoint_repeats_draws(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in random's
    path = tmp_path / "rng.pt"
    atomic_save({"rng": get_rng_state()}, path)
    expected = _draws()
    _draws()  # move every generator on
    set_rng_state(safe_load(path)["rng"])
    assert _draws() == expected


def test_rng_state_without_file_round_trip():
    state = get_rng_state()
    expected = _draws()
    set_rng_state(state)
    assert _draws() == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_round_trip_through_checkpoint(tmp_path):
    torch.cuda.manual_seed_all(5)
    torch.rand(1, device="cuda")  # initialises CUDA so its RNG is captured
    path = tmp_path / "rng.pt"
    atomic_save({"rng": get_rng_state()}, path)
    expected = torch.rand(8, device="cuda").tolist()
    torch.rand(8, device="cuda")
    set_rng_state(safe_load(path, map_location="cuda")["rng"])
    assert torch.rand(8, device="cuda").tolist() == expected


def test_rng_state_with_unavailable_cuda_devices_warns(monkeypatch):
    state = get_rng_state()
    state["cuda"] = [torch.get_rng_state()] * 64  # more devices than any test machine has
    with pytest.warns(UserWarning, match="CUDA RNG not restored"):
        set_rng_state(state)


def test_set_rng_state_rejects_bad_input():
    with pytest.raises(TypeError, match="state must be a dict"):
        set_rng_state([1, 2])
    with pytest.raises(ValueError, match="numpy"):
        set_rng_state({"format": 1, "torch": torch.get_rng_state(), "random": {}})


# --- the generators loaders draw from, in the RNG state ------------------------------------------


class _OwnSampler(torch.utils.data.Sampler):
    """A user's sampler keeping its generator under its own name."""

    def __init__(self, n, seed):
        self.n, self.rng = n, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.rng).tolist())

    def __len__(self):
        return self.n


class _Jittered(torch.utils.data.Dataset):
    """Indices plus a jitter drawn, at each fetch, from the dataset's own generator."""

    def __init__(self, n, seed):
        self.n, self.jitter_gen = n, torch.Generator().manual_seed(seed)

    def __getitem__(self, i):
        return (i + torch.rand((), generator=self.jitter_gen),)

    def __len__(self):
        return self.n


def _owning_loaders():
    """Shuffling loaders over 40 indices: one drawing from the global RNG, then one per place a
    loader keeps a generator (each its own seed), one with two distinct generators, one whose
    sampler and dataset keep theirs under their own names, and torchdata's StatefulDataLoader
    (whose sampler owns a generator it seeds from the global RNG)."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    ds = TensorDataset(torch.arange(40))

    def gen(seed):
        return torch.Generator().manual_seed(seed)
    return {
        "custom": DataLoader(_Jittered(40, 6), batch_size=8, sampler=_OwnSampler(40, 7)),
        "global": DataLoader(ds, batch_size=8, shuffle=True),
        "loader": DataLoader(ds, batch_size=8, shuffle=True, generator=gen(1)),
        "sampler": DataLoader(ds, batch_size=8, sampler=RandomSampler(ds, generator=gen(2))),
        "batch_sampler": DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds, generator=gen(3)), 8, False)),
        "two": DataLoader(ds, batch_size=8, sampler=RandomSampler(ds, generator=gen(4)), generator=gen(5)),
        "stateful": stateful.StatefulDataLoader(ds, batch_size=8, shuffle=True),
    }


def _two_epochs(loaders):
    """Each loader's order over two epochs (making each iterator also draws its workers' base seed
    from the loader's generator, so that draw is in the order too)."""
    return {name: torch.cat([batch[0] for _ in range(2) for batch in dl]) for name, dl in loaders.items()}


def test_loader_generators_round_trip_through_checkpoint_repeats_orders(tmp_path):
    torch.manual_seed(0)
    loaders = _owning_loaders()
    _two_epochs(loaders)  # every generator away from its seed
    path = tmp_path / "rng.pt"
    atomic_save({"rng": get_rng_state(loaders)}, path)
    expected = _two_epochs(loaders)
    moved_on = _two_epochs(loaders)
    for name in loaders:
        assert not torch.equal(moved_on[name], expected[name]), name
    state = safe_load(path)["rng"]
    set_rng_state(state, loaders)
    again = _two_epochs(loaders)
    for name in loaders:
        assert torch.equal(again[name], expected[name]), name
    # Without the loaders only the global RNG comes back: the owned generators are left as they are.
    set_rng_state(state)
    global_only = _two_epochs(loaders)
    assert torch.equal(global_only["global"], expected["global"])
    for name in ("loader", "sampler", "batch_sampler", "two", "custom", "stateful"):
        assert not torch.equal(global_only[name], expected[name]), name


def test_loader_generators_are_deduplicated_by_identity_in_a_stable_order():
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset
    ds = TensorDataset(torch.arange(10))
    g, g1, g2 = torch.Generator(), torch.Generator(), torch.Generator()
    shared = loader_generators(DataLoader(ds, shuffle=True, generator=g))
    assert [paths for paths, _ in shared] == [["generator", "sampler.generator", "batch_sampler.sampler.generator"]]
    assert shared[0][1] is g
    two = loader_generators(DataLoader(ds, sampler=RandomSampler(ds, generator=g2), generator=g1))
    assert [paths for paths, _ in two] == [["generator"], ["sampler.generator", "batch_sampler.sampler.generator"]]
    assert two[0][1] is g1 and two[1][1] is g2
    assert loader_generators(DataLoader(ds, shuffle=True)) == []  # draws from the global RNG
    assert loader_generators([1, 2, 3]) == []  # no loader attributes at all
    custom = DataLoader(_Jittered(10, 0), sampler=_OwnSampler(10, 1))
    assert [paths for paths, _ in loader_generators(custom)] == [
        ["sampler.rng", "batch_sampler.sampler.rng"], ["dataset.jitter_gen"]]
    state = get_rng_state({"a": DataLoader(ds, sampler=RandomSampler(ds, generator=g2), generator=g1)})
    assert state["loaders"][0]["layout"] == [["generator", "cpu"],
                                             ["sampler.generator", "batch_sampler.sampler.generator", "cpu"]]
    assert [t.dtype for t in state["loaders"][0]["states"]] == [torch.uint8, torch.uint8]


def test_set_rng_state_refuses_another_generator_layout_naming_the_loader():
    from torch.utils.data import DataLoader, TensorDataset
    ds = TensorDataset(torch.arange(10))
    owns = DataLoader(ds, shuffle=True, generator=torch.Generator().manual_seed(1))
    plain = DataLoader(ds, shuffle=True)
    state = get_rng_state({"train_dl": owns})
    torch.rand(3)
    before = torch.get_rng_state()
    with pytest.raises(ValueError, match="cannot restore the generators of train_dl"):
        set_rng_state(state, {"train_dl": plain})
    assert torch.equal(torch.get_rng_state(), before)  # refused before any RNG changed
    with pytest.raises(ValueError, match=r"loaders\[0\] \(DataLoader\)"):
        set_rng_state(get_rng_state([plain]), [owns])
    with pytest.raises(ValueError, match="generators of 1 loader"):
        set_rng_state(state, [owns, owns])
    older = get_rng_state()
    del older["loaders"]  # a capture made before loaders were captured
    set_rng_state(older)
    with pytest.raises(ValueError, match="no loaders"):
        set_rng_state(older, [owns])
    with pytest.raises(TypeError, match="loaders must be"):
        get_rng_state(owns)  # a bare loader: iterating it would draw batches
    with pytest.raises(TypeError, match="loaders must be"):
        set_rng_state(state, owns)


class _LazySampler(torch.utils.data.RandomSampler):
    """Makes its generator at its first iteration and seeds it from its epoch, as accelerate's
    SeedableRandomSampler does in a Hugging Face Trainer's loaders."""

    def __iter__(self):
        if self.generator is None:
            self.generator = torch.Generator()
        self.generator.manual_seed(100 + getattr(self, "epoch", 0))
        yield from super().__iter__()


def test_a_generator_made_since_the_capture_is_set_back_to_none_on_the_same_loader():
    """The root cause of "cannot restore the generators of loaders[0] (DataLoaderShard): it draws from
    [['batch_sampler.sampler.generator', 'cpu']] ... but the state holds []": the sampler had no
    generator at the capture and made one at its first iteration. Restoring that very loader puts the
    None back (exactly what it held); another loader with a generator there is still refused."""
    from torch.utils.data import DataLoader, TensorDataset
    ds = TensorDataset(torch.arange(10))
    dl = DataLoader(ds, batch_size=5, sampler=_LazySampler(ds))
    state = get_rng_state([dl])
    assert loader_generators(dl) == [] and "sampler.generator" in state["loaders"][0]["unset"]
    list(dl)
    assert [paths for paths, _ in loader_generators(dl)] == [["sampler.generator", "batch_sampler.sampler.generator"]]
    with pytest.raises(ValueError, match=r"batch_sampler.sampler.generator', 'cpu'\]\] .* holds \[\]"):
        set_rng_state(state, [dl])  # as a resume would: not known to be the same loader
    assert dl.sampler.generator is not None  # refused before anything changed
    set_rng_state(state, [dl], same_loaders=True)
    assert dl.sampler.generator is None and loader_generators(dl) == []
    # a generator at a path that did not hold None (here: did not exist) is another layout, even in place
    dl.sampler.rng = torch.Generator()
    with pytest.raises(ValueError, match="sampler.rng"):
        set_rng_state(state, [dl], same_loaders=True)
    del dl.sampler.rng
    older = get_rng_state([dl])
    del older["loaders"][0]["unset"]  # a capture from before this rule: nothing is taken as made since
    list(dl)
    with pytest.raises(ValueError, match="cannot restore"):
        set_rng_state(older, [dl], same_loaders=True)
