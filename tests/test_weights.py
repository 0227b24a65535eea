"""Tests for onecycle.weights: save_weights/load_weights (Learner.save/load) and safetensors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from onecycle import checkpoint as ckpt
from onecycle import weights
from onecycle.checkpoint import CheckpointError, atomic_save, safe_load
from onecycle.weights import load_safetensors, save_safetensors

sys.path.insert(0, str(Path(__file__).parent))
from _states import assert_same, trained_model_and_optimizer  # noqa: E402

# --- safetensors ---------------------------------------------------------------------------------


def test_safetensors_round_trip_with_tied_weights(tmp_path):
    pytest.importorskip("safetensors.torch")
    model, _ = trained_model_and_optimizer()
    state = dict(model.state_dict())
    state["tied"] = state["0.weight"]  # shares storage, which safetensors refuses unless handled
    path = tmp_path / "model.safetensors"
    save_safetensors(state, path)
    loaded = load_safetensors(path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_safetensors_corruption_and_bad_input(tmp_path):
    pytest.importorskip("safetensors.torch")
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"garbage garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_safetensors(path)
    with pytest.raises(TypeError, match="state_dict"):
        save_safetensors({"a": 1}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        save_safetensors([torch.zeros(1)], tmp_path / "x.safetensors")


def test_safetensors_missing_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match=r"onecycle\[safetensors\]"):
        save_safetensors({"a": torch.zeros(1)}, tmp_path / "x.safetensors")
    with pytest.raises(ImportError, match=r"onecycle\[safetensors\]"):
        load_safetensors(tmp_path / "x.safetensors")


# --- save_weights / load_weights -----------------------------------------------------------------


def _weights_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def _trained_opt(model):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return opt


def _assert_same_weights(model, reference):
    got, want = model.state_dict(), reference.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


def test_save_weights_without_optimizer_round_trips_the_weights(tmp_path):
    src, dst = _weights_model(0), _weights_model(1)
    path = tmp_path / "w.pt"
    assert weights.save_weights(path, src) == path
    assert path.read_bytes().startswith(ckpt.MAGIC)
    saved = safe_load(path)
    assert list(saved) == ["model"]
    assert_same(saved["model"], src.state_dict())
    weights.load_weights(path, dst)  # default device and strict
    _assert_same_weights(dst, src)
    weights.load_weights(str(path), dst, device=None)
    _assert_same_weights(dst, src)
    with pytest.raises(ValueError, match=r"^with_opt=True but .*w\.pt holds no optimizer state$"):
        weights.load_weights(path, dst, opt=torch.optim.SGD(dst.parameters(), lr=0.1))


def test_save_weights_with_optimizer_round_trips_both(tmp_path):
    src = _weights_model(0)
    opt = _trained_opt(src)
    path = tmp_path / "wo.pt"
    assert weights.save_weights(str(path), src, opt) == path
    saved = safe_load(path)
    assert list(saved) == ["model", "opt"]
    assert_same(saved["opt"], opt.state_dict())
    dst = _weights_model(1)
    dst_opt = torch.optim.Adam(dst.parameters(), lr=0.5)
    weights.load_weights(path, dst, dst_opt)
    _assert_same_weights(dst, src)
    assert_same(dst_opt.state_dict(), opt.state_dict())
    assert dst_opt.param_groups[0]["lr"] == 0.01


def test_weights_in_safetensors_format(tmp_path):
    src, dst = _weights_model(0), _weights_model(1)
    path = tmp_path / "w.safetensors"
    assert weights.save_weights(path, src) == path
    assert not path.read_bytes().startswith(ckpt.MAGIC)
    loaded, want = load_safetensors(path), src.state_dict()
    assert sorted(loaded) == sorted(want)
    assert all(torch.equal(loaded[k], want[k]) for k in want)
    weights.load_weights(path, dst)
    _assert_same_weights(dst, src)
    opt = torch.optim.SGD(src.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^with_opt=True: safetensors holds weights only; use a \.pt path$"):
        weights.save_weights(tmp_path / "o.safetensors", src, opt)
    assert not (tmp_path / "o.safetensors").exists()
    with pytest.raises(ValueError, match=r"^with_opt=True: safetensors holds weights only$"):
        weights.load_weights(path, dst, opt)
    partial = {k: v for k, v in src.state_dict().items() if not k.startswith("2.")}
    save_safetensors(partial, tmp_path / "p.safetensors")
    with pytest.raises(RuntimeError, match="Missing key"):
        weights.load_weights(tmp_path / "p.safetensors", dst)
    fresh = _weights_model(2)
    weights.load_weights(tmp_path / "p.safetensors", fresh, strict=False)
    assert torch.equal(fresh[0].weight, src[0].weight)
    assert torch.equal(fresh[2].weight, _weights_model(2)[2].weight)


def test_load_weights_reads_a_plain_torch_save_state_dict(tmp_path):
    src, dst = _weights_model(0), _weights_model(1)
    path = tmp_path / "plain.pth"
    torch.save(src.state_dict(), path)
    weights.load_weights(path, dst)
    _assert_same_weights(dst, src)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        weights.load_weights(path, dst, torch.optim.SGD(dst.parameters(), lr=0.1))


def test_load_weights_strict_false_tolerates_a_missing_key(tmp_path):
    src = _weights_model(0)
    partial = {k: v for k, v in src.state_dict().items() if k != "2.bias"}
    path = tmp_path / "partial.pt"
    atomic_save({"model": partial}, path)
    dst = _weights_model(1)
    with pytest.raises(RuntimeError, match=r"Missing key.*2\.bias"):
        weights.load_weights(path, dst)
    before = dst[2].bias.detach().clone()
    weights.load_weights(path, dst, strict=False)
    assert torch.equal(dst[2].bias, before)
    assert torch.equal(dst[2].weight, src[2].weight)
    assert torch.equal(dst[1].running_mean, src[1].running_mean)
    with pytest.raises(ValueError, match="is a directory"):
        weights.load_weights(tmp_path, dst)
