"""Model weights in files: ``save_weights``/``load_weights`` (what ``Learner.save``/``load`` do), and
safetensors export and import (no pickle at all; the optional ``safetensors`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .checkpoint import MAGIC, CheckpointError, atomic_save, load_state_dict_file, safe_load
from .checks import check_file_path

__all__ = ["save_weights", "load_weights", "save_safetensors", "load_safetensors"]


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
    with open(check_file_path("path", path), "rb") as f:
        ours = f.read(len(MAGIC)) == MAGIC
    state = safe_load(path, map_location=device) if ours else {"model": load_state_dict_file(path, device)}
    if opt is not None and "opt" not in state:
        raise ValueError(f"with_opt=True but {path} holds no optimizer state")
    model.load_state_dict(state["model"], strict=strict)
    if opt is not None:
        opt.load_state_dict(state["opt"])
