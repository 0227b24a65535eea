"""Model weights in files users can open: ``save_weights``/``load_weights`` (what ``Learner.save`` and
``Learner.load`` do, and a run folder's ``model.pt``), and safetensors export and import.

What a weights file holds
-------------------------
A plain ``torch.save`` file (the zip format), written atomically (``atomic.atomic_file``: temp file,
fsync, rename, folder fsync), with every tensor on the CPU so it opens on any machine:

* ``save_weights(path, model)``: the model's ``state_dict()`` itself, so
  ``model.load_state_dict(torch.load(path, weights_only=True))`` is all a user needs;
* ``save_weights(path, model, opt)`` (``Learner.save(path, with_opt=True)``): the dict
  ``{"model": model.state_dict(), "opt": opt.state_dict()}``.

:func:`read_weights` tells the two apart by shape: a dict whose keys are ``"model"`` (and ``"opt"``)
with a mapping under ``"model"`` is the pair; anything else is a state_dict (a module's state_dict
maps dotted parameter names to tensors, so it never has a mapping under a key ``"model"``). The same
rule reads a user's own ``torch.save(model.state_dict())`` file and the common ``{"model": ...}``
checkpoint. A path ending in ``.safetensors`` exports (and reads) the weights alone in that format.

Verification on load uses the zip format's own checks before anything is unpickled: the archive
must be complete (its central directory sits at the end, so a truncated file has none) and every
record must match the CRC-32 stored for it (``zipfile.ZipFile.testzip``): a flipped byte in a
tensor's data is refused with a :class:`CheckpointError` naming the file. A CRC catches damage, not
tampering; unpickling is ``weights_only`` in any case, so a hostile file cannot run code. (torch
writes the CRCs unless ``torch.utils.serialization.config.save.compute_crc32`` was turned off.)
Files written by earlier versions (an ``ONECYCLE-CKPT`` header before the payload, sha256-verified)
still load.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_file, atomic_write
from .checkpoint import (
    MAGIC,
    CheckpointError,
    check_loadable,
    check_map_location,
    read_bytes,
    safe_load,
    weights_only_load,
)
from .checks import check_file_path, import_extra

__all__ = ["save_weights", "load_weights", "read_weights", "verify_zip", "save_safetensors", "load_safetensors"]

_ZIP_START = b"PK\x03\x04"  # a zip archive's first local file header: torch.save's format since torch 1.6


def _import_safetensors() -> Any:
    """Import lazily: safetensors is an optional extra, so a missing install must name the fix."""
    return import_extra("safetensors.torch", "safetensors", "safetensors export needs the optional dependency")


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Export tensors to safetensors (no pickle at all), written atomically like :func:`atomic_save`.

    Tied weights share storage, which safetensors refuses, so later aliases are cloned; loading them
    back into a model with ``load_state_dict`` still copies the same values into both.
    """
    path = check_file_path("path", path)
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
    atomic_write(path, [st.save(tensors)])


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; corruption surfaces as :class:`CheckpointError` naming the path."""
    path = check_file_path("path", path)
    st = _import_safetensors()
    data = Path(path).read_bytes()
    try:
        tensors = st.load(data)
    except Exception as err:  # SafetensorError does not derive from a stable public base class
        raise CheckpointError(f"cannot read safetensors file {path!r}: {err}") from err
    return {key: tensor.to(device) for key, tensor in tensors.items()}


def _on_cpu(obj: Any) -> Any:
    """``obj`` with its tensors on the CPU (a GPU run's ``model.pt`` then opens on a laptop with a plain
    ``torch.load``); containers keep their type and attributes (a state_dict's ``_metadata``)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()  # the same tensor when already there: no copy
    if type(obj) in (list, tuple):
        return type(obj)(_on_cpu(v) for v in obj)
    if not isinstance(obj, dict):
        return obj
    out = type(obj)((k, _on_cpu(v)) for k, v in obj.items())
    if hasattr(obj, "__dict__"):
        out.__dict__.update(obj.__dict__)
    return out


def save_weights(path: str | os.PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> Path:
    """``model``'s state_dict (with ``opt``: ``{"model": ..., "opt": ...}``) as a plain ``torch.save``
    file, written atomically (see the module doc); a ``.safetensors`` path exports the weights alone
    in that format. Something ``weights_only`` loading would refuse is a ``TypeError`` before any write."""
    if str(path).endswith(".safetensors"):
        if opt is not None:
            raise ValueError("with_opt=True: safetensors holds weights only; use a .pt path")
        save_safetensors(model.state_dict(), path)
        return Path(path)
    state = _on_cpu(model.state_dict() if opt is None else {"model": model.state_dict(), "opt": opt.state_dict()})
    check_loadable(state)
    with atomic_file(path) as f:
        torch.save(state, f)
    return Path(path)


def verify_zip(path: str | os.PathLike, data: bytes) -> None:
    """Check ``data``, the bytes of the ``torch.save`` file ``path``, with the zip format's own checks
    (a complete archive, every record's CRC-32) before anything is unpickled; a
    :class:`CheckpointError` naming ``path`` otherwise."""
    if not data:
        raise CheckpointError(f"{str(path)!r} is empty (0 bytes); the write probably never finished")
    if not data.startswith(_ZIP_START):
        raise CheckpointError(f"{str(path)!r} is not a zip-format torch.save file (it starts with {data[:16]!r}), so "
                              "it cannot be verified; a legacy (pre-zip) torch file loads with "
                              "checkpoint.load_state_dict_file")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except Exception as err:  # BadZipFile, or whatever else damaged bytes make the reader trip on
        raise CheckpointError(f"{str(path)!r} is truncated or corrupted: not a complete zip archive "
                              f"({type(err).__name__}: {err})") from err
    if bad is not None:
        raise CheckpointError(f"{str(path)!r} is corrupted: its record {bad!r} does not match the CRC-32 stored for it")


def _split(path: str, obj: Any) -> tuple[Mapping, Mapping | None]:
    """(model state, optimizer state or None): the pair ``{"model": ..., "opt": ...}`` (``"opt"``
    optional), else a plain state_dict (see the module doc)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path!r} does not hold a state_dict: got {type(obj).__name__}")
    if "model" in obj and set(obj) <= {"model", "opt"} and isinstance(obj["model"], Mapping):
        return obj["model"], obj.get("opt")
    return obj, None


def read_weights(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Mapping, Mapping | None]:
    """(model state_dict, optimizer state or None) from a file :func:`save_weights` wrote, a user's
    ``torch.save`` file, or one of an earlier version (``ONECYCLE-CKPT`` header), verified before
    anything is unpickled and loaded with ``weights_only=True``."""
    path = check_file_path("path", path)
    check_map_location(map_location)
    data = read_bytes(path)
    if data.startswith(MAGIC):  # an earlier version's format: length and sha256 in a header
        return _split(path, safe_load(path, map_location))
    verify_zip(path, data)
    return _split(path, weights_only_load(path, io.BytesIO(data), map_location))


def load_weights(path: str | os.PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer | None = None,
                 device: Any = "cpu", strict: bool = True) -> None:
    """Load what :func:`save_weights` wrote, a plain state_dict file or a ``.safetensors`` file into
    ``model`` (and ``opt``: the file must then hold its state), verified first (:func:`read_weights`)."""
    if str(path).endswith(".safetensors"):
        if opt is not None:
            raise ValueError("with_opt=True: safetensors holds weights only")
        model.load_state_dict(load_safetensors(path, device=str(device)), strict=strict)
        return
    state, opt_state = read_weights(path, map_location=device)
    if opt is not None and opt_state is None:
        raise ValueError(f"with_opt=True but {path} holds no optimizer state")
    model.load_state_dict(state, strict=strict)
    if opt is not None:
        opt.load_state_dict(opt_state)
