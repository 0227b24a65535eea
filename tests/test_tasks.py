"""Tests for onecycle.tasks: the built-in tasks (MNIST-1D, digits, charlm), their cache, load_task."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onecycle import tasks
from onecycle.tasks import Task, cache_dir, cached_arrays, load_task

sys.path.insert(0, str(Path(__file__).parent))
from test_data import _epoch, _same  # noqa: E402

# ---------------------------------------------------------------------------------------------- cache

def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ONECYCLE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "onecycle"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "onecycle"
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"


def test_cache_roundtrip_and_corrupt_file(monkeypatch, tmp_path):
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(5, dtype=np.int16), "b": np.ones((2, 3), np.float32)}

    first = cached_arrays("t", {"k": 1}, build)
    second = cached_arrays("t", {"k": 1}, build)
    assert len(calls) == 1 and all(first[k].tobytes() == second[k].tobytes() for k in first)
    assert all(first[k].dtype == second[k].dtype for k in first)
    cached_arrays("t", {"k": 2}, build)
    assert len(calls) == 2
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".npz") and f.startswith("t-") for f in files)
    tasks._cache_path("t", {"k": 1}).write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = cached_arrays("t", {"k": 1}, build)
    assert len(calls) == 3 and rebuilt["a"].tobytes() == first["a"].tobytes()
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".npz"]  # no temporary file left


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r"onecycle\[data\]"):
        tasks._mnist1d_arrays(100)


# ---------------------------------------------------------------------------------------------- tasks

@pytest.fixture(scope="module")
def mnist1d_build(tmp_path_factory):
    """One fresh generation and a task loaded from the cache it wrote (generation takes ~1.5 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ONECYCLE_CACHE", str(tmp_path_factory.mktemp("cache")))
        fresh = tasks._mnist1d_arrays(5000)
        cached_arrays("mnist1d", {"num_samples": 5000}, lambda: fresh)
        yield fresh, load_task("mnist1d", seed=0)


def test_mnist1d_task(mnist1d_build):
    fresh, task = mnist1d_build
    assert isinstance(task, Task) and task.default_model == "cnn" and task.n_out == 10
    assert task.in_shape == (1, 40) and task.train_dl.n == 4000 and task.valid_dl.n == 1000
    xb, yb = next(iter(task.train_dl))
    assert xb.shape == (128, 1, 40) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert task.train_dl.shuffle and not task.valid_dl.shuffle
    hit = task.train_dl.tensors
    assert hit[0].numpy().tobytes() == fresh["x"].tobytes()
    assert hit[1].numpy().tobytes() == fresh["y"].tobytes()
    assert task.valid_dl.tensors[1].numpy().tobytes() == fresh["y_valid"].tobytes()
    assert set(fresh["y"].tolist()) == set(range(10))


def test_mnist1d_generation_is_deterministic_and_leaves_global_rngs(mnist1d_build):
    np_state, py_state = np.random.get_state(), random.getstate()
    again = tasks._mnist1d_arrays(5000)
    assert all(again[k].tobytes() == mnist1d_build[0][k].tobytes() for k in again)
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state[1])


@pytest.mark.slow
def test_mnist1d_large(monkeypatch, tmp_path):
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path))
    task = load_task("mnist1d_large")
    assert task.train_dl.n == 40000 and task.valid_dl.n == 10000
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path / "again"))  # a second generation, same bytes
    again = load_task("mnist1d_large")
    for a, b in zip(task.train_dl.tensors + task.valid_dl.tensors, again.train_dl.tensors + again.valid_dl.tensors):
        assert a.numpy().tobytes() == b.numpy().tobytes()


def test_digits_task(monkeypatch, tmp_path):
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path / "a"))
    task = load_task("digits", seed=4)
    assert task.train_dl.n == 1437 and task.valid_dl.n == 360 and task.in_shape == (64,)
    assert task.default_model == "mlp" and task.train_dl.batch_size == 64
    x, yv = task.train_dl.tensors[0], task.valid_dl.tensors[1]
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert torch.bincount(yv).min() >= 35  # stratified: 36 or so per class
    hit = load_task("digits", seed=4)  # cache hit
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path / "b"))
    fresh = load_task("digits", seed=4)
    first_epoch = _epoch(task.train_dl)
    for other in (hit, fresh):
        assert _same(first_epoch, _epoch(other.train_dl))
        for a, b in zip(task.valid_dl.tensors, other.valid_dl.tensors, strict=True):
            assert a.numpy().tobytes() == b.numpy().tobytes()


SMALL_LM = {"train_chars": 20_000, "valid_chars": 4_000, "bptt": 16}


def test_charlm_split_by_file():
    root = Path(tasks.sysconfig.get_paths()["stdlib"])
    files = tasks._stdlib_files(root)
    skipped = {"test", "tests", "site-packages"}
    assert files and all(not skipped & set(p.relative_to(root).parts) for p in files)
    train, valid = tasks._charlm_sources(root, 50_000, 10_000, 10)
    train_paths, valid_paths = [p for p, _ in train], [p for p, _ in valid]
    assert not set(train_paths) & set(valid_paths)
    assert all(files.index(p) % 10 == 9 for p in valid_paths)
    assert all(files.index(p) % 10 != 9 for p in train_paths)
    assert sum(len(t) for _, t in train) >= 50_000 and sum(len(t) for _, t in valid) >= 10_000


def test_charlm_task(monkeypatch, tmp_path):
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path / "a"))
    task = load_task("charlm", batch_size=4, **SMALL_LM)
    vocab = task.info["vocab"]
    assert task.n_out == len(vocab) and vocab[0] == tasks.UNKNOWN and list(vocab[1:]) == sorted(vocab[1:])
    assert task.default_model == "lstm" and task.in_shape == (16,)
    assert task.train_dl.n == 20_000 and task.valid_dl.n == 4_000
    batches = list(task.train_dl)
    assert len(batches) == len(task.train_dl) and batches[0][0].shape == (4, 16)
    x, y = batches[0]
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(batches[1][0][:, 0], y[:, -1])
    assert int(task.train_dl.data.max()) < task.n_out
    logits = torch.randn(4, 16, task.n_out)
    assert task.loss_fn(logits, y).ndim == 0 and all(m(logits, y).ndim == 0 for m in task.metrics)
    hit = load_task("charlm", batch_size=4, **SMALL_LM)
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path / "b"))
    fresh = load_task("charlm", batch_size=4, **SMALL_LM)
    for other in (hit, fresh):
        assert torch.equal(task.train_dl.data, other.train_dl.data)
        assert torch.equal(task.valid_dl.data, other.valid_dl.data) and other.info == task.info


def test_load_task_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="nope"):
        load_task("nope")
    with pytest.raises(ValueError, match="batch_size"):
        load_task("digits", batch_size=0)
    with pytest.raises(TypeError, match="colour"):
        load_task("digits", colour="red")
    with pytest.raises(ValueError, match="valid_every"):
        load_task("charlm", valid_every=1)
