"""The training checkpoint's file format (``last.ckpt``; ``resume`` decides what it holds): crash-safe,
verified, unpickling-safe. Weights files (``Learner.save``, ``model.pt``) are plain ``torch.save``: ``weights``.

A onecycle checkpoint is ONE file: a single ASCII header line followed by the payload::

    ONECYCLE-CKPT v2 <sha256 of payload, 64 hex digits> <payload length in bytes>\\n
    <payload bytes>

The v2 payload is the object's structure with every tensor's bytes moved out of the pickle, so
that a state of dozens of small tensors costs one pickled index, not one zip record per tensor::

    <8-byte little-endian length n> <n bytes: torch.save of {"tree": ..., "tensors": [...]}> <raw bytes>

In the tree each tensor is replaced by ``(MARK, i)``; ``tensors[i]`` is ``(dtype, shape, device,
requires_grad, is_parameter, nbytes)`` and its bytes follow those of tensor ``i - 1`` in the raw
region. Loading rebuilds each tensor from its slice (after checking dtype, shape and sizes against
the region: the sha256 proves integrity, not good intent). Tensors that cannot be viewed as bytes
(sparse, quantized) stay in the pickle. v1 files (the payload is a plain ``torch.save``) still load.

The sha256 is "stored beside" the payload in the same file rather than in a ``.sha256`` side file on
purpose: a side file cannot be replaced in the same atomic step as the payload, so a crash (or a
concurrent reader) between the two renames could pair a new payload with an old hash, or the reverse.
With the digest embedded, one ``os.replace`` publishes payload and digest together, so a reader sees
either the old complete checkpoint or the new complete one, never a mix.

Writing (:func:`atomic_save`): serialise, hash, and write through ``atomic.atomic_write`` (a
same-folder temporary file, fsync, rename, folder fsync): a crash or a full disk leaves the previous
checkpoint untouched.

Reading (:func:`safe_load`): the header, the length and the sha256 are checked BEFORE any unpickling,
and unpickling is always ``torch.load(weights_only=True)``, which refuses arbitrary callables, so a
malicious ``__reduce__`` is rejected and nothing runs. The whole file is read into memory once: the
bytes that were hashed are exactly the bytes that are unpickled (no check-then-reopen race), at the
cost of holding the payload in memory while loading.

:class:`CheckpointWriter` splits a save in two for the training loop: the caller encodes (and so
snapshots) the state, a worker thread hashes, writes, fsyncs and renames. Those are system calls
and hashing that release the GIL, so training goes on while the disk works.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import math
import os
import pickle
import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write, new_file_mode
from .checks import check_file_path

__all__ = ["CheckpointError", "CheckpointWriter", "atomic_save", "load_state_dict_file", "safe_load",
           "weights_only_load", "read_bytes", "check_loadable", "check_map_location", "MAGIC"]

MAGIC = b"ONECYCLE-CKPT"
_HEADER_RE = re.compile(rb"ONECYCLE-CKPT v([12]) ([0-9a-f]{64}) ([0-9]{1,20})\n")
MARK = "\x00onecycle:tensor"  # (MARK, i) stands for tensor i in a v2 tree
_DTYPES = {name: getattr(torch, name) for name in (
    "float64", "float32", "float16", "bfloat16", "complex128", "complex64", "int64", "int32", "int16", "int8",
    "uint8", "uint16", "uint32", "uint64", "bool", "float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)}
_TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")  # zip archive (torch >= 1.6) or legacy pickle
_MAX_HEADER = 128  # far longer than any valid header; bounds how much we scan for the newline
# Exact types torch.load(weights_only=True) can rebuild; checked up front so a checkpoint that could
# never be loaded again is refused at save time, not discovered at resume time.
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device)
_CONTAINER_TYPES = (list, tuple, set, dict, collections.OrderedDict, torch.Size)


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupted, not ours, or holds objects that are unsafe to load."""


def _is_ref(o: Any) -> bool:
    """Whether ``o`` is a ``(MARK, i)`` tensor reference (or user data that looks like one)."""
    return type(o) is tuple and len(o) == 2 and type(o[0]) is str and o[0] == MARK


