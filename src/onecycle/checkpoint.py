"""Crash-safe, verified, unpickling-safe checkpoints (the low-level layer under the Learner).

On-disk format
--------------
A onecycle checkpoint is ONE file: a single ASCII header line followed by the ``torch.save`` payload::

    ONECYCLE-CKPT v1 <sha256 of payload, 64 hex digits> <payload length in bytes>\\n
    <payload bytes>

The sha256 is "stored beside" the payload in the same file rather than in a ``.sha256`` side file on
purpose: a side file cannot be replaced in the same atomic step as the payload, so a crash (or a
concurrent reader) between the two renames could pair a new payload with an old hash, or the reverse.
With the digest embedded, one ``os.replace`` publishes payload and digest together, so a reader sees
either the old complete checkpoint or the new complete one, never a mix.

Writing (:func:`atomic_save`): serialise to memory, hash, write with unbuffered ``os.write`` to a
temporary file in the SAME folder (so the rename never crosses file systems), ``fsync`` it, ``os.replace``
it onto the target, then ``fsync`` the folder so the rename itself survives power loss. On any failure,
including ENOSPC and KeyboardInterrupt, the temporary file is removed and the previous checkpoint is
untouched (it is only replaced once the new one is complete).

Reading (:func:`safe_load`): the header, the length and the sha256 are checked BEFORE any unpickling,
and unpickling is always ``torch.load(weights_only=True)``, which refuses arbitrary callables, so a
malicious ``__reduce__`` is rejected and nothing runs. The whole file is read into memory once: the
bytes that were hashed are exactly the bytes that are unpickled (no check-then-reopen race), at the
cost of holding the payload in memory while loading.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import io
import os
import pickle
import random
import re
import tempfile
import warnings
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "atomic_save",
    "fsync_dir",
    "get_rng_state",
    "load_safetensors",
    "load_state_dict_file",
    "safe_load",
    "save_safetensors",
    "set_rng_state",
]

MAGIC = b"ONECYCLE-CKPT"
_HEADER_RE = re.compile(rb"ONECYCLE-CKPT v1 ([0-9a-f]{64}) ([0-9]{1,20})\n")
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


def _atomic_write(path: str, chunks: list[bytes | memoryview]) -> None:
    """Write ``chunks`` to a same-folder temp file, fsync, and rename it onto ``path`` in one step."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path {path!r}: parent folder {folder!r} does not exist")
    mode = _new_file_mode(path)
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


def _check_serialisable(obj: Any, where: str = "obj") -> None:
    """Refuse objects ``weights_only`` loading would reject, naming where in ``obj`` they sit."""
    kind = type(obj)
    if kind in (torch.Tensor, torch.nn.Parameter) or kind in _LEAF_TYPES:
        return
    if kind not in _CONTAINER_TYPES:
        raise TypeError(
            f"{where} has type {kind.__module__}.{kind.__qualname__} ({obj!r:.60}), which cannot be "
            "loaded back safely; use tensors, plain Python scalars/str/bytes, lists, tuples and dicts"
        )
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_serialisable(key, f"{where} key {key!r}")
            _check_serialisable(value, f"{where}[{key!r}]")
    else:
        for i, item in enumerate(obj):
            _check_serialisable(item, f"{where}[{i}]")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` with a sha256 header so a crash mid-write can never destroy the last good checkpoint."""
    path = _check_path(path)
    _check_serialisable(obj)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getbuffer()
    digest = hashlib.sha256(payload).hexdigest()
    header = MAGIC + f" v1 {digest} {len(payload)}\n".encode("ascii")
    _atomic_write(path, [header, payload])


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _verified_payload(path: str, data: bytes) -> memoryview:
    """Return the payload of ``data`` after checking header, length and sha256 - before any unpickling."""
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
    expected_len, actual_len = int(match.group(2)), len(data) - (end + 1)
    if actual_len < expected_len:
        raise CheckpointError(f"checkpoint {path!r} is truncated: {actual_len} of {expected_len} bytes")
    if actual_len > expected_len:
        raise CheckpointError(f"checkpoint {path!r} is corrupted: {actual_len - expected_len} extra bytes")
    payload = memoryview(data)[end + 1 :]
    if hashlib.sha256(payload).hexdigest() != match.group(1).decode("ascii"):
        raise CheckpointError(f"checkpoint {path!r} is corrupted: sha256 of the payload does not match")
    return payload


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
    # No name keeps the raw bytes alive, so they are freed once copied into the buffer.
    buffer = io.BytesIO(_verified_payload(path, _read_bytes(path)))
    return _weights_only_load(path, buffer, map_location)


def load_state_dict_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a user's own weights (plain ``torch.save``, or one of ours) with ``weights_only=True``."""
    path = _check_path(path)
    data = _read_bytes(path)
    if data.startswith(MAGIC):
        result = _weights_only_load(path, io.BytesIO(_verified_payload(path, data)), map_location)
    elif not data.startswith(_TORCH_FILE_STARTS):
        raise CheckpointError(f"{path!r} is not a torch.save file (starts with {data[:16]!r})")
    else:
        result = _weights_only_load(path, io.BytesIO(data), map_location)
    if not isinstance(result, dict):
        raise CheckpointError(f"{path!r} does not hold a state_dict: got {type(result).__name__}")
    return result


def get_rng_state() -> dict[str, Any]:
    """Capture torch (CPU and initialised CUDA), numpy-global and ``random`` RNGs as weights_only-safe data.

    numpy and ``random`` states are converted to int64 tensors and plain scalars because their native
    forms (ndarray, long tuples) are either refused by, or wasteful under, ``weights_only`` loading.
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
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a :func:`get_rng_state` capture so future draws repeat exactly (LR finder, exact resume)."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from get_rng_state(), got {type(state).__name__}")
    missing = {"format", "torch", "numpy", "random"} - state.keys()
    if missing or state["format"] != 1:
        raise ValueError(
            f"state is not a get_rng_state() v1 dict: {missing=}, format={state.get('format')!r}"
        )
    torch.set_rng_state(state["torch"].cpu())
    _set_cuda_rng_state(state.get("cuda"))
    npy = state["numpy"]
    key = npy["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["name"], key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    rnd = state["random"]
    random.setstate((rnd["version"], tuple(int(x) for x in rnd["internal"].tolist()), rnd["gauss_next"]))


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
