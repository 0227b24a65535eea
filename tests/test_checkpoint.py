"""Tests for onecycle.checkpoint: atomic writes, verified and unpickling-safe loads, RNG capture."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import random
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onecycle import checkpoint as ckpt
from onecycle.checkpoint import (
    CheckpointError,
    atomic_save,
    fsync_dir,
    get_rng_state,
    load_safetensors,
    load_state_dict_file,
    safe_load,
    save_safetensors,
    set_rng_state,
)


def assert_same(a, b, where="obj"):
    """Exact structural equality; tensors must match in dtype, shape and every bit."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def trained_model_and_optimizer(seed=0, lr=0.1, steps=2):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
    return model, opt


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
    with pytest.raises(CheckpointError):
        safe_load(path)
    if not torch.cuda.is_available():
        path.write_bytes(_v2_file({"tree": (ckpt.MARK, 0), "tensors": [("uint8", [1], "cuda:0", False, False, 1)]},
                                  b"\0"))
        with pytest.raises(CheckpointError, match="cuda:0"):
            safe_load(path, map_location=None)
        atomic_save({"w": torch.ones(2)}, tmp_path / "ok.pt")
        with pytest.raises(CheckpointError, match="map_location"):
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


# --- RNG -----------------------------------------------------------------------------------------


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