def _like(o: Any, items: Iterator[Any]) -> Any:
    """A container of ``o``'s type holding ``items`` (pairs for a dict), with ``o``'s attributes
    (a state_dict's ``_metadata``: module versions)."""
    out = type(o)(items)
    if hasattr(o, "__dict__"):
        out.__dict__.update(o.__dict__)
    return out


class _MarkInData(Exception):
    """The object itself holds a ``(MARK, i)`` tuple, so it is saved in the v1 format instead."""


def _packable(t: torch.Tensor) -> bool:
    return (t.layout is torch.strided and not t.is_quantized and t.device.type != "meta"
            and str(t.dtype)[6:] in _DTYPES)


def _pack(obj: Any) -> tuple[Any, list[tuple], list[torch.Tensor]]:
    """``obj`` with its tensors replaced by ``(MARK, i)``; their table and flat byte views.

    Refuses (``TypeError`` naming where it sits) anything ``weights_only`` loading would reject, so
    a checkpoint that could never be loaded again is refused at save time, not at resume time."""
    table: list[tuple] = []
    views: list[torch.Tensor] = []
    collision = False

    def go(o: Any, where: str) -> Any:
        kind = type(o)
        if kind is torch.Tensor or kind is torch.nn.Parameter:
            if not _packable(o):
                return o
            t = o.detach().resolve_conj().resolve_neg()
            table.append((str(t.dtype)[6:], list(t.shape), str(t.device), o.requires_grad,
                          kind is torch.nn.Parameter, t.numel() * t.element_size()))
            views.append(t.contiguous().view(-1).view(torch.uint8))
            return (MARK, len(table) - 1)
        if kind in _LEAF_TYPES or kind is torch.Size:
            return o
        if kind not in _CONTAINER_TYPES:
            raise TypeError(
                f"{where} has type {kind.__module__}.{kind.__qualname__} ({o!r:.60}), which cannot be "
                "loaded back safely; use tensors, plain Python scalars/str/bytes, lists, tuples and dicts"
            )
        if isinstance(o, dict):
            return _like(o, ((go(k, f"{where} key {k!r}"), go(v, f"{where}[{k!r}]")) for k, v in o.items()))
        if _is_ref(o):
            nonlocal collision
            collision = True  # still walked: the type check must see everything
        return _like(o, (go(item, f"{where}[{i}]") for i, item in enumerate(o)))

    tree = go(obj, "obj")
    if collision:
        raise _MarkInData
    return tree, table, views


def check_loadable(obj: Any) -> None:
    """``TypeError`` naming where it sits for anything ``torch.load(weights_only=True)`` would refuse
    in ``obj``, so a file that could never be loaded again is refused before it is written."""
    with contextlib.suppress(_MarkInData):  # such data still loads (the v1 format)
        _pack(obj)


def _encode(obj: Any, snapshot: bool = False) -> list[bytes | memoryview]:
    """The v2 payload of ``obj`` as chunks to write (or the v1 payload, a single chunk, when ``obj``
    holds a MARK tuple itself). ``snapshot``: copy the tensor bytes, so the caller may go on
    changing its tensors while the chunks are written; otherwise they must stay as they are."""
    try:
        tree, table, views = _pack(obj)
    except _MarkInData:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return [b"1", buffer.getbuffer()]
    buffer = io.BytesIO()
    torch.save({"tree": tree, "tensors": table}, buffer)
    index = buffer.getbuffer()
    cpu = [v if v.device.type == "cpu" else v.cpu() for v in views]
    if snapshot and cpu:
        cpu = [torch.cat(cpu)]
    return [b"2", len(index).to_bytes(8, "little"), index, *(memoryview(v.numpy()) for v in cpu)]


