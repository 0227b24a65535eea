"""Tests for onecycle.weights: save_weights/load_weights (Learner.save/load) and safetensors."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
import torch

from onecycle import checkpoint as ckpt
from onecycle import weights
from onecycle.checkpoint import CheckpointError, atomic_save
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
    assert path.read_bytes().startswith(b"PK\x03\x04")  # torch.save's zip format, no header of ours
    saved = torch.load(path, weights_only=True)  # the state_dict itself, as a user expects
    assert_same(saved, src.state_dict())
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
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["model", "opt"]
    assert_same(saved["model"], src.state_dict())
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


# --- files users can open: plain torch.save, verified by the zip format's CRC-32s -----------------


def test_plain_torch_load_reads_what_save_weights_writes_into_a_fresh_model(tmp_path):
    src = _weights_model(0)
    weights.save_weights(tmp_path / "model.pt", src)
    dst = _weights_model(1)
    dst.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))  # what users expect to write
    _assert_same_weights(dst, src)
    opt = _trained_opt(src)
    weights.save_weights(tmp_path / "both.pt", src, opt)
    both = torch.load(tmp_path / "both.pt", weights_only=True)
    dst = _weights_model(2)
    dst.load_state_dict(both["model"])
    dst_opt = torch.optim.Adam(dst.parameters(), lr=0.5)
    dst_opt.load_state_dict(both["opt"])
    _assert_same_weights(dst, src)
    assert_same(dst_opt.state_dict(), opt.state_dict())
    assert sorted(os.listdir(tmp_path)) == ["both.pt", "model.pt"]  # no temp file left behind


def test_read_weights_tells_a_state_dict_from_the_model_and_opt_pair(tmp_path):
    class Odd(torch.nn.Module):  # a module whose only state is named "model": still a state_dict
        def __init__(self):
            super().__init__()
            self.register_buffer("model", torch.arange(3.0))

    weights.save_weights(tmp_path / "odd.pt", Odd())
    state, opt_state = weights.read_weights(tmp_path / "odd.pt")
    assert opt_state is None and list(state) == ["model"] and torch.equal(state["model"], torch.arange(3.0))
    torch.save({"model": _weights_model(0).state_dict()}, tmp_path / "theirs.pt")  # a common checkpoint shape
    state, opt_state = weights.read_weights(tmp_path / "theirs.pt")
    assert opt_state is None and list(state) == list(_weights_model(0).state_dict())
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"tensor\.pt.*does not hold a state_dict: got Tensor"):
        weights.read_weights(tmp_path / "tensor.pt")


def _flip_in_tensor(path, tensor):
    """Flip one bit inside ``tensor``'s bytes where they sit in the file."""
    data = bytearray(path.read_bytes())
    at = bytes(data).find(tensor.detach().numpy().tobytes())
    assert at > 0 and bytes(data).count(tensor.detach().numpy().tobytes()) == 1
    data[at + 1] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_tensor_is_refused_by_its_crc(tmp_path):
    src = _weights_model(0)
    path = tmp_path / "w.pt"
    weights.save_weights(path, src)
    _flip_in_tensor(path, src[0].weight)
    # negative control: torch.load itself does not notice, it hands back a different weight
    assert not torch.equal(torch.load(path, weights_only=True)["0.weight"], src[0].weight)
    dst = _weights_model(1)
    before = dst[0].weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"w\.pt.* is corrupted: its record .*data/\d+.* CRC-32") as info:
        weights.load_weights(path, dst)
    assert str(path) in str(info.value)
    assert torch.equal(dst[0].weight, before)  # refused before anything was loaded


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    src = _weights_model(0)
    path = tmp_path / "w.pt"
    weights.save_weights(path, src)
    whole = path.read_bytes()
    for cut in (len(whole) - 1, len(whole) // 2, 10):
        path.write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match=r"w\.pt.* is truncated or corrupted: not a complete zip"):
            weights.load_weights(path, _weights_model(1))
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        weights.read_weights(path)
    path.write_bytes(b"garbage that is not a zip archive")
    with pytest.raises(CheckpointError, match="not a zip-format torch.save file"):
        weights.read_weights(path)
    torch.save(src.state_dict(), path, _use_new_zipfile_serialization=False)  # torch < 1.6's format
    with pytest.raises(CheckpointError, match="load_state_dict_file"):
        weights.read_weights(path)
    with pytest.raises(TypeError, match="map_location"):
        weights.read_weights(path, map_location=3)


def test_files_of_the_earlier_format_still_load(tmp_path):
    src = _weights_model(0)
    opt = _trained_opt(src)
    atomic_save({"model": src.state_dict()}, tmp_path / "old.pt")  # what save_weights wrote before
    atomic_save({"model": src.state_dict(), "opt": opt.state_dict()}, tmp_path / "old_opt.pt")
    assert (tmp_path / "old.pt").read_bytes().startswith(ckpt.MAGIC)
    dst = _weights_model(1)
    weights.load_weights(tmp_path / "old.pt", dst)
    _assert_same_weights(dst, src)
    dst_opt = torch.optim.Adam(dst.parameters(), lr=0.5)
    weights.load_weights(tmp_path / "old_opt.pt", dst, dst_opt)
    assert_same(dst_opt.state_dict(), opt.state_dict())
    with pytest.raises(ValueError, match="holds no optimizer state"):
        weights.load_weights(tmp_path / "old.pt", dst, dst_opt)


def test_save_weights_is_atomic_and_refuses_what_could_not_be_loaded_back(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    weights.save_weights(path, _weights_model(0))
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError(errno.EIO, "replace failed")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", fail)
        with pytest.raises(OSError, match="replace failed"):
            weights.save_weights(path, _weights_model(1))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["w.pt"]  # the old file, no temp file

    class Extra(torch.nn.Linear):  # extra state weights_only loading could not rebuild
        def get_extra_state(self):
            return object()

        def set_extra_state(self, state):
            pass

    with pytest.raises(TypeError, match="_extra_state"):
        weights.save_weights(tmp_path / "x.pt", Extra(2, 2))
    assert os.listdir(tmp_path) == ["w.pt"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_weights_of_a_gpu_model_are_saved_on_the_cpu(tmp_path):
    src = _weights_model(0).cuda()
    opt = _trained_opt_on(src, "cuda")
    weights.save_weights(tmp_path / "w.pt", src, opt)
    saved = torch.load(tmp_path / "w.pt", weights_only=True, map_location=None)
    devices = {t.device.type for part in (saved["model"], saved["opt"]["state"][0]) for t in part.values()
               if isinstance(t, torch.Tensor)}
    assert devices == {"cpu"}
    dst = _weights_model(1).cuda()
    weights.load_weights(tmp_path / "w.pt", dst, device="cuda")
    _assert_same_weights(dst, src)


def _trained_opt_on(model, device):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3, device=device)).sum().backward()
    opt.step()
    return opt
