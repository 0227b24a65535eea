"""Crash-safe, verified, unpickling-safe checkpoints (the low-level layer under the Learner).

On-disk format
--------------
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

Writing (:func:`atomic_save`): serialise, hash, write with unbuffered ``os.write`` to a
temporary file in the SAME folder (so the rename never crosses file systems), ``fsync`` it, ``os.replace``
it onto the target, then ``fsync`` the folder so the rename itself survives power loss. On any failure,
including ENOSPC and KeyboardInterrupt, the temporary file is removed and the previous checkpoint is
untouched (it is only replaced once the new one is complete).

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
import collections.abc
import contextlib
import errno
import hashlib
import io
import math
import os
import pickle
import random
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "CheckpointWriter",
    "atomic_save",
    "fsync_dir",
    "get_rng_state",
    "loader_generators",
    "load_safetensors",
    "load_state_dict_file",
    "safe_load",
    "save_safetensors",
    "set_rng_state",
]

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


def _fspath(path: Any) -> str:
    """Return ``path`` as a ``str``, rejecting non-paths up front with a message naming the argument."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}: {path!r}")
    path = os.fsdecode(os.fspath(path))
    if not path:
        raise ValueError(f"path must not be empty, got {path!r}")
    return path


def _check_path(path: Any) -> str:
    """Return ``path`` as a ``str`` naming a file (not a folder), which would otherwise fail obscurely."""
    path = _fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"path must be a file path, but {path!r} is a directory")
    return path


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries to disk so that a completed ``os.replace`` inside it survives power loss."""
    path = _fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"path must be an existing directory, got {path!r}")
    if os.name == "nt":  # Windows cannot open folders as files; NTFS journals renames itself.
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems (e.g. certain network mounts) cannot fsync folders
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _new_file_mode(path: str) -> int:
    """Mode for the new file: keep an existing file's mode, else honour the umask (mkstemp forces 0600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read the umask is to set it and put it back
        os.umask(umask)
        return 0o666 & ~umask


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` may write fewer bytes than asked; loop until everything is out."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _atomic_write(path: str, chunks: list[bytes | memoryview], mode: int | None = None) -> None:
    """Write ``chunks`` to a same-folder temp file, fsync, and rename it onto ``path`` in one step."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path {path!r}: parent folder {folder!r} does not exist")
    mode = _new_file_mode(path) if mode is None else mode
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            if hasattr(os, "fchmod"):  # not on Windows
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: never leave a half-written temp file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """The one atomic write: ``data`` to a same-folder temp file, fsync, rename onto ``path``, fsync
    of the folder (made if missing). A crash leaves the old file or the new one, never half of one.
    ``mode``: the new file's permissions (default: an existing file's, else per the umask)."""
    path = _check_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _atomic_write(path, [data], mode)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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
    path = _check_path(path)
    _atomic_write(path, _with_header(_encode(obj)))


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
        path = _check_path(path)
        self.wait()
        chunks = _encode(obj, snapshot=True)
        mode = _new_file_mode(path)  # here: reading the umask briefly changes it for the whole process
        self._thread = threading.Thread(target=self._write, args=(path, chunks, mode),
                                        name="onecycle-checkpoint-writer")
        self._thread.start()

    def _write(self, path: str, chunks: list[bytes | memoryview], mode: int) -> None:
        start = time.perf_counter()
        try:
            _atomic_write(path, _with_header(chunks), mode)
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


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


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
    index = _weights_only_load(path, io.BytesIO(payload[8 : 8 + n]), map_location)
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
        return _weights_only_load(path, io.BytesIO(payload), map_location)
    return _unpack(path, payload, map_location)


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """Pick the informative line (e.g. "Unsupported global: GLOBAL posix.system") out of torch's essay."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "nsupported" in line or "GLOBAL" in line:
            return line[:200]
    return lines[-1][:200] if lines else type(err).__name__


def _weights_only_load(path: str, source: io.BytesIO, map_location: Any) -> Any:
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
    path = _check_path(path)
    _check_map_location(map_location)
    return _decode(path, *_verified_payload(path, _read_bytes(path)), map_location)


def _check_map_location(map_location: Any) -> None:
    if not (map_location is None or isinstance(map_location, str | torch.device | dict)):
        raise TypeError(f"map_location must be None, a device or a dict of device names, got {map_location!r}")


def load_state_dict_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a user's own weights (plain ``torch.save``, or one of ours) with ``weights_only=True``."""
    path = _check_path(path)
    _check_map_location(map_location)
    data = _read_bytes(path)
    if data.startswith(MAGIC):
        result = _decode(path, *_verified_payload(path, data), map_location)
    elif not data.startswith(_TORCH_FILE_STARTS):
        raise CheckpointError(f"{path!r} is not a torch.save file (starts with {data[:16]!r})")
    else:
        result = _weights_only_load(path, io.BytesIO(data), map_location)
    if not isinstance(result, dict):
        raise CheckpointError(f"{path!r} does not hold a state_dict: got {type(result).__name__}")
    return result


# Where a loader keeps the generators it draws from: its own attributes (torch's ``generator``: the
# default sampler's shuffle, and the base seed of its workers, drawn when its iterator is made), its
# sampler's, its batch sampler's, its batch sampler's sampler's and its dataset's (a generator an
# augmentation draws from). torch's DataLoader and torchdata's StatefulDataLoader have this shape;
# other loaders are searched the same way and may simply have no generators to capture.
_GENERATOR_OWNERS = ("", "sampler.", "batch_sampler.", "batch_sampler.sampler.", "dataset.")


def loader_generators(loader: Any) -> list[tuple[list[str], torch.Generator]]:
    """The distinct ``torch.Generator`` objects ``loader`` draws from (deduplicated by identity, in
    a stable order: owner by owner as above, each owner's attributes in their definition order),
    each with every attribute path it is reachable at: a ``DataLoader(shuffle=True, generator=g)``
    gives ``[(["generator", "sampler.generator", "batch_sampler.sampler.generator"], g)]``."""
    found: list[tuple[list[str], torch.Generator]] = []
    for prefix in _GENERATOR_OWNERS:
        owner = loader
        for name in prefix.split(".")[:-1]:
            owner = getattr(owner, name, None)
        for attr, obj in (vars(owner).items() if hasattr(owner, "__dict__") else ()):
            if not isinstance(obj, torch.Generator):
                continue
            for paths, gen in found:
                if gen is obj:
                    paths.append(prefix + attr)
                    break
            else:
                found.append(([prefix + attr], obj))
    return found


def _named_loaders(loaders: Any) -> list[tuple[str, Any]]:
    """``loaders`` (a sequence, or a mapping name -> loader for clearer errors) as (name, loader)
    pairs. A bare loader is refused: iterating it would draw batches, not list loaders."""
    if isinstance(loaders, collections.abc.Mapping):
        return [(str(name), loader) for name, loader in loaders.items()]
    if not isinstance(loaders, list | tuple):
        raise TypeError(f"loaders must be a list, tuple or dict of loaders, got {type(loaders).__name__}")
    return [(f"loaders[{i}] ({type(loader).__name__})", loader) for i, loader in enumerate(loaders)]


def _loader_layout(loader: Any) -> list[list[Any]]:
    """What a loader's generator state must match to be restored: per generator, its paths and device."""
    return [[*paths, str(gen.device)] for paths, gen in loader_generators(loader)]


def get_rng_state(loaders: Any = ()) -> dict[str, Any]:
    """Capture torch (CPU and initialised CUDA), numpy-global and ``random`` RNGs, and the generators
    each of ``loaders`` draws from (see :func:`loader_generators`), as weights_only-safe data.

    numpy and ``random`` states are converted to int64 tensors and plain scalars because their native
    forms (ndarray, long tuples) are either refused by, or wasteful under, ``weights_only`` loading.
    A loader's generators are what decide its shuffle and its workers' seeds, so with them restored
    (with the global RNGs, for loaders that draw from those) ``iter(loader)`` repeats its order
    exactly, whatever the number of workers. A loader's own ``state_dict()`` (torchdata's
    ``StatefulDataLoader``) is NOT taken here: it is a position inside an epoch, not an RNG, and
    asking for it before an iterator exists makes one (drawing from these very RNGs);
    ``onecycle.resume`` keeps it for mid-epoch checkpoints.
    """
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {
        "format": 1,
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "name": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "random": {
            "version": int(version),
            "internal": torch.from_numpy(np.array(internal, dtype=np.int64)),  # 3x torch.tensor(tuple)
            "gauss_next": gauss_next,
        },
        "loaders": [{"layout": _loader_layout(loader), "states": [gen.get_state() for _, gen in
                                                                   loader_generators(loader)]}
                    for _, loader in _named_loaders(loaders)],
    }


def _check_loader_states(saved: Any, named: list[tuple[str, Any]]) -> None:
    """Raise ``ValueError`` naming the loader whose generators do not match the captured ones."""
    if saved is None or len(saved) != len(named):
        held = "no loaders" if saved is None else f"{len(saved)} loader(s)"
        raise ValueError(f"state holds the generators of {held}, but {len(named)} loader(s) were given: "
                         f"{', '.join(name for name, _ in named)}")
    for (name, loader), entry in zip(named, saved, strict=True):
        now = _loader_layout(loader)
        if entry["layout"] != now or len(entry["states"]) != len(now):
            raise ValueError(f"cannot restore the generators of {name}: it draws from {now} "
                             f"([paths..., device] per generator) but the state holds {entry['layout']}")


def set_rng_state(state: dict[str, Any], loaders: Any = ()) -> None:
    """Restore a :func:`get_rng_state` capture so future draws repeat exactly (LR finder, exact resume).

    ``loaders`` (the same loaders, in the same order, as at capture; none: their generators are left
    alone) get their generators back; a loader whose generators are laid out otherwise (another
    sampler, a generator added or shared differently) raises ``ValueError`` naming it, before any
    RNG is changed."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from get_rng_state(), got {type(state).__name__}")
    missing = {"format", "torch", "numpy", "random"} - state.keys()
    if missing or state["format"] != 1:
        raise ValueError(
            f"state is not a get_rng_state() v1 dict: {missing=}, format={state.get('format')!r}"
        )
    named = _named_loaders(loaders)
    saved = state.get("loaders") if named else []
    if named:
        _check_loader_states(saved, named)
    torch.set_rng_state(state["torch"].cpu())
    _set_cuda_rng_state(state.get("cuda"))
    npy = state["numpy"]
    key = npy["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["name"], key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    rnd = state["random"]
    random.setstate((rnd["version"], tuple(int(x) for x in rnd["internal"].tolist()), rnd["gauss_next"]))
    for (_, loader), entry in zip(named, saved, strict=True):
        for (_, gen), gen_state in zip(loader_generators(loader), entry["states"], strict=True):
            gen.set_state(gen_state.cpu())


def _set_cuda_rng_state(cuda: list[torch.Tensor] | None) -> None:
    """Restore per-device CUDA RNGs when possible; warn (do not fail) when resuming on other hardware."""
    if not cuda:
        return
    if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        warnings.warn(
            f"RNG state has {len(cuda)} CUDA device(s) but {available} are available; "
            "CUDA RNG not restored, so GPU-side randomness will differ",
            stacklevel=3,
        )
        return
    torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


def _import_safetensors() -> Any:
    """Import lazily: safetensors is an optional extra, so a missing install must name the fix."""
    try:
        import safetensors.torch
    except ImportError as err:
        raise ImportError(
            "safetensors export needs the optional dependency: pip install 'onecycle[safetensors]'"
        ) from err
    return safetensors.torch


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Export tensors to safetensors (no pickle at all), written atomically like :func:`atomic_save`.

    Tied weights share storage, which safetensors refuses, so later aliases are cloned; loading them
    back into a model with ``load_state_dict`` still copies the same values into both.
    """
    path = _check_path(path)
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of str -> Tensor, got {type(state_dict).__name__}")
    st = _import_safetensors()
    seen: set[int] = set()
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] must map str -> Tensor, got {type(value).__name__}")
        tensor = value.detach().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        tensors[key] = tensor.clone() if ptr in seen and tensor.numel() else tensor
        seen.add(ptr)
    _atomic_write(path, [st.save(tensors)])


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; corruption surfaces as :class:`CheckpointError` naming the path."""
    path = _check_path(path)
    st = _import_safetensors()
    data = _read_bytes(path)
    try:
        tensors = st.load(data)
    except Exception as err:  # SafetensorError does not derive from a stable public base class
        raise CheckpointError(f"cannot read safetensors file {path!r}: {err}") from err
    return {key: tensor.to(device) for key, tensor in tensors.items()}


def save_weights(path: str | os.PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> Path:
    """``model``'s weights (and ``opt``'s state) in one verified file; a ``.safetensors`` path
    exports the weights alone in that format."""
    if str(path).endswith(".safetensors"):
        if opt is not None:
            raise ValueError("with_opt=True: safetensors holds weights only; use a .pt path")
        save_safetensors(model.state_dict(), path)
    else:
        atomic_save({"model": model.state_dict(), **({"opt": opt.state_dict()} if opt is not None else {})}, path)
    return Path(path)


def load_weights(path: str | os.PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer | None = None,
                 device: Any = "cpu", strict: bool = True) -> None:
    """Load what ``save_weights`` wrote (verified, ``weights_only``), a plain state_dict file or a
    ``.safetensors`` file, into ``model`` (and ``opt``: the file must then hold its state)."""
    if str(path).endswith(".safetensors"):
        if opt is not None:
            raise ValueError("with_opt=True: safetensors holds weights only")
        model.load_state_dict(load_safetensors(path, device=str(device)), strict=strict)
        return
    with open(_check_path(path), "rb") as f:
        ours = f.read(len(MAGIC)) == MAGIC
    state = safe_load(path, map_location=device) if ours else {"model": load_state_dict_file(path, device)}
    if opt is not None and "opt" not in state:
        raise ValueError(f"with_opt=True but {path} holds no optimizer state")
    model.load_state_dict(state["model"], strict=strict)
    if opt is not None:
        opt.load_state_dict(state["opt"])


def restore_modes(modes: list[tuple[torch.nn.Module, bool]]) -> None:
    """Each module back in its saved train/eval mode (``[(m, m.training) for m in model.modules()]``),
    parents first, each through its own ``train()``: a parent's call resets its children, which are
    checked after it."""
    for m, training in modes:
        if m.training != training:
            m.train(training)