def _with_header(encoded: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """The header line (format version, sha256 and length of the payload) followed by the chunks."""
    version, chunks = encoded[0], encoded[1:]
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    length = sum(memoryview(c).nbytes for c in chunks)
    return [MAGIC + b" v" + version + f" {digest.hexdigest()} {length}\n".encode("ascii"), *chunks]


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` with a sha256 header so a crash mid-write can never destroy the last good checkpoint."""
    path = check_file_path("path", path)
    atomic_write(path, _with_header(_encode(obj)))


class CheckpointWriter:
    """:func:`atomic_save` with the disk work on a worker thread, at most one write in flight.

    ``save`` encodes the object in the caller's thread (a snapshot: the tensors may change as soon as
    it returns), then a worker hashes, writes, fsyncs and renames. ``wait`` blocks until the write is
    on disk and raises its error, if any (a failed write leaves the previous file intact). ``save``
    waits for the previous write first, so an error surfaces at the next save at the latest."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0  # how long the worker took for the last write (hash, write, fsync, rename)

    def save(self, obj: Any, path: str | os.PathLike) -> None:
        path = check_file_path("path", path)
        self.wait()
        chunks = _encode(obj, snapshot=True)
        mode = new_file_mode(path)  # here: reading the umask briefly changes it for the whole process
        self._thread = threading.Thread(target=self._write, args=(path, chunks, mode),
                                        name="onecycle-checkpoint-writer")
        self._thread.start()

    def _write(self, path: str, chunks: list[bytes | memoryview], mode: int) -> None:
        start = time.perf_counter()
        try:
            atomic_write(path, _with_header(chunks), mode)
        except BaseException as err:  # handed to the caller's thread by wait()
            self._error = err
        self.seconds = time.perf_counter() - start

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file, read once: the bytes that are checked are exactly the bytes that are loaded."""
    return Path(path).read_bytes()


def _verified_payload(path: str, data: bytes) -> tuple[int, memoryview]:
    """The format version and payload of ``data``, after checking header, length and sha256, before
    any unpickling."""
    if not data:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes); the write probably never finished")
    if not data.startswith(MAGIC):
        raise CheckpointError(
            f"{path!r} is not a onecycle checkpoint (missing {MAGIC.decode()} header); refusing to load it. "
            "For a plain torch.save state_dict use load_state_dict_file()"
        )
    end = data.find(b"\n", 0, _MAX_HEADER)
    match = _HEADER_RE.fullmatch(data[: end + 1]) if end >= 0 else None
    if match is None:
        raise CheckpointError(f"checkpoint {path!r} has a malformed or unsupported header: {data[:80]!r}")
    expected_len, actual_len = int(match.group(3)), len(data) - (end + 1)
    if actual_len < expected_len:
        raise CheckpointError(f"checkpoint {path!r} is truncated: {actual_len} of {expected_len} bytes")
    if actual_len > expected_len:
        raise CheckpointError(f"checkpoint {path!r} is corrupted: {actual_len - expected_len} extra bytes")
    payload = memoryview(data)[end + 1 :]
    if hashlib.sha256(payload).hexdigest() != match.group(2).decode("ascii"):
        raise CheckpointError(f"checkpoint {path!r} is corrupted: sha256 of the payload does not match")
    return int(match.group(1)), payload


def _device_for(saved: str, map_location: Any) -> str | torch.device:
    if map_location is None:
        return saved
    if isinstance(map_location, dict):
        return map_location.get(saved, saved)
    return map_location


def _tensor_table(path: str, index: Any, region_bytes: int) -> list[tuple]:
    """The index's tensor table, each entry checked against the raw region it describes."""
    table = index.get("tensors") if isinstance(index, dict) and "tree" in index else None
    if not isinstance(table, list):
        raise CheckpointError(f"checkpoint {path!r} is malformed: no tensor table")
    total = 0
    for i, entry in enumerate(table):
        ok = isinstance(entry, list | tuple) and len(entry) == 6
        if ok:
            dtype, shape, device, grad, param, nbytes = entry
            ok = (type(dtype) is str and dtype in _DTYPES and isinstance(shape, list)
                  and all(type(n) is int and 0 <= n < 2**62 for n in shape) and type(device) is str
                  and type(grad) is bool and type(param) is bool
                  and (not grad or _DTYPES[dtype].is_floating_point or _DTYPES[dtype].is_complex)
                  and type(nbytes) is int and nbytes == math.prod(shape) * _DTYPES[dtype].itemsize)
        if not ok:
            raise CheckpointError(f"checkpoint {path!r} is malformed: tensor entry {i} is {entry!r:.100}")
        total += nbytes
    if total != region_bytes:
        raise CheckpointError(f"checkpoint {path!r} is malformed: its tensors need {total} bytes, it holds "
                              f"{region_bytes}")
    return table


def _unpack(path: str, payload: memoryview, map_location: Any) -> Any:
    """Rebuild a v2 payload: the index via ``weights_only`` loading, each tensor from its bytes."""
    n = int.from_bytes(payload[:8], "little") if len(payload) >= 8 else -1
    if not 0 <= n <= len(payload) - 8:
        raise CheckpointError(f"checkpoint {path!r} is malformed: bad index length")
    index = weights_only_load(path, io.BytesIO(payload[8 : 8 + n]), map_location)
    raw = payload[8 + n :]
    table = _tensor_table(path, index, len(raw))
    with warnings.catch_warnings():  # read-only buffer: every tensor is cloned out of it below
        warnings.simplefilter("ignore", UserWarning)
        region = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
    tensors, offset = [], 0
    for dtype, shape, device, grad, param, nbytes in table:
        t = region[offset : offset + nbytes].clone().view(_DTYPES[dtype]).reshape(shape)
        offset += nbytes
        try:
            t = t.to(_device_for(device, map_location))
        except Exception as err:  # RuntimeError, or AssertionError from a torch built without CUDA
            raise CheckpointError(f"cannot load {path!r}: a tensor saved on {device!r} cannot go to "
                                  f"{_device_for(device, map_location)!r} ({err}); pass map_location") from err
        tensors.append(torch.nn.Parameter(t, requires_grad=grad) if param else t.requires_grad_(grad))

    def graft(o: Any) -> Any:
        if _is_ref(o):
            if type(o[1]) is not int or not 0 <= o[1] < len(tensors):
                raise CheckpointError(f"checkpoint {path!r} is malformed: bad tensor reference {o!r:.60}")
            return tensors[o[1]]
        if isinstance(o, dict):
            return _like(o, ((graft(k), graft(v)) for k, v in o.items()))
        if type(o) in (list, tuple, set):
            return _like(o, (graft(item) for item in o))
        return o

    try:
        return graft(index["tree"])
    except RecursionError as err:
        raise CheckpointError(f"checkpoint {path!r} is malformed: its structure is nested too deeply") from err


def _decode(path: str, version: int, payload: memoryview, map_location: Any) -> Any:
    if version == 1:
        return weights_only_load(path, io.BytesIO(payload), map_location)
    return _unpack(path, payload, map_location)


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """Pick the informative line (e.g. "Unsupported global: GLOBAL posix.system") out of torch's essay."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "nsupported" in line or "GLOBAL" in line:
            return line[:200]
    return lines[-1][:200] if lines else type(err).__name__


def weights_only_load(path: str, source: io.BytesIO, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` with its failures turned into a :class:`CheckpointError`."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # the weights_only unpickler met something it will not build
        raise CheckpointError(
            f"refusing to load {path!r}: it contains an unsafe object or data that weights_only "
            f"loading does not allow ({_refusal_reason(err)})"
        ) from err
    except Exception as err:  # untrusted bytes can fail in many ways; report them all the same way
        raise CheckpointError(f"cannot load {path!r}: {type(err).__name__}: {err}") from err


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load an :func:`atomic_save` checkpoint, verifying length and sha256 before unpickling anything."""
    path = check_file_path("path", path)
    check_map_location(map_location)
    return _decode(path, *_verified_payload(path, read_bytes(path)), map_location)


def check_map_location(map_location: Any) -> None:
    """``map_location`` as ``torch.load`` takes it here: None, a device (name) or a dict of device names."""
    if not (map_location is None or isinstance(map_location, str | torch.device | dict)):
        raise TypeError(f"map_location must be None, a device or a dict of device names, got {map_location!r}")


def load_state_dict_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a user's own weights (plain ``torch.save``, or one of ours) with ``weights_only=True``."""
    path = check_file_path("path", path)
    check_map_location(map_location)
    data = read_bytes(path)
    if data.startswith(MAGIC):
        result = _decode(path, *_verified_payload(path, data), map_location)
    elif not data.startswith(_TORCH_FILE_STARTS):
        raise CheckpointError(f"{path!r} is not a torch.save file (starts with {data[:16]!r})")
    else:
        result = weights_only_load(path, io.BytesIO(data), map_location)
    if not isinstance(result, dict):
        raise CheckpointError(f"{path!r} does not hold a state_dict: got {type(result).__name__}")
    return result