def test_fsync_dir(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(str(tmp_path))
    with pytest.raises(ValueError, match="existing directory"):
        fsync_dir(small_checkpoint(tmp_path))
    with pytest.raises(TypeError, match="path must be"):
        fsync_dir(3.5)


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
    shared = ckpt.loader_generators(DataLoader(ds, shuffle=True, generator=g))
    assert [paths for paths, _ in shared] == [["generator", "sampler.generator", "batch_sampler.sampler.generator"]]
    assert shared[0][1] is g
    two = ckpt.loader_generators(DataLoader(ds, sampler=RandomSampler(ds, generator=g2), generator=g1))
    assert [paths for paths, _ in two] == [["generator"], ["sampler.generator", "batch_sampler.sampler.generator"]]
    assert two[0][1] is g1 and two[1][1] is g2
    assert ckpt.loader_generators(DataLoader(ds, shuffle=True)) == []  # draws from the global RNG
    assert ckpt.loader_generators([1, 2, 3]) == []  # no loader attributes at all
    custom = DataLoader(_Jittered(10, 0), sampler=_OwnSampler(10, 1))
    assert [paths for paths, _ in ckpt.loader_generators(custom)] == [
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


# --- save_weights / load_weights, atomic_write_bytes / atomic_write_text, restore_modes ---


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
    assert ckpt.save_weights(path, src) == path
    assert path.read_bytes().startswith(ckpt.MAGIC)
    saved = safe_load(path)
    assert list(saved) == ["model"]
    assert_same(saved["model"], src.state_dict())
    ckpt.load_weights(path, dst)  # default device and strict
    _assert_same_weights(dst, src)
    ckpt.load_weights(str(path), dst, device=None)
    _assert_same_weights(dst, src)
    with pytest.raises(ValueError, match=r"^with_opt=True but .*w\.pt holds no optimizer state$"):
        ckpt.load_weights(path, dst, opt=torch.optim.SGD(dst.parameters(), lr=0.1))


def test_save_weights_with_optimizer_round_trips_both(tmp_path):
    src = _weights_model(0)
    opt = _trained_opt(src)
    path = tmp_path / "wo.pt"
    assert ckpt.save_weights(str(path), src, opt) == path
    saved = safe_load(path)
    assert list(saved) == ["model", "opt"]
    assert_same(saved["opt"], opt.state_dict())
    dst = _weights_model(1)
    dst_opt = torch.optim.Adam(dst.parameters(), lr=0.5)
    ckpt.load_weights(path, dst, dst_opt)
    _assert_same_weights(dst, src)
    assert_same(dst_opt.state_dict(), opt.state_dict())
    assert dst_opt.param_groups[0]["lr"] == 0.01


def test_weights_in_safetensors_format(tmp_path):
    src, dst = _weights_model(0), _weights_model(1)
    path = tmp_path / "w.safetensors"
    assert ckpt.save_weights(path, src) == path
    assert not path.read_bytes().startswith(ckpt.MAGIC)
    loaded, want = load_safetensors(path), src.state_dict()
    assert sorted(loaded) == sorted(want)
    assert all(torch.equal(loaded[k], want[k]) for k in want)
    ckpt.load_weights(path, dst)
    _assert_same_weights(dst, src)
    opt = torch.optim.SGD(src.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^with_opt=True: safetensors holds weights only; use a \.pt path$"):
        ckpt.save_weights(tmp_path / "o.safetensors", src, opt)
    assert not (tmp_path / "o.safetensors").exists()
    with pytest.raises(ValueError, match=r"^with_opt=True: safetensors holds weights only$"):
        ckpt.load_weights(path, dst, opt)
    partial = {k: v for k, v in src.state_dict().items() if not k.startswith("2.")}
    save_safetensors(partial, tmp_path / "p.safetensors")
    with pytest.raises(RuntimeError, match="Missing key"):
        ckpt.load_weights(tmp_path / "p.safetensors", dst)
    fresh = _weights_model(2)
    ckpt.load_weights(tmp_path / "p.safetensors", fresh, strict=False)
    assert torch.equal(fresh[0].weight, src[0].weight)
    assert torch.equal(fresh[2].weight, _weights_model(2)[2].weight)


def test_load_weights_reads_a_plain_torch_save_state_dict(tmp_path):
    src, dst = _weights_model(0), _weights_model(1)
    path = tmp_path / "plain.pth"
    torch.save(src.state_dict(), path)
    ckpt.load_weights(path, dst)
    _assert_same_weights(dst, src)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        ckpt.load_weights(path, dst, torch.optim.SGD(dst.parameters(), lr=0.1))


def test_load_weights_strict_false_tolerates_a_missing_key(tmp_path):
    src = _weights_model(0)
    partial = {k: v for k, v in src.state_dict().items() if k != "2.bias"}
    path = tmp_path / "partial.pt"
    atomic_save({"model": partial}, path)
    dst = _weights_model(1)
    with pytest.raises(RuntimeError, match=r"Missing key.*2\.bias"):
        ckpt.load_weights(path, dst)
    before = dst[2].bias.detach().clone()
    ckpt.load_weights(path, dst, strict=False)
    assert torch.equal(dst[2].bias, before)
    assert torch.equal(dst[2].weight, src[2].weight)
    assert torch.equal(dst[1].running_mean, src[1].running_mean)
    with pytest.raises(ValueError, match="is a directory"):
        ckpt.load_weights(tmp_path, dst)


def test_atomic_write_bytes_content_folders_and_modes(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    ckpt.atomic_write_bytes(path, b"\x00one\xff")
    assert path.read_bytes() == b"\x00one\xff"
    old = os.umask(0o027)
    try:
        ckpt.atomic_write_bytes(tmp_path / "a" / "new.bin", b"x")
        new_text = tmp_path / "a" / "new.txt"
        ckpt.atomic_write_text(str(new_text), "t")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a" / "new.bin").st_mode & 0o777 == 0o640
    assert os.stat(new_text).st_mode & 0o777 == 0o640
    os.chmod(path, 0o604)
    ckpt.atomic_write_bytes(str(path), b"second")  # the folder exists now
    assert path.read_bytes() == b"second"
    assert os.stat(path).st_mode & 0o777 == 0o604
    ckpt.atomic_write_bytes(path, b"third", mode=0o600)
    assert path.read_bytes() == b"third"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path / "a")) == ["b", "new.bin", "new.txt"]
    assert os.listdir(tmp_path / "a" / "b") == ["f.bin"]
    with pytest.raises(ValueError, match="is a directory"):
        ckpt.atomic_write_bytes(tmp_path / "a", b"x")


def test_atomic_write_text_is_utf8_and_keeps_the_old_mode(tmp_path):
    path = tmp_path / "sub" / "t.txt"
    text = "naïve – ∑ 🚀\nline two\n"
    ckpt.atomic_write_text(path, text)
    assert path.read_bytes() == text.encode("utf-8")
    os.chmod(path, 0o640)
    ckpt.atomic_write_text(path, "é")
    assert path.read_bytes() == b"\xc3\xa9"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(path.parent) == ["t.txt"]


def test_atomic_write_leaves_no_temp_file_and_the_old_file_after_an_error(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    ckpt.atomic_write_text(path, "old")

    def fail(src, dst):
        raise OSError(errno.EIO, "replace failed")

    monkeypatch.setattr(ckpt.os, "replace", fail)
    with pytest.raises(OSError, match="replace failed"):
        ckpt.atomic_write_bytes(path, b"new")
    with pytest.raises(OSError, match="replace failed"):
        ckpt.atomic_write_text(path, "new")
    assert os.listdir(tmp_path) == ["f.txt"]
    assert path.read_bytes() == b"old"


def test_restore_modes_puts_back_mixed_train_and_eval_modes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(), torch.nn.BatchNorm1d(2)))
    model.train()
    model[1][1].eval()  # a frozen BatchNorm inside a training model
    model[0].eval()
    modes = [(m, m.training) for m in model.modules()]
    expected = [training for _, training in modes]
    assert expected == [True, False, True, True, False]
    model.eval()
    ckpt.restore_modes(modes)
    assert [m.training for m in model.modules()] == expected
    model.train()  # now the children that should be in eval mode are in train mode
    ckpt.restore_modes(modes)
    assert [m.training for m in model.modules()] == expected


def test_restore_modes_fixes_children_after_a_parent_reset_them():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Dropout()))
    model.eval()
    model[1][0].train()
    modes = [(m, m.training) for m in model.modules()]
    assert [t for _, t in modes] == [False, False, False, True, False]
    model.train()  # the parent's train() flips every child too; restoring eval() on it resets them all
    ckpt.restore_modes(modes)
    assert [m.training for m in model.modules()] == [False, False, False, True, False]
    ckpt.restore_modes([])  # nothing to do
    assert [m.training for m in model.modules()] == [False, False, False, True, False]


def test_atomic_write_temp_file_sits_beside_the_target_and_a_vanished_one_is_fine(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    real_replace = os.replace
    seen = []

    def spy(src, dst):
        seen.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", spy)
    ckpt.atomic_write_bytes(path, b"abc")
    (tmp,) = seen
    assert os.path.dirname(tmp) == str(tmp_path)
    name = os.path.basename(tmp)
    assert name.startswith(".data.bin.") and name.endswith(".tmp") and len(name) > len(".data.bin..tmp")

    def replace_then_fail(src, dst):  # the temp file is gone when the cleanup runs
        real_replace(src, dst)
        raise OSError(errno.EIO, "late failure")

    monkeypatch.setattr(ckpt.os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="late failure"):
        ckpt.atomic_write_bytes(path, b"new")
    assert os.listdir(tmp_path) == ["data.bin"]
