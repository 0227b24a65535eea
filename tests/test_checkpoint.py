"""Tests for onecycle.checkpoint: the checkpoint file format (header, sha256, v2 payload), verified
and unpickling-safe loads, the background writer, plain state_dict files."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onecycle import checkpoint as ckpt
from onecycle.checkpoint import CheckpointError, atomic_save, load_state_dict_file, safe_load
from onecycle.rng import get_rng_state

sys.path.insert(0, str(Path(__file__).parent))
from _states import assert_same, trained_model_and_optimizer  # noqa: E402


def small_checkpoint(tmp_path, value=1.0):
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.full((3,), value), "step": int(value)}, path)
    return path


# --- round trip ------------------------------------------------------------------------------------


def test_round_trip_realistic_payload(tmp_path):
    model, opt = trained_model_and_optimizer()
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "meta": {"epoch": 3, "lr": 0.125, "name": "run-1", "history": [1, 2.5, "x"], "t": (1, None)},
        "rng": get_rng_state(),
        "nothing": None,
    }
    path = tmp_path / "ckpt.pt"
    atomic_save(payload, path)
    loaded = safe_load(path)
    assert_same(payload, loaded)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]

    # a twin that differs before the load: another seed, another number of steps, another LR
    model2, opt2 = trained_model_and_optimizer(seed=1, lr=0.5, steps=3)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert not torch.equal(a, b)  # every weight, buffer and the step counter differ
    with pytest.raises(AssertionError):
        assert_same(opt.state_dict(), opt2.state_dict())
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    assert_same(model.state_dict(), model2.state_dict())
    assert_same(opt.state_dict(), opt2.state_dict())
    # and both continue identically: the same step from the same state gives the same weights
    x = torch.randn(16, 4)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    assert_same(model.state_dict(), model2.state_dict())


def test_header_carries_sha256_and_length_of_payload(tmp_path):
    path = small_checkpoint(tmp_path)
    data = path.read_bytes()
    header, payload = data.split(b"\n", 1)
    magic, version, digest, length = header.split(b" ")
    assert (magic, version) == (b"ONECYCLE-CKPT", b"v2")
    assert int(length) == len(payload)
    assert digest.decode() == hashlib.sha256(payload).hexdigest()


def test_v2_payload_keeps_tensor_bytes_out_of_the_pickle(tmp_path):
    w = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    path = tmp_path / "c.pt"
    atomic_save({"w": w, "b": torch.tensor([True, False])}, path)
    payload = path.read_bytes().split(b"\n", 1)[1]
    n = int.from_bytes(payload[:8], "little")
    index = torch.load(io.BytesIO(payload[8 : 8 + n]), weights_only=True)
    assert index["tree"] == {"w": (ckpt.MARK, 0), "b": (ckpt.MARK, 1)}
    assert [e[0] for e in index["tensors"]] == ["float64", "bool"]
    assert payload[8 + n :] == w.numpy().tobytes() + bytes([1, 0])  # the raw region, in table order


def test_v1_files_still_load(tmp_path):
    obj = {"w": torch.arange(3.0), "step": 7}
    path = tmp_path / "old.pt"
    path.write_bytes(_with_valid_header(_torch_bytes(obj)))
    assert_same(safe_load(path), obj)
    assert_same(load_state_dict_file(path), obj)


def test_round_trip_of_unusual_tensors(tmp_path):
    base = torch.randn(4, 5, dtype=torch.float64)
    obj = {
        "strided": base.t(),  # non-contiguous
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 3),
        "half": torch.randn(3).to(torch.bfloat16),
        "complex_conj": torch.randn(3, dtype=torch.complex64).conj(),
        "param": torch.nn.Parameter(torch.randn(2)),
        "frozen_param": torch.nn.Parameter(torch.randn(2), requires_grad=False),
        "grad_leaf": torch.randn(2).requires_grad_(),
        "sparse": torch.eye(3).to_sparse(),  # not viewable as bytes: stays in the pickle
        "ints": {3: torch.arange(4, dtype=torch.int16), "t": (torch.ones(1), [torch.zeros(2, dtype=torch.uint8)])},
        "size": torch.Size([2, 3]),
    }
    path = tmp_path / "u.pt"
    atomic_save(obj, path)
    loaded = safe_load(path)
    for key in ("strided", "scalar", "empty", "half", "param", "frozen_param", "grad_leaf"):
        assert type(loaded[key]) is type(obj[key]), key
        assert loaded[key].dtype == obj[key].dtype and loaded[key].shape == obj[key].shape, key
        assert torch.equal(loaded[key].detach(), obj[key].detach()), key
        assert loaded[key].requires_grad == obj[key].requires_grad, key
    assert torch.equal(loaded["complex_conj"], obj["complex_conj"].resolve_conj())
    assert torch.equal(loaded["sparse"].to_dense(), torch.eye(3))
    assert_same(loaded["ints"], obj["ints"])
    assert loaded["size"] == obj["size"]
    loaded["strided"].add_(1)  # loaded tensors own writable memory


@pytest.mark.parametrize("make", [
    lambda: torch.arange(10.0)[::2], lambda: torch.zeros(1).expand(10),
    lambda: torch.arange(20.0).reshape(10, 2)[:, :1], lambda: torch.arange(12, dtype=torch.uint8)[::3],
    lambda: torch.arange(6.0).reshape(2, 3).t(),
], ids=["step", "expand", "column", "uint8-step", "transposed"])
def test_strided_views_round_trip_through_both_writers(tmp_path, make):
    t = make()
    atomic_save({"t": t}, tmp_path / "a.pt")
    writer = ckpt.CheckpointWriter()
    writer.save({"t": t}, tmp_path / "b.pt")
    writer.wait()
    for name in ("a.pt", "b.pt"):
        loaded = safe_load(tmp_path / name)["t"]
        assert loaded.dtype == t.dtype and torch.equal(loaded, t)


def test_type_check_covers_data_that_looks_like_a_tensor_reference(tmp_path):
    class Foo:
        pass

    with pytest.raises(TypeError, match=r"obj\['b'\]"):
        atomic_save({"a": (ckpt.MARK, 0), "b": Foo()}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_state_dict_metadata_survives(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    sd = model.state_dict()
    atomic_save(sd, tmp_path / "m.pt")
    loaded = safe_load(tmp_path / "m.pt")
    assert type(loaded) is type(sd) and loaded._metadata == sd._metadata


def test_data_that_looks_like_a_tensor_reference_is_kept(tmp_path):
    obj = {"looks": (ckpt.MARK, 0), "w": torch.ones(2)}  # falls back to the v1 format
    atomic_save(obj, tmp_path / "x.pt")
    assert (tmp_path / "x.pt").read_bytes().startswith(b"ONECYCLE-CKPT v1 ")
    assert_same(safe_load(tmp_path / "x.pt"), obj)


def _v2_file(index, raw: bytes) -> bytes:
    pickled = _torch_bytes(index)
    payload = len(pickled).to_bytes(8, "little") + pickled + raw
    digest = hashlib.sha256(payload).hexdigest()
    return f"ONECYCLE-CKPT v2 {digest} {len(payload)}\n".encode() + payload


@pytest.mark.parametrize(("index", "raw", "match"), [
    ({"tree": (ckpt.MARK, 0), "tensors": [("float32", [2], "cpu", False, False, 8)]}, b"\0" * 4, "need 8 bytes"),
    ({"tree": (ckpt.MARK, 0), "tensors": [("float32", [2], "cpu", False, False, 4)]}, b"\0" * 4, "entry 0"),
    ({"tree": (ckpt.MARK, 0), "tensors": [("object", [1], "cpu", False, False, 8)]}, b"\0" * 8, "entry 0"),
    ({"tree": (ckpt.MARK, 0), "tensors": [("uint8", [-1], "cpu", False, False, 0)]}, b"", "entry 0"),
    ({"tree": (ckpt.MARK, 3), "tensors": [("uint8", [1], "cpu", False, False, 1)]}, b"\0", "tensor reference"),
    ({"tree": (ckpt.MARK, 0), "tensors": [(["float32"], [1], "cpu", False, False, 4)]}, b"\0" * 4, "entry 0"),
    ({"tree": (ckpt.MARK, 0), "tensors": [("uint8", [0, 2**70], "cpu", False, False, 0)]}, b"", "entry 0"),
    ({"tree": (ckpt.MARK, 0), "tensors": [("int64", [1], "cpu", True, False, 8)]}, b"\0" * 8, "entry 0"),
    ({"tree": (ckpt.MARK, 0), "tensors": [("uint8", [1], 7, False, False, 1)]}, b"\0", "entry 0"),
    ({"tree": 1}, b"", "no tensor table"),
    ([1, 2], b"", "no tensor table"),
], ids=["short-region", "size-mismatch", "bad-dtype", "negative-shape", "bad-reference", "dtype-not-str",
        "huge-shape", "grad-on-int", "device-not-str", "no-table", "not-a-dict"])
def test_hostile_v2_tables_are_refused(tmp_path, index, raw, match):
    path = tmp_path / "h.pt"
    path.write_bytes(_v2_file(index, raw))
    with pytest.raises(CheckpointError, match=match):
        safe_load(path)


def test_hostile_v2_nesting_and_unreachable_devices_are_refused(tmp_path):
    deep = (ckpt.MARK, 0)
    for _ in range(5000):
        deep = [deep]
    path = tmp_path / "deep.pt"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # only to write the file; loading runs under the usual limit
    try:
        path.write_bytes(_v2_file({"tree": deep, "tensors": [("uint8", [1], "cpu", False, False, 1)]}, b"\0"))
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(CheckpointError, match=r"is malformed: its structure is nested too deeply$"):
        safe_load(path)
    if not torch.cuda.is_available():
        path.write_bytes(_v2_file({"tree": (ckpt.MARK, 0), "tensors": [("uint8", [1], "cuda:0", False, False, 1)]},
                                  b"\0"))
        with pytest.raises(CheckpointError, match=r"a tensor saved on 'cuda:0' cannot go to 'cuda:0' \("):
            safe_load(path, map_location=None)
        atomic_save({"w": torch.ones(2)}, tmp_path / "ok.pt")
        with pytest.raises(CheckpointError, match=r"saved on 'cpu' cannot go to 'cuda' \(.*pass map_location$"):
            safe_load(tmp_path / "ok.pt", map_location="cuda")


def test_writer_writes_in_the_background_and_snapshots(tmp_path):
    writer = ckpt.CheckpointWriter()
    w = torch.zeros(1000)
    writer.save({"w": w}, tmp_path / "a.pt")
    w.add_(1)  # changed at once: the file must still hold the zeros
    writer.save({"w": w}, tmp_path / "b.pt")  # waits for the first write
    writer.wait()
    assert not writer.busy
    assert torch.equal(safe_load(tmp_path / "a.pt")["w"], torch.zeros(1000))
    assert torch.equal(safe_load(tmp_path / "b.pt")["w"], torch.ones(1000))
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "b.pt"]


def test_writer_error_surfaces_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = small_checkpoint(tmp_path, 1.0)
    writer = ckpt.CheckpointWriter()
    with monkeypatch.context() as patch:
        patch.setattr(ckpt.os, "write", _fail_on_write(ENOSPC))
        writer.save({"w": torch.randn(1000), "step": 2}, path)
        with pytest.raises(OSError, match="No space"):
            writer.wait()
    writer.wait()  # reported once
    assert safe_load(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]
    with monkeypatch.context() as patch:
        patch.setattr(ckpt.os, "write", _fail_on_write(ENOSPC))
        writer.save({"step": 3}, path)
        writer._thread.join()
    with pytest.raises(OSError, match="No space"):  # the next save reports it before writing anything
        writer.save({"step": 4}, path)
    assert safe_load(path)["step"] == 1


def test_overwrite_replaces_previous_checkpoint(tmp_path):
    small_checkpoint(tmp_path, 1.0)
    path = small_checkpoint(tmp_path, 2.0)
    assert safe_load(path)["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_overwrite_keeps_file_mode(tmp_path):
    path = small_checkpoint(tmp_path)
    os.chmod(path, 0o640)
    small_checkpoint(tmp_path, 2.0)
    assert os.stat(path).st_mode & 0o777 == 0o640


# --- corruption ----------------------------------------------------------------------------------


def test_truncated_file_is_detected(tmp_path):
    path = small_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated") as info:
        safe_load(path)
    assert str(path) in str(info.value)


def test_truncated_inside_header_is_detected(tmp_path):
    path = small_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(CheckpointError, match="header") as info:
        safe_load(path)
    assert str(path) in str(info.value)


def test_flipped_payload_byte_is_detected(tmp_path):
    path = small_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as info:
        safe_load(path)
    assert str(path) in str(info.value)


def test_trailing_bytes_are_detected(tmp_path):
    path = small_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(CheckpointError, match="extra bytes"):
        safe_load(path)


def test_garbage_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError, match="not a onecycle checkpoint") as info:
        safe_load(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="not a torch.save file"):
        load_state_dict_file(path)


def test_empty_file_is_detected(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as info:
        safe_load(path)
    assert str(path) in str(info.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_single_byte_corruption_is_refused(tmp_path, position, flip):
    path = tmp_path / "prop.pt"
    atomic_save({"w": torch.arange(4.0)}, path)
    data = bytearray(path.read_bytes())
    data[int(position * len(data))] ^= flip
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        safe_load(path)


# --- failures while writing ----------------------------------------------------------------------


def _fail_on_write(exc):
    """An os.write that writes part of the first chunk for real, then fails like a full disk."""
    real_write = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[: max(1, len(data) // 2)])
        raise exc

    return write


def _fail_first_fsync(exc):
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 1:
            raise exc
        return real_fsync(fd)

    return fsync


ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("target", "make_fault", "exc_type"),
    [
        ("write", lambda: _fail_on_write(ENOSPC), OSError),
        ("fsync", lambda: _fail_first_fsync(ENOSPC), OSError),
        ("write", lambda: _fail_on_write(KeyboardInterrupt()), KeyboardInterrupt),
        ("fsync", lambda: _fail_first_fsync(KeyboardInterrupt()), KeyboardInterrupt),
    ],
    ids=["enospc-write", "enospc-fsync", "interrupt-write", "interrupt-fsync"],
)
def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch, target, make_fault, exc_type):
    path = small_checkpoint(tmp_path, 1.0)
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(ckpt.os, target, make_fault())
        with pytest.raises(exc_type):
            atomic_save({"w": torch.randn(1000), "step": 2}, path)
    assert path.read_bytes() == before
    assert safe_load(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "new.pt"
    monkeypatch.setattr(ckpt.os, "write", _fail_on_write(ENOSPC))
    with pytest.raises(OSError, match="No space"):
        atomic_save({"w": torch.randn(100)}, path)
    assert os.listdir(tmp_path) == []


def test_failed_replace_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = small_checkpoint(tmp_path, 1.0)

    def replace(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(OSError):
        atomic_save({"w": torch.zeros(1), "step": 2}, path)
    assert safe_load(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


# --- malicious pickles ---------------------------------------------------------------------------


class OpensSentinel:
    """Unpickling this would create a file: the stand-in for arbitrary code execution."""

    sentinel = ""

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


class RunsShell:
    sentinel = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture(params=[OpensSentinel, RunsShell])
def evil(request, tmp_path):
    cls = request.param
    cls.sentinel = str(tmp_path / "pwned")
    yield cls()
    assert not os.path.exists(cls.sentinel), "malicious pickle ran"


def _with_valid_header(payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return f"ONECYCLE-CKPT v1 {digest} {len(payload)}\n".encode() + payload


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_raw_malicious_torch_file_is_refused(tmp_path, evil):
    path = tmp_path / "evil.pt"
    path.write_bytes(_torch_bytes({"model": evil}))
    with pytest.raises(CheckpointError, match="not a onecycle checkpoint"):
        safe_load(path)
    with pytest.raises(CheckpointError, match="refusing to load .*unsafe object"):
        load_state_dict_file(path)


def test_raw_malicious_plain_pickle_is_refused(tmp_path, evil):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": evil}, protocol=2))
    with pytest.raises(CheckpointError, match="not a onecycle checkpoint"):
        safe_load(path)
    with pytest.raises(CheckpointError, match="refusing to load .*unsafe object"):
        load_state_dict_file(path)


@pytest.mark.parametrize("pickler", ["torch", "pickle"])
def test_malicious_payload_with_valid_header_is_refused(tmp_path, evil, pickler):
    obj = {"model": evil}
    payload = _torch_bytes(obj) if pickler == "torch" else pickle.dumps(obj, protocol=2)
    path = tmp_path / "evil.pt"
    path.write_bytes(_with_valid_header(payload))
    with pytest.raises(CheckpointError, match="refusing to load .*unsafe object") as info:
        safe_load(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="unsafe object"):
        load_state_dict_file(path)


def test_atomic_save_refuses_objects_that_could_not_be_loaded_back(tmp_path, evil):
    path = tmp_path / "x.pt"
    with pytest.raises(TypeError, match=r"obj\['model'\]"):
        atomic_save({"model": evil}, path)
    with pytest.raises(TypeError, match=r"obj\['lr'\].*numpy"):
        atomic_save({"lr": np.float64(0.1)}, path)
    assert not path.exists()


# --- plain state_dict files ----------------------------------------------------------------------


def test_load_state_dict_file_reads_plain_torch_save(tmp_path):
    model, _ = trained_model_and_optimizer()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    assert_same(dict(model.state_dict()), dict(load_state_dict_file(path)))


def test_load_state_dict_file_reads_onecycle_checkpoints_and_rejects_non_dicts(tmp_path):
    path = small_checkpoint(tmp_path)
    assert load_state_dict_file(path)["step"] == 1
    other = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), other)
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        load_state_dict_file(other)


# --- bad input -----------------------------------------------------------------------------------


def test_directory_paths_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        atomic_save({"a": 1}, tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        safe_load(tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        load_state_dict_file(tmp_path)


def test_wrong_types_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike.*int"):
        atomic_save({"a": 1}, 123)
    with pytest.raises(TypeError, match="path must be"):
        safe_load(None)
    with pytest.raises(ValueError, match="path must not be empty"):
        safe_load("")
    with pytest.raises(TypeError, match=r"obj\['f'\]"):
        atomic_save({"f": lambda: 1}, tmp_path / "x.pt")


def test_missing_parent_folder_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="parent folder"):
        atomic_save({"a": 1}, tmp_path / "nope" / "x.pt")
    with pytest.raises(FileNotFoundError):
        safe_load(tmp_path / "absent.pt")


# --- map_location and the messages, by value (mutation survivors of checkpoint.py) ----------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_map_location_reaches_every_tensor_of_either_format(tmp_path, version):
    obj = {"w": torch.arange(3.0), "n": 3}
    path = tmp_path / "m.pt"
    if version == "v1":
        path.write_bytes(_with_valid_header(_torch_bytes(obj)))
    else:
        atomic_save(obj, path)
    assert path.read_bytes().startswith(f"ONECYCLE-CKPT {version} ".encode())
    for load in (safe_load, load_state_dict_file):
        assert load(path)["w"].device.type == "cpu"  # the default, "cpu"
        assert load(path, map_location="meta")["w"].device.type == "meta"
        assert load(path, map_location={"cpu": "meta"})["w"].device.type == "meta"  # by the saved device's name
        kept = load(path, map_location={"cuda:0": "meta"})  # a name it was not saved on: left where it was
        assert kept["w"].device.type == "cpu" and torch.equal(kept["w"], obj["w"]) and kept["n"] == 3
        with pytest.raises(TypeError, match="map_location must be None, a device or a dict of device names, got 5"):
            load(path, map_location=5)


def test_a_plain_torch_file_goes_to_map_location_too(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert load_state_dict_file(path, map_location="meta")["w"].device.type == "meta"


def test_the_messages_name_the_argument_the_path_and_what_was_found(tmp_path):
    with pytest.raises(ValueError, match=r"^path must be a file path, but .* is a directory"):
        load_state_dict_file(tmp_path)
    with pytest.raises(ValueError, match=r"^path must be a file path, but .* is a directory"):
        ckpt.CheckpointWriter().save({"a": 1}, tmp_path)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match=r"refusing to load it\. For a plain torch\.save state_dict use "
                                              r"load_state_dict_file\(\)$"):
        safe_load(plain)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match=r"does not hold a state_dict: got list$"):
        load_state_dict_file(listed)
    with pytest.raises(CheckpointError, match=r"does not hold a state_dict: got list$"):
        atomic_save([1, 2], tmp_path / "ours.pt")
        load_state_dict_file(tmp_path / "ours.pt")
    text = tmp_path / "text.pt"
    text.write_bytes(b"0123456789abcdefGHIJKL")
    with pytest.raises(CheckpointError) as info:
        load_state_dict_file(text)
    assert str(info.value) == f"{str(text)!r} is not a torch.save file (starts with b'0123456789abcdef')"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(plain.read_bytes()[:100])  # a zip archive cut short
    with pytest.raises(CheckpointError, match=rf"^cannot load {str(broken)!r}: RuntimeError: .*zip archive"):
        load_state_dict_file(broken)


def test_corruption_messages_give_the_counts_and_the_header_seen(tmp_path):
    path = small_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(CheckpointError, match=r"is corrupted: 4 extra bytes$"):
        safe_load(path)
    data = b"ONECYCLE-CKPT v7 " + b"x" * 100 + b"\n" + b"payload"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        safe_load(path)
    assert str(info.value).endswith(f"has a malformed or unsupported header: {data[:80]!r}")
    # a well-formed header line longer than the header may be is refused as malformed, not read
    digest = hashlib.sha256(b"").hexdigest()
    path.write_bytes(f"ONECYCLE-CKPT v2 {digest} ".encode() + b"0" * (ckpt._MAX_HEADER) + b"\n")
    with pytest.raises(CheckpointError, match="malformed or unsupported header"):
        safe_load(path)


def test_an_unsafe_pickle_is_refused_with_the_global_it_names(tmp_path, evil):
    payload = _torch_bytes({"model": evil})
    with pytest.raises(pickle.UnpicklingError) as torch_error:  # torch's own refusal, the reference
        torch.load(io.BytesIO(payload), weights_only=True)
    name = "io.open" if isinstance(evil, OpensSentinel) else "posix.system"  # what each one's reduce calls
    line = next(x.strip() for x in str(torch_error.value).splitlines() if f"GLOBAL {name}" in x)
    path = tmp_path / "evil.pt"
    path.write_bytes(_with_valid_header(payload))
    with pytest.raises(CheckpointError) as info:
        safe_load(path)
    assert str(info.value).endswith(f"does not allow ({line[:200]})")  # its one informative line, at most 200 long


@pytest.mark.parametrize(("length", "match"), [(0, "bad index length"), (5, "bad index length"),
                                                (8, "cannot load"), (9, "cannot load")])
def test_a_v2_payload_too_short_for_its_index_is_refused(tmp_path, length, match):
    payload = (b"\x00" * 8 + b"\x01" * 8)[:length]  # an index length of 0 (8 bytes), then junk
    digest = hashlib.sha256(payload).hexdigest()
    path = tmp_path / "short.pt"
    path.write_bytes(f"ONECYCLE-CKPT v2 {digest} {length}\n".encode() + payload)
    with pytest.raises(CheckpointError, match=match) as info:
        safe_load(path)
    assert str(path) in str(info.value)


def test_check_loadable_names_where_an_unloadable_object_sits(tmp_path, evil):
    ckpt.check_loadable({"w": torch.ones(2), "looks": (ckpt.MARK, 0)})  # data like a reference loads (v1)
    with pytest.raises(TypeError, match=r"^obj\['a'\]\[1\] has type test_checkpoint\.(OpensSentinel|RunsShell) "
                                        r"\(.*\), which cannot be loaded back safely; use tensors, plain Python "
                                        r"scalars/str/bytes, lists, tuples and dicts$"):
        ckpt.check_loadable({"a": [1, evil]})
    with pytest.raises(TypeError, match=r"^obj key <test_checkpoint\."):
        ckpt.check_loadable({evil: 1})
    with pytest.raises(TypeError, match=r"^obj\['a'\]\[1\] has type"):
        atomic_save({"a": (1, evil)}, tmp_path / "x.pt")


def test_a_meta_tensor_is_kept_as_it_is(tmp_path):
    obj = {"m": torch.empty(2, 3, device="meta"), "w": torch.ones(2)}
    atomic_save(obj, tmp_path / "meta.pt")
    back = safe_load(tmp_path / "meta.pt", map_location=None)
    assert back["m"].device.type == "meta" and back["m"].shape == (2, 3) and torch.equal(back["w"], obj["w"])


def test_the_writer_times_its_writes_on_its_own_named_thread(tmp_path, monkeypatch):
    writer = ckpt.CheckpointWriter()
    assert writer.seconds == 0.0 and not writer.busy
    threads = []
    real = ckpt.atomic_write

    def slow_write(*args):
        threads.append(ckpt.threading.current_thread().name)
        ckpt.time.sleep(0.05)
        real(*args)

    monkeypatch.setattr(ckpt, "atomic_write", slow_write)
    writer.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    writer.wait()
    assert threads == ["onecycle-checkpoint-writer"]
    assert 0.05 <= writer.seconds < 60  # the worker's time for this write
    assert torch.equal(safe_load(tmp_path / "w.pt")["w"], torch.ones(2))


def test_the_refusal_reason_is_the_line_naming_the_global_else_the_last_line():
    reason = ckpt._refusal_reason
    assert reason(pickle.UnpicklingError("Weights only load failed.\n\nUnsupported operand 7\n\nread the docs")) \
        == "Unsupported operand 7"
    assert reason(pickle.UnpicklingError("failed.\n  GLOBAL os.system was refused  \nread the docs")) \
        == "GLOBAL os.system was refused"
    assert reason(pickle.UnpicklingError("failed.\nsomething else\n" + "x" * 300)) == "x" * 200  # the last line
    assert reason(pickle.UnpicklingError("Unsupported " + "y" * 300)) == ("Unsupported " + "y" * 300)[:200]
    assert reason(pickle.UnpicklingError("")) == "UnpicklingError"


@pytest.mark.parametrize(("index", "raw", "match"), [
    ({"tree": (ckpt.MARK, 1), "tensors": [("uint8", [1], "cpu", False, False, 1)]}, b"\0", "bad tensor reference"),
    ({"tensors": [("uint8", [1], "cpu", False, False, 1)]}, b"\0", "no tensor table"),  # no tree
    ({"tree": (ckpt.MARK, 0), "tensors": [("uint8", [1], "cpu", False, False)]}, b"\0", "entry 0"),  # 5 fields
], ids=["reference-one-past", "no-tree", "five-fields"])
def test_more_hostile_v2_tables_are_refused_naming_the_file(tmp_path, index, raw, match):
    path = tmp_path / "h.pt"
    path.write_bytes(_v2_file(index, raw))
    for load in (safe_load, load_state_dict_file):
        with pytest.raises(CheckpointError, match=match) as info:
            load(path)
        assert str(path) in str(info.value)


def test_an_index_length_past_the_payload_is_refused(tmp_path):
    payload = (4).to_bytes(8, "little") + b"ab"  # says 4 bytes of index, holds 2
    digest = hashlib.sha256(payload).hexdigest()
    path = tmp_path / "long.pt"
    path.write_bytes(f"ONECYCLE-CKPT v2 {digest} {len(payload)}\n".encode() + payload)
    with pytest.raises(CheckpointError, match="bad index length"):
        safe_load(path)


def test_load_state_dict_file_names_the_file_of_a_damaged_checkpoint(tmp_path):
    path = small_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CheckpointError, match=r"is truncated") as info:
        load_state_dict_file(path)
    assert str(path) in str(info.value)
